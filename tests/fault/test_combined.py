"""Faults in combination, with fallback on (issue 18): kill -9 of workers and of
ucgwd, restarts of the broker, the HTTP/WebSocket server and sshd, and a black
hole in front of the HTTP/WebSocket server, in a random order drawn from a
fixed seed, while `auto` and explicit protocols send metadata and files. At the
end every accepted message and file has arrived, every file's SHA-256 is the
one accepted, and nothing is left waiting or dead while its chain has a
protocol up.

UCGW_SOAK_SECONDS sets how long the faults go on (the seed fixes their order;
rounds of the same mix are drawn until the time is up): at least one round,
about 40 s. tests/fault/CMakeLists.txt gives each build its default
(UCGW_SOAK_DEFAULT_SECONDS); set UCGW_SOAK_SECONDS=300 for a five-minute soak."""
import hashlib
import json
import os
import random
import signal
import sys
import time
import unittest

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
from lprpeer import LprPeer  # noqa: E402
from sshd import Sshd  # noqa: E402
import test_faults  # noqa: E402  (imported whole: its tests are not run again here)
from ucgwtest import FaultProxy, wait_for  # noqa: E402

SEED = 18
SOAK_SECONDS = float(os.environ.get("UCGW_SOAK_SECONDS") or os.environ.get("UCGW_SOAK_DEFAULT_SECONDS") or 0)


class HashingLoad(test_faults.Load):
    """Load that also keeps each accepted file's SHA-256, by its name."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.sha = {}

    def one(self, ctl):
        self.n += 1
        if self.n % 8 == 0:
            data = os.urandom(random.randint(1000, 150000))
            name = "img-%d.jpg" % self.n
            path = os.path.join(self.dir, name)
            with open(path, "wb") as f:
                f.write(data)
            proto = self.file_protocols[(self.n // 8) % len(self.file_protocols)]
            r = ctl.send_file(path, protocol=proto)
            os.remove(path)
            if r["ok"]:
                self.accepted[r["body"]["id"]] = ("file", len(data), test_faults.checksum(data), name, proto)
                self.sha[name] = hashlib.sha256(data).hexdigest()
            else:
                self.refused[r.get("error", "?")] = self.refused.get(r.get("error", "?"), 0) + 1
            return
        self.n -= 1
        saved, self.files = self.files, False
        try:
            super().one(ctl)
        finally:
            self.files = saved


class CombinedFaultTest(test_faults.FaultTest):
    test_kills_and_outages_lose_nothing = None  # test_faults.py's own, run there
    test_full_file_system_refuses_instead_of_losing = None
    def test_combined_faults_with_fallback(self):
        peer = LprPeer(self, name="peer")
        proxy = FaultProxy(self, peer.port)
        sshd = Sshd(self)
        self.peers, self.remote = [peer], sshd.remote
        cfg = self.config()
        del cfg["testworker"]
        cfg.update({
            "rest": {"base_url": "http://127.0.0.1:%d" % proxy.port, "timeout": 3},
            "websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % proxy.port, "reconnect_delay": 0.3,
                          "ack_timeout_ms": 3000},
            "sftp": {"host": "127.0.0.1", "port": sshd.port, "username": sshd.user, "key_file": sshd.user_key,
                     "known_hosts": sshd.known_hosts, "remote_path": sshd.remote, "timeout": 5},
            "rsync": {"remote_host": "127.0.0.1", "port": sshd.port, "remote_user": sshd.user,
                      "key_file": sshd.user_key, "known_hosts": sshd.known_hosts, "remote_path": sshd.remote,
                      "options": ["-a"], "timeout": 20}})
        gw = self.gateway(cfg)
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="all servers up")
        load = HashingLoad(gw, self.files, rate=100, meta=("auto", "mqtt", "rest", "websocket"),
                           file_protocols=("auto", "sftp", "rsync"))
        load.start()
        rnd = random.Random(SEED)
        mix = ["worker"] * 8 + ["ucgwd", "ucgwd in an outage"] + ["broker", "http", "sshd", "blackhole"] * 1
        mix.append("blackhole")
        faults, rounds = [], 0
        done = {}
        t0 = time.monotonic()
        try:
            while True:
                over = time.monotonic() - t0 >= SOAK_SECONDS
                if over and (rounds > 1 or rounds == 1 and not faults):
                    break  # time is up, and one whole round was done
                if not faults:
                    faults = list(mix)
                    rnd.shuffle(faults)  # the first round as it always was
                    rounds += 1
                fault = faults.pop(0)
                time.sleep(0.5 + rnd.random())
                if fault == "worker":
                    name = rnd.choice(["mqtt", "rest", "websocket", "sftp", "rsync"])
                    pid = gw.workers()[name]["pid"]
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                    fault = "kill -9 " + name
                elif fault == "ucgwd":
                    gw.proc.send_signal(signal.SIGKILL)
                    gw.proc.wait()
                    gw.log.close()
                    time.sleep(0.3)
                    gw.start()
                elif fault == "ucgwd in an outage":
                    # every server away: the spool holds auto messages and files
                    # when ucgwd dies, and replays them when it starts again
                    self.mq.stop()
                    port = peer.port
                    peer.stop()
                    sshd.stop()
                    time.sleep(2)
                    gw.proc.send_signal(signal.SIGKILL)
                    gw.proc.wait()
                    gw.log.close()
                    time.sleep(0.3)
                    gw.start()
                    time.sleep(1)
                    self.mq.start()
                    peer = LprPeer(self, port=port, name="peer")
                    self.peers.append(peer)
                    sshd.start()
                elif fault == "broker":
                    self.mq.stop()
                    time.sleep(2)
                    self.mq.start()
                elif fault == "http":
                    port = peer.port
                    peer.stop()
                    time.sleep(2)
                    peer = LprPeer(self, port=port, name="peer")
                    self.peers.append(peer)
                elif fault == "sshd":
                    sshd.stop()
                    time.sleep(2)
                    sshd.start()
                else:
                    self.assertEqual(proxy.command("blackhole"), "ok")
                    time.sleep(3)
                    self.assertEqual(proxy.command("pass"), "ok")
                done[fault] = done.get(fault, 0) + 1
        finally:
            load.stop_flag = True
            load.join(30)
        print("\n%.0f s of faults (seed %d, UCGW_SOAK_SECONDS %g): %s; %d messages and files accepted"
              % (time.monotonic() - t0, SEED, SOAK_SECONDS, json.dumps(done, sort_keys=True), len(load.accepted)))
        self.assertGreater(len(load.accepted), 300)
        self.check_everything_arrived(load, done)
        for name, sha in load.sha.items():
            with open(os.path.join(sshd.remote, name), "rb") as f:
                self.assertEqual(hashlib.sha256(f.read()).hexdigest(), sha, name)
        # Every server is up: nothing may be left waiting, queued or dead.
        try:
            wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, timeout=60, what="spool empty")
        except AssertionError as e:
            left = gw.ctl_json("queue") + gw.ctl_json("queue", "dead")
            raise AssertionError("%s; left in the spool: %s; workers: %s" % (
                e, json.dumps(left[:10]), json.dumps(gw.workers()))) from None
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        stats = gw.ctl_json("stats")
        print("delivered per protocol: %s; sha256 checked for %d files"
              % ({p: s["success"] for p, s in stats.items() if s["enabled"]}, len(load.sha)))


if __name__ == "__main__":
    unittest.main()
