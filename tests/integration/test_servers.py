"""Server lists: mqtt.broker_url and rest.base_url name two real servers (two
mosquitto brokers, two lpr-peers); one is stopped and started again. Nothing
is lost, a message that fails on one server goes to the other inside the
worker (one attempt as the supervisor counts them), failover goes back to the
first after failback_s, and each server's counters in `workers`, `/metrics`
and the dashboard's JSON say where each message went."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, FaultProxy, GatewayTest, free_port, wait_for  # noqa: E402
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402
from sshd import Sshd  # noqa: E402

USERS = {"edge": "s3cret", "reader": "r"}
DATA = "lpr/test-cam-1/data"
SPOOL = {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}


def servers(gw, proto):
    """The worker's servers, once it has reported both."""
    return wait_for(lambda: (lambda s: s if len(s) == 2 else None)(gw.workers()[proto]["servers"]),
                    what="%s's two servers reported" % proto)


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class ServersTest(GatewayTest):
    def send(self, gw, proto, n, tag):
        """n messages with --wait: their ids, each delivered at the first attempt."""
        ids = []
        for i in range(n):
            rc, out, err = gw.ctl("--json", "send", "--protocol", proto, "--wait", '{"plate":"%s%d"}' % (tag, i))
            self.assertEqual(rc, 0, err)
            o = json.loads(out)
            self.assertEqual((o["status"], o["protocol"]), ("ok", proto), o)
            self.assertEqual(o["attempts"], 1, "the worker itself moved it to the other server: %r" % o)
            ids.append(o["id"])
        return ids

    def metrics(self, gw):
        listen = gw.cfg["metrics"]["listen"]
        return urllib.request.urlopen("http://%s/metrics" % listen, timeout=5).read().decode()

    def gateway_with(self, section):
        return self.gateway(dict(section, spool=SPOOL, metrics={"listen": "127.0.0.1:%d" % free_port()}))

    def test_mqtt_two_brokers_failover_and_failback(self):
        a = Mosquitto(self, users=USERS, name="broker-a")
        b = Mosquitto(self, users=USERS, name="broker-b")
        sub_a = Subscriber(a.port, DATA, "reader", "r")
        sub_b = Subscriber(b.port, DATA, "reader", "r")
        self.addCleanup(sub_b.close)
        gw = self.gateway_with({"mqtt": {"broker_url": [a.url(), b.url()], "username": "edge", "password": "s3cret",
                                         "failback_s": 2, "connect_timeout_ms": 3000}})
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt connected")
        first = self.send(gw, "mqtt", 10, "A")
        got = {m["props"]["message-id"] for m in sub_a.wait(10, DATA)}
        self.assertEqual(got, set(first))

        a.stop()
        sub_a.close()
        second = self.send(gw, "mqtt", 10, "B")
        wait_for(lambda: {m["props"]["message-id"] for m in sub_b.received(DATA)} >= set(second), what="10 on B")
        wait_for(lambda: servers(gw, "mqtt")[1]["active"] and not servers(gw, "mqtt")[0]["up"],
                 what="broker B active, A down")

        a.start()
        sub_a2 = Subscriber(a.port, DATA, "reader", "r")
        self.addCleanup(sub_a2.close)
        wait_for(lambda: servers(gw, "mqtt")[0]["active"] and servers(gw, "mqtt")[0]["up"], timeout=15,
                 what="failback to broker A")
        third = self.send(gw, "mqtt", 10, "C")
        wait_for(lambda: {m["props"]["message-id"] for m in sub_a2.received(DATA)} >= set(third), what="10 on A again")
        self.assertFalse({m["props"]["message-id"] for m in sub_b.received(DATA)} & set(third), "none to B")

        s = wait_for(lambda: (lambda s: s if s[0]["delivered"] == 20 and s[1]["delivered"] == 10 else None)(
            servers(gw, "mqtt")), what="per-broker counts 20 and 10")
        self.assertEqual([x["url"] for x in s], [a.url(), b.url()])
        self.assertGreaterEqual(s[0]["downs"], 1)
        m = self.metrics(gw)
        self.assertIn('ucgw_server_delivered_total{protocol="mqtt",server="%s"} 20' % a.url(), m)
        self.assertIn('ucgw_server_delivered_total{protocol="mqtt",server="%s"} 10' % b.url(), m)
        self.assertIn('ucgw_server_active{protocol="mqtt",server="%s"} 1' % a.url(), m)
        listen = gw.cfg["metrics"]["listen"]
        dash = json.loads(urllib.request.urlopen("http://%s/api/dashboard" % listen, timeout=5).read())
        w = [x for x in dash["workers"] if x["name"] == "mqtt"][0]
        self.assertEqual([(x["url"], x["delivered"]) for x in w["servers"]], [(a.url(), 20), (b.url(), 10)])
        text = gw.ctl("workers")[1]
        self.assertIn("server 2 %s: up, " % b.url(), text)
        self.assertIn("delivered 20", text)
        st = gw.ctl_json("stats")["mqtt"]["servers"]
        self.assertEqual([x["delivered"] for x in st], [20, 10])

    def test_mqtt_broker_lost_under_load_nothing_lost(self):
        """A broker stopped while 2,000 messages flow: the ones it held go to
        the other broker; every message arrives. (Broker A keeps what it
        acknowledged for its durable subscriber, which gets it once A is
        back: a PUBACK just before the stop counts as delivered.)"""
        a = Mosquitto(self, users=USERS, name="broker-a", persistence=True)
        b = Mosquitto(self, users=USERS, name="broker-b")
        sub_a = Subscriber(a.port, DATA, "reader", "r", durable=True)
        self.addCleanup(sub_a.close)
        sub_b = Subscriber(b.port, DATA, "reader", "r")
        self.addCleanup(sub_b.close)
        gw = self.gateway_with({"mqtt": {"broker_url": [a.url(), b.url()], "username": "edge", "password": "s3cret",
                                         "failback_s": 60}})
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt connected")
        load = subprocess.Popen([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "2000", "-w", "100", "-p",
                                 "mqtt", "--wait", "--rate", "1000"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: len(sub_a.received(DATA)) >= 300, what="300 on A")
        a.stop()
        out = load.communicate(timeout=60)[0]
        self.assertEqual(load.returncode, 0, out)
        self.assertEqual(json.loads(out)["failed"], 0, out)
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="spool drained")
        a.start()

        def ids():
            return {m["props"]["message-id"] for m in sub_a.received(DATA)} | \
                {m["props"]["message-id"] for m in sub_b.received(DATA)}
        wait_for(lambda: len(ids()) >= 2000, timeout=15, what="all 2,000 at A or B")
        self.assertEqual(len(ids()), 2000)
        self.assertGreater(len(sub_b.received(DATA)), 0)
        # the worker moved what A held to B itself: next to none went back to
        # the supervisor (a loaded sanitizer build may see a few whose wait
        # for B's connection ran out; they are delivered all the same)
        st = gw.ctl_json("stats")["mqtt"]
        self.assertEqual((st["success"], st["failure"]), (2000, 0))
        self.assertLess(st["retries"], 100, st)
        wait_for(lambda: sum(x["delivered"] for x in servers(gw, "mqtt")) == 2000, what="per-broker counts add up")

    def test_rest_two_servers_failover_failback_and_spread(self):
        p1 = LprPeer(self, name="peer1")
        p2 = LprPeer(self, name="peer2")
        gw = self.gateway_with({"rest": {"base_url": [p1.http_url(), p2.http_url()], "failback_s": 2, "timeout": 3}})
        wait_for(lambda: gw.workers()["rest"]["connected"], what="rest connected")
        first = self.send(gw, "rest", 10, "A")
        self.assertEqual({r["id"] for r in p1.records("http")}, set(first))
        s = servers(gw, "rest")
        self.assertEqual([(x["tried"], x["active"]) for x in s], [(True, True), (False, False)])
        self.assertIn("server 2 %s: not tried yet" % p2.http_url(), gw.ctl("workers")[1])

        p1.stop()
        second = self.send(gw, "rest", 10, "B")  # the first fails on p1 and goes to p2 in the worker
        self.assertEqual({r["id"] for r in p2.records("http")}, set(second))
        wait_for(lambda: not servers(gw, "rest")[0]["up"] and servers(gw, "rest")[1]["active"],
                 what="p1 down, p2 active")

        p1.port = int(p1.http_url().rsplit(":", 1)[1])
        p1.start()
        wait_for(lambda: servers(gw, "rest")[0]["active"], timeout=15, what="failback to p1")
        third = self.send(gw, "rest", 10, "C")
        self.assertTrue(set(third) <= {r["id"] for r in p1.records("http")})
        s = wait_for(lambda: (lambda s: s if s[0]["delivered"] == 20 and s[1]["delivered"] == 10 else None)(
            servers(gw, "rest")), what="per-server counts 20 and 10")
        self.assertGreaterEqual(s[0]["failed"], 1)
        m = self.metrics(gw)
        self.assertIn('ucgw_server_delivered_total{protocol="rest",server="%s"} 20' % p1.http_url(), m)

    def test_websocket_two_servers_failover_and_failback(self):
        p1 = LprPeer(self, name="peer1")
        p2 = LprPeer(self, name="peer2")
        gw = self.gateway_with({"websocket": {"server_url": [p1.ws_url(), p2.ws_url()], "failback_s": 2,
                                              "reconnect_delay": 0.2, "ack_timeout_ms": 3000}})
        wait_for(lambda: gw.workers()["websocket"]["connected"], what="websocket connected")
        first = self.send(gw, "websocket", 10, "A")
        self.assertEqual({r["id"] for r in p1.records("ws")}, set(first))

        p1.stop()
        wait_for(lambda: servers(gw, "websocket")[1]["active"] and servers(gw, "websocket")[1]["up"],
                 what="p2 in use")
        second = self.send(gw, "websocket", 10, "B")
        self.assertEqual({r["id"] for r in p2.records("ws")}, set(second))

        p1.port = int(p1.http_url().rsplit(":", 1)[1])
        p1.start()
        wait_for(lambda: servers(gw, "websocket")[0]["active"] and servers(gw, "websocket")[0]["up"], timeout=15,
                 what="failback to p1")
        third = self.send(gw, "websocket", 10, "C")
        self.assertTrue(set(third) <= {r["id"] for r in p1.records("ws")})
        wait_for(lambda: (lambda s: s if s[0]["delivered"] == 20 and s[1]["delivered"] == 10 else None)(
            servers(gw, "websocket")), what="per-server counts 20 and 10")

    def test_websocket_connection_lost_held_frames_go_to_the_other(self):
        """The server stops while messages flow: every message arrives, at
        p1 or p2, none answered retry to the supervisor."""
        p1 = LprPeer(self, name="peer1")
        p2 = LprPeer(self, name="peer2")
        gw = self.gateway_with({"websocket": {"server_url": [p1.ws_url(), p2.ws_url()], "failback_s": 60,
                                              "reconnect_delay": 0.2}})
        wait_for(lambda: gw.workers()["websocket"]["connected"], what="websocket connected")
        load = subprocess.Popen([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "2000", "-w", "100", "-p",
                                 "websocket", "--wait", "--rate", "1000"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: len(p1.records("ws")) >= 300, what="300 at p1")
        p1.stop()
        out = load.communicate(timeout=60)[0]
        self.assertEqual(load.returncode, 0, out)
        self.assertEqual(json.loads(out)["failed"], 0, out)
        ids = {r["id"] for r in p1.records("ws")} | {r["id"] for r in p2.records("ws")}
        self.assertEqual(len(ids), 2000)
        st = gw.ctl_json("stats")["websocket"]
        self.assertEqual((st["success"], st["retries"]), (2000, 0))

    def test_rest_spread(self):
        p1 = LprPeer(self, name="peer1")
        p2 = LprPeer(self, name="peer2")
        gw = self.gateway_with({"rest": {"base_url": [p1.http_url(), p2.http_url()], "servers_policy": "spread"}})
        wait_for(lambda: gw.workers()["rest"]["connected"], what="rest connected")
        ids = self.send(gw, "rest", 20, "S")
        got1, got2 = {r["id"] for r in p1.records("http")}, {r["id"] for r in p2.records("http")}
        self.assertEqual(got1 | got2, set(ids))
        self.assertFalse(got1 & got2)
        self.assertEqual((len(got1), len(got2)), (10, 10))

    def test_every_server_down_no_spin(self):
        """Both servers of each list refuse connections: the workers try each,
        then back off (no tight loop between the two), and say so per server."""
        dead = [free_port() for _ in range(2)]
        gw = self.gateway_with({
            "rest": {"base_url": ["http://127.0.0.1:%d" % p for p in dead]},
            "mqtt": {"broker_url": ["127.0.0.1:%d" % p for p in dead]},
            "websocket": {"server_url": ["ws://127.0.0.1:%d/lpr" % p for p in dead], "reconnect_delay": 0.2}})
        for proto in ("rest", "mqtt", "websocket"):
            wait_for(lambda: all(not x["up"] and x["downs"] >= 1 for x in servers(gw, proto)), what=proto + " both down")
        pids = {proto: gw.workers()[proto]["pid"] for proto in ("rest", "mqtt", "websocket")}

        def cpu(pid):
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
        before = {p: cpu(pid) for p, pid in pids.items()}
        time.sleep(3)
        ticks = os.sysconf("SC_CLK_TCK")
        for proto, pid in pids.items():
            used = (cpu(pid) - before[proto]) / ticks
            self.assertLess(used, 0.5, "%s used %.2f s of CPU in 3 s with every server down" % (proto, used))
            for x in servers(gw, proto):
                self.assertNotIn(x["detail"], ("", "up", "not tried yet"), x)  # why it is down

    def test_sftp_two_servers_killed_under_load_failover_and_failback(self):
        """sftp.host lists two real sshd; the first is killed (its listener and
        its sessions) while files flow: every file arrives byte-identical on
        one of the two, the worker itself moves the files the first one held to
        the second (no retry answered), and the first takes over again after
        failback_s once it is back."""
        a = Sshd(self, name="sshd-a")
        b = Sshd(self, name="sshd-b")
        with open(a.user_key + ".pub") as src, open(b.authorized, "a") as dst:
            dst.write(src.read())  # one user key for both, as one camera has
        # A behind a proxy that caps its rate, so that it still has files to
        # carry when it is killed (on loopback it would have finished)
        proxy = FaultProxy(self, a.port)
        self.assertEqual(proxy.command("bandwidth 8000000"), "ok")
        known = os.path.join(self.tmp, "known_hosts")
        with open(known, "w") as f:
            for kh in (a.known_hosts_as("127.0.0.1", proxy.port, "known_hosts_proxy"), b.known_hosts):
                with open(kh) as k:
                    f.write(k.read())
        urls = ["127.0.0.1:%d" % proxy.port, "127.0.0.1:%d" % b.port]
        gw = self.gateway_with({"sftp": {"host": urls, "port": 9, "username": a.user, "key_file": a.user_key,
                                         "known_hosts": known, "remote_path": a.remote_rel, "timeout": 5,
                                         "failback_s": 2}})
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp connected")
        sent, paths = {}, []
        for i in range(24):
            paths.append(os.path.join(self.tmp, "plate-%02d.bin" % i))
            data = os.urandom(1 << 20)
            with open(paths[-1], "wb") as f:
                f.write(data)
            sent[os.path.basename(paths[-1])] = hashlib.sha256(data).hexdigest()
        # all at once, so that A holds files in flight when it is killed
        senders = [subprocess.Popen([os.path.join(BIN, "ucgwctl"), "-s", gw.sock, "send-file", "--protocol", "sftp",
                                     p], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in paths]

        def finals(s):
            return {n for n in os.listdir(s.remote) if not n.startswith(".")} if os.path.isdir(s.remote) else set()
        wait_for(lambda: len(finals(a)) >= 3, what="3 files on A")
        sessions, todo = [], a.session_processes()
        while todo:  # each session's processes, the privilege-separated child too
            sessions += todo
            todo = [int(p) for pid in todo for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                                   text=True).stdout.split()]
        a.stop()
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in senders:
            out = p.communicate(timeout=30)[0]
            self.assertEqual(p.returncode, 0, out)
        wait_for(lambda: gw.ctl_json("stats")["sftp"]["success"] == len(sent), timeout=30, what="every file ok")
        st = gw.ctl_json("stats")["sftp"]
        self.assertEqual((st["success"], st["retries"], st["failure"]), (len(sent), 0, 0),
                         "the worker moved what A held to B itself")
        on_a, on_b = finals(a), finals(b)
        self.assertEqual(on_a | on_b, set(sent))
        for name, digest in sent.items():
            got = [sha(os.path.join(s.remote, name)) for s in (a, b) if name in (on_a if s is a else on_b)]
            self.assertTrue(got and all(g == digest for g in got), name)
        self.assertGreater(len(on_b - on_a), 0, "files went to B after A was killed")
        # what A held in flight went to B whole; its part files stay on A, A's business
        self.assertTrue([n for n in os.listdir(a.remote) if n.endswith(".ucgw-part")], "A had files in flight")
        s = wait_for(lambda: (lambda s: s if sum(x["delivered"] for x in s) == len(sent) else None)(
            servers(gw, "sftp")), what="per-server counts add up")
        self.assertEqual([x["url"] for x in s], urls)
        self.assertGreaterEqual(s[0]["delivered"], len(on_a - on_b))
        self.assertGreaterEqual(s[1]["delivered"], len(on_b - on_a))
        self.assertGreaterEqual(s[0]["downs"], 1)
        self.assertTrue(s[1]["up"] and not s[0]["up"], s)  # (a failback may be trying A: which is active varies)
        self.assertIn("server 2 %s: up" % urls[1], gw.ctl("workers")[1])

        a.start()
        wait_for(lambda: servers(gw, "sftp")[0]["active"] and servers(gw, "sftp")[0]["up"], timeout=15,
                 what="failback to A")
        before_b = finals(b)
        for i in range(3):
            path = os.path.join(self.tmp, "after-%d.jpg" % i)
            with open(path, "wb") as f:
                f.write(os.urandom(50000))
            rc, out, err = gw.ctl("--json", "send-file", "--protocol", "sftp", "--wait", path)
            self.assertEqual(rc, 0, err + out)
            self.assertIn("after-%d.jpg" % i, finals(a))
        self.assertEqual(finals(b), before_b, "none to B after the failback")
        wait_for(lambda: sum(x["delivered"] for x in servers(gw, "sftp")) == len(sent) + 3, what="3 more counted")
        self.assertEqual(gw.ctl_json("stats")["sftp"]["servers"][0]["url"], urls[0])
        listen = gw.cfg["metrics"]["listen"]
        dash = json.loads(urllib.request.urlopen("http://%s/api/dashboard" % listen, timeout=5).read())
        self.assertEqual(dash["network_quality"]["sftp"]["server"], urls[0])  # the probe: the first item, its port
        self.assertIn('ucgw_server_up{protocol="sftp",server="%s"} 1' % urls[0], self.metrics(gw))

    def test_rsync_two_servers_killed_under_load_failover_and_failback(self):
        """rsync.remote_host lists two real sshd; the first is killed (its
        listener and its sessions) while files flow: every file arrives
        byte-identical on one of the two (the runs cut off go back retry and
        the next runs go to the second), the per-server counts add up, and the
        first takes over again after failback_s once it is back."""
        a = Sshd(self, name="sshd-a", commands_in_root=True)
        b = Sshd(self, name="sshd-b", commands_in_root=True)
        with open(a.user_key + ".pub") as src, open(b.authorized, "a") as dst:
            dst.write(src.read())
        proxy = FaultProxy(self, a.port)  # A slowed, so that it still has files to carry when it is killed
        self.assertEqual(proxy.command("bandwidth 8000000"), "ok")
        known = os.path.join(self.tmp, "known_hosts")
        with open(known, "w") as f:
            for kh in (a.known_hosts_as("127.0.0.1", proxy.port, "known_hosts_proxy"), b.known_hosts):
                with open(kh) as k:
                    f.write(k.read())
        urls = ["127.0.0.1:%d" % proxy.port, "127.0.0.1:%d" % b.port]
        gw = self.gateway_with({"rsync": {"remote_host": urls, "port": 9, "remote_user": a.user,
                                          "key_file": a.user_key, "known_hosts": known, "remote_path": a.remote_rel,
                                          "options": ["-a"], "timeout": 10, "failback_s": 2, "batch_max": 4},
                                "fallback": {"enabled": False}})
        sent, paths = {}, []
        for i in range(24):
            paths.append(os.path.join(self.tmp, "plate-%02d.bin" % i))
            data = os.urandom(1 << 20)
            with open(paths[-1], "wb") as f:
                f.write(data)
            sent[os.path.basename(paths[-1])] = hashlib.sha256(data).hexdigest()
        senders = [subprocess.Popen([os.path.join(BIN, "ucgwctl"), "-s", gw.sock, "send-file", "--protocol", "rsync",
                                     p], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in paths]

        def finals(s):
            return {n for n in os.listdir(s.remote) if not n.startswith(".")} if os.path.isdir(s.remote) else set()
        wait_for(lambda: len(finals(a)) >= 3, what="3 files on A")
        sessions, todo = [], a.session_processes()
        while todo:
            sessions += todo
            todo = [int(p) for pid in todo for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                                   text=True).stdout.split()]
        a.stop()
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in senders:
            out = p.communicate(timeout=30)[0]
            self.assertEqual(p.returncode, 0, out)
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == len(sent), timeout=40, what="every file ok")
        self.assertEqual(gw.ctl_json("stats")["rsync"]["failure"], 0)
        on_a, on_b = finals(a), finals(b)
        self.assertEqual(on_a | on_b, set(sent))
        for name, digest in sent.items():
            got = [sha(os.path.join(s.remote, name)) for s in (a, b) if name in (on_a if s is a else on_b)]
            self.assertTrue(got and all(g == digest for g in got), name)
        self.assertGreater(len(on_b - on_a), 0, "files went to B after A was killed")
        s = wait_for(lambda: (lambda s: s if sum(x["delivered"] for x in s) == len(sent) else None)(
            servers(gw, "rsync")), what="per-server counts add up")
        self.assertEqual([x["url"] for x in s], urls)
        self.assertGreaterEqual(s[1]["delivered"], len(on_b - on_a))
        self.assertLessEqual(s[0]["delivered"], len(on_a))
        self.assertGreaterEqual(s[0]["downs"], 1)
        self.assertTrue(s[1]["up"] and not s[0]["up"], s)

        a.start()
        wait_for(lambda: servers(gw, "rsync")[0]["active"], timeout=15, what="failback to A")
        before_b = finals(b)
        for i in range(3):
            path = os.path.join(self.tmp, "after-%d.jpg" % i)
            with open(path, "wb") as f:
                f.write(os.urandom(50000))
            rc, out, err = gw.ctl("--json", "send-file", "--protocol", "rsync", "--wait", path)
            self.assertEqual(rc, 0, err + out)
            self.assertIn("after-%d.jpg" % i, finals(a))
        self.assertEqual(finals(b), before_b, "none to B after the failback")
        wait_for(lambda: servers(gw, "rsync")[0]["up"] and sum(x["delivered"] for x in servers(gw, "rsync")) ==
                 len(sent) + 3, what="A up, 3 more counted")

    def test_rsync_bad_host_items(self):
        """rsync.remote_host items the worker refuses, and spread."""
        for host, policy, why in ((["127.0.0.1:2222", "127.0.0.1:0"], "failover",
                                   "rsync.remote_host: the port in '127.0.0.1:0' is not a number from 1 to 65535"),
                                  (["127.0.0.1", "127.0.0.2"], "spread", "spread is not supported by rsync")):
            gw = self.gateway({"rsync": {"remote_host": host, "servers_policy": policy, "remote_user": "u",
                                         "known_hosts": __file__}},
                              name="bad%d" % free_port())
            gw.wait_worker("rsync", lambda w: w["state"] == "failed", what="rsync failed")
            wait_for(lambda: why in gw.log_text(), what=why)

    def test_sftp_bad_host_items(self):
        """A port that is no port, or spread (one SSH session at a time): the
        worker says which item and why, and is not restarted in a loop."""
        for host, policy, why in ((["127.0.0.1:2222", "127.0.0.1:99999"], "failover",
                                   "sftp.host: the port in '127.0.0.1:99999' is not a number from 1 to 65535"),
                                  (["[::1", "127.0.0.1"], "failover", "sftp.host: '[::1' is not [IPv6 address]"),
                                  (["127.0.0.1", "127.0.0.2"], "spread", "spread is not supported by sftp")):
            gw = self.gateway({"sftp": {"host": host, "servers_policy": policy, "username": "u", "password": "p",
                                        "known_hosts": __file__}},
                              name="bad%d" % free_port())
            gw.wait_worker("sftp", lambda w: w["state"] == "failed", what="sftp failed")
            wait_for(lambda: why in gw.log_text(), what=why)

    def stalling_server(self):
        """A server that takes connections and reads requests but never
        answers: its port, and a function giving the POSTs it has read."""
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        posts, conns, stop = [], [], threading.Event()

        def serve(c):
            while not stop.is_set():
                try:
                    data = c.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                posts.extend(time.time() for _ in range(data.count(b"POST ")))

        def accept():
            while not stop.is_set():
                try:
                    c, _ = ls.accept()
                except OSError:
                    return
                conns.append(c)
                threading.Thread(target=serve, args=(c,), daemon=True).start()
        threading.Thread(target=accept, daemon=True).start()

        def close():
            stop.set()
            for c in conns + [ls]:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
        self.addCleanup(close)
        return ls.getsockname()[1], lambda: list(posts)

    def test_rest_list_longer_than_job_timeout(self):
        """Three servers that never answer, each given rest.timeout (1.5 s):
        the list takes 4.5 s, more than gateway.job_timeout_ms (2 s). The
        worker tells the supervisor it is still trying, so the message is not
        sent again while the first attempt goes on: one POST per server."""
        srv = [self.stalling_server() for _ in range(3)]
        gw = self.gateway_with({"rest": {"base_url": ["http://127.0.0.1:%d" % p for p, _ in srv], "timeout": 1.5},
                                "gateway": {"job_timeout_ms": 2000}, "fallback": {"enabled": False}})
        wait_for(lambda: gw.workers()["rest"]["connected"], what="rest connected")
        rc, out, err = gw.ctl("send", "--protocol", "rest", '{"plate":"STALL"}')
        self.assertEqual(rc, 0, err)
        wait_for(lambda: all(posts() for _, posts in srv), timeout=10, what="each server got the POST")
        time.sleep(1.0)  # the third server still holds it (1.5 s)
        counts = [len(posts()) for _, posts in srv]
        self.assertEqual(counts, [1, 1, 1], "the message was sent again while its first attempt went on")
        self.assertNotIn("no answer within gateway.job_timeout_ms", gw.log_text())

    def test_config_forms(self):
        """One server as a string, as before; several as a list; an empty list is no server."""
        def check(rest):
            gw = self.gateway({"rest": rest}, start=False, name="check%d" % free_port())
            return subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path], capture_output=True, text=True)
        self.assertEqual(check({"base_url": "http://127.0.0.1:9"}).returncode, 0)
        self.assertEqual(check({"base_url": ["http://127.0.0.1:9", "http://127.0.0.1:10"]}).returncode, 0)
        r = check({"base_url": []})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("empty value for required key 'base_url'", r.stdout + r.stderr)
        r = check({"base_url": {"url": "x"}})
        self.assertIn("expected a server, or a list of servers", r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
