"""The workers' sandbox (issue #7): when the tests run as root, every worker runs
as the unprivileged worker user, with no_new_privs, a seccomp filter and no
core dumps; a forbidden system call kills the worker with SIGSYS, its crash log
says so and names the call, and the supervisor starts it again."""
import glob
import os
import pwd
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from ucgwtest import GatewayTest, preload, unreachable_protocols, wait_for  # noqa: E402

ROOT = os.geteuid() == 0


def status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def core_limit(pid):
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max core file size"):
                return line.split()[4:6]
    return None


def worker_user():
    for name in ("ucgw", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    return None


def unreachable_config():
    """Every protocol's worker, each pointed at a closed port: they start,
    initialise their library and install their filter all the same."""
    return {
        "gateway": {"restart_backoff_min_ms": 50, "log_level": "info"},
        **unreachable_protocols(),
        "testworker": {},
    }


class SandboxTest(GatewayTest):
    def tearDown(self):
        os.environ.pop("UCGW_TEST_FORBIDDEN_SYSCALL", None)
        super().tearDown()

    def test_every_worker_confined(self):
        gw = self.gateway(unreachable_config())
        ws = gw.workers()
        self.assertEqual(len(ws), 6)
        user = worker_user()
        for name, w in ws.items():
            self.assertEqual(w["state"], "ready", w)
            st = status(w["pid"])
            self.assertEqual(st["NoNewPrivs"].strip(), "1", name)
            self.assertEqual(st["Seccomp"].strip(), "2", name)  # filter mode
            self.assertEqual(core_limit(w["pid"]), ["0", "0"], name)
            if ROOT:
                uids, gids = st["Uid"].split(), st["Gid"].split()
                self.assertEqual(set(uids), {str(user.pw_uid)}, "%s: real, effective, saved, fs uid" % name)
                self.assertEqual(set(gids), {str(user.pw_gid)}, name)
                self.assertEqual(st["Groups"].split(), [str(user.pw_gid)], name)
                self.assertEqual(st["CapEff"].strip(), "0000000000000000", name)
        self.assertEqual(status(gw.proc.pid)["Seccomp"].strip(), "0")  # the supervisor itself is not filtered

    def test_forbidden_call_dies_of_sigsys_and_restarts(self):
        os.environ["UCGW_TEST_FORBIDDEN_SYSCALL"] = "1"
        peer = LprPeer(self)
        gw = self.gateway({"gateway": {"restart_backoff_min_ms": 50},
                           "rest": {"base_url": peer.http_url()}})
        gw.wait_worker("rest", lambda w: w["connected"], what="rest connected")
        rc, out, err = gw.ctl("send", "--protocol", "rest", "--wait", '{"n":1}')
        self.assertEqual(rc, 0, err)
        old = gw.workers()["rest"]
        os.kill(old["pid"], signal.SIGUSR2)  # the worker calls personality(2)
        new = gw.wait_worker("rest", lambda w: w["pid"] != old["pid"] and w["state"] == "ready",
                             what="rest restarted")
        self.assertEqual(new["restarts"], 1)
        self.assertIn("SIGSYS", new["last_exit"])
        self.assertIn("seccomp", new["last_exit"])
        logs = glob.glob(os.path.join(gw.dir, "crash", "rest", "*.log"))
        self.assertEqual(len(logs), 1)
        with open(logs[0]) as f:
            text = f.read()
        self.assertIn("signal: 31 (SIGSYS)", text)
        self.assertIn("bad system call: the seccomp filter refused a call", text)
        self.assertIn("seccomp: forbidden system call personality", text)  # the handler's line, from stderr
        self.assertIn("worker rest pid %d killed by signal 31 (SIGSYS)" % old["pid"], gw.log_text())
        # back to work: connected again, and delivering
        gw.wait_worker("rest", lambda w: w["connected"], what="rest connected again")
        rc, out, err = gw.ctl("send", "--protocol", "rest", "--wait", '{"n":2}')
        self.assertEqual(rc, 0, err)
        self.assertEqual([r["body"] for r in peer.records("http")], ['{"n":1}', '{"n":2}'])

    def test_host_names_resolved_inside_the_sandbox(self):
        # getaddrinfo under the filter: /etc/hosts, nsswitch, libcurl's resolver thread
        mq = Mosquitto(self)
        peer = LprPeer(self)
        gw = self.gateway({
            "mqtt": {"broker_url": "localhost:%d" % mq.port},
            "rest": {"base_url": peer.http_url().replace("127.0.0.1", "localhost")},
            "websocket": {"server_url": peer.ws_url().replace("127.0.0.1", "localhost")},
        })
        for p in ("mqtt", "rest", "websocket"):
            gw.wait_worker(p, lambda w: w["connected"], what="%s connected by name" % p)
            o = gw.ctl_json("send", "--protocol", p, "--wait", '{"by":"name"}')
            self.assertEqual(o["status"], "ok", o)
        self.assertEqual({n: w["restarts"] for n, w in gw.workers().items()},
                         {"mqtt": 0, "rest": 0, "websocket": 0})
        self.assertNotIn("SIGSYS", gw.log_text())

    def test_names_only_dns_knows(self):
        # A name not in /etc/hosts goes to the DNS server: glibc sends its A and
        # AAAA queries with one sendmmsg. The workers must live through it (and
        # through the answer: no such name) and say why they are not connected.
        name = "ucgw-no-such-host.invalid"
        gw = self.gateway({
            "mqtt": {"broker_url": "%s:1883" % name},
            "rest": {"base_url": "http://%s:8080" % name},
            "websocket": {"server_url": "ws://%s:8080/lpr" % name},
            "sftp": {"host": name, "username": "u", "password": "p",
                     "host_key_fingerprint": "SHA256:" + "A" * 43},
        })
        for p in ("mqtt", "rest", "websocket", "sftp"):
            gw.wait_worker(p, lambda w: not w["connected"] and w["health"] and "connecting" not in w["health"],
                           what="%s: why it is not connected" % p, timeout=30)
        time.sleep(2)
        self.assertEqual({n: w["restarts"] for n, w in gw.workers().items()},
                         {"mqtt": 0, "rest": 0, "websocket": 0, "sftp": 0}, gw.workers())
        self.assertNotIn("SIGSYS", gw.log_text())

    def test_dns_that_does_not_answer_stalls_no_worker(self):
        # A resolver that takes 6 s (tests/tools/slowdns.c): libmosquitto and
        # libwebsockets would wait for it inside their connect call, past the 5 s
        # the supervisor gives a worker to say it is ready. The workers ask in
        # libuv's thread pool first and stay ready, saying why they are not connected.
        gw = self.gateway({
            "mqtt": {"broker_url": "slowdns.test:1883"},
            "websocket": {"server_url": "ws://slowdns.test:8080/lpr"},
        }, env=preload("slowdns.so", UCGW_SLOWDNS_MS="6000"))
        for p in ("mqtt", "websocket"):
            gw.wait_worker(p, lambda w: "temporary failure" in w["health"], timeout=30,
                           what="%s: the resolver's answer in health" % p)
        ws = gw.workers()
        self.assertEqual({n: (w["state"], w["restarts"]) for n, w in ws.items()},
                         {"mqtt": ("ready", 0), "websocket": ("ready", 0)}, ws)
        self.assertIn("cannot resolve the broker's name: temporary failure", ws["mqtt"]["health"])
        self.assertIn("cannot resolve slowdns.test: temporary failure", ws["websocket"]["health"])

    def test_sandbox_off_is_loud(self):
        os.environ["UCGW_TEST_FORBIDDEN_SYSCALL"] = "1"
        gw = self.gateway({"testworker": {}, "security": {"sandbox": False}})
        self.assertIn("security.sandbox is false", gw.log_text())
        w = gw.workers()["testworker"]
        st = status(w["pid"])
        self.assertEqual(st["Seccomp"].strip(), "0")
        os.kill(w["pid"], signal.SIGUSR2)
        wait_for(lambda: "the sandbox is off" in gw.log_text(), what="personality(2) allowed")
        time.sleep(0.3)
        self.assertEqual(gw.workers()["testworker"]["pid"], w["pid"])

    @unittest.skipUnless(ROOT, "the worker user is used only when ucgwd runs as root")
    def test_unknown_worker_user_is_a_config_error(self):
        gw = self.gateway({"testworker": {}, "security": {"worker_user": "no-such-user-ucgw"}})
        w = gw.wait_worker("testworker", lambda w: w["state"] == "failed")
        self.assertIn("exit status 2", w["last_exit"])
        self.assertEqual(w["restarts"], 1)
        self.assertIn("security.worker_user 'no-such-user-ucgw' does not exist", gw.log_text())
        logs = glob.glob(os.path.join(gw.dir, "crash", "testworker", "*.log"))
        with open(logs[0]) as f:
            self.assertIn("does not exist", f.read())


if __name__ == "__main__":
    unittest.main()
