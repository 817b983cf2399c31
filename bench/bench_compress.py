#!/usr/bin/python3
"""Bytes on the wire per detection, with and without compress, per protocol.

Each protocol's server sits behind its own ucgw-linkem (profile lan: the byte
counts do not depend on the profile, only the time they take would), whose
counters give what crossed the link each way: TCP payload, so every header,
frame and acknowledgment counts, not just the bodies. N reference detections
(tests/lib/detection.py, 354 bytes of JSON, records that differ as a stream of
them does) go through the gateway for each compress setting, then a batch:
REST with rest.batch_max 100 (the gateway joins them), MQTT and WebSocket with
messages that each carry an array of 100 detections. compress_min_bytes keeps
its default. Prints a table; asserts nothing.

--cpu: instead, on loopback (no link: CPU is what is measured there), the CPU
time the protocol's worker and ucgwd spend per detection, with and without,
one detection per message (-n 3000 or more: the clock counts 10 ms ticks).

    /usr/bin/python3 bench/bench_compress.py [--protocols mqtt,websocket,rest] [-n 500] [--cpu]
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "clients", "python"))
import detection  # noqa: E402
from linkem import Link, wait_drained  # noqa: E402
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402
from ucgw import UnifiedCommunicationGateway  # noqa: E402
from ucgwtest import Gateway, Scene, wait_for  # noqa: E402

PROFILE = "lan"
BATCH = 100
ALGS = {"rest": ("none", "gzip", "zstd"), "mqtt": ("none", "gzip", "zstd"), "websocket": ("none", "gzip")}


def section(proto, port, alg, batch):
    if proto == "rest":
        s = {"base_url": "http://127.0.0.1:%d" % port}
        if batch:
            s.update(batch_max=BATCH, batch_linger_ms=2000)
    elif proto == "mqtt":
        s = {"broker_url": "127.0.0.1:%d" % port}
    else:
        s = {"server_url": "ws://127.0.0.1:%d/lpr" % port}
    s["compress"] = alg
    return s


def messages(proto, n, batch):
    """What the camera hands over: n detections, alone or in arrays of BATCH (REST: the gateway batches)."""
    if not batch or proto == "rest":
        return [detection.text(i) for i in range(n)]
    return [json.dumps([detection.record(i + k) for k in range(BATCH)], ensure_ascii=False, separators=(",", ":"))
            for i in range(0, n, BATCH)]


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(scene, proto, alg, n, batch, servers, cpu=False):
    """Bytes up and down per detection through the link; with cpu, on loopback, the CPU seconds
    of the worker and of ucgwd per detection instead."""
    target, arrived = servers[proto]
    link = None if cpu else Link(target, profile=PROFILE)
    gw = Gateway(scene.tmp, {"gateway": {"log_level": "warning"},
                             proto: section(proto, target if cpu else link.port, alg, batch)},
                 "gw-%s-%s-%s%s" % (proto, alg, "batch" if batch else "one", "-cpu" if cpu else ""))
    gw.start()
    try:
        wait_for(lambda: gw.workers()[proto]["connected"], timeout=30, what=proto + " connected")
        msgs = messages(proto, n, batch)
        with UnifiedCommunicationGateway(socket_path=gw.sock, timeout=60) as c:
            r = c.send_metadata('{"warm":"up"}', protocol=proto, wait=True)
            assert r.success, r.error
            base = arrived()
            pids = (gw.workers()[proto]["pid"], gw.daemon_pid())
            if cpu:
                before = [cpu_s(p) for p in pids]
            else:
                wait_drained(link)
                before = link.stats()
            for m in msgs:
                c.send_metadata(m, protocol=proto)
            wait_for(lambda: arrived() - base >= len(msgs), timeout=120, what="%d messages" % len(msgs))
        if cpu:
            return tuple((cpu_s(p) - b) / n for p, b in zip(pids, before))
        wait_drained(link)
        after = link.stats()
        return ((after["up_bytes"] - before["up_bytes"]) / n, (after["down_bytes"] - before["down_bytes"]) / n)
    finally:
        gw.stop()
        if link:
            link.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocols", default="mqtt,websocket,rest")
    ap.add_argument("-n", type=int, default=500, help="detections per run (a multiple of %d)" % BATCH)
    ap.add_argument("--cpu", action="store_true", help="CPU per detection on loopback instead of bytes on a link")
    a = ap.parse_args()
    n = max(BATCH, a.n // BATCH * BATCH)
    s = Scene()
    rows = []
    try:
        peer = LprPeer(s)
        mq = Mosquitto(s)
        sub = Subscriber(mq.port, "lpr/#")
        servers = {"rest": (peer.port, lambda: sum(len(json.loads(r["body"])) if r["body"].startswith("[{\"id\"")
                                                   else 1 for r in peer.records("http"))),
                   "websocket": (peer.port, lambda: len(peer.records("ws"))),
                   "mqtt": (mq.port, lambda: len(sub.received()))}
        record = len(detection.text(1).encode())
        for proto in a.protocols.split(","):
            for batch in (False,) if a.cpu else (False, True):  # a batch's few messages: below the clock's tick
                plain = None
                for alg in ALGS[proto]:
                    up, down = run(s, proto, alg, n, batch, servers, a.cpu)
                    plain = plain or up
                    what = ("batch of %d" % BATCH) + (" (rest.batch_max)" if proto == "rest" else " (one message)") \
                        if batch else "one per message"
                    rows.append((proto, what, alg, up, down, 100 * (1 - up / plain) if plain else 0))
                    print(("%s, %s, compress %s: %.1f µs of the worker's CPU, %.1f of ucgwd's per detection"
                           if a.cpu else "%s, %s, compress %s: %.1f bytes up, %.1f down per detection")
                          % ((proto, what, alg) + ((up * 1e6, down * 1e6) if a.cpu else (up, down))), flush=True)
        sub.close()
        if a.cpu:
            print("\nloopback; CPU per detection (µs), %d detections per run\n" % n)
            print("| protocol | sent as | compress | worker | ucgwd |")
            print("| --- | --- | --- | --- | --- |")
            for proto, what, alg, w, d, _ in rows:
                print("| %s | %s | %s | %.1f | %.1f |" % (proto, what, alg, w * 1e6, d * 1e6))
            return
        print("\nprofile %s; the reference detection is %d bytes of JSON; bytes per detection on the link "
              "(TCP payload, headers and acknowledgments included), %d detections per run\n" % (PROFILE, record, n))
        print("| protocol | sent as | compress | bytes up per detection | bytes down | saved up |")
        print("| --- | --- | --- | --- | --- | --- |")
        for proto, what, alg, up, down, saved in rows:
            print("| %s | %s | %s | %.1f | %.1f | %.0f %% |" % (proto, what, alg, up, down, saved))
    finally:
        s.close(remove=not os.environ.get("UCGW_KEEP_TMP"))


if __name__ == "__main__":
    main()
