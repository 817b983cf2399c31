#!/usr/bin/python3
"""The link's rate cap and byte count over an emulated link: one
tests/tools/linkem.c link shared by a mosquitto and an sshd (its rate and
buffers shared, as a camera's one uplink), a backlog of N images of 100 KiB
sent by SFTP, and detections (250 bytes, MQTT) sent one after another while
the backlog drains. Printed: the detections' latency (accept to PUBACK,
`send --wait`'s latency_ms) p50/p99 and how long the backlog took, without a
cap and with link.max_bytes_per_s at UCGW_BENCH_CAP_SHARE of the link's
capacity; and the bytes ucgw counted against the bytes the emulator carried.
Asserts nothing.

UCGW_LINK: lan, lte or poor (default); UCGW_BENCH_IMAGES (default 20);
UCGW_BENCH_CAP_SHARE (default 0.3)."""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from ctlclient import Ctl  # noqa: E402
from linkem import Link, payload_capacity  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from sshd import Sshd  # noqa: E402
from ucgwtest import Gateway, Scene, wait_for  # noqa: E402

PROFILE = os.environ.get("UCGW_LINK", "poor")
IMAGES = int(os.environ.get("UCGW_BENCH_IMAGES", "20"))
SHARE = float(os.environ.get("UCGW_BENCH_CAP_SHARE", "0.3"))
LINKEM = os.environ.get("UCGW_LINKEM", os.path.join(os.path.dirname(__file__), "..", "build", "bin", "ucgw-linkem"))
IMAGE = 100 * 1024


def run(s, link, mq, sshd, kh, cap, name):
    cfg = {"gateway": {"log_level": "warning", "job_timeout_ms": 3600000},
           "mqtt": {"broker_url": "127.0.0.1:%d" % link.port_for(mq.port)},
           "sftp": {"host": "127.0.0.1", "port": link.port, "username": sshd.user, "key_file": sshd.user_key,
                    "known_hosts": kh, "remote_path": sshd.remote, "timeout": 600},
           "link": {"max_bytes_per_s": cap}}
    gw = Gateway(s.tmp, cfg, name)
    gw.start()
    try:
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), timeout=60, what="servers")
        paths = []
        for i in range(IMAGES):
            p = os.path.join(s.tmp, "%s-%03d.jpg" % (name, i))
            with open(p, "wb") as f:
                f.write(os.urandom(IMAGE))
            paths.append(p)
        st0, used0 = link.stats(), gw.ctl_json("status")["link"]["day"]["used_bytes"]
        before = gw.ctl_json("stats")["sftp"]["success"]
        ctl = Ctl(gw.sock)
        t0 = time.monotonic()
        for p in paths:
            ctl.request("send-file", {"path": p, "protocol": "sftp"})
        for _ in paths:
            ctl.reply()
        ctl.close()
        payload = json.dumps({"plate": "ABC123", "confidence": 0.97, "camera": "gate-2", "pad": ""})
        payload = payload[:-2] + "x" * (250 - len(payload)) + '"}'
        lat, done = [], None
        while done is None:
            rc, out, err = gw.ctl("--json", "send", "--protocol", "mqtt", "--wait", payload)
            lat.append(json.loads(out)["latency_ms"])
            if gw.ctl_json("stats")["sftp"]["success"] - before >= IMAGES:
                done = time.monotonic() - t0
        time.sleep(1.0)  # the last wire counts (every 250 ms)
        st1, used1 = link.stats(), gw.ctl_json("status")["link"]["day"]["used_bytes"]
        carried = (st1["up_bytes"] - st0["up_bytes"]) + (st1["down_bytes"] - st0["down_bytes"])
        lat.sort()
        return {"backlog_s": done, "n": len(lat), "p50": statistics.median(lat),
                "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))], "counted": used1 - used0, "carried": carried}
    finally:
        gw.stop()


def main():
    s = Scene()
    link = None
    try:
        mq = Mosquitto(s)
        sshd = Sshd(s)
        link = Link(sshd.port, profile=PROFILE, binary=LINKEM, more_targets=(mq.port,))
        kh = sshd.known_hosts_as("127.0.0.1", link.port, "link_known_hosts")
        capacity = payload_capacity(PROFILE)
        cap = int(capacity * SHARE)
        print("link %s (%.0f KB/s each way), %d images of 100 KiB by SFTP, detections of 250 bytes by MQTT "
              "one after another meanwhile" % (PROFILE, capacity / 1000, IMAGES))
        for label, c in (("no cap", 0), ("max_bytes_per_s %d (%.0f%% of the link)" % (cap, SHARE * 100), cap)):
            r = run(s, link, mq, sshd, kh, c, "gw-cap%d" % c)
            print("%-40s backlog %5.1f s; %3d detections, latency p50 %6.0f ms p99 %6.0f ms; "
                  "bytes counted %d, carried by the link %d (%.1f%%)" %
                  (label, r["backlog_s"], r["n"], r["p50"], r["p99"], r["counted"], r["carried"],
                   100.0 * r["counted"] / r["carried"] if r["carried"] else 0.0))
    finally:
        if link:
            link.stop()
        s.close()


if __name__ == "__main__":
    main()
