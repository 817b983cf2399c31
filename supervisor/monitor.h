/* The network monitor: round-trip time and loss per server, from the workers'
 * own measurements, classed as the reference design's NetworkMonitor does. */
#ifndef UCGW_MONITOR_H
#define UCGW_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum quality { Q_UNKNOWN, Q_POOR, Q_FAIR, Q_GOOD, Q_EXCELLENT };

const char *monitor_quality_str(enum quality q);
bool monitor_quality_at_least_good(enum quality q);
/* Record one round trip (rtt_us) or one loss (lost) for the server of the
 * protocol at this slot (slot.h). */
void monitor_sample(int slot, uint64_t rtt_us, bool lost);
enum quality monitor_quality(int slot);
uint64_t monitor_rtt_us(int slot); /* average of the recent samples */
double monitor_loss(int slot);

/* probe.c: TCP connects to every configured server on network_monitor.interval_ms. */
void probe_start(void);
void probe_stop(void);
/* "host:port" of the server the worker at this slot talks to; false when none. */
bool probe_target(int slot, char *buf, size_t len);

#endif
