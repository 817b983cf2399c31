#!/usr/bin/python3
"""REST and WebSocket: the gateway beside the client libraries used directly,
against the same lpr-peer in the same run.

1. Throughput: N messages of 200 bytes, each acknowledged by the server
   (HTTP 2xx; a WebSocket ack), by bench_rest (libcurl, the same number of
   keep-alive connections) and bench_ws (libwebsockets, the worker's window),
   then the same N through ucgwd with ucgw-load pipelining `send --wait`
   requests on the control socket (each reply is the delivery outcome).
2. Latency at a fixed 1,000 messages/s, the same way; the gateway's figure
   runs from the request on the control socket to its delivery outcome, so it
   includes the spool, the router, the worker and the server's answer.
3. REST throughput again with lpr-peer answering each POST NET_DELAY_MS
   after it arrived, as a server across a network does: there the connections'
   round trips bound both paths, not this machine's two cores.

Each figure is the median of UCGW_BENCH_REPEAT runs (default 3): this machine
is noisy. Nothing is asserted. The CPU time each process spent per message is
printed too, and how often each blocked (voluntary context switches, i.e.
wake-ups): with the server on the same small machine, the throughput of either
path is bounded by the CPU all its processes need together, and on this
paravirtualised VM wake-ups are dear (a pipe round trip between two processes,
`perf bench sched pipe`, takes about 20 microseconds).

    UCGW_BUILD_DIR=build /usr/bin/python3 bench/bench_http_ws.py
    UCGW_BENCH_N=100000 UCGW_BENCH_REPEAT=3 ...
"""
import json
import os
import resource
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from lprpeer import LprPeer  # noqa: E402
from ucgwtest import BIN, Gateway, Scene, proc_number, wait_for  # noqa: E402

N = int(os.environ.get("UCGW_BENCH_N", "100000"))  # 20,000 took 0.3 s on a fast machine: too short to be steady
REPEAT = int(os.environ.get("UCGW_BENCH_REPEAT", "3"))
RATE, RATE_N = 1000, 3000
CONNECTIONS, WINDOW, SIZE = 8, 256, 200
NET_DELAY_MS, NET_N = 2, 4000


def cpu_s(pid):
    """User + system CPU seconds of a running process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime, ru.ru_nvcsw


def sample(pids):
    # voluntary context switches: how often a process blocked
    s = {name: (cpu_s(pid), proc_number(pid, "status", "voluntary_ctxt_switches")) for name, pid in pids.items()}
    s["client"] = children()
    return s


def run(argv, pids):
    """Run a client; its JSON result gains "cpu_us" and "wakeups": CPU and blocking per message
    of it and of pids {name: pid}."""
    before = sample(pids)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s %s" % (" ".join(argv), r.returncode, r.stdout, r.stderr))
    out = json.loads(r.stdout)
    after = sample(pids)
    out["cpu_us"] = {k: (after[k][0] - before[k][0]) * 1e6 / out["messages"] for k in after}
    out["wakeups"] = {k: (after[k][1] - before[k][1]) / out["messages"] for k in after}
    return out


def median(runs, key):
    return statistics.median(r[key] for r in runs)


class Bench:
    def __init__(self, scene):
        self.peer = LprPeer(scene)
        cfg = {"gateway": {"log_level": "warning", "window": WINDOW},
               "rest": {"base_url": self.peer.http_url(), "connections": CONNECTIONS},
               "websocket": {"server_url": self.peer.ws_url()}}
        self.gw = Gateway(scene.tmp, cfg, "gw")
        self.gw.start()
        wait_for(lambda: all(w["connected"] for w in self.gw.workers().values()), what="rest and websocket up")

    def reset_peer(self):
        """Its record file would otherwise grow by every run."""
        self.peer.reset()

    def direct(self, proto, n, rate=None):
        if proto == "rest":
            argv = [os.path.join(BIN, "bench_rest"), self.peer.http_url() + "/api/lpr/data", str(n), str(CONNECTIONS)]
        else:
            argv = [os.path.join(BIN, "bench_ws"), self.peer.ws_url(), str(n), "--window", str(WINDOW)]
        argv += ["--size", str(SIZE)] + (["--rate", str(rate)] if rate else [])
        self.reset_peer()
        return run(argv, {"lpr-peer": self.peer.proc.pid})

    def gateway(self, proto, n, rate=None):
        argv = [os.path.join(BIN, "ucgw-load"), "-s", self.gw.sock, "-n", str(n), "-p", proto, "--wait",
                "-z", str(SIZE), "-w", "100" if rate else "1000"] + (["--rate", str(rate)] if rate else [])
        self.reset_peer()
        worker = self.gw.workers()[proto]["pid"]
        return run(argv, {"lpr-peer": self.peer.proc.pid, "ucgwd": self.gw.proc.pid, "worker": worker})

    def measure(self, proto):
        out = {}
        for path in ("direct", "gateway"):
            f = getattr(self, path)
            out[path] = [f(proto, N) for _ in range(REPEAT)]
            out[path + "_lat"] = [f(proto, RATE_N, RATE) for _ in range(REPEAT)]
        if proto == "rest":
            self.peer.delay(NET_DELAY_MS)
            try:
                for path in ("direct", "gateway"):
                    out[path + "_net"] = [getattr(self, path)(proto, NET_N) for _ in range(REPEAT)]
            finally:
                self.peer.delay(0)
        return out


def print_results(res):
    print("\nthroughput: %d messages of %d bytes, each acknowledged by lpr-peer; median of %d runs" % (N, SIZE, REPEAT))
    print("(REST: %d keep-alive connections; WebSocket: %d unacked at most)" % (CONNECTIONS, WINDOW))
    print("%-10s %12s %12s %7s" % ("protocol", "direct/s", "gateway/s", "ratio"))
    for proto, r in res.items():
        d, g = median(r["direct"], "rate"), median(r["gateway"], "rate")
        print("%-10s %12.0f %12.0f %7.2f" % (proto, d, g, g / d))
    print("\nCPU per message in the throughput runs, microseconds (client: bench_rest/bench_ws or ucgw-load)")
    for proto, r in res.items():
        for path in ("direct", "gateway"):
            names = sorted(r[path][0]["cpu_us"])
            cpu = {k: statistics.median(x["cpu_us"][k] for x in r[path]) for k in names}
            print("%-10s %-8s total %5.1f: %s" % (proto, path, sum(cpu.values()),
                                                  ", ".join("%s %.1f" % (k, v) for k, v in cpu.items())))
    print("\nwake-ups per message in the throughput runs (voluntary context switches)")
    for proto, r in res.items():
        for path in ("direct", "gateway"):
            names = sorted(r[path][0]["wakeups"])
            w = {k: statistics.median(x["wakeups"][k] for x in r[path]) for k in names}
            print("%-10s %-8s %s" % (proto, path, ", ".join("%s %.2f" % (k, v) for k, v in w.items())))
    print("\nlatency at %d messages/s (%d messages; gateway: control socket request to delivery outcome)" %
          (RATE, RATE_N))
    print("%-10s %18s %18s %18s" % ("protocol", "direct p50/p99 ms", "gateway p50/p99", "added p50/p99"))
    for proto, r in res.items():
        d50, d99 = median(r["direct_lat"], "p50_ms"), median(r["direct_lat"], "p99_ms")
        g50, g99 = median(r["gateway_lat"], "p50_ms"), median(r["gateway_lat"], "p99_ms")
        print("%-10s %8.3f / %7.3f %8.3f / %7.3f %8.3f / %7.3f" % (proto, d50, d99, g50, g99, g50 - d50, g99 - d99))
    for proto, r in res.items():
        if "direct_net" not in r:
            continue
        d, g = median(r["direct_net"], "rate"), median(r["gateway_net"], "rate")
        print("\n%s throughput with the server answering %d ms after each request (a network's round trip),"
              " %d messages, %d connections:" % (proto, NET_DELAY_MS, NET_N, CONNECTIONS))
        print("%-10s %12s %12s %7s" % ("protocol", "direct/s", "gateway/s", "ratio"))
        print("%-10s %12.0f %12.0f %7.2f" % (proto, d, g, g / d))


def main():
    scene = Scene()
    try:
        b = Bench(scene)
        res = {proto: b.measure(proto) for proto in ("rest", "websocket")}
        b.gw.stop()
        print_results(res)
        if os.environ.get("UCGW_BENCH_JSON"):
            print(json.dumps(res))
    finally:
        scene.close()


if __name__ == "__main__":
    main()
