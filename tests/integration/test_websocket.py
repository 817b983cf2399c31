"""ucgw-websocket against lpr-peer: the envelope and its id, acks and nacks,
ack none, a server that goes away and returns, TLS, volume."""
import json
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lprpeer import LprPeer  # noqa: E402
from mosquitto import make_ca  # noqa: E402
from ucgwtest import BIN, FaultProxy, GatewayTest, free_port, wait_for  # noqa: E402
from linkem import Link  # noqa: E402


class WebSocketTest(GatewayTest):
    def gw_for(self, peer, **ws):
        w = {"server_url": peer.ws_url(), "reconnect_delay": 0.2, "ack_timeout_ms": 1500}
        w.update(ws)
        return self.gateway({"websocket": w, "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}})

    def up(self, gw, yes=True, timeout=10):
        wait_for(lambda: gw.workers()["websocket"]["connected"] == yes, timeout=timeout,
                 what="websocket connected=%s" % yes)

    def health_says(self, gw, words, timeout=10):
        return wait_for(lambda: (lambda w: w if words in w["health"] else None)(gw.workers()["websocket"]),
                        timeout=timeout, what="websocket health saying %r" % words)

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
        # the payload's bytes as they were, with the time the gateway accepted it
        self.assertRegex(rec["body"], r'^\{"id":"%s","accepted_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","data":%s\}$'
                         % (o["id"], re.escape(body)))
        self.assertEqual(rec["path"], "/lpr")
        self.assertTrue(rec["ua"].startswith("ucgw/"), rec)
        self.assertEqual(len(peer.records("ws")), 1)

    def test_upgrade_headers(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer, api_key="k-ws", headers={"Authorization": "Basic ZWRnZTpwdw=="})
        self.up(gw)
        rc, out, err = gw.ctl("send", "--protocol", "websocket", "--wait", '{"plate":"H"}')
        self.assertEqual(rc, 0, err)
        rec = peer.records("ws")[0]
        self.assertEqual(rec["xapikey"], "k-ws")
        self.assertEqual(rec["auth"], "Basic ZWRnZTpwdw==")

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
        o = json.loads(out)
        self.assertIn("server refused (400): bad record: plate missing", o["error"])
        self.assertEqual(o["attempts"], 1)
        self.assertEqual(len(gw.ctl_json("queue", "dead")), 1)
        peer.mode("401")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "websocket", "--wait", '{"plate":"U"}')
        self.assertEqual(rc, 1)
        self.assertIn("server refused (401): unauthorized", json.loads(out)["error"])
        peer.mode("200")
        peer.mode("503x1")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "websocket", "--wait", '{"plate":"R"}')
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertEqual(o["attempts"], 2)
        self.assertIn("server refused (503): unavailable", o["route"][0]["error"])

    def test_connection_dropped_with_the_message_unacked(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        peer.mode("dropx1")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "websocket", "--wait", '{"plate":"D"}')
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertGreaterEqual(o["attempts"], 2, o)
        self.assertIn("connection lost before the server's ack", o["route"][0]["error"])
        self.assertEqual(gw.workers()["websocket"]["restarts"], 0)

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
        gw = self.gw_for(peer, ack="none", ping_interval_s=1)
        self.up(gw)
        rc, out, err = gw.ctl("--json", "send", "--protocol", "websocket", "--wait", '{"plate":"N"}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["attempts"], 1)
        wait_for(lambda: peer.records("ws"), what="record")
        # No acks to time: the round trip comes from the pings.
        w = gw.wait_worker("websocket", lambda w: w["rtt_us"] > 0, what="a pong's round trip")
        self.assertLess(w["rtt_us"], 1000000)
        # The same server with ack: message waits for an ack that never comes, and retries.
        gw2 = self.gw_for(peer, ack_timeout_ms=300)
        self.up(gw2)
        rc, out, err = gw2.ctl("send", "--protocol", "websocket", '{"plate":"M"}')
        mid = out.strip()
        wait_for(lambda: len([r for r in peer.records("ws") if r["id"] == mid]) >= 2, what="a second try")

    def test_no_pong_drops_the_connection(self):
        peer = LprPeer(self)
        proxy = FaultProxy(self, peer.port)
        gw = self.gateway({"websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % proxy.port, "ping_interval_s": 1,
                                         "reconnect_delay": 0.2}})
        self.up(gw)
        self.assertEqual(proxy.command("blackhole"), "ok")
        w = self.health_says(gw, "no pong within 1 s", timeout=10)
        self.assertFalse(w["connected"])
        self.assertEqual(proxy.command("pass"), "ok")
        self.up(gw, timeout=30)
        rc, out, err = gw.ctl("send", "--protocol", "websocket", "--wait", '{"plate":"P"}')
        self.assertEqual(rc, 0, err)

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
        self.assertEqual(gw.workers()["websocket"]["restarts"], 0)

    def test_unreachable_at_start_then_up(self):
        port = free_port()
        gw = self.gateway({"websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % port, "reconnect_delay": 0.2,
                                         "reconnect_attempts": 2}})
        # two or more: polling under ASan may first look after a third attempt
        w = wait_for(lambda: (lambda w: w if re.search(r"\b([2-9]|\d\d+) failed connects in a row", w["health"])
                              else None)(gw.workers()["websocket"]), what="websocket health: 2+ failed connects")
        self.assertFalse(w["connected"])
        rc, out, err = gw.ctl("send", "--protocol", "websocket", '{"early":1}')
        self.assertEqual(rc, 0, err)
        mid = out.strip()
        peer = LprPeer(self, port=port)
        self.up(gw, timeout=30)
        wait_for(lambda: [r for r in peer.records("ws") if r["id"] == mid], timeout=30, what="the early message")

    def test_no_reconnect_attempts_before_slowing_down(self):
        # reconnect_attempts 0: every failed connect slows the next; losing a
        # working connection is not "0 failed connects in a row".
        peer = LprPeer(self)
        gw = self.gw_for(peer, reconnect_attempts=0, reconnect_delay=0.2)
        self.up(gw)
        peer.stop()
        wait_for(lambda: re.search(r"down: [1-9]\d* failed connects in a row", gw.workers()["websocket"]["health"]),
                 what="websocket health: failed connects")
        self.assertNotIn(" 0 failed connects", gw.log_text())

    def test_bad_server_url_is_a_configuration_error(self):
        gw = self.gateway({"websocket": {"server_url": "http://127.0.0.1/x"}})
        gw.wait_worker("websocket", lambda w: w["state"] not in ("starting", "ready"), what="websocket given up")
        self.assertIn("expected ws://host[:port]/path or wss://", gw.log_text())

    def test_wss_trusted_and_untrusted(self):
        ca, cert, key = make_ca(self.tmp)
        peer = LprPeer(self, tls=(cert, key))
        gw = self.gw_for(peer, ca_file=ca)
        self.up(gw)
        rc, out, err = gw.ctl("send", "--protocol", "websocket", "--wait", '{"tls":1}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(peer.records("ws")[0]["body"])["data"], {"tls": 1})
        gw2 = self.gateway({"websocket": {"server_url": peer.ws_url(), "reconnect_attempts": 1}}, name="untrusted")
        w = self.health_says(gw2, "TLS handshake failed: unable to get local issuer certificate")
        self.assertFalse(w["connected"])
        gw3 = self.gw_for(peer, insecure=True)
        self.up(gw3)
        self.assertIn("websocket.insecure is true: the server's certificate is NOT verified", gw3.log_text())
        rc, out, err = gw3.ctl("send", "--protocol", "websocket", "--wait", '{"tls":3}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(peer.records("ws")), 2)

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

    def test_window_grows_on_a_long_link(self):
        """Behind an emulated LTE link (RTT 100 ms, 20 Mbit/s) the window of 256
        would cap WebSocket at 2,560 messages/s: under a load it grows past it,
        every message arrives once, and stats, ucgwctl stats and the dashboard's
        JSON show it."""
        peer = LprPeer(self)
        link = Link.for_test(self, peer.port, profile="lte")
        gw = self.gateway({"websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % link.port}})
        self.up(gw)
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "20000", "-w", "5000", "-p",
                            "websocket", "--wait", "-z", "250"], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        st = gw.ctl_json("stats")["websocket"]
        print("\n20000 messages over WebSocket on lte: %s; window %d (%s)" % (r.stdout.strip(), st["window"],
                                                                          st["window_state"]))
        self.assertGreater(st["window"], 256)
        self.assertEqual(st["window_max"], 4096)
        ids = [x["id"] for x in peer.records("ws")]
        self.assertEqual((len(ids), len(set(ids))), (20000, 20000))
        out = gw.ctl("stats")[1]
        self.assertIn("WINDOW", out.splitlines()[0])
        self.assertEqual(out.splitlines()[1].split()[-1], str(gw.ctl_json("stats")["websocket"]["window"]))
        self.assertEqual(gw.ctl_json("stats")["rest"]["window"], 256)  # not used: where it starts


if __name__ == "__main__":
    unittest.main()
