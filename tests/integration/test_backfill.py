"""spool.order live_first against a real mosquitto behind the link emulator: during
an outage a backlog waits in the spool; after the link comes back, a new message
goes out before the backlog's last, and the backlog arrives complete and oldest
first. The trace of each says live or backfill."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import GatewayTest, wait_for  # noqa: E402
from linkem import Link  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402

USERS = {"edge": "s3cret", "reader": "r"}
DATA = "lpr/test-cam-1/data"
BACKLOG = 120


class BackfillTest(GatewayTest):
    def outage_then_live(self, order):
        """BACKLOG messages sent during an outage, one after the link is back:
        (backlog ids, live id, the ids in the order the subscriber got them first)."""
        mq = Mosquitto(self, users=USERS)
        sub = Subscriber(mq.port, "lpr/#", "reader", "r")
        self.addCleanup(sub.close)
        link = Link.for_test(self, mq.port, profile="lte")
        gw = self.gateway({
            "mqtt": {"broker_url": "127.0.0.1:%d" % link.port, "username": "edge", "password": "s3cret",
                     # the outage is seen by the PUBACKs missing; the one connect made during it waits
                     # for the link (a connect given up during it would reach the broker after it and
                     # take the session over from the next one, as a late CONNECT does on any path)
                     "ack_timeout_ms": 1000, "connect_timeout_ms": 30000, "keepalive": 5},
            # A fixed window of 8: the backlog takes a while to drain on lte (100 ms round trip).
            "gateway": {"window": 8, "window_max": 8, "log_level": os.environ.get("UCGW_TEST_LOG_LEVEL", "info")},
            "spool": {"order": order, "backfill_share": 0.25, "retry_backoff_min_ms": 200,
                      "retry_backoff_max_ms": 1000}})
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt connected")
        link.down()
        backlog = []
        for i in range(BACKLOG):
            rc, out, err = gw.ctl("send", "--protocol", "mqtt", '{"n":%d}' % i)
            self.assertEqual(rc, 0, err)
            backlog.append(out.strip())
        wait_for(lambda: not gw.workers()["mqtt"]["connected"], timeout=20, what="mqtt sees the outage")
        # Each waits, or waits in its queue for the link (never in a worker's hands).
        wait_for(lambda: (lambda q: len(q) == BACKLOG and all(m["state"] in ("waiting", "queued") for m in q))(
            gw.ctl_json("queue", "--limit", "1000")), timeout=20, what="the backlog waiting")
        link.up()
        wait_for(lambda: gw.workers()["mqtt"]["connected"], timeout=20, what="mqtt back")
        rc, out, err = gw.ctl("send", "--protocol", "mqtt", '{"live":true}')
        self.assertEqual(rc, 0, err)
        live = out.strip()
        wanted = set(backlog) | {live}
        wait_for(lambda: {m["props"]["message-id"] for m in sub.received(DATA)} >= wanted, timeout=60,
                 what="backlog and live message delivered")
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="spool drained")
        seen, arrived = set(), []
        for m in sub.received(DATA):  # a resend after the reset may come twice: the first counts
            mid = m["props"]["message-id"]
            if mid not in seen:
                seen.add(mid)
                arrived.append(mid)
        return gw, backlog, live, arrived

    def test_live_first(self):
        gw, backlog, live, arrived = self.outage_then_live("live_first")
        got = [mid for mid in arrived if mid in set(backlog)]
        self.assertEqual(got, backlog, "the backlog, complete and oldest first: %s" % [backlog.index(x) for x in got])
        print("\nlte, window 8: the message sent after the outage arrived %d-th of %d" % (
            arrived.index(live) + 1, len(arrived)))
        self.assertLess(arrived.index(live), arrived.index(backlog[-1]),
                        "the live message arrives before the backlog's last")
        self.assertEqual(gw.ctl_json("trace", live)["message"]["order"], "live")
        self.assertEqual(gw.ctl_json("trace", backlog[0])["message"]["order"], "backfill")
        self.assertEqual(gw.ctl_json("trace", backlog[-1])["message"]["order"], "backfill")

    def test_fifo_keeps_arrival_order(self):
        """The default: the message after the outage queues behind the backlog."""
        gw, backlog, live, arrived = self.outage_then_live("fifo")
        self.assertEqual(set(arrived), set(backlog) | {live})
        self.assertGreater(arrived.index(live), arrived.index(backlog[-1]))
        self.assertEqual(gw.ctl_json("trace", live)["message"]["order"], "live")


if __name__ == "__main__":
    unittest.main()
