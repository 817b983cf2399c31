#!/usr/bin/python3
"""The metadata protocols through an emulated link (tests/tools/linkem.c), before
and after issue #19's mechanisms, in the same run:

- before: the old behaviour, by configuration: a fixed window of 256
  (gateway.window_max 256), one MQTT connection (mqtt.connections 1), REST
  over HTTP/1.1 (rest.http2 off, to lpr-peer: 8 connections, one request each);
- after: the defaults: the adaptive window (up to 4096), up to 32 MQTT
  connections, REST over HTTPS to nginx, which speaks HTTP/2 (ALPN) and
  passes each request on to lpr-peer;
- batch (REST only): the defaults, REST over HTTP/1.1 to lpr-peer with
  rest.batch_max 100.

Each server is behind its own ucgw-linkem of the profile; fallback is off, so
that each protocol is measured by itself (the router spreads a backlog over the
other protocols of a message's chain); mosquitto keeps its
default Receive Maximum of 20. 250-byte detections, each until the server
acknowledged it (ucgw-load --wait, 5,000 outstanding). A first run warms up
(connections open, the window grows) and measures the rate; the next sends
about --seconds' worth at that rate, and again at its own rate while one took
less than half of --seconds (a warm-up's rate understates a fast path: on `lte`
MQTT's runs sized from it took 2 s and measured 56 % of the link, where runs of
28 s measure 72 %). --log: each gateway's warnings (connections dropped, no
PUBACK in time). Prints a table; asserts nothing.

    /usr/bin/python3 bench/bench_meta_link.py [--profiles lte,poor] [--protocols mqtt,websocket,rest]
        [--seconds 10] [--variants before,after,batch] [--set SECTION.KEY=VALUE]... [--log]
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from linkem import Link, payload_capacity  # noqa: E402
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from nginx import Nginx  # noqa: E402
from ucgwtest import BIN, Gateway, Scene, wait_for  # noqa: E402

SIZE = 250


def load(gw, proto, n):
    r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", str(n), "-w", "5000", "-p", proto,
                        "--wait", "-z", str(SIZE)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError("ucgw-load failed: %s %s" % (r.stdout, r.stderr))
    out = json.loads(r.stdout)
    if out.get("failed"):
        print("  %s: %d of %d not delivered: %s" % (proto, out["failed"], n, out.get("first_error")), flush=True)
    return out


def config(variant, links, mq, peer, ngx):
    # fallback off: each protocol by itself (the router would spread one's backlog over the others)
    after = variant == "after"
    if variant == "batch":
        return {"gateway": {"log_level": "warning"}, "fallback": {"enabled": False},
                "rest": {"base_url": "http://127.0.0.1:%d" % links["rest"].port, "batch_max": 100}}
    cfg = {"gateway": {"log_level": "warning"}, "fallback": {"enabled": False},
           "mqtt": {"broker_url": "127.0.0.1:%d" % links["mqtt"].port, "username": "edge", "password": "pw"},
           "websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % links["websocket"].port},
           "rest": {"base_url": ("https://127.0.0.1:%d" if after else "http://127.0.0.1:%d") % links["rest"].port}}
    if after:
        cfg["rest"]["ca_file"] = ngx.ca
    else:
        cfg["gateway"]["window_max"] = 256
        cfg["mqtt"]["connections"] = 1
        cfg["rest"]["http2"] = "off"
    return cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", default="lte,poor")
    ap.add_argument("--protocols", default="mqtt,websocket,rest")
    ap.add_argument("--variants", default="before,after,batch")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--log", action="store_true",
                    help="print how many warnings each gateway logged, and the first ten (a connection dropped...)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a configuration key for every variant (a number or text), e.g. rest.streams=128")
    a = ap.parse_args()
    overrides = []
    for item in a.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if not (section and name and value):
            ap.error("--set %s: not SECTION.KEY=VALUE" % item)
        overrides.append((section, name, int(value) if value.lstrip("-").isdigit() else value))
    s = Scene()
    rows = []
    try:
        mq = Mosquitto(s, users={"edge": "pw"})
        peer = LprPeer(s)
        ngx = Nginx(s, backend_port=peer.port)
        for profile in a.profiles.split(","):
            for variant in a.variants.split(","):
                rest_target = ngx.tls_port if variant == "after" else peer.port
                links = {"mqtt": Link(mq.port, profile=profile), "websocket": Link(peer.port, profile=profile),
                         "rest": Link(rest_target, profile=profile)}
                cfg = config(variant, links, mq, peer, ngx)
                for section, name, value in overrides:
                    cfg.setdefault(section, {})[name] = value
                gw = Gateway(s.tmp, cfg, "gw-%s-%s" % (profile, variant))
                gw.start()
                try:
                    wait_for(lambda: all(w["connected"] for w in gw.workers().values()), timeout=30,
                             what="servers")
                    for proto in a.protocols.split(",") if variant != "batch" else ["rest"]:
                        warm = load(gw, proto, 300 if variant == "before" else 3000)
                        n = max(300, int(warm["rate"] * a.seconds))
                        for _ in range(3):  # the warm-up's rate understates a fast path: its ramp weighs on so few
                            up0 = links[proto].stats()["up_bytes"]
                            g = load(gw, proto, n)
                            per_msg = (links[proto].stats()["up_bytes"] - up0) / n
                            if n / g["rate"] >= a.seconds / 2:
                                break
                            n = max(300, int(g["rate"] * a.seconds))
                        st = gw.ctl_json("stats")[proto]
                        health = "%s [window: %s]" % (gw.workers()[proto]["health"], st.get("window_state"))
                        cap = payload_capacity(profile) / SIZE
                        rows.append((profile, proto, variant, n, g["rate"], g["rate"] / cap, st.get("window"),
                                     health))
                        print("%s %s %s: %d msgs, %.0f/s, %.1f %% of capacity, %.0f bytes up a message, "
                              "window %s; %s" % (profile, proto, variant, n, g["rate"], 100 * g["rate"] / cap,
                                                 per_msg, st.get("window"), health), flush=True)
                finally:
                    if a.log:
                        warn = [l for l in gw.log_text().splitlines() if l.startswith(("<3>", "<4>"))]
                        print("  gateway log: %d warnings%s" % (len(warn), "".join("\n    " + l for l in warn[:10])))
                    gw.stop()
                    for link in links.values():
                        link.stop()
        print("\n| profile | protocol | variant | delivered/s | share of the payload capacity | window at the end |")
        print("| --- | --- | --- | --- | --- | --- |")
        for profile, proto, variant, n, rate, share, window, health in rows:
            print("| %s | %s | %s | %.0f | %.1f %% | %s |" % (profile, proto, variant, rate, 100 * share, window))
    finally:
        s.close()


if __name__ == "__main__":
    main()
