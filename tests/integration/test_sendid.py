"""Exactly one message per send, even when the reply is lost: a client gives
its message an id (a ULID) and sends it again with the same id when it does
not know whether the first send was accepted; ucgwd answers the second with
the first one's state or outcome and the server (a real mosquitto) gets the
message once. Also: a message is routed only once its record is durable, so a
failed sync never leaves a message delivered and answered "not accepted"."""
import json
import os
import random
import signal
import struct
import sys
import time
import unittest

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ctlclient import Ctl  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from mqttsub import Subscriber  # noqa: E402
from ucgwtest import GatewayTest, preload, unreachable_protocols, wait_for  # noqa: E402

DIGITS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DATA = "lpr/test-cam-1/data"


def ulid():
    t = int(time.time() * 1000)
    head = "".join(DIGITS[(t >> (5 * i)) & 31] for i in range(9, -1, -1))
    return head + "".join(random.choice(DIGITS) for _ in range(16))


class SendIdTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.mq = Mosquitto(self)
        self.sub = Subscriber(self.mq.port, "lpr/#")
        self.addCleanup(self.sub.close)

    def gw(self, env=None, cfg=None, **spool):
        s = {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}
        s.update(spool)
        c = {"mqtt": {"broker_url": self.mq.url()}, "spool": s}
        c.update(cfg or {})
        gw = self.gateway(c, env=env)
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt connected")
        return gw

    def restart(self, gw, kill=False, env=None):
        if kill:
            os.killpg(gw.proc.pid, signal.SIGKILL)
            gw.proc.wait()
        else:
            self.assertEqual(gw.stop(), 0)
        gw.kill()  # closes its log; a killed one's workers die of PDEATHSIG
        gw.start(env=env)
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt connected again")

    def at_server(self, mid):
        return [m for m in self.sub.received(DATA) if m["props"].get("message-id") == mid]

    def payloads(self):
        return [json.loads(m["payload"]) for m in self.sub.received(DATA)]

    def settle(self, gw):
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, timeout=30, what="spool drained")
        time.sleep(0.5)  # anything sent twice would be on its way by now

    def test_same_id_twice_makes_one_message(self):
        gw = self.gw()
        ctl = Ctl(gw.sock)
        self.addCleanup(ctl.close)
        mid = ulid()
        r1 = ctl.send('{"plate":"ONCE1"}', protocol="mqtt", id=mid)
        self.assertTrue(r1["ok"], r1)
        self.assertEqual(r1["body"], {"id": mid, "status": "accepted"})
        r2 = ctl.send('{"plate":"ONCE1"}', protocol="mqtt", id=mid)
        self.assertTrue(r2["ok"], r2)
        self.assertEqual((r2["body"]["id"], r2["body"]["status"], r2["body"]["duplicate"]), (mid, "accepted", True))
        self.sub.wait(1, DATA)
        r3 = ctl.send('{"plate":"ONCE1"}', protocol="mqtt", id=mid, wait=True)
        self.assertTrue(r3["ok"], r3)
        self.assertEqual((r3["body"]["id"], r3["body"]["status"], r3["body"]["protocol"]), (mid, "ok", "mqtt"))
        self.settle(gw)
        self.assertEqual(len(self.at_server(mid)), 1)
        self.assertEqual(gw.ctl_json("status")["spool"]["accepted"], 1)

    def test_second_send_while_the_first_is_being_accepted(self):
        """Pipelined on one connection, the second before the first is
        durable (a slow sync): both answered accepted, one message; a third
        with wait gets the delivery's outcome."""
        trigger = os.path.join(self.tmp, "slow")
        gw = self.gw(env=preload("slowsync.so", UCGW_SLOW_SYNC_FILE=trigger, UCGW_SLOW_SYNC_MS="400"))
        open(trigger, "w").close()
        ctl = Ctl(gw.sock)
        self.addCleanup(ctl.close)
        mid = ulid()
        for wait in (False, False, True):
            ctl.request("send", {"data": b'{"plate":"PIPE1"}', "format": "json", "protocol": "mqtt", "id": mid,
                                 "wait": wait})
        replies = {}
        for _ in range(3):
            r = ctl.reply(timeout=30)
            self.assertTrue(r["ok"], r)
            replies[r["seq"]] = r["body"]
        self.assertEqual(replies[1], {"id": mid, "status": "accepted"})
        self.assertEqual((replies[2]["status"], replies[2]["duplicate"]), ("accepted", True))
        self.assertEqual((replies[3]["id"], replies[3]["status"]), (mid, "ok"))
        os.remove(trigger)
        self.settle(gw)
        self.assertEqual(len(self.at_server(mid)), 1)

    def test_id_known_across_restarts(self):
        """Delivered, then ucgwd stopped (and another time killed): a send of
        the id after the start is answered with that delivery."""
        gw = self.gw()
        for kill in (False, True):
            with self.subTest(kill=kill):
                mid = ulid()
                ctl = Ctl(gw.sock)
                r = ctl.send('{"plate":"RESTART"}', protocol="mqtt", id=mid, wait=True)
                ctl.close()
                self.assertEqual(r["body"]["status"], "ok", r)
                # its DONE record written: out of the spool's count, and a loop turn after
                wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="its DONE record")
                time.sleep(0.2)
                self.restart(gw, kill=kill)
                ctl = Ctl(gw.sock)
                r = ctl.send('{"plate":"RESTART"}', protocol="mqtt", id=mid)
                self.assertEqual((r["body"]["status"], r["body"]["duplicate"], r["body"]["state"]),
                                 ("accepted", True, "delivered"), r)
                r = ctl.send('{"plate":"RESTART"}', protocol="mqtt", id=mid, wait=True)
                ctl.close()
                self.assertEqual((r["body"]["id"], r["body"]["status"]), (mid, "ok"), r)
                self.settle(gw)
                self.assertEqual(len(self.at_server(mid)), 1)

    def test_resend_after_kill9_makes_no_duplicates(self):
        """1,000 sends with ids, pipelined: the first 900 answered, the other
        100 written to the socket of a ucgwd that is then killed (-9) before
        it reads them. Started again, the client sends all 1,000 again with
        their ids: the first 900 are known and answered as such, the others
        are new; each arrives once (none in flight at the kill: mqtt paused,
        so a redelivery of ucgwd's own cannot blur the count)."""
        gw = self.gw()
        self.assertEqual(gw.ctl("pause", "mqtt")[0], 0)
        n = 1000
        ids = [ulid() for _ in range(n)]
        ctl = Ctl(gw.sock)

        def request(i):
            ctl.request("send", {"data": ('{"n":%d}' % i).encode(), "format": "json", "protocol": "mqtt",
                                 "id": ids[i]})
        answered = 900
        for i in range(answered):
            request(i)
        for _ in range(answered):
            self.assertTrue(ctl.reply()["ok"])
        os.kill(gw.proc.pid, signal.SIGSTOP)  # the rest waits in the socket, unread
        frames = b""
        for i in range(answered, n):  # in one write: small ones would fill the socket's buffer with overhead
            f = msgpack.packb({"t": 32, "v": 1, "seq": 10000 + i, "name": "send", "body": {
                "data": ('{"n":%d}' % i).encode(), "format": "json", "protocol": "mqtt", "id": ids[i]}},
                use_bin_type=True)
            frames += struct.pack(">I", len(f)) + f
        ctl.sock.sendall(frames)
        self.restart(gw, kill=True)
        ctl.close()
        ctl = Ctl(gw.sock)
        dups = 0
        for i, mid in enumerate(ids):
            r = ctl.send('{"n":%d}' % i, protocol="mqtt", id=mid)
            self.assertTrue(r["ok"], r)
            self.assertEqual(r["body"]["id"], mid)
            dups += bool(r["body"].get("duplicate"))
        ctl.close()
        self.assertEqual(dups, answered, "the answered ones known, the unread ones new")
        self.sub.wait(n, DATA, timeout=60)
        self.settle(gw)
        got = sorted(p["n"] for p in self.payloads())
        self.assertEqual(got, list(range(n)), "each of the %d once at the broker" % n)
        self.assertEqual(sorted(m["props"]["message-id"] for m in self.sub.received(DATA)), sorted(ids))

    def test_bad_ids_refused(self):
        gw = self.gw(cfg={"sftp": unreachable_protocols()["sftp"]})
        ctl = Ctl(gw.sock)
        self.addCleanup(ctl.close)
        good = ulid()
        for bad in (good.lower(), good[:25], good + "0", "I" + good[1:], "8" + good[1:], ""):
            r = ctl.send('{"plate":"BAD"}', protocol="mqtt", id=bad)
            self.assertEqual((r["ok"], r["code"]), (False, 400), (bad, r))
            self.assertIn("is not a ULID as ucgwd makes them: 26 characters of Crockford's base32", r["error"])
            self.assertTrue(r["error"].startswith("send: id '"), r["error"])
        r = ctl.send('{"plate":"BAD"}', protocol="mqtt", id=12345)
        self.assertEqual((r["ok"], r["code"]), (False, 400), r)
        self.assertEqual(r["error"], "send: id must be a string (a ULID), not an integer")
        path = os.path.join(self.tmp, "x.jpg")
        with open(path, "wb") as f:
            f.write(b"x")
        r = ctl.send_file(path, id="not-a-ulid")
        self.assertFalse(r["ok"])
        self.assertIn("send-file: id 'not-a-ulid' is not a ULID", r["error"])
        self.assertEqual(gw.ctl_json("status")["spool"]["accepted"], 0)

    def test_failed_sync_is_never_delivered(self):
        """The group commit's sync fails: the client hears "not accepted", and
        nothing reached the broker (it was routed only once durable). A send
        again with the same id is a new message, delivered once."""
        trigger = os.path.join(self.tmp, "fail")
        gw = self.gw(env=preload("slowsync.so", UCGW_SLOW_SYNC_FILE=trigger, UCGW_SLOW_SYNC_MS="500",
                                 UCGW_SLOW_SYNC_ERRNO="5"))
        open(trigger, "w").close()
        ctl = Ctl(gw.sock)
        self.addCleanup(ctl.close)
        mid = ulid()
        r = ctl.send('{"plate":"NOSYNC"}', protocol="mqtt", id=mid)
        self.assertEqual((r["ok"], r["code"]), (False, 500), r)  # internal: not accepted, send it again
        self.assertIn("not accepted: spool: fdatasync failed", r["error"])
        time.sleep(0.5)
        self.assertEqual(self.payloads(), [], "delivered, though answered not accepted")
        os.remove(trigger)
        r = ctl.send('{"plate":"NOSYNC"}', protocol="mqtt", id=mid)
        self.assertEqual(r["body"], {"id": mid, "status": "accepted"}, r)
        self.settle(gw)
        self.assertEqual(len(self.at_server(mid)), 1)

    def test_file_resent_after_failed_sync_keeps_its_copy(self):
        """A send-file answered "not accepted" (its sync failed) and sent again
        with the same id: the first one's copy, removed once its DONE is
        durable, has the same name as the second one's, which must stay."""
        trigger = os.path.join(self.tmp, "fail")
        sftp = unreachable_protocols()["sftp"]
        gw = self.gw(env=preload("slowsync.so", UCGW_SLOW_SYNC_FILE=trigger, UCGW_SLOW_SYNC_MS="300",
                                 UCGW_SLOW_SYNC_ERRNO="5"), cfg={"sftp": sftp})
        path = os.path.join(self.tmp, "plate.jpg")
        with open(path, "wb") as f:
            f.write(os.urandom(50000))
        open(trigger, "w").close()
        ctl = Ctl(gw.sock)
        self.addCleanup(ctl.close)
        mid = ulid()
        r = ctl.send_file(path, protocol="sftp", id=mid)
        self.assertFalse(r["ok"], r)
        self.assertIn("not accepted", r["error"])
        os.remove(trigger)
        r = ctl.send_file(path, protocol="sftp", id=mid)
        self.assertEqual(r["body"], {"id": mid, "status": "accepted"}, r)
        time.sleep(2.0)  # group commits pass: the first one's removal comes due
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        copy = os.path.join(gw.dir, "state", "spool", "files", mid)
        self.assertTrue(os.path.exists(copy), os.listdir(os.path.dirname(copy)))


if __name__ == "__main__":
    unittest.main()
