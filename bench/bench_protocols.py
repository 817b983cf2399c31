#!/usr/bin/python3
"""Messages per second through the gateway beside the library used directly,
against the same local servers in the same run, and the latency the gateway
adds at a moderate fixed rate. Also MQTT with the spool's fsync at `batch` and
at `never`, and the spool's bytes written per message.

Also the CPU each process spends per message on both paths (the client, ucgwd, the
worker, the server), which must not grow: on a link (bench_link.py) the round trips
bound throughput, on loopback the CPU does.

Figures and ratios are printed; nothing is asserted (these machines are noisy)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_http_ws import run as run_measured  # noqa: E402
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from ucgwtest import BIN, Gateway, Scene, wait_for  # noqa: E402

N = int(os.environ.get("UCGW_BENCH_N", "20000"))


def run(argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s %s" % (argv[0], r.stdout, r.stderr))
    return json.loads(r.stdout)


def load(gw, proto, n, window=1000, rate=None, server=None):
    argv = [os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", str(n), "-w", str(window), "-p", proto, "--wait",
            "-z", "200"]
    if rate:
        argv += ["--rate", str(rate)]
    if server is None:
        return run(argv)
    # with "cpu_us": CPU microseconds per message of each process (client: ucgw-load)
    return run_measured(argv, {"ucgwd": gw.proc.pid, "worker": gw.workers()[proto]["pid"], "server": server})


def main():
    s = Scene()
    try:
        mq = Mosquitto(s, users={"edge": "pw"})
        peer = LprPeer(s)
        rows = []
        for fs in ("batch", "never"):
            cfg = {"gateway": {"log_level": "warning", "window": 1000},
                   "spool": {"fsync": fs},
                   "mqtt": {"broker_url": mq.url(), "username": "edge", "password": "pw", "max_inflight": 1000},
                   "rest": {"base_url": peer.http_url(), "connections": 8},
                   "websocket": {"server_url": peer.ws_url()}}
            gw = Gateway(s.tmp, cfg, "gw-" + fs)
            gw.start()
            wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="servers")
            protos = ("mqtt", "rest", "websocket") if fs == "batch" else ("mqtt",)
            for proto in protos:
                g = load(gw, proto, N, server=(mq.proc if proto == "mqtt" else peer.proc).pid)
                rows.append((proto, fs, g))
            if fs == "batch":
                st = gw.ctl_json("status")["spool"]
                per_msg = st["written_bytes"] / max(1, st["accepted"])
                lat = {p: load(gw, p, 3000, window=100, rate=1000) for p in ("mqtt", "rest", "websocket")}
            gw.stop()
        direct = {
            # MQTT 5 with the message-id user property, as the gateway publishes by default
            "mqtt": run_measured([os.path.join(BIN, "bench_mqtt"), "127.0.0.1", str(mq.port), "edge", "pw", str(N),
                                  "1000", "--v5"], {"server": mq.proc.pid}),
            "rest": run_measured([os.path.join(BIN, "bench_rest"), peer.http_url() + "/api/lpr/data", str(N), "8",
                                  "--size", "200"], {"server": peer.proc.pid}),
            "websocket": run_measured([os.path.join(BIN, "bench_ws"), peer.ws_url(), str(N), "--window", "1000",
                                       "--size", "200"], {"server": peer.proc.pid}),
        }
        print("\nthroughput, %d messages of 200 bytes, each acknowledged by the server (gateway: --wait outcome)" % N)
        print("%-10s %-7s %12s %12s %7s" % ("protocol", "fsync", "gateway/s", "direct/s", "ratio"))
        for proto, fs, g in rows:
            d = direct.get(proto)
            print("%-10s %-7s %12.0f %12s %7s" % (proto, fs, g["rate"], "%.0f" % d["rate"] if d else "-",
                                                  "%.2f" % (g["rate"] / d["rate"]) if d else "-"))
        print("\nCPU per message, microseconds (client: ucgw-load or the direct client; server: mosquitto or lpr-peer)")
        for proto, fs, g in rows:
            for path, r in (("gateway", g), ("direct", direct[proto] if fs == "batch" else None)):
                if r and "cpu_us" in r:
                    cpu = r["cpu_us"]
                    print("%-10s %-7s %-8s total %5.1f: %s" % (proto, fs, path, sum(cpu.values()),
                                                                ", ".join("%s %.1f" % kv for kv in sorted(cpu.items()))))
        print("\nlatency through the gateway at 1,000 messages/s, accept to server ack:")
        for p, r in lat.items():
            print("  %-10s p50 %6.2f ms   p99 %6.2f ms   max %6.2f ms" % (p, r["p50_ms"], r["p99_ms"], r["max_ms"]))
        print("\nspool bytes written per message (fsync batch, 200-byte payloads, ADD + DONE records): %.0f" % per_msg)
    finally:
        s.close()


if __name__ == "__main__":
    main()
