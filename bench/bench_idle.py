#!/usr/bin/python3
"""Idle footprint and start-up time of the gateway: PSS of the supervisor and
every worker (from /proc/PID/smaps_rollup), and the time from exec to every
worker ready. Targets: under 30 MB, under 200 ms."""
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from ucgwtest import Gateway, proc_number, wait_for  # noqa: E402


def pss_kb(pid):
    return proc_number(pid, "smaps_rollup", "Pss")


def config():
    return {
        "gateway": {"log_level": "warning"},
        "websocket": {"server_url": "ws://127.0.0.1:9/"},
        "rest": {"base_url": "http://127.0.0.1:9"},
        "mqtt": {"broker_url": "127.0.0.1:9"},
        "sftp": {"host": "127.0.0.1", "port": 9, "username": "u", "password": "x", "host_key_fingerprint": "SHA256:x"},
        "rsync": {"remote_host": "127.0.0.1", "remote_user": "u", "options": ["-a"]},
    }


def one_start(tmp, i):
    gw = Gateway(tmp, config(), "idle%d" % i)
    t0 = time.monotonic()
    gw.start(wait_ready=False)
    wait_for(lambda: gw.ctl("status")[0] == 0, timeout=15, step=0.002)
    ws = gw.wait_workers(lambda ws: len(ws) == 5 and all(w["state"] != "starting" for w in ws), what="ready")
    ready_ms = (time.monotonic() - t0) * 1000
    return gw, ready_ms, ws


def main():
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for i in range(5):
            gw, ms, ws = one_start(tmp, i)
            times.append(ms)
            if i < 4:
                gw.stop()
        time.sleep(2)  # let it settle
        pids = [gw.proc.pid] + gw.children()
        total = sum(pss_kb(p) for p in pids)
        print("idle footprint: %d processes, PSS %.1f MB (target < 30 MB)" % (len(pids), total / 1024))
        for p in pids:
            with open("/proc/%d/comm" % p) as f:
                print("  %-16s %6.1f MB" % (f.read().strip(), pss_kb(p) / 1024))
        print("start to all workers settled: median %.0f ms, best %.0f ms over 5 starts (target < 200 ms)"
              % (statistics.median(times), min(times)))
        states = {w["name"]: w["state"] for w in gw.workers().values()}
        print("  worker states:", states)
        gw.stop()


if __name__ == "__main__":
    main()
