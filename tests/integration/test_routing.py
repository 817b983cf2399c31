"""The router against the real daemon and real servers, across outages and
restarts (issue 18): a restart replays `auto` messages once the workers are
there; a message that fell back to a protocol that is down goes back to its
own when that one is up again; a backlog drains over every protocol that is up,
not only the first to come back."""
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402
from ucgwtest import BIN, GatewayTest, free_port, wait_for  # noqa: E402


class RoutingTest(GatewayTest):
    def send(self, gw, body, *args):
        rc, out, err = gw.ctl("send", *args, body)
        self.assertEqual(rc, 0, err)
        return out.strip()

    def depth(self, gw):
        return gw.ctl_json("status")["spool"]["depth"]

    def test_auto_messages_survive_a_restart_before_their_server(self):
        # Only mqtt, its broker not there yet: an auto message is accepted and
        # waits; ucgwd shuts down and starts again; then the broker comes. The
        # message is replayed once the mqtt worker exists and is delivered, not
        # dead-lettered at start with 0 attempts.
        port = free_port()
        gw = self.gateway({"mqtt": {"broker_url": "127.0.0.1:%d" % port},
                           "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}})
        mid = self.send(gw, '{"plate":"REPLAY1"}')
        rc, out, err = gw.ctl("shutdown")
        self.assertEqual(rc, 0, err)
        self.assertEqual(gw.proc.wait(30), 0)
        gw.kill()
        gw.start()
        time.sleep(1)  # inside the start's grace: held, not dead
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        Mosquitto(self, port=port)
        sub = Subscriber(port, "lpr/test-cam-1/data")
        self.addCleanup(sub.close)
        wait_for(lambda: self.depth(gw) == 0, timeout=30, what="the replayed message delivered")
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        self.assertEqual(gw.ctl_json("stats")["mqtt"]["success"], 1)
        self.assertEqual(gw.ctl_json("trace", mid)["message"]["state"], "delivered")
        got = sub.wait(1, timeout=10)
        self.assertEqual(got[0]["props"]["message-id"], mid)
        self.assertNotIn("is dead-lettered", gw.log_text())

    def test_a_message_that_fell_back_goes_home_when_its_protocol_is_back(self):
        # Messages for mqtt, sent while the broker is down, fall back to rest,
        # whose server is down for good (rest retries up to 100 times). When
        # the broker is back they go out over mqtt at once: they do not wait
        # on rest while mqtt, ahead of it in their chain, is up.
        mq = Mosquitto(self)
        dead_http = free_port()
        gw = self.gateway({"mqtt": {"broker_url": mq.url()},
                           "rest": {"base_url": "http://127.0.0.1:%d" % dead_http, "retry_attempts": 100},
                           "fallback": {"chains": {"mqtt": ["rest"]}},
                           "spool": {"retry_backoff_min_ms": 500, "retry_backoff_max_ms": 4000}})
        gw.wait_worker("mqtt", lambda w: w["connected"], what="mqtt up")
        mq.stop()
        gw.wait_worker("mqtt", lambda w: not w["connected"], what="mqtt down")
        ids = [self.send(gw, '{"plate":"HOME%d"}' % i, "--protocol", "mqtt") for i in range(10)]

        def fell_back():
            q = [m for m in gw.ctl_json("queue") if m["id"] in ids]
            return len(q) == 10 and all((m["last_error"] or "").startswith("rest:") for m in q)
        wait_for(fell_back, timeout=20, what="all ten waiting on rest")
        time.sleep(2)  # some rounds on rest
        mq.start()
        sub = Subscriber(mq.port, "lpr/test-cam-1/data")
        self.addCleanup(sub.close)
        t0 = time.monotonic()
        got = sub.wait(10, timeout=15)
        took = time.monotonic() - t0
        print("\n10 messages back on mqtt %.2f s after the broker returned" % took)
        self.assertEqual(sorted(m["props"]["message-id"] for m in got), sorted(ids))
        wait_for(lambda: self.depth(gw) == 0, what="spool empty")
        for mid in ids:
            self.assertEqual(gw.ctl_json("trace", mid)["route"][-1]["protocol"], "mqtt")

    def test_a_backlog_drains_over_every_protocol_that_is_up(self):
        # 1,200 messages, a third each for websocket, rest and mqtt, queued
        # with every server down. REST's server (slow: 40 ms a request) comes
        # back first, the WebSocket server and the broker 2 s later: all three
        # drain the backlog, each at its pace, rather than REST alone.
        http_port, ws_port, mq_port = free_port(), free_port(), free_port()
        gw = self.gateway({"websocket": {"server_url": "ws://127.0.0.1:%d/lpr" % ws_port,
                                         "reconnect_delay": 0.3},  # back within the drain, on a loaded machine
                           "rest": {"base_url": "http://127.0.0.1:%d" % http_port},
                           "mqtt": {"broker_url": "127.0.0.1:%d" % mq_port},
                           "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 2000}})
        for proto in ("websocket", "rest", "mqtt"):
            r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "400", "-w", "100",
                                "-p", proto], capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(json.loads(r.stdout)["failed"], 0)
        time.sleep(1)
        rest_peer = LprPeer(self, port=http_port, name="rest-peer")
        rest_peer.delay(40)
        time.sleep(2)
        LprPeer(self, port=ws_port, name="ws-peer")
        Mosquitto(self, port=mq_port)
        t0 = time.monotonic()
        wait_for(lambda: self.depth(gw) == 0, timeout=120, what="backlog drained")
        took = time.monotonic() - t0
        stats = gw.ctl_json("stats")
        share = {p: stats[p]["success"] for p in ("websocket", "rest", "mqtt")}
        took_over = {p: stats[p].get("stolen", 0) for p in ("websocket", "rest", "mqtt")}
        print("\nbacklog of 1200 drained %.1f s after the last servers returned; delivered %s; taken over %s"
              % (took, share, took_over))
        self.assertEqual(sum(share.values()), 1200)
        self.assertGreaterEqual(sum(1 for n in share.values() if n > 0), 2, share)
        self.assertGreater(share["websocket"] + share["mqtt"], 0, share)
        self.assertEqual(gw.ctl_json("queue", "dead"), [])


if __name__ == "__main__":
    unittest.main()
