"""ucgw-mqtt against a real mosquitto: the bytes, the id, QoS, the status topic,
authentication, TLS, a broker that goes away and comes back, volume."""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, GatewayTest, wait_for  # noqa: E402
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


if __name__ == "__main__":
    unittest.main()
