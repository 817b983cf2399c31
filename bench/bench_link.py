#!/usr/bin/python3
"""Every protocol through an emulated link (tests/tools/linkem.c), beside what a user
would pick instead, on the same link in the same run.

One ucgw-linkem carries the camera's uplink to the three servers (mosquitto, lpr-peer
for REST and WebSocket, sshd): one rate and one buffer each way, shared. Per profile:

- metadata, 250-byte detections, each until the server's acknowledgement: ucgw (the
  default configuration, ucgw-load pipelining `send --wait`) for mqtt, rest and
  websocket, beside the library used directly (bench_mqtt: libmosquitto, MQTT 3.1.1,
  1,000 in flight; bench_rest: libcurl, ucgw's 8 connections; bench_ws:
  libwebsockets, ucgw's window of 256) and a local mosquitto bridging to the broker
  over the link (MQTT 3.1.1, max_inflight_messages 1000, as a user would set it for
  a link; counted where the broker delivers them);
- files of 100 KiB (images), each until acknowledged: ucgw sftp and rsync beside
  OpenSSH `sftp -b` in one session and `rsync -a -e ssh` of the directory; with
  --large-mib, one file of that size too (200 MiB take 84 s on lte, each);
- each protocol is measured by itself (fallback.enabled false: the router would spread its
  backlog over the other protocols of its chain), then all of a kind together with
  protocol auto in the default configuration;
- the drain (the default configuration, each kind's first choice named): a camera's 10 minutes at 10 detections/s and 1 image/s (6,000 and 600)
  accumulated while the link is down, then up: seconds until ucgw has all of them
  acknowledged, against the seconds the link's bandwidth needs for their bytes.

Each throughput run first sends a few, then as many as take about --seconds at the
rate the few went. The link's payload capacity is its rate in bytes per second (the
emulator charges TCP's payload, no headers); shares are of that. Prints a markdown
table; asserts nothing. The loopback figures, with CPU per message: bench_protocols.py.

    /usr/bin/python3 bench/bench_link.py [--profiles lte,poor] [--large-mib 200]
        [--drain mqtt+sftp,websocket+rsync] [--protocols mqtt,rest,...] [--seconds 10]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "lib"))
from ctlclient import Ctl  # noqa: E402
from linkem import Link, PROFILES, payload_capacity  # noqa: E402
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402
from sshd import Sshd  # noqa: E402
from ucgwtest import BIN, Gateway, Scene, free_port, wait_for, wait_port  # noqa: E402

DETECTION = 250
IMAGE = 100 * 1024
REST_CONNECTIONS, WS_WINDOW = 8, 256  # ucgw's defaults (rest.connections, gateway.window)
DRAIN_DETECTIONS, DRAIN_IMAGES = 6000, 600
META = ("mqtt", "rest", "websocket")
FILES = ("sftp", "rsync")


def run_json(argv, timeout=900):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s %s" % (" ".join(argv), r.returncode, r.stdout, r.stderr))
    return json.loads(r.stdout)


class World:
    """The servers, one link in front of all three, and the images."""

    def __init__(self, scene):
        self.scene = scene
        self.mq = Mosquitto(scene, users={"edge": "pw"})
        self.peer = LprPeer(scene)
        self.sshd = Sshd(scene)
        self.images_dir = os.path.join(scene.tmp, "images")
        os.makedirs(self.images_dir)
        self.images = []
        for i in range(DRAIN_IMAGES):
            p = os.path.join(self.images_dir, "img%04d.jpg" % i)
            with open(p, "wb") as f:
                f.write(os.urandom(IMAGE))
            self.images.append(p)
        self.link = None
        self.bridge = None

    def start_link(self, profile):
        self.link = Link(self.mq.port, profile=profile, more_targets=(self.peer.port, self.sshd.port))
        self.known_hosts = self.sshd.known_hosts_as("127.0.0.1", self.ssh_port(), "known_hosts_link")

    def stop_link(self):
        self.link.stop()
        self.link = None

    def mqtt_port(self):
        return self.link.port_for(self.mq.port)

    def peer_port(self):
        return self.link.port_for(self.peer.port)

    def ssh_port(self):
        return self.link.port_for(self.sshd.port)

    def ssh_args(self):
        return ["-o", "UserKnownHostsFile=" + self.known_hosts, "-o", "StrictHostKeyChecking=yes",
                "-i", self.sshd.user_key, "-o", "BatchMode=yes"]

    def clear_remote(self):
        d = self.sshd.remote
        for f in os.listdir(d):
            p = os.path.join(d, f)
            if os.path.isdir(p):
                shutil.rmtree(p)
            else:
                os.remove(p)

    def gateway_config(self):
        s = self.sshd
        return {"gateway": {"log_level": "warning"},
                "mqtt": {"broker_url": "127.0.0.1:%d" % self.mqtt_port(), "username": "edge", "password": "pw"},
                "rest": {"base_url": "http://127.0.0.1:%d" % self.peer_port()},
                "websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % self.peer_port()},
                "sftp": {"host": "127.0.0.1", "port": self.ssh_port(), "username": s.user, "key_file": s.user_key,
                         "known_hosts": self.known_hosts, "remote_path": s.remote},
                "rsync": {"remote_host": "127.0.0.1", "port": self.ssh_port(), "remote_user": s.user,
                          "key_file": s.user_key, "known_hosts": self.known_hosts, "remote_path": s.remote}}

    def gateway(self, name, alone=False):
        """alone: each protocol by itself (fallback.enabled false): the router would otherwise
        spread a protocol's backlog over the other protocols of its fallback chain."""
        cfg = self.gateway_config()
        if alone:
            cfg["fallback"] = {"enabled": False}
        gw = Gateway(self.scene.tmp, cfg, name)
        gw.start()
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), timeout=60, what="workers connected")
        return gw


# ---- one measurement each: (items, seconds) ----

def ucgw_meta(world, gw, proto, n):
    r = run_json([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", str(n), "-w", str(min(n, 5000)), "-p", proto,
                  "--wait", "-z", str(DETECTION)])
    if r.get("failed"):
        raise RuntimeError("ucgw %s: %d failed: %s" % (proto, r["failed"], r.get("first_error")))
    return n, r["seconds"]


def direct_meta(world, proto, n):
    if proto == "mqtt":
        argv = [os.path.join(BIN, "bench_mqtt"), "127.0.0.1", str(world.mqtt_port()), "edge", "pw", str(n), "1000",
                "--size", str(DETECTION)]
    elif proto == "rest":
        argv = [os.path.join(BIN, "bench_rest"), "http://127.0.0.1:%d/api/lpr/data" % world.peer_port(), str(n),
                str(REST_CONNECTIONS), "--size", str(DETECTION)]
    else:
        argv = [os.path.join(BIN, "bench_ws"), "ws://127.0.0.1:%d/lpr" % world.peer_port(), str(n),
                "--window", str(WS_WINDOW), "--size", str(DETECTION)]
    world.peer.reset()
    t0 = time.monotonic()
    run_json(argv)
    return n, time.monotonic() - t0  # with its connect, as ucgw-load's figure has none to pay


def start_bridge(world):
    """A local mosquitto that bridges bench/# to the broker over the link."""
    d = os.path.join(world.scene.tmp, "bridge")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    conf = os.path.join(d, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write("\n".join((["user root"] if os.getuid() == 0 else []) + [
            "log_dest stderr", "log_type error", "persistence false", "max_queued_messages 0",
            "max_inflight_messages 1000", "set_tcp_nodelay true", "listener %d 127.0.0.1" % port,
            "allow_anonymous true", "connection uplink", "address 127.0.0.1:%d" % world.mqtt_port(),
            "remote_username edge", "remote_password pw", "remote_clientid bench-bridge",
            "bridge_protocol_version mqttv311", "cleansession true", "topic bench/# out 1", ""]))
    log = open(os.path.join(d, "log"), "ab")
    proc = world.scene.spawn(["/usr/sbin/mosquitto", "-c", conf], stdout=log, stderr=log)
    log.close()
    wait_port(port, "the bridging mosquitto")
    time.sleep(1.5)  # its bridge connects over the link
    return proc, port


def bridge_meta(world, n):
    proc, port = world.bridge
    sub = Subscriber(world.mq.port, topic="bench/#", username="edge", password="pw", qos=0)
    try:
        t0 = time.monotonic()
        run_json([os.path.join(BIN, "bench_mqtt"), "127.0.0.1", str(port), "edge", "pw", str(n), "1000",
                  "--size", str(DETECTION)])
        wait_for(lambda: len(sub.messages) >= n, timeout=900, step=0.01, what="bridged messages at the broker")
        return n, time.monotonic() - t0
    finally:
        sub.close()


def send_files(gw, proto, paths):
    """Each file by `send-file --wait`, all in flight at once; seconds until every one is acknowledged."""
    ctl = Ctl(gw.sock)
    try:
        t0 = time.monotonic()
        for p in paths:
            fd = os.open(p, os.O_RDONLY)
            try:
                ctl.request("send-file", {"path": p, "fd": True, "protocol": proto, "wait": True}, fd)
            finally:
                os.close(fd)
        for _ in paths:
            m = ctl.reply(timeout=3600)
            status = (m.get("body") or {}).get("status")
            if not m.get("ok") or status != "ok":
                raise RuntimeError("ucgw %s: a file was not delivered: %s" % (proto, m))
        return len(paths), time.monotonic() - t0
    finally:
        ctl.close()


def ucgw_files(world, gw, proto, paths):
    world.clear_remote()
    return send_files(gw, proto, paths)


def direct_files(world, proto, paths):
    world.clear_remote()
    ssh = world.ssh_args()
    dest = "%s@127.0.0.1" % world.sshd.user
    t0 = time.monotonic()
    if proto == "sftp":
        batch = os.path.join(world.scene.tmp, "sftp-batch")
        with open(batch, "w") as f:
            f.writelines("put %s %s/\n" % (p, world.sshd.remote) for p in paths)
        subprocess.run(["sftp", "-q", "-P", str(world.ssh_port()), *ssh, "-b", batch, dest], check=True,
                       capture_output=True, timeout=3600)
    else:
        src = os.path.join(world.scene.tmp, "rsync-src")
        shutil.rmtree(src, ignore_errors=True)
        os.makedirs(src)
        for p in paths:
            os.link(p, os.path.join(src, os.path.basename(p)))
        t0 = time.monotonic()
        subprocess.run(["rsync", "-a", "-e", "ssh -p %d %s" % (world.ssh_port(), " ".join(ssh)), src + "/",
                        "%s:%s/" % (dest, world.sshd.remote)], check=True, capture_output=True, timeout=3600)
    return len(paths), time.monotonic() - t0


def sized(measure, probe, most, seconds):
    """measure(n) -> (n, s): a probe of n=probe, then as many as take about `seconds` at its rate."""
    n, s = measure(probe)
    for _ in range(2):  # a probe's rate understates a fast path: its connect weighs on so few
        if s >= seconds / 2 or n >= most:
            break
        n, s = measure(max(probe, min(most, int(n / s * seconds))))
    return n, s


# ---- the drain ----

def drain(world, meta, files, profile, cap_factor):
    """The camera's 10 minutes while the link is down, then up: seconds until all acknowledged."""
    gw = world.gateway("gw-drain-%s-%s-%s" % (profile, meta, files))
    world.clear_remote()
    load = sender = None
    try:
        t_down = time.monotonic()
        world.link.down()
        load = subprocess.Popen([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", str(DRAIN_DETECTIONS), "-w",
                                 str(DRAIN_DETECTIONS), "-p", meta, "--wait", "-z", str(DETECTION)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        result = {}

        def send_all():
            try:
                send_files(gw, files, world.images)
                result["ok"] = True
            except (ConnectionError, OSError, RuntimeError) as e:
                result["error"] = str(e)  # or the drain gave up and stopped ucgwd
        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        wait_for(lambda: gw.ctl_json("status")["spool"]["accepted"] >= DRAIN_DETECTIONS + DRAIN_IMAGES,
                 timeout=120, step=0.2, what="the backlog accepted")
        time.sleep(1)
        t_up = time.monotonic()
        world.link.up()
        payload = DRAIN_DETECTIONS * DETECTION + DRAIN_IMAGES * IMAGE
        need = payload / payload_capacity(profile)
        deadline = t_up + cap_factor * need + 20
        done, errors = {}, []
        while time.monotonic() < deadline and len(done) < 2 and not errors:
            if "meta" not in done and load.poll() is not None:
                if load.returncode != 0 or json.loads(load.stdout.read()).get("failed"):
                    errors.append("ucgw-load failed")
                done["meta"] = time.monotonic() - t_up
            if "files" not in done and not sender.is_alive():
                if not result.get("ok"):
                    errors.append(result.get("error", "?"))
                done["files"] = time.monotonic() - t_up
            time.sleep(0.05)
        if errors:
            raise RuntimeError("drain %s+%s: %s" % (meta, files, "; ".join(errors)))
        st = gw.ctl_json("stats")
        return {"meta": meta, "files": files, "need": need, "done": done, "stats": st,
                "elapsed": time.monotonic() - t_up, "outage": t_up - t_down}
    finally:
        world.link.up()
        if load and load.poll() is None:
            load.kill()
        if load:
            load.communicate()
        gw.kill()


# ---- report ----

def row(what, n, s, unit, size, cap):
    rate = n / s
    return {"what": what, "rate": rate, "unit": unit, "share": rate * size / cap, "n": n, "s": s}


def run_profile(world, profile, args):
    cap = payload_capacity(profile)
    world.start_link(profile)
    rows = []
    T = args.seconds
    try:
        gw = world.gateway("gw-" + profile, alone=True)
        for proto in [p for p in META if p in args.protocols]:
            most = int(cap / DETECTION * T * 1.5)
            n, s = sized(lambda k: ucgw_meta(world, gw, proto, k), 200, most, T)
            rows.append(row("ucgw %s" % proto, n, s, "msgs", DETECTION, cap))
            n, s = sized(lambda k: direct_meta(world, proto, k), 500, most, T)
            anchor = {"mqtt": "libmosquitto direct, MQTT 3.1.1, 1,000 in flight",
                      "rest": "libcurl direct, %d connections" % REST_CONNECTIONS,
                      "websocket": "libwebsockets direct, window %d" % WS_WINDOW}[proto]
            rows.append(row(anchor, n, s, "msgs", DETECTION, cap))
            if proto == "mqtt":
                world.bridge = start_bridge(world)
                n, s = sized(lambda k: bridge_meta(world, k), 500, most, T)
                rows.append(row("local mosquitto bridging (MQTT 3.1.1)", n, s, "msgs", DETECTION, cap))
                world.bridge[0].terminate()
                world.bridge[0].wait(10)
        for proto in [p for p in FILES if p in args.protocols]:
            most = len(world.images)
            n, s = sized(lambda k: ucgw_files(world, gw, proto, world.images[:k]), 10, most, T)
            rows.append(row("ucgw %s" % proto, n, s, "files", IMAGE, cap))
            n, s = sized(lambda k: direct_files(world, proto, world.images[:k]), 10, most, T)
            anchor = {"sftp": "OpenSSH `sftp -b`, one session", "rsync": "`rsync -a -e ssh` of the directory"}[proto]
            rows.append(row(anchor, n, s, "files", IMAGE, cap))
        if args.large_mib:
            large = os.path.join(world.scene.tmp, "large.bin")
            if not os.path.exists(large):
                with open(large, "wb") as f:
                    for _ in range(args.large_mib):
                        f.write(os.urandom(1 << 20))
            size = args.large_mib << 20
            for proto in [p for p in FILES if p in args.protocols]:
                try:
                    _, s = ucgw_files(world, gw, proto, [large])
                    rows.append(row("ucgw %s, one %d MiB file" % (proto, args.large_mib), size / 1e6, s, "MB", 1e6, cap))
                except RuntimeError as e:
                    print("ucgw %s, one %d MiB file: %s" % (proto, args.large_mib, e), flush=True)
                _, s = direct_files(world, proto, [large])
                rows.append(row("%s, one %d MiB file" % ({"sftp": "OpenSSH `sftp`", "rsync": "`rsync -e ssh`"}[proto],
                                                         args.large_mib), size / 1e6, s, "MB", 1e6, cap))
        gw.stop()
        if args.auto:
            gw = world.gateway("gw-auto-" + profile)
            most = int(cap / DETECTION * T * 1.5)
            n, s = sized(lambda k: ucgw_meta(world, gw, "auto", k), 200, most, T)
            rows.append(row("ucgw auto (default chains: mqtt, rest, websocket together)", n, s, "msgs", DETECTION, cap))
            n, s = sized(lambda k: ucgw_files(world, gw, "auto", world.images[:k]), 10, len(world.images), T)
            rows.append(row("ucgw auto (default chains: sftp, rsync together)", n, s, "files", IMAGE, cap))
            gw.stop()
        drains = [drain(world, m, f, profile, args.drain_cap) for m, f in args.drain]
    finally:
        world.stop_link()
    return rows, drains


def print_profile(profile, rows, drains):
    delay, rate = PROFILES[profile]
    print("\n### %s: %d ms each way (RTT %d ms), %g Mbit/s; payload capacity %.2f MB/s (%.0f detections of %d "
          "bytes/s, %.1f images of 100 KiB/s)\n" % (profile, delay, 2 * delay, rate / 1000,
                                                     payload_capacity(profile) / 1e6,
                                                     payload_capacity(profile) / DETECTION, DETECTION,
                                                     payload_capacity(profile) / IMAGE))
    print("| path | delivered/s | share of the link's payload capacity | measured |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        rate = "%.2f" % r["rate"] if r["rate"] < 10 else "{:,.0f}".format(r["rate"])
        print("| %s | %s %s | %.1f %% | %s in %.1f s |" % (r["what"], rate, r["unit"], 100 * r["share"],
                                                      "{:g}".format(r["n"]), r["s"]))
    if drains:
        print("\ndrain: %d detections and %d images accumulated while the link was down, then up:\n"
              % (DRAIN_DETECTIONS, DRAIN_IMAGES))
        print("| detections + images | all acknowledged after | the link's bandwidth needs | ratio |")
        print("| --- | --- | --- | --- |")
        for d in drains:
            carried = "down %.0f s; carried by " % d["outage"] + ", ".join("%s %d" % (p, v["success"]) for p, v in sorted(d["stats"].items()) if v.get("success"))
            if len(d["done"]) == 2:
                t = max(d["done"].values())
                print("| %s + %s | %.1f s (detections %.1f s, images %.1f s; %s) | %.1f s | %.2f |"
                      % (d["meta"], d["files"], t, d["done"]["meta"], d["done"]["files"], carried, d["need"],
                         t / d["need"]))
            else:
                left = carried
                print("| %s + %s | not after %.0f s (%s; %s) | %.1f s | > %.1f |"
                      % (d["meta"], d["files"], d["elapsed"],
                         ", ".join("%s done in %.1f s" % kv for kv in d["done"].items()) or "neither done",
                         left, d["need"], d["elapsed"] / d["need"]))
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", default="lte,poor", help="comma-separated: lan, lte, poor (default lte,poor)")
    ap.add_argument("--protocols", default=",".join(META + FILES), help="comma-separated subset of %(default)s, or none (only the drain)")
    ap.add_argument("--large-mib", type=int, default=0, help="also one file of this many MiB (0: not)")
    ap.add_argument("--drain", default="mqtt+sftp,websocket+rsync",
                    help="comma-separated META+FILE pairs for the drain test, or 'none' (default %(default)s)")
    ap.add_argument("--drain-cap", type=float, default=3.0,
                    help="give up a drain after this many times what the bandwidth needs, plus 20 s (default 3)")
    ap.add_argument("--no-auto", dest="auto", action="store_false",
                    help="skip the runs with protocol auto (all protocols of a kind together)")
    ap.add_argument("--seconds", type=float, default=10.0, help="about how long each throughput run lasts")
    args = ap.parse_args()
    args.profiles = [p for p in args.profiles.split(",") if p]
    args.protocols = [p for p in args.protocols.split(",") if p and p != "none"]
    for p in args.profiles:
        if p not in PROFILES:
            ap.error("unknown profile %r (lan, lte, poor)" % p)
    for p in args.protocols:
        if p not in META + FILES:
            ap.error("unknown protocol %r" % p)
    args.drain = [] if args.drain == "none" else [tuple(x.split("+")) for x in args.drain.split(",") if x]
    for pair in args.drain:
        if len(pair) != 2 or pair[0] not in META or pair[1] not in FILES:
            ap.error("--drain takes META+FILE pairs such as mqtt+sftp, not %r" % "+".join(pair))
    scene = Scene(prefix="ucgw-bench-link-")
    try:
        world = World(scene)
        print("ucgw through ucgw-linkem, default configuration; 250-byte detections, 100 KiB images", flush=True)
        for profile in args.profiles:
            rows, drains = run_profile(world, profile, args)
            print_profile(profile, rows, drains)
    finally:
        scene.close()


if __name__ == "__main__":
    main()
