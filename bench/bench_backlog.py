#!/usr/bin/python3
"""Supervisor memory per queued message: 200,000 messages queued while every
server is down (the test worker answers every job `retry`, as a worker whose
server is unreachable does), the supervisor's RSS per queued message, then
the server comes back, the backlog drains, and the RSS after it (target:
back within 20 % of where it started). Two cycles: the second shows whether
the memory of the first is reused rather than added to.

    bench/bench_backlog.py [N] [PAYLOAD_BYTES] [paused]     (default 200000 250)

With "paused" the protocol is paused instead (`ucgwctl pause`): the messages
wait without any attempt, the cost of a message at rest; with a server down
each retry adds a hop to the message's route.

Needs the release build (UCGW_BUILD_DIR, default ./build). Figures depend
on the machine's load only through time, not through the byte counts."""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from ucgwtest import BIN, Gateway, proc_number, wait_for  # noqa: E402


# A daemon in service has delivered more than the 32,768 messages whose
# outcomes it keeps (admission.c: 2.3 MB once full), and has its code paths,
# the thread pool's stacks and the trace ring paged in.
WARMUP = 33000


def rss_kb(pid):
    return proc_number(pid, "status", "VmRSS")


def config(tmp, n):
    return {"gateway": {"log_level": "info", "job_timeout_ms": 60000},
            "spool": {"max_messages": n + 1000, "retry_backoff_min_ms": 500, "retry_backoff_max_ms": 1000},
            "testworker": {"down_file": os.path.join(tmp, "down")}}


def smaps(pid):
    """RSS per mapping (kB), to see what a drain leaves behind."""
    os.system("awk '/^[0-9a-f]/{name=$6} /^Rss:/{r[name]+=$2} END{for (n in r) if (r[n] >= 100) print r[n], n}' "
              "/proc/%d/smaps | sort -n | tail -8" % pid)


def settle(pid, seconds=3.0):
    """RSS once it stops moving (the trim after a drain runs on a timer)."""
    last, t_end = rss_kb(pid), time.monotonic() + seconds
    while time.monotonic() < t_end:
        time.sleep(0.5)
        now = rss_kb(pid)
        if now == last:
            break
        last = now
    return last


def cycle(gw, tmp, pid, n, size, base, paused=False):
    down = os.path.join(tmp, "down")
    if paused:
        gw.ctl("pause", "testworker")
    else:
        open(down, "w").close()
    t0 = time.monotonic()
    r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", str(n), "-w", "256", "-p",
                        "testworker", "-z", str(size)], capture_output=True, text=True, timeout=900)
    load = json.loads(r.stdout)
    wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] >= n, timeout=120, what="all queued")
    queued = settle(pid)
    st = gw.ctl_json("status")["spool"]
    print("  queued %d (%d waiting for a retry) in %.1f s; RSS %.1f MB: %.0f bytes per queued message above "
          "the start" % (st["depth"], st["waiting"], time.monotonic() - t0, queued / 1024,
                         (queued - base) * 1024 / st["depth"]))
    if paused:
        gw.ctl("resume", "testworker")
    else:
        os.unlink(down)
    t1 = time.monotonic()
    wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, timeout=900, step=0.5, what="drained")
    drained_s = time.monotonic() - t1
    time.sleep(2)  # the supervisor looks at its backlog every second to give the memory back
    after = settle(pid, 15.0)
    if os.environ.get("BENCH_SMAPS"):
        smaps(pid)
    print("  drained in %.1f s; RSS after %.1f MB (%+.0f %% of the start)" % (drained_s, after / 1024,
                                                                          (after - base) * 100 / base))
    return queued, after, load


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200000
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 250
    paused = len(sys.argv) > 3 and sys.argv[3] == "paused"
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o711)  # the worker (maybe another user) must see the down file
        gw = Gateway(tmp, config(tmp, n), "backlog")
        gw.start()
        pid = gw.daemon_pid()
        time.sleep(1)
        fresh = settle(pid)
        print("supervisor memory per queued message: %d messages of %d bytes, %s "
              "(machine loaded: figures of time are rough; bytes are not)"
              % (n, size, "the protocol paused" if paused else "every server down"))
        print("  fresh start: RSS %.1f MB" % (fresh / 1024))
        # A backlog first (WARMUP), so that the start the drain is compared with
        # is that of a daemon in service, not of an idle one.
        print("warm-up: %d messages" % WARMUP)
        cycle(gw, tmp, pid, WARMUP, size, fresh)
        base = settle(pid)
        print("  start: RSS %.1f MB (%+.1f MB from the fresh start)" % (base / 1024, (base - fresh) / 1024))
        if os.environ.get("BENCH_SMAPS"):
            smaps(pid)
        results = []
        for i in range(2):
            print("cycle %d" % (i + 1))
            results.append(cycle(gw, tmp, pid, n, size, base, paused))
        q1, a1, _ = results[0]
        q2, a2, _ = results[1]
        print("summary: %.0f bytes per queued message; after the drain %.1f MB vs %.1f MB at the start "
              "(%+.0f %%, target within 20 %%; %+.0f %% of the fresh start); second cycle peak %.1f MB vs first "
              "%.1f MB" % ((q1 - base) * 1024 / n, a1 / 1024, base / 1024, (a1 - base) * 100 / base,
                           (a1 - fresh) * 100 / fresh, q2 / 1024, q1 / 1024))
        for line in gw.log_text().splitlines():
            if "returned to the system" in line:
                print("  ucgwd: " + line.split(": ", 1)[-1])
        gw.stop()
        ok = a1 <= base * 1.2 and a2 <= base * 1.2
        print("within 20 %% of the start after each drain: %s" % ("yes" if ok else "NO"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
