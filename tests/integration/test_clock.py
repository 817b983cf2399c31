"""A camera's clock not yet set (tests/tools/unsetclock.c): messages accepted
meanwhile wait in the spool (the broker is down), ucgwd restarts in the same
boot, the clock is set, the broker comes back: the time the gateway sends with
each (the MQTT user property accepted-at) is corrected and marked
(clock-corrected), the payload is as it was, nothing expired. And what cannot
be corrected is not expired either: messages stamped before the clock was set
in an earlier boot (a power cycle), or the clock set by hand (no NTP client)
while ucgwd was down."""
import calendar
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import GatewayTest, preload, wait_for  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402

USERS = {"edge": "s3cret", "reader": "r"}
DATA = "lpr/test-cam-1/data"
SHIFT_S = 20 * 365 * 86400  # the unset clock reads 20 years behind


def rfc3339_s(text):
    """'2026-12-07T18:30:00.123Z' as seconds since the epoch."""
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) + int(text[20:23]) / 1000


class ClockTest(GatewayTest):
    def test_times_corrected_once_the_clock_is_set(self):
        unset = os.path.join(self.tmp, "clock-unset")
        open(unset, "w").close()
        env = preload("unsetclock.so", UCGW_CLOCK_UNSET_FILE=unset, UCGW_CLOCK_SHIFT_S=str(SHIFT_S))
        mq = Mosquitto(self, users=USERS)
        mq.stop()  # the server is down: what is accepted waits in the spool
        gw = self.gateway({"mqtt": {"broker_url": mq.url(), "username": "edge", "password": "s3cret"},
                           "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}}, env=env)
        bodies = ['{"plate":"CLK%d","at":"camera time stays as it is"}' % i for i in range(5)]
        ids, sent_at = [], []
        for b in bodies:
            rc, out, err = gw.ctl("send", "--protocol", "mqtt", b)
            self.assertEqual(rc, 0, err)
            ids.append(out.strip())
            sent_at.append(time.time())
        t = gw.ctl_json("trace", ids[0])["message"]
        self.assertLess(t["accepted_ms"] / 1000, time.time() - SHIFT_S + 60)  # stamped by the unset clock
        self.assertFalse(t["clock_corrected"])
        # A restart in the same boot: the spool's records keep the boot clock.
        gw.stop()
        gw.start(env=env)
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 5)
        os.unlink(unset)  # NTP sets the clock
        wait_for(lambda: gw.ctl_json("trace", ids[0])["message"]["clock_corrected"], timeout=10,
                 what="times corrected once the clock is set")
        self.assertIn("the clock is set", gw.log_text())
        rc, out, err = gw.ctl("send", "--protocol", "mqtt", '{"plate":"AFTER"}')
        self.assertEqual(rc, 0, err)
        after = out.strip()
        after_at = time.time()
        mq.start()
        sub = Subscriber(mq.port, "lpr/#", "reader", "r")
        self.addCleanup(sub.close)
        wait_for(lambda: {m["props"]["message-id"] for m in sub.received(DATA)} >= set(ids) | {after}, timeout=30,
                 what="all six delivered")
        got = {m["props"]["message-id"]: m for m in sub.received(DATA)}
        for mid, body, at in zip(ids, bodies, sent_at):
            m = got[mid]
            self.assertEqual(m["payload"], body.encode())  # the payload is never changed
            self.assertEqual(m["props"].get("clock-corrected"), "true")
            self.assertLess(abs(rfc3339_s(m["props"]["accepted-at"]) - at), 5, m["props"])
        m = got[after]
        self.assertNotIn("clock-corrected", m["props"])  # stamped by the set clock
        self.assertLess(abs(rfc3339_s(m["props"]["accepted-at"]) - after_at), 5, m["props"])
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 0)
        self.assertTrue(gw.ctl_json("trace", ids[4])["message"]["clock_corrected"])

    def unset_gateway(self, **settings):
        unset = os.path.join(self.tmp, "clock-unset")
        open(unset, "w").close()
        env = preload("unsetclock.so", UCGW_CLOCK_UNSET_FILE=unset, UCGW_CLOCK_SHIFT_S=str(SHIFT_S), **settings)
        mq = Mosquitto(self, users=USERS)
        mq.stop()
        gw = self.gateway({"mqtt": {"broker_url": mq.url(), "username": "edge", "password": "s3cret"},
                           "spool": {"ttl_s": 3600, "retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}},
                          env=env)
        return unset, env, mq, gw

    def send(self, gw, n, tag):
        ids = []
        for i in range(n):
            rc, out, err = gw.ctl("send", "--protocol", "mqtt", '{"plate":"%s%d"}' % (tag, i))
            self.assertEqual(rc, 0, err)
            ids.append(out.strip())
        return ids

    def test_earlier_boot_not_expired(self):
        boot = os.path.join(self.tmp, "boot_id")
        with open(boot, "w") as f:
            f.write("aaaaaaaa-0000-4000-8000-000000000001\n")
        unset, env, mq, gw = self.unset_gateway(UCGW_BOOT_ID_FILE=boot)
        ids = self.send(gw, 3, "R")
        os.unlink(unset)  # set in that boot: corrected, but only in memory
        wait_for(lambda: gw.ctl_json("trace", ids[0])["message"]["clock_corrected"], timeout=10, what="corrected")
        open(unset, "w").close()
        gw.stop()
        with open(boot, "w") as f:
            f.write("bbbbbbbb-0000-4000-8000-000000000002\n")  # the camera was power cycled
        mark = len(gw.log_text())
        gw.start(env=env)
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 3)
        os.unlink(unset)  # NTP sets the clock in this boot too
        wait_for(lambda: "the clock is set" in gw.log_text()[mark:], timeout=10, what="the clock set")
        time.sleep(2)  # the router's sweeps
        self.assertNotIn("expired", gw.log_text())
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 3)
        t = gw.ctl_json("trace", ids[0])["message"]
        self.assertTrue(t["expiry_rebased"])  # its time from the earlier boot cannot be corrected
        self.assertFalse(t["clock_corrected"])
        self.assertIn("3 messages read back were stamped before the clock was set in an earlier boot",
                      gw.log_text()[mark:])
        mq.start()
        sub = Subscriber(mq.port, "lpr/#", "reader", "r")
        self.addCleanup(sub.close)
        wait_for(lambda: {m["props"]["message-id"] for m in sub.received(DATA)} >= set(ids), timeout=30,
                 what="all three delivered")
        got = {m["props"]["message-id"]: m["payload"] for m in sub.received(DATA)}
        self.assertEqual([got[i] for i in ids], [b'{"plate":"R%d"}' % i for i in range(3)])

    def test_set_by_hand_while_down(self):
        unset, env, mq, gw = self.unset_gateway(UCGW_CLOCK_NO_NTP="1")
        ids = self.send(gw, 3, "H")
        gw.stop()
        os.unlink(unset)  # `date -s`: no NTP client, the kernel stays unsynchronised
        gw.start(env=env)
        wait_for(lambda: gw.ctl_json("trace", ids[0])["message"]["clock_corrected"], timeout=10,
                 what="times corrected at start")
        self.assertIn("while ucgwd was down", gw.log_text())
        t = gw.ctl_json("trace", ids[0])["message"]
        self.assertLess(abs(t["accepted_ms"] / 1000 - time.time()), 60)
        time.sleep(2)
        self.assertNotIn("expired", gw.log_text())
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 3)


if __name__ == "__main__":
    unittest.main()
