"""Fault tests: nothing accepted is ever lost.

A steady load of metadata (MQTT to a real mosquitto, REST and WebSocket to the
LPR stand-in) and files (SFTP and rsync to a real sshd) while workers are killed with
kill -9 again and again, the supervisor is killed with kill -9 and started
again, and the broker, the HTTP/WebSocket stand-in and sshd are stopped and
brought back. At the end every accepted
message and file has arrived, none corrupt; duplicates are counted. A second
test fills a small file system under the spool: refusals are errors, not loss."""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ctlclient import Ctl  # noqa: E402
from lprpeer import LprPeer  # noqa: E402
from sshd import Sshd  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402
from ucgwtest import GatewayTest, wait_for  # noqa: E402

USERS = {"edge": "pw", "reader": "r"}


def checksum(data):
    s = 0
    for b in data:
        s = (s * 31 + b) & 0xFFFFFFFFFFFFFFFF
    return s


class Load(threading.Thread):
    """Sends metadata and files until stopped; remembers what was accepted."""

    def __init__(self, gw, files_dir, rate=150, files=True, meta=("mqtt",), file_protocols=("testworker",)):
        super().__init__(daemon=True)
        self.files = files
        self.meta_protocols = meta
        self.file_protocols = file_protocols
        self.gw, self.dir, self.rate = gw, files_dir, rate
        self.accepted = {}        # id -> ("meta", payload bytes) or ("file", size, checksum)
        self.refused = {}         # reason -> count
        self.unanswered = 0       # requests cut off by a supervisor crash (never accepted)
        self.stop_flag = False
        self.n = 0

    def one(self, ctl):
        self.n += 1
        if self.files and self.n % 10 == 0:
            data = os.urandom(random.randint(1000, 200000))
            name = "img-%d.jpg" % self.n
            path = os.path.join(self.dir, name)
            with open(path, "wb") as f:
                f.write(data)
            proto = self.file_protocols[(self.n // 10) % len(self.file_protocols)]
            r = ctl.send_file(path, protocol=proto)
            os.remove(path)  # the caller may delete its copy once accepted
            what = ("file", len(data), checksum(data), name, proto)
        else:
            payload = json.dumps({"seq": self.n, "plate": "F%06d" % self.n, "pad": "x" * random.randint(0, 400)})
            proto = self.meta_protocols[self.n % len(self.meta_protocols)]
            r = ctl.send(payload, protocol=proto)
            what = ("meta", payload.encode(), proto)
        if r["ok"]:
            self.accepted[r["body"]["id"]] = what
        else:
            key = r.get("error", "?")
            self.refused[key] = self.refused.get(key, 0) + 1

    def run(self):
        ctl = None
        while not self.stop_flag:
            try:
                if ctl is None:
                    ctl = Ctl(self.gw.sock)
                self.one(ctl)
                time.sleep(1.0 / self.rate)
            except (OSError, ConnectionError):
                if ctl is not None:
                    self.unanswered += 1
                    ctl.close()
                ctl = None
                time.sleep(0.05)


class FaultTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.mq = Mosquitto(self, users=USERS, persistence=True)
        self.sub = Subscriber(self.mq.port, "lpr/test-cam-1/data", "reader", "r", durable=True)
        self.record = os.path.join(self.tmp, "files.txt")
        self.files = os.path.join(self.tmp, "camera")
        os.makedirs(self.files)

    def tearDown(self):
        self.sub.close()
        super().tearDown()

    def config(self):
        return {"gateway": {"restart_max_deaths": 1000, "restart_backoff_max_ms": 500, "job_timeout_ms": 5000},
                "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 2000},
                "mqtt": {"broker_url": self.mq.url(), "username": "edge", "password": "pw"},
                "testworker": {"record": self.record}}

    def arrived_files(self):
        try:
            with open(self.record) as f:
                return [l.split() for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def meta_arrivals(self):
        """id -> [payload, ...] over every receiver."""
        got = {}
        for m in self.sub.received():
            got.setdefault(m["props"].get("message-id"), []).append(m["payload"])
        seen = set()
        for peer in getattr(self, "peers", []):
            if peer.record in seen:  # a restarted stand-in appends to the same record
                continue
            seen.add(peer.record)
            for r in peer.records():
                if r["status"] == 200:
                    body = r["body"].encode()
                    if r["proto"] == "ws":  # the envelope
                        body = json.dumps(json.loads(r["body"])["data"], separators=(",", ":")).encode()
                    got.setdefault(r["id"], []).append(body)
        return got

    def file_arrivals(self, files):
        """id -> [(size, checksum)] from the test worker's record and the sshd directory."""
        got = {}
        for r in self.arrived_files():
            got.setdefault(r[0], []).append((int(r[1]), int(r[2])))
        remote = getattr(self, "remote", None)
        if remote:
            for i, w in files.items():
                p = os.path.join(remote, w[3])
                if os.path.exists(p):
                    with open(p, "rb") as f:
                        data = f.read()
                    got.setdefault(i, []).append((len(data), checksum(data)))
        return got

    def check_everything_arrived(self, load, restarts):
        meta = {i: w for i, w in load.accepted.items() if w[0] == "meta"}
        files = {i: w for i, w in load.accepted.items() if w[0] == "file"}

        def same(a, b):  # JSON bodies may come back re-serialised (the WebSocket envelope)
            return a == b or json.loads(a) == json.loads(b)

        def done():
            return set(meta) <= set(self.meta_arrivals()) and set(files) <= set(self.file_arrivals(files))
        try:
            wait_for(done, timeout=180, step=0.5, what="every accepted message to arrive")
        finally:
            by_id, fby = self.meta_arrivals(), self.file_arrivals(files)
            lost = [i for i in meta if i not in by_id] + [i for i in files if i not in fby]
            corrupt = [i for i in meta if i in by_id and any(not same(p, meta[i][1]) for p in by_id[i])]
            corrupt += [i for i in files if i in fby and any(x != tuple(files[i][1:3]) for x in fby[i])]
            dups = sum(len(v) - 1 for k, v in by_id.items() if k in meta) + \
                sum(len(v) - 1 for k, v in fby.items() if k in files)
            by_proto = {}
            for w in files.values():
                by_proto[w[4]] = by_proto.get(w[4], 0) + 1
            print("\nfigures: accepted %d (%d messages, %d files %s), delivered %d, lost %d, corrupt %d, "
                  "duplicated %d, refused %s, cut off by a crash before acceptance %d, restarts survived %s"
                  % (len(load.accepted), len(meta), len(files), by_proto, len(load.accepted) - len(lost),
                     len(lost), len(corrupt), dups, load.refused or 0, load.unanswered, restarts))
            if lost:
                print("lost: %s" % [(meta.get(i) or files.get(i))[2:] for i in lost[:20]])
        self.assertEqual(lost, [])
        self.assertEqual(corrupt, [])

    def test_kills_and_outages_lose_nothing(self):
        peer = LprPeer(self, name="peer")
        sshd = Sshd(self)
        self.peers, self.remote = [peer], sshd.remote
        cfg = self.config()
        cfg.update({
            "rest": {"base_url": peer.http_url(), "timeout": 3},
            "websocket": {"server_url": peer.ws_url(), "reconnect_delay": 0.3, "ack_timeout_ms": 3000},
            "sftp": {"host": "127.0.0.1", "port": sshd.port, "username": sshd.user, "key_file": sshd.user_key,
                     "known_hosts": sshd.known_hosts, "remote_path": sshd.remote, "timeout": 5},
            "rsync": {"remote_host": "127.0.0.1", "port": sshd.port, "remote_user": sshd.user,
                      "key_file": sshd.user_key, "known_hosts": sshd.known_hosts, "remote_path": sshd.remote,
                      "options": ["-a"], "timeout": 20}})
        # each protocol stands alone: an outage must be survived by waiting, not by rerouting
        cfg["fallback"] = {"enabled": False}
        gw = self.gateway(cfg)
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="all servers up")
        load = Load(gw, self.files, meta=("mqtt", "rest", "websocket"), file_protocols=("sftp", "rsync"))
        load.start()
        restarts = {"worker kill -9": 0, "supervisor kill -9": 0, "broker restarts": 0,
                    "http/ws stand-in restarts": 0, "sshd restarts": 0, "killed": {}}
        rnd = random.Random(11)
        try:
            for step in range(16):
                time.sleep(0.7)
                if step in (4, 11):
                    gw.proc.send_signal(signal.SIGKILL)
                    gw.proc.wait()
                    gw.log.close()
                    time.sleep(0.3)
                    gw.start()
                    restarts["supervisor kill -9"] += 1
                elif step == 6:
                    self.mq.stop()
                    time.sleep(2)
                    self.mq.start()
                    restarts["broker restarts"] += 1
                elif step == 8:
                    port = peer.port
                    peer.stop()
                    time.sleep(2)
                    peer = LprPeer(self, port=port, name="peer")
                    self.peers.append(peer)
                    restarts["http/ws stand-in restarts"] += 1
                elif step == 13:
                    sshd.stop()
                    time.sleep(2)
                    sshd.start()
                    restarts["sshd restarts"] += 1
                else:
                    name = rnd.choice(["mqtt", "rest", "websocket", "sftp", "rsync"])
                    pid = gw.workers()[name]["pid"]
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                        restarts["worker kill -9"] += 1
                        restarts["killed"][name] = restarts["killed"].get(name, 0) + 1
        finally:
            load.stop_flag = True
            load.join(30)
        self.assertGreater(len(load.accepted), 300)
        self.check_everything_arrived(load, restarts)
        try:
            wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, timeout=60, what="spool empty")
        except AssertionError as e:  # say what is left, and why
            left = gw.ctl_json("queue") + gw.ctl_json("queue", "dead")
            raise AssertionError("%s; left in the spool: %s; workers: %s" % (
                e, json.dumps(left[:10]), json.dumps(gw.workers()))) from None

    @unittest.skipUnless(os.getuid() == 0 and shutil.which("mount"), "needs root to mount a small tmpfs")
    def test_full_file_system_refuses_instead_of_losing(self):
        spool = os.path.join(self.tmp, "small")
        os.makedirs(spool)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", spool], capture_output=True)
        if r.returncode != 0:
            self.skipTest("cannot mount tmpfs here: %s" % r.stderr.decode().strip())
        def unmount():  # cleanups run after tearDown, whose rmtree could not remove a mount point
            subprocess.run(["umount", "-l", spool])
            if not self.keep_tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
        self.addCleanup(unmount)
        cfg = self.config()
        cfg["spool"]["dir"] = spool
        self.mq.stop()  # nothing drains: the spool fills
        gw = self.gateway(cfg)
        load = Load(gw, self.files, rate=2000)  # metadata and files: the file area is on it too
        load.start()
        wait_for(lambda: sum(load.refused.values()) > 20, timeout=60, what="refusals")
        load.stop_flag = True
        load.join(30)
        reasons = " | ".join(load.refused)
        print("\nrefusals: %s" % load.refused)
        self.assertIn("spool full: the file system of", reasons)
        self.assertIn("No space left on device", reasons)
        self.assertGreater(gw.ctl_json("status")["spool"]["rejected_full"], 20)
        self.mq.start()
        self.check_everything_arrived(load, {"spool full refusals": sum(load.refused.values())})


if __name__ == "__main__":
    unittest.main()
