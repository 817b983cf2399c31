"""ucgw-websocket against lpr-peer: the envelope and its id, acks and nacks,
ack none, a server that goes away and returns, TLS, volume."""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lprpeer import LprPeer  # noqa: E402
from mosquitto import make_ca  # noqa: E402
from ucgwtest import BIN, GatewayTest, wait_for  # noqa: E402


class WebSocketTest(GatewayTest):
    def gw_for(self, peer, **ws):
        w = {"server_url": peer.ws_url(), "reconnect_delay": 0.2, "ack_timeout_ms": 1500}
        w.update(ws)
        return self.gateway({"websocket": w, "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}})

    def up(self, gw, yes=True):
        wait_for(lambda: gw.workers()["websocket"]["connected"] == yes, what="websocket connected=%s" % yes)

    def test_envelope_and_ack(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        body = '{"plate":"WS123","confidence":0.9}'
        rc, out, err = gw.ctl("--json", "send", "--protocol", "websocket", "--wait", body)
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        rec = peer.records("ws")[0]
        self.assertEqual(rec["id"], o["id"])
        self.assertEqual(json.loads(rec["body"]), {"id": o["id"], "data": json.loads(body)})
        self.assertEqual(rec["path"], "/lpr")

    def test_bearer_jwt_on_the_upgrade(self):
        peer = LprPeer(self)
        secret = os.path.join(self.tmp, "jwt.secret")
        with open(secret, "w") as f:
            f.write("ws-signing-key")
        os.chmod(secret, 0o600)
        gw = self.gw_for(peer, jwt_secret_file=secret, headers={"X-Camera": "gate-9"})
        self.up(gw)
        rc, out, err = gw.ctl("send", "--protocol", "websocket", "--wait", '{"plate":"J"}')
        self.assertEqual(rc, 0, err)
        rec = peer.records("ws")[0]
        self.assertTrue(rec["auth"].startswith("Bearer ey"), rec["auth"])
        self.assertEqual(len(rec["auth"].split(".")), 3)

    def test_nack_400_is_permanent_503_is_retried(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        peer.mode("400")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "websocket", "--wait", '{"plate":""}')
        self.assertEqual(rc, 1)
        self.assertIn("bad record: plate missing", json.loads(out)["error"])
        peer.mode("200")
        peer.mode("503x1")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "websocket", "--wait", '{"plate":"R"}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["attempts"], 2)

    def test_no_ack_is_retried(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        peer.mode("stallx1")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "websocket", "--wait", '{"plate":"S"}')
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertIn("no ack", o["route"][0]["error"])
        self.assertEqual(len(peer.records("ws")), 2)  # a duplicate, which the id lets the server drop

    def test_ack_none_is_ok_when_written(self):
        peer = LprPeer(self, ws_ack="none")
        gw = self.gw_for(peer, ack="none")
        self.up(gw)
        rc, out, err = gw.ctl("send", "--protocol", "websocket", "--wait", '{"plate":"N"}')
        self.assertEqual(rc, 0, err)
        wait_for(lambda: peer.records("ws"), what="record")

    def test_server_down_and_back(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        port = peer.port
        peer.stop()
        self.up(gw, False)
        ids = [gw.ctl("send", "--protocol", "websocket", '{"n":%d}' % i)[1].strip() for i in range(20)]
        time.sleep(0.3)
        peer2 = LprPeer(self, port=port, name="peer2")
        wait_for(lambda: {r["id"] for r in peer2.records("ws")} >= set(ids), timeout=30, what="all 20")

    def test_wss_trusted_and_untrusted(self):
        ca, cert, key = make_ca(self.tmp)
        peer = LprPeer(self, tls=(cert, key))
        gw = self.gw_for(peer, ca_file=ca)
        self.up(gw)
        rc, out, err = gw.ctl("send", "--protocol", "websocket", "--wait", '{"tls":1}')
        self.assertEqual(rc, 0, err)
        gw2 = self.gateway({"websocket": {"server_url": peer.ws_url(), "reconnect_attempts": 1}}, name="untrusted")
        time.sleep(2)
        self.assertFalse(gw2.workers()["websocket"]["connected"])

    def test_thousand_messages(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "1000", "-w", "200", "-p",
                            "websocket", "--wait"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        ids = [x["id"] for x in peer.records("ws")]
        self.assertEqual(len(set(ids)), 1000)
        print("\n1000 messages over WebSocket: %d duplicates; %s" % (len(ids) - len(set(ids)), r.stdout.strip()))


if __name__ == "__main__":
    unittest.main()
