"""Auto-selection from measured facts: latency pushed past the thresholds (by
the fault-injecting proxy in front of the WebSocket server) changes the chosen
protocol as the reference design's rules say; round robin spreads the load; the
metrics of `status` show the quality."""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from ucgwtest import BIN, FaultProxy, GatewayTest, wait_for  # noqa: E402


class SelectionTest(GatewayTest):
    def setup_gw(self, **sel):
        self.peer = LprPeer(self)
        self.proxy = FaultProxy(self, self.peer.port)
        cfg = {"websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % self.proxy.port, "ack_timeout_ms": 5000},
               "rest": {"base_url": self.peer.http_url()},
               "network_monitor": {"interval_ms": 60000},
               "protocol_selection": sel}
        gw = self.gateway(cfg)
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="both up")
        return gw

    def auto(self, gw, body='{"plate":"A1"}', *opts):
        rc, out, err = gw.ctl("--json", "send", "--wait", *opts, body)
        self.assertEqual(rc, 0, err)
        return json.loads(out)["protocol"]

    def test_latency_changes_the_choice(self):
        gw = self.setup_gw()
        for _ in range(3):  # measured quality: loopback, "excellent", counts as good
            gw.ctl("send", "--protocol", "websocket", "--wait", '{"warm":1}')
        time.sleep(1.1)
        gw.ctl("send", "--protocol", "websocket", "--wait", '{"warm":2}')
        self.assertIn(gw.ctl_json("status")["network"]["websocket"]["quality"], ("excellent", "good"))
        self.assertEqual(self.auto(gw), "websocket")
        self.assertEqual(self.auto(gw, '{"plate":"%s"}' % ("x" * 5000)), "rest")  # medium: rest
        self.assertEqual(self.proxy.command("latency 150"), "ok")
        for i in range(12):  # the worker's own round trips now take 300 ms
            gw.ctl("send", "--protocol", "websocket", "--wait", '{"slow":%d}' % i)
            time.sleep(0.1)
        q = wait_for(lambda: (lambda q: q if q in ("fair", "poor") else None)(
            gw.ctl_json("status")["network"]["websocket"]["quality"]), timeout=20, what="quality drops")
        print("\nwebsocket quality with 150 ms each way: %s, rtt %.0f ms" % (
            q, gw.ctl_json("status")["network"]["websocket"]["rtt_ms"]))
        self.assertEqual(self.auto(gw), "rest")                       # small, not good: rest
        self.assertEqual(self.auto(gw, '{"p":1}', "--priority", "high"), "rest")  # high, not good: mqtt is off, chain

    def test_broker_stopped_metadata_goes_by_rest_or_websocket(self):
        mq = Mosquitto(self, users={"edge": "pw"})
        peer = LprPeer(self)
        gw = self.gateway({"mqtt": {"broker_url": mq.url(), "username": "edge", "password": "pw"},
                           "rest": {"base_url": peer.http_url()}, "websocket": {"server_url": peer.ws_url()}})
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="all up")
        mq.stop()
        wait_for(lambda: not gw.workers()["mqtt"]["connected"], what="broker down")
        large = '{"plate":"L","pad":"%s"}' % ("x" * 12000)  # the rules send large metadata by MQTT
        got = []
        for i in range(5):
            rc, out, err = gw.ctl("--json", "send", "--wait", large)
            self.assertEqual(rc, 0, err)
            got.append(json.loads(out)["protocol"])
            rc, out, err = gw.ctl("--json", "send", "--protocol", "mqtt", "--wait", '{"n":%d}' % i)
            self.assertEqual(rc, 0, err)
            got.append(json.loads(out)["protocol"])
        self.assertNotIn("mqtt", got)
        ids = {r["id"] for r in peer.records()}
        self.assertEqual(len(ids), 10)
        stats = gw.ctl_json("stats")
        self.assertGreaterEqual(stats["mqtt"]["fallback_out"], 5)
        self.assertGreaterEqual(stats["rest"]["fallback_in"] + stats["websocket"]["fallback_in"], 5)

    def test_round_robin_policy(self):
        gw = self.setup_gw(policy="round_robin")
        got = [self.auto(gw, '{"n":%d}' % i) for i in range(6)]
        self.assertEqual(set(got), {"websocket", "rest"})
        self.assertGreaterEqual(min(got.count("websocket"), got.count("rest")), 2)

    def test_protocol_not_ready_is_not_chosen(self):
        gw = self.setup_gw()
        self.proxy.command("drop")
        wait_for(lambda: not gw.workers()["websocket"]["connected"], what="websocket down")
        for i in range(5):
            self.assertEqual(self.auto(gw, '{"n":%d}' % i), "rest")

    def test_rule_outcomes_are_configurable(self):
        # what each rule picks is configuration: here small metadata goes by REST
        # and medium by WebSocket, the other way round from the reference design
        gw = self.setup_gw(small="rest", medium="websocket")
        self.assertEqual(self.auto(gw), "rest")
        self.assertEqual(self.auto(gw, '{"plate":"%s"}' % ("x" * 5000)), "websocket")
        bad = self.gateway({"protocol_selection": {"small": "pigeon"}, "testworker": {}}, start=False)
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", bad.cfg_path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("'pigeon'", r.stderr)
        self.assertIn("expected one of: websocket, rest, mqtt", r.stderr)


if __name__ == "__main__":
    unittest.main()
