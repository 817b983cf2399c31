"""ucgw-mqtt against a real mosquitto: the bytes, the id, QoS, the status topic,
authentication, TLS, a broker that goes away and comes back, volume."""
import json
import os
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, FaultProxy, GatewayTest, wait_for  # noqa: E402
from mosquitto import Mosquitto, make_ca  # noqa: E402
from mqttsub import Subscriber  # noqa: E402

USERS = {"edge": "s3cret", "reader": "r"}


class MqttTest(GatewayTest):
    def gw_for(self, mq, **extra):
        m = {"broker_url": mq.url(), "username": "edge", "password": "s3cret"}
        m.update(extra)
        gw = self.gateway({"mqtt": m, "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}})
        return gw

    def connected(self, gw, up=True):
        return wait_for(lambda: gw.workers()["mqtt"]["connected"] == up, what="mqtt connected=%s" % up)

    def behind_proxy(self, mqtt=None, **cfg):
        """A broker reached through a FaultProxy, a subscriber to lpr/#, and a gateway connected to it."""
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "lpr/#", "reader", "r")
        self.addCleanup(sub.close)
        proxy = FaultProxy(self, mq.port)
        m = {"broker_url": "127.0.0.1:%d" % proxy.port, "username": "edge", "password": "s3cret"}
        m.update(mqtt or {})
        cfg.update({"mqtt": m, "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}})
        gw = self.gateway(cfg)
        self.connected(gw)
        return sub, proxy, gw

    def all_arrive(self, gw, sub, ids, what):
        """Every id on the data topic, then the spool drained."""
        data = "lpr/test-cam-1/data"
        wait_for(lambda: {m["props"]["message-id"] for m in sub.received(data)} >= set(ids), timeout=30, what=what)
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="spool drained")

    def test_bytes_id_and_topic(self):
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "#", "reader", "r")
        gw = self.gw_for(mq)
        self.connected(gw)
        body = '{"plate":"ABC123","confidence":0.97,"camera":"gate-2"}'
        rc, out, err = gw.ctl("--json", "send", "--protocol", "mqtt", "--wait", body)
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertEqual((o["status"], o["protocol"], o["attempts"]), ("ok", "mqtt", 1))
        got = sub.wait(1, "lpr/test-cam-1/data")
        self.assertEqual(got[0]["payload"], body.encode())
        self.assertEqual(got[0]["props"]["message-id"], o["id"])
        # without --wait: the id printed is the one the broker sees
        rc, out, err = gw.ctl("send", "--protocol", "mqtt", "--topic", "lpr/other", '{"n":2}')
        mid = out.strip()
        got = sub.wait(1, "lpr/other")
        self.assertEqual(got[0]["props"]["message-id"], mid)
        rc, out, err = gw.ctl("send", "--protocol", "mqtt", "--topic", "lpr/+/x", "{}")
        self.assertEqual(rc, 1)
        self.assertIn("wildcard", err)

    def test_topic_goes_once_per_connection(self):
        # MQTT 5 topic alias: after the first message on mqtt.topic, the next
        # ones carry alias 1 instead of the topic's bytes; the subscriber still
        # gets each on the topic, with its id
        sub, proxy, gw = self.behind_proxy()
        topic = "lpr/test-cam-1/data"
        body = '{"n":0}'
        ids = [json.loads(gw.ctl("--json", "send", "--protocol", "mqtt", "--wait", body)[1])["id"]]
        up = int(proxy.command("stats").split()[3])
        for _ in range(20):
            o = json.loads(gw.ctl("--json", "send", "--protocol", "mqtt", "--wait", body)[1])
            self.assertEqual(o["status"], "ok", o)
            ids.append(o["id"])
        per_message = (int(proxy.command("stats").split()[3]) - up) / 20
        # fixed header 3, packet id 2, properties: length 1, alias 3, message-id 41,
        # accepted-at 40 (1 + 2 + 11 + 2 + 24); the topic's length 2
        self.assertLessEqual(per_message, len(body) + 3 + 2 + 2 + 1 + 3 + 41 + 40 + 2,
                             "%.1f bytes a message: the topic (%d bytes) went in each" % (per_message, len(topic)))
        self.all_arrive(gw, sub, ids, "every message on the topic")

    def test_qos2_and_envelope_v311(self):
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "lpr/#", "reader", "r", qos=2)
        gw = self.gw_for(mq, qos=2, protocol_version="3.1.1", envelope=True)
        self.connected(gw)
        rc, out, err = gw.ctl("--json", "send", "--protocol", "mqtt", "--wait", '{"plate":"Q2"}')
        self.assertEqual(rc, 0, err)
        mid = json.loads(out)["id"]
        got = sub.wait(1, "lpr/test-cam-1/data")
        env = json.loads(got[0]["payload"])
        self.assertEqual(env.pop("accepted_at")[:2], "20")  # the time it was accepted, RFC 3339 UTC
        self.assertEqual(env, {"id": mid, "data": {"plate": "Q2"}})

    def test_status_topic_online_then_offline(self):
        mq = Mosquitto(self, users=USERS)
        gw = self.gw_for(mq)
        self.connected(gw)
        sub = Subscriber(mq.port, "lpr/test-cam-1/status", "reader", "r")
        got = sub.wait(1)
        self.assertEqual((got[0]["payload"], got[0]["retain"]), (b"online", True))
        gw.stop()
        got = sub.wait(2)
        self.assertEqual(got[-1]["payload"], b"offline")

    def test_last_will_when_worker_killed(self):
        mq = Mosquitto(self, users=USERS)
        gw = self.gw_for(mq, keepalive=5)
        self.connected(gw)
        sub = Subscriber(mq.port, "lpr/test-cam-1/status", "reader", "r")
        sub.wait(1)
        os.kill(gw.workers()["mqtt"]["pid"], 9)
        got = sub.wait(2, timeout=20)
        self.assertEqual(got[1]["payload"], b"offline")

    def test_wrong_password_keeps_messages(self):
        mq = Mosquitto(self, users=USERS)
        gw = self.gw_for(mq, password="wrong")
        w = wait_for(lambda: (lambda w: w if "not authori" in w["health"].lower() else None)(gw.workers()["mqtt"]),
                     what="auth failure in health")
        self.assertFalse(w["connected"])
        rc, out, err = gw.ctl("send", "--protocol", "mqtt", '{"plate":"KEEP"}')
        self.assertEqual(rc, 0, err)
        q = wait_for(lambda: [m for m in gw.ctl_json("queue") if m["last_error"]], what="queued with a reason")
        self.assertIn("unreachable", q[0]["last_error"])

    def test_broker_down_and_back(self):
        mq = Mosquitto(self, users=USERS)
        gw = self.gw_for(mq)
        self.connected(gw)
        mq.stop()
        self.connected(gw, False)
        ids = []
        for i in range(20):
            rc, out, err = gw.ctl("send", "--protocol", "mqtt", '{"n":%d}' % i)
            self.assertEqual(rc, 0, err)
            ids.append(out.strip())
        time.sleep(0.5)
        mq.start()
        sub = Subscriber(mq.port, "lpr/test-cam-1/data", "reader", "r")
        self.connected(gw)
        wait_for(lambda: {m["props"]["message-id"] for m in sub.received()} >= set(ids), timeout=30,
                 what="all 20 after the broker came back")
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="spool drained")
        self.assertEqual(gw.workers()["mqtt"]["restarts"], 0)  # reconnected, not restarted

    def test_tls_verified_and_untrusted_refused(self):
        mq = Mosquitto(self, users=USERS, tls=True)
        gw = self.gw_for(mq, ca_file=mq.ca)
        self.connected(gw)
        rc, out, err = gw.ctl("send", "--protocol", "mqtt", "--wait", '{"tls":true}')
        self.assertEqual(rc, 0, err)
        other = os.path.join(self.tmp, "otherca")
        os.makedirs(other)
        ca2, _, _ = make_ca(other)
        gw2 = self.gateway({"mqtt": {"broker_url": mq.url(), "username": "edge", "password": "s3cret",
                                     "ca_file": ca2}}, name="untrusted")
        w = wait_for(lambda: (lambda w: w if "TLS" in w["health"] or "certificate" in w["health"] else None)(
            gw2.workers()["mqtt"]), what="TLS refusal in health")
        self.assertFalse(w["connected"])

    def test_thousand_messages(self):
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "lpr/test-cam-1/data", "reader", "r")
        gw = self.gw_for(mq)
        self.connected(gw)
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "1000", "-w", "200", "-p", "mqtt",
                            "--wait"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        got = sub.wait(1000)
        ids = [m["props"]["message-id"] for m in got]
        dups = len(ids) - len(set(ids))
        print("\n1000 messages: %d arrived, %d duplicates" % (len(set(ids)), dups))
        self.assertEqual(len(set(ids)), 1000)

    def load(self, gw, n, window=1000):
        return subprocess.Popen([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", str(n), "-w", str(window),
                                 "-p", "mqtt", "--wait"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def test_long_path_spreads_over_connections_each_message_once(self):
        """Acks that take 40 ms (the proxy's latency) and a broker allowing 20
        in flight per connection (mosquitto's default Receive Maximum): the
        worker opens more connections, up to mqtt.connections, each its own
        client id, and says in health that the broker's limit binds; every
        message arrives exactly once."""
        sub, proxy, gw = self.behind_proxy({"connections": 4})
        self.assertEqual(proxy.command("latency 20"), "ok")
        r = self.load(gw, 8000)
        limited = "over 4 of 4 connections; limited by the broker: it allows 20 in flight per connection"
        wait_for(lambda: limited in gw.workers()["mqtt"]["health"], timeout=60, what="health naming the limit")
        self.assertIn("limited by the broker", gw.ctl("workers")[1])  # under the worker that is up
        out = r.communicate(timeout=180)[0]
        self.assertEqual(r.returncode, 0, out)
        log = gw.log_text()
        self.assertIn("opening connection 4 of 4", log)
        for i in (2, 3, 4):
            self.assertIn("as test-cam-1-%d (MQTT 5" % i, log)
        self.assertNotIn("opening connection 5", log)
        self.assertIn("limited by the broker: every one of 4 connections holds its 20 in flight", log)
        sub.wait(8000, "lpr/test-cam-1/data")
        time.sleep(0.5)  # a second copy would come now
        got = [m["props"]["message-id"] for m in sub.received("lpr/test-cam-1/data")]
        self.assertEqual((len(got), len(set(got))), (8000, 8000))
        # idle, the limit binds no more
        wait_for(lambda: "limited" not in gw.workers()["mqtt"]["health"], timeout=5, what="health without 'limited'")
        self.assertIn("over 4 of 4 connections", gw.workers()["mqtt"]["health"])

    def test_broker_stopped_under_load_over_connections_loses_nothing(self):
        """The broker is stopped while 4 connections carry a load and comes
        back on the same port: every message accepted reaches the durable
        subscriber, at least once. (SIGTERM, not SIGKILL: mosquitto keeps
        what it acknowledged in memory and writes it to disk every second,
        so a SIGKILL loses messages at the broker after their PUBACK.)"""
        mq = Mosquitto(self, users=USERS, persistence=True)
        sub = Subscriber(mq.port, "lpr/test-cam-1/data", "reader", "r", durable=True)
        self.addCleanup(sub.close)
        proxy = FaultProxy(self, mq.port)
        gw = self.gateway({"mqtt": {"broker_url": "127.0.0.1:%d" % proxy.port, "username": "edge",
                                    "password": "s3cret", "connections": 4},
                           "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}})
        self.connected(gw)
        self.assertEqual(proxy.command("latency 10"), "ok")
        r = self.load(gw, 3000)
        wait_for(lambda: "opening connection 4 of 4" in gw.log_text(), timeout=30, what="4 connections")
        wait_for(lambda: gw.ctl_json("stats")["mqtt"]["success"] >= 500, timeout=60, what="500 delivered")
        mq.stop()
        self.connected(gw, False)
        time.sleep(0.5)
        mq.start()
        out = r.communicate(timeout=180)[0]
        self.assertEqual(r.returncode, 0, out)
        wait_for(lambda: len({m["props"]["message-id"] for m in sub.received("lpr/test-cam-1/data")}) >= 3000,
                 timeout=60, what="all 3000 at the subscriber")
        got = [m["props"]["message-id"] for m in sub.received("lpr/test-cam-1/data")]
        print("\nbroker stopped under load: %d arrived, %d duplicates" % (len(set(got)), len(got) - len(set(got))))
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 0)
        self.assertEqual(gw.workers()["mqtt"]["restarts"], 0)

    def send_ok(self, gw, *args):
        rc, out, err = gw.ctl("--json", "send", "--protocol", "mqtt", "--wait", *args)
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertEqual((o["status"], o["protocol"]), ("ok", "mqtt"))
        return o

    def once(self, sub, topic, mid):
        """The one message on topic, after a moment in which a second copy would have come."""
        got = sub.wait(1, topic)
        time.sleep(0.3)
        got = sub.received(topic)
        self.assertEqual(len(got), 1, got)
        self.assertEqual(got[0]["props"]["message-id"], mid)
        return got[0]

    def test_broker_url_host_name_with_port(self):
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "#", "reader", "r")
        self.addCleanup(sub.close)
        gw = self.gw_for(mq, broker_url="localhost:%d" % mq.port)
        self.connected(gw)
        self.assertIn("connected to localhost:%d" % mq.port, gw.workers()["mqtt"]["health"])
        o = self.send_ok(gw, '{"plate":"HOSTNAME"}')
        self.assertEqual(self.once(sub, "lpr/test-cam-1/data", o["id"])["payload"], b'{"plate":"HOSTNAME"}')

    def test_broker_url_mqtt_scheme(self):
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "#", "reader", "r")
        self.addCleanup(sub.close)
        gw = self.gw_for(mq, broker_url="mqtt://127.0.0.1:%d" % mq.port)
        self.connected(gw)
        o = self.send_ok(gw, '{"plate":"SCHEME"}')
        self.assertEqual(self.once(sub, "lpr/test-cam-1/data", o["id"])["payload"], b'{"plate":"SCHEME"}')

    def test_broker_url_bare_host_means_port_1883(self):
        # a bare host name: MQTT's port 1883, named in the health text
        with socket.socket() as s:
            busy = s.connect_ex(("127.0.0.1", 1883)) == 0
        mq = Mosquitto(self, users=USERS)
        gw = self.gw_for(mq, broker_url="localhost")
        w = wait_for(lambda: (lambda w: w if "localhost:1883" in w["health"] and "connecting" not in w["health"]
                              else None)(gw.workers()["mqtt"]), what="health naming localhost:1883")
        if busy:
            self.skipTest("something listens on 127.0.0.1:1883 here: %s" % w["health"])
        self.assertFalse(w["connected"])
        self.assertIn("broker localhost:1883 unreachable: Connection refused", w["health"])
        rc, out, err = gw.ctl("send", "--protocol", "mqtt", '{"plate":"KEPT"}')
        self.assertEqual(rc, 0, err)
        q = wait_for(lambda: [m for m in gw.ctl_json("queue") if m["last_error"]], what="queued with a reason")
        self.assertIn("localhost:1883", q[0]["last_error"])

    def test_password_file(self):
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "#", "reader", "r")
        self.addCleanup(sub.close)
        pw = os.path.join(self.tmp, "mqtt.password")
        with open(pw, "w") as f:
            f.write("s3cret\n")  # an editor's final newline is not part of it
        os.chmod(pw, 0o600)
        cfg = {"mqtt": {"broker_url": mq.url(), "username": "edge", "password_file": pw}}
        gw = self.gateway(cfg)
        self.connected(gw)
        o = self.send_ok(gw, '{"plate":"PWFILE"}')
        self.once(sub, "lpr/test-cam-1/data", o["id"])
        self.assertNotIn("s3cret", gw.log_text())
        # readable by others: refused at load, naming the file
        os.chmod(pw, 0o644)
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path], capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("password_file %s is readable by" % pw, r.stderr)
        self.assertNotIn("s3cret", r.stderr)

    def test_topic_with_device_id(self):
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "#", "reader", "r")
        self.addCleanup(sub.close)
        gw = self.gw_for(mq, topic="cams/{device_id}/meta")
        self.connected(gw)
        o = self.send_ok(gw, "--topic", "x/{device_id}/y", '{"plate":"TOPIC"}')
        got = self.once(sub, "x/test-cam-1/y", o["id"])
        self.assertEqual(got["payload"], b'{"plate":"TOPIC"}')
        o = self.send_ok(gw, '{"plate":"CFG"}')
        self.once(sub, "cams/test-cam-1/meta", o["id"])
        self.assertEqual(sub.received("x/{device_id}/y") + sub.received("lpr/test-cam-1/data"), [])

    def test_qos2_ok_only_after_pubcomp(self):
        # 100 ms each way between the gateway and the broker: PUBACK (QoS 1) would
        # come after one round trip, 200 ms; PUBREC too; PUBCOMP after two, 400 ms.
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "lpr/#", "reader", "r", qos=2)
        self.addCleanup(sub.close)
        proxy = FaultProxy(self, mq.port)
        gw = self.gateway({"mqtt": {"broker_url": "127.0.0.1:%d" % proxy.port, "username": "edge",
                                    "password": "s3cret", "qos": 2}})
        self.connected(gw)
        self.assertEqual(proxy.command("latency 100"), "ok")
        o = self.send_ok(gw, '{"plate":"Q2V5"}')
        self.assertEqual(o["attempts"], 1)
        hop = o["route"][0]
        print("\nQoS 2 with 100 ms each way: ok after %d ms" % hop["ms"])
        self.assertGreaterEqual(hop["ms"], 390)
        got = self.once(sub, "lpr/test-cam-1/data", o["id"])
        self.assertEqual(got["payload"], b'{"plate":"Q2V5"}')
        self.assertEqual(gw.ctl_json("stats")["mqtt"]["success"], 1)

    def test_qos0_ok_once_written(self):
        # QoS 0 has no acknowledgment: ok comes when the message is on the socket.
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "lpr/#", "reader", "r")
        self.addCleanup(sub.close)
        gw = self.gw_for(mq, qos=0)
        self.connected(gw)
        o = self.send_ok(gw, '{"plate":"Q0"}')
        self.assertEqual(o["attempts"], 1)
        self.assertEqual(self.once(sub, "lpr/test-cam-1/data", o["id"])["payload"], b'{"plate":"Q0"}')
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "300", "-w", "50", "-p", "mqtt",
                            "--wait"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len(sub.wait(301, "lpr/test-cam-1/data")), 301)

    def test_messages_cut_off_unacknowledged_arrive_once(self):
        # The connection ends with 10 messages published and none at the broker:
        # they are answered retry and sent again after reconnecting, once each
        # (libmosquitto would also replay its own copies under the old ids).
        sub, proxy, gw = self.behind_proxy()
        self.assertEqual(proxy.command("blackhole"), "ok")
        ids = [gw.ctl("send", "--protocol", "mqtt", '{"n":%d}' % i)[1].strip() for i in range(10)]
        wait_for(lambda: gw.ctl_json("stats")["mqtt"]["inflight"] == 10, what="10 at the worker")
        time.sleep(0.3)  # published, into the black hole
        self.assertEqual(proxy.command("drop"), "ok")
        self.connected(gw, False)
        self.assertEqual(proxy.command("pass"), "ok")
        self.connected(gw)
        self.all_arrive(gw, sub, ids, "all 10 after reconnecting")
        time.sleep(1.0)  # a replayed copy would come now
        got = [m["props"]["message-id"] for m in sub.received("lpr/test-cam-1/data")]
        self.assertEqual(sorted(got), sorted(ids))
        self.assertEqual(gw.workers()["mqtt"]["restarts"], 0)

    def test_broker_that_stops_answering_is_dropped_after_ack_timeout(self):
        # A black hole keeps the TCP connection up: keepalive (60 s) would notice
        # only after one to two minutes. With ack_timeout_ms 1000 the messages held
        # are answered retry about a second after they were published, the
        # connection is dropped, health says why, and after the broker answers
        # again every message arrives; none is answered twice.
        sub, proxy, gw = self.behind_proxy({"ack_timeout_ms": 1000}, gateway={"log_level": "debug"})
        self.send_ok(gw, '{"plate":"BEFORE"}')
        self.assertEqual(proxy.command("blackhole"), "ok")
        t0 = time.monotonic()
        ids = [gw.ctl("send", "--protocol", "mqtt", '{"n":%d}' % i)[1].strip() for i in range(10)]
        w = wait_for(lambda: (lambda w: w if not w["connected"] else None)(gw.workers()["mqtt"]), timeout=8,
                     what="mqtt down within a few seconds, not keepalive's minute")
        took = time.monotonic() - t0
        print("\nblack hole: connection dropped after %.1f s: %s" % (took, w["health"]))
        self.assertGreaterEqual(took, 0.9)
        self.assertIn("broker 127.0.0.1:%d unreachable: no PUBACK within 1000 ms; connection dropped" % proxy.port,
                      w["health"])
        first = gw.ctl_json("trace", ids[0])["route"][0]
        self.assertEqual((first["protocol"], first["result"]), ("mqtt", "retry"))
        self.assertEqual(first["error"], "no PUBACK from 127.0.0.1:%d within 1000 ms" % proxy.port)
        for mid in ids:
            hop = gw.ctl_json("trace", mid)["route"][0]
            self.assertEqual(hop["result"], "retry", hop)
        self.assertEqual(gw.ctl_json("stats")["mqtt"]["inflight"], 0)  # nothing left unanswered
        self.assertEqual(proxy.command("pass"), "ok")
        self.connected(gw)
        self.all_arrive(gw, sub, ids, "all 10 after the broker answers again")
        self.assertNotIn("stale result", gw.log_text())  # no job answered twice
        self.assertEqual(gw.workers()["mqtt"]["restarts"], 0)

    def test_broker_that_never_sends_connack_is_dropped_after_connect_timeout(self):
        # A broker that accepts TCP and never answers the CONNECT (a black hole
        # behind the proxy): without a deadline the connect waits for keepalive
        # (60 s here, one to two periods). With connect_timeout_ms 1000 each
        # connect ends a second after it began, health says why, the next comes
        # after the backoff (250 ms, doubling), messages sent meanwhile are
        # answered retry at once and wait in the spool, and once the broker
        # answers again they all arrive, once each.
        sub, proxy, gw = self.behind_proxy({"connect_timeout_ms": 1000})
        before = self.send_ok(gw, '{"plate":"BEFORE"}')["id"]
        # the connection ends, and every new one goes into the black hole
        self.assertEqual(proxy.command("drop"), "ok")
        self.assertEqual(proxy.command("blackhole"), "ok")
        t0 = time.monotonic()
        want = "broker 127.0.0.1:%d unreachable: no CONNACK within 1000 ms" % proxy.port
        w = wait_for(lambda: (lambda w: w if want in w["health"] else None)(gw.workers()["mqtt"]), timeout=8,
                     what="no CONNACK in health within seconds, not keepalive's minute")
        took = time.monotonic() - t0
        print("\nno CONNACK: health after %.1f s: %s" % (took, w["health"]))
        self.assertGreaterEqual(took, 1.0)  # the reconnect after 250 ms, plus its second
        self.assertFalse(w["connected"])
        ids = []
        for i in range(10):
            rc, out, err = gw.ctl("send", "--protocol", "mqtt", '{"n":%d}' % i)
            self.assertEqual(rc, 0, err)
            ids.append(out.strip())
        wait_for(lambda: all(gw.ctl_json("trace", mid)["route"] for mid in ids), what="every message tried")
        wait_for(lambda: gw.ctl_json("stats")["mqtt"]["inflight"] == 0, what="nothing held by the worker")
        for mid in ids:
            hop = gw.ctl_json("trace", mid)["route"][0]
            self.assertEqual((hop["protocol"], hop["result"]), ("mqtt", "retry"), hop)
            self.assertIn("broker 127.0.0.1:%d unreachable" % proxy.port, hop["error"])
            self.assertLess(hop["ms"], 500, hop)  # answered at once, not at the deadline
        # connects go on, each ended by the deadline (the third at about 3.75 s)
        late = "no CONNACK from 127.0.0.1:%d within 1000 ms; connecting again" % proxy.port
        wait_for(lambda: gw.log_text().count(late) >= 3, timeout=15, what="three connects without CONNACK")
        self.assertFalse(gw.workers()["mqtt"]["connected"])
        # The proxy kept back what each dropped connect wrote; the worker reset
        # those connections, so it is dropped, not passed on now (a CONNECT
        # arriving after the next connect's would take its session over: see
        # test_a_connect_given_up_in_a_black_hole_never_reaches_the_broker).
        self.assertEqual(proxy.command("pass"), "ok")
        self.connected(gw)
        self.all_arrive(gw, sub, ids, "all 10 after the broker answers again")
        time.sleep(1.0)  # a second copy would come now
        got = [m["props"]["message-id"] for m in sub.received("lpr/test-cam-1/data")]
        self.assertEqual(sorted(got), sorted([before] + ids), got)  # each once
        self.assertNotIn("stale result", gw.log_text())
        self.assertEqual(gw.workers()["mqtt"]["restarts"], 0)

    def proxy_stat(self, proxy, key):
        """One number of the proxy's stats (faultproxy.py: "connections N bytes_up N ... resets N")."""
        words = proxy.command("stats").split()
        return int(words[words.index(key) + 1])

    def test_a_connect_given_up_in_a_black_hole_never_reaches_the_broker(self):
        """A connect whose CONNECT went into a black hole is given up at
        connect_timeout_ms, and the next one, on a path that works, connects.
        Then the hole clears. Had the given-up connection only been closed
        (FIN, or shut down), its kernel would still be retransmitting the
        CONNECT, which would now reach the broker with the worker's client id:
        the broker hands the session to the newest CONNECT and closes the live
        connection ("already connected, closing old connection"), the stale
        one then ends without a DISCONNECT and the broker publishes the last
        will, "offline", retained, while the worker reconnects: a spurious
        disconnect, a false status, a delay. The worker resets the connection
        it gives up (SO_LINGER 0), so its kernel discards the CONNECT and never
        sends it again.

        What is modelled (tests/tools/faultproxy.py): the proxy has read the
        CONNECT from the worker and keeps it back; that stands for bytes still
        in the worker's kernel. A held connection ("hold") stays in the hole
        while new connections pass: the old flow's packets are stuck on a path
        that has failed while a new connection gets through on another (a route
        change, another interface, a load balancer), the case where a late
        CONNECT can arrive after the new one. When the worker resets the
        connection, the proxy drops what it kept back (a reset discards it in
        the sender's kernel) and, once the hole clears, resets its side to the
        broker; when the worker only closes it, the proxy passes the CONNECT
        on when the hole clears, as a kernel's retransmission would deliver it."""
        sub, proxy, gw = self.behind_proxy({"connect_timeout_ms": 1000})
        status, data = "lpr/test-cam-1/status", "lpr/test-cam-1/data"
        before = self.send_ok(gw, '{"plate":"BEFORE"}')["id"]
        # the live connection ends; the next connect's CONNECT goes into the black hole
        self.assertEqual(proxy.command("drop"), "ok")
        self.assertEqual(proxy.command("blackhole"), "ok")
        wait_for(lambda: self.proxy_stat(proxy, "held") > 0, what="the next CONNECT in the black hole")
        # that connection stays in the hole; the connects after it pass
        self.assertEqual(proxy.command("hold"), "ok")
        self.assertEqual(proxy.command("pass"), "ok")
        late = "no CONNACK from 127.0.0.1:%d within 1000 ms; connecting again" % proxy.port
        wait_for(lambda: late in gw.log_text(), timeout=10, what="the connect in the hole given up")
        self.connected(gw)
        wait_for(lambda: [m["payload"] for m in sub.received(status)][-1:] == [b"online"], what="online again")
        ups = gw.log_text().count("connected to 127.0.0.1:%d (MQTT" % proxy.port)
        downs = gw.log_text().count("disconnected from 127.0.0.1:%d" % proxy.port)
        statuses = len(sub.received(status))
        # the hole clears: what the proxy kept back of the given-up connect may go on now
        self.assertEqual(proxy.command("release"), "ok")
        time.sleep(1.5)  # a stale CONNECT takes the session over within milliseconds
        self.assertEqual(gw.log_text().count("disconnected from 127.0.0.1:%d" % proxy.port), downs,
                         "the live connection was closed after the black hole cleared")
        self.assertEqual(gw.log_text().count("connected to 127.0.0.1:%d (MQTT" % proxy.port), ups)
        self.assertTrue(gw.workers()["mqtt"]["connected"])
        self.assertEqual([m["payload"] for m in sub.received(status)][statuses:], [])  # no "offline" by a will
        dropped = self.proxy_stat(proxy, "dropped")
        print("\nthe given-up connect: %d bytes dropped in the hole, %d resets" % (
            dropped, self.proxy_stat(proxy, "resets")))
        self.assertGreater(dropped, 0)  # the CONNECT, discarded with the reset
        # the live connection carries on: each message at once, and once
        after = [self.send_ok(gw, '{"n":%d}' % i) for i in range(5)]
        self.assertEqual([o["attempts"] for o in after], [1] * 5)
        time.sleep(0.3)
        got = [m["props"]["message-id"] for m in sub.received(data)]
        self.assertEqual(sorted(got), sorted([before] + [o["id"] for o in after]))
        self.assertEqual(gw.workers()["mqtt"]["restarts"], 0)

    def test_a_connection_given_up_is_reset(self):
        """A connection the worker gives up, for a message without its PUBACK
        (ack_timeout_ms) or by libmosquitto's keepalive (no PINGRESP), is reset,
        not closed: its kernel drops the PUBLISH or PINGREQ packets it still
        holds and stops retransmitting them. The connection is held in the
        proxy's black hole (nothing passes, not even the broker's close at its
        own keepalive, 1.5 periods) while new connections pass; the proxy
        counts a worker's RST (see test_a_connect_given_up_in_a_black_hole_
        never_reaches_the_broker for what is modelled). A graceful close would
        leave the packets to arrive when the hole clears. The messages held by
        the given-up connection are answered retry and arrive once each, over
        the next connection."""
        sub, proxy, gw = self.behind_proxy({"ack_timeout_ms": 1000, "keepalive": 5})
        data = "lpr/test-cam-1/data"
        before = self.send_ok(gw, '{"plate":"BEFORE"}')["id"]
        self.assertEqual(self.proxy_stat(proxy, "resets"), 0)
        # no PUBACK: the live connection into the hole, five messages after it
        self.assertEqual(proxy.command("hold"), "ok")
        ids = [gw.ctl("send", "--protocol", "mqtt", '{"n":%d}' % i)[1].strip() for i in range(5)]
        dropped = "disconnected from 127.0.0.1:%d: no PUBACK within 1000 ms; connection dropped" % proxy.port
        wait_for(lambda: dropped in gw.log_text(), timeout=10, what="the connection given up for a PUBACK")
        wait_for(lambda: self.proxy_stat(proxy, "resets") == 1, timeout=2, what="the worker's RST at the proxy")
        for mid in ids:
            hop = gw.ctl_json("trace", mid)["route"][0]
            self.assertEqual((hop["protocol"], hop["result"]), ("mqtt", "retry"), hop)
        self.connected(gw)
        self.all_arrive(gw, sub, ids, "all 5 over the next connection")
        self.assertEqual(proxy.command("release"), "ok")
        time.sleep(1.0)  # a copy from the given-up connection would come now
        got = [m["props"]["message-id"] for m in sub.received(data)]
        self.assertEqual(sorted(got), sorted([before] + ids))
        # keepalive: the live connection into the hole with nothing to send; the
        # PINGREQ after 5 s has no answer, and libmosquitto ends it 5 s later
        self.assertEqual(proxy.command("hold"), "ok")
        t0 = time.monotonic()
        wait_for(lambda: not gw.workers()["mqtt"]["connected"], timeout=20, what="given up by keepalive (2 periods)")
        print("\nkeepalive 5 s: the connection given up after %.1f s" % (time.monotonic() - t0))
        self.assertIn("disconnected from 127.0.0.1:%d: keepalive: the broker stopped answering" % proxy.port,
                      gw.log_text())  # libmosquitto's keepalive, not the broker's close (held in the hole)
        wait_for(lambda: self.proxy_stat(proxy, "resets") == 2, timeout=2, what="the worker's RST at the proxy")
        self.assertGreater(self.proxy_stat(proxy, "dropped"), 0)  # the PINGREQ at least
        self.connected(gw)
        self.assertEqual(proxy.command("release"), "ok")
        self.assertEqual(self.send_ok(gw, '{"plate":"AFTER"}')["attempts"], 1)
        self.assertEqual(gw.workers()["mqtt"]["restarts"], 0)

    def test_a_reconnect_under_way_keeps_the_reason(self):
        # The broker's address accepts TCP and never answers (a broker that is
        # down behind a load balancer, a host that has gone away): each connect
        # ends after connect_timeout_ms. A message sent while the first connect
        # is under way is answered "connecting": there is no reason yet. One
        # sent during a later connect names the reason the last one failed, in
        # its trace, as health does, not "connecting" again; one sent while the
        # broker refuses connections names that.
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(16)
        lst.settimeout(20)
        port = lst.getsockname()[1]
        held = []
        self.addCleanup(lambda: [s.close() for s in held + [lst]])

        def a_connect():
            """Until the worker's next connect has sent its CONNECT (the network
            monitor's probes connect too, and close at once)."""
            while True:
                c = lst.accept()[0]
                c.settimeout(5)
                try:
                    first = c.recv(1)
                except socket.timeout:
                    first = b""
                if first == b"\x10":
                    held.append(c)
                    return
                c.close()

        gw = self.gateway({"mqtt": {"broker_url": "127.0.0.1:%d" % port, "connect_timeout_ms": 3000},
                           "spool": {"retry_backoff_min_ms": 60000, "retry_backoff_max_ms": 60000}})
        here = "broker 127.0.0.1:%d unreachable: " % port

        def first_hop(body):
            mid = gw.ctl("send", "--protocol", "mqtt", body)[1].strip()
            # the hop shows "in flight" until the worker's answer is in
            route = wait_for(lambda: (lambda r: r if r and r[0]["result"] != "in flight" else None)(
                gw.ctl_json("trace", mid)["route"]), what="%s tried" % body)
            self.assertEqual((route[0]["protocol"], route[0]["result"]), ("mqtt", "retry"), route)
            return mid, route[0]["error"]

        a_connect()  # the first, under way
        self.assertEqual(first_hop('{"n":1}')[1], here + "connecting")
        late = here + "no CONNACK within 3000 ms"
        wait_for(lambda: gw.workers()["mqtt"]["health"] == late, what="the first connect given up")
        a_connect()  # the second, under way (250 ms later)
        mid, error = first_hop('{"n":2}')
        self.assertEqual(error, late + " (reconnecting)")
        self.assertEqual(gw.workers()["mqtt"]["health"], late)
        self.assertEqual(gw.ctl_json("trace", mid)["message"]["last_error"], "mqtt: " + error)
        rc, out, err = gw.ctl("trace", mid)
        self.assertIn(late + " (reconnecting)", out)
        # now nothing listens there: the connect under way is cut off, the next are refused
        for s in held + [lst]:
            s.close()
        refused = wait_for(lambda: (lambda h: h if "refused" in h.lower() else None)(
            gw.workers()["mqtt"]["health"]), timeout=15, what="the refusal in health")
        print("\nhealth with the broker refusing: %s" % refused)
        self.assertTrue(refused.startswith(here), refused)
        error = first_hop('{"n":3}')[1]
        self.assertIn(error, (refused, refused + " (reconnecting)"))
        self.assertEqual(gw.workers()["mqtt"]["restarts"], 0)

    def test_connect_timeout_ms_checked(self):
        mq = Mosquitto(self, users=USERS)
        for bad in (50, 0, "soon", 3600001):
            gw = self.gateway({"mqtt": {"broker_url": mq.url(), "connect_timeout_ms": bad}}, start=False,
                              name="bad%s" % bad)
            r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path], capture_output=True, text=True,
                               timeout=20)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertRegex(r.stderr, r"%s:\d+:\d+: bad value '%s' for 'connect_timeout_ms' in section 'mqtt', "
                             r"expected an integer from 100 to 3600000" % (gw.cfg_path, bad))

    def test_health_stays_down_after_acks(self):
        # Round trips measured before the broker went away must not report it up again.
        mq = Mosquitto(self, users=USERS)
        gw = self.gw_for(mq)
        self.connected(gw)
        for i in range(3):
            self.send_ok(gw, '{"n":%d}' % i)
        mq.stop()
        self.connected(gw, False)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            w = gw.workers()["mqtt"]
            self.assertFalse(w["connected"], w)
            time.sleep(0.05)

    def test_client_certificate_required_by_the_broker(self):
        mq = Mosquitto(self, users=USERS, tls=True, require_cert=True)
        sub = Subscriber(mq.plain_port, "#", "reader", "r")
        self.addCleanup(sub.close)
        gw = self.gw_for(mq, ca_file=mq.ca, cert_file=mq.client_cert, key_file=mq.client_key)
        self.connected(gw)
        o = self.send_ok(gw, '{"plate":"CERT"}')
        self.assertEqual(self.once(sub, "lpr/test-cam-1/data", o["id"])["payload"], b'{"plate":"CERT"}')
        # without a client certificate the broker refuses the connection
        gw2 = self.gateway({"mqtt": {"broker_url": mq.url(), "username": "edge", "password": "s3cret",
                                     "ca_file": mq.ca}}, name="nocert")
        w = wait_for(lambda: (lambda w: w if "unreachable" in w["health"] else None)(gw2.workers()["mqtt"]),
                     what="refusal in health")
        print("\nwithout a client certificate: %s" % w["health"])
        self.assertFalse(w["connected"])
        self.assertIn("broker 127.0.0.1:%d unreachable" % mq.port, w["health"])
        time.sleep(0.5)
        self.assertFalse(gw2.workers()["mqtt"]["connected"])


if __name__ == "__main__":
    unittest.main()
