"""send / send-file through the supervisor to the test worker: validation,
outcomes, dead letters, waiting, the queue commands, the spool across a
supervisor killed with kill -9."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ctlclient import Ctl  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from ucgwtest import BIN, GatewayTest, delivered, preload, proc_number, under_asan, wait_for  # noqa: E402
from ucgwtest import testworker_config as cfg  # noqa: E402


def stats(gw):
    """Per protocol its dropped and expired counts, from `ucgwctl stats --json`,
    checked against the same columns of the table."""
    rc, out, err = gw.ctl("stats", "--json")
    if rc != 0:
        raise AssertionError("ucgwctl stats --json failed (%d): %s" % (rc, err))
    js = {p: {"DROPPED": v["dropped"], "EXPIRED": v["expired"]} for p, v in json.loads(out).items() if v["enabled"]}
    rc, out, err = gw.ctl("stats")
    head, *rows = [l.split() for l in out.splitlines()]
    table = {r[0]: {k: int(r[head.index(k)]) for k in ("DROPPED", "EXPIRED")} for r in rows}
    if table != js:
        raise AssertionError("the stats table %r differs from its JSON %r" % (table, js))
    return js


class RouterTest(GatewayTest):
    def test_send_wait_ok(self):
        gw = self.gateway(cfg(self.tmp))
        rc, out, err = gw.ctl("--json", "send", "--protocol", "testworker", "--wait", '{"plate":"ABC123"}')
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertEqual(o["status"], "ok")
        self.assertEqual(o["protocol"], "testworker")
        self.assertEqual(o["attempts"], 1)
        self.assertIsNone(o["error"])
        self.assertEqual(len(o["id"]), 26)
        recs = delivered(self.tmp)
        self.assertEqual(recs[0][0], o["id"])
        self.assertEqual(int(recs[0][1]), len('{"plate":"ABC123"}'))

    def test_send_prints_id_then_delivers(self):
        gw = self.gateway(cfg(self.tmp))
        ids = []
        for i in range(20):
            rc, out, err = gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)
            self.assertEqual(rc, 0, err)
            ids.append(out.strip())
            self.assertEqual(len(ids[-1]), 26)
        wait_for(lambda: len(delivered(self.tmp)) == 20, what="20 deliveries")
        self.assertEqual(sorted(r[0] for r in delivered(self.tmp)), sorted(ids))

    def test_nothing_enabled_to_carry_it_is_refused_at_once(self):
        # With no protocol enabled for its kind a send is refused with why,
        # not accepted and dead-lettered: "auto" included.
        c = {"gateway": {"log_level": "info"}, "mqtt": {"broker_url": "127.0.0.1:9", "client_id": "t"}}
        gw = self.gateway(c)
        path = os.path.join(self.tmp, "plate.jpg")
        with open(path, "wb") as f:
            f.write(b"x" * 100)
        for args in (["send-file", path], ["send-file", "--protocol", "auto", path]):
            rc, out, err = gw.ctl(*args)
            self.assertEqual((rc, out), (1, ""), args)
            self.assertEqual(err, "ucgwctl: nothing can carry it: no file protocol is enabled in the "
                                  "configuration: sftp, rsync\n", args)
        rc, out, err = gw.ctl("send-file", "--protocol", "sftp", path)
        self.assertEqual(err, "ucgwctl: protocol 'sftp' is disabled in the configuration (no file protocol is "
                              "enabled in the configuration: sftp, rsync)\n")
        rc, out, err = gw.ctl("send", "--protocol", "websocket", "{}")
        self.assertEqual(err, "ucgwctl: protocol 'websocket' is disabled in the configuration (valid: auto, mqtt)\n")
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 0)
        self.assertEqual(gw.ctl_json("queue", "dead"), [])

    def test_bad_input_is_refused(self):
        gw = self.gateway(cfg(self.tmp))
        cases = [
            (["send", "--protocol", "testworker", "{not json"], "payload is not valid JSON"),
            (["send", "--protocol", "testworker", '{"a":' + '"x"' * 0 + '"' + "y" * 5000 + '"}'],
             "larger than gateway.max_message_bytes"),
            (["send", "--protocol", "carrier-pigeon", "{}"], "unknown metadata protocol 'carrier-pigeon'"),
            (["send", "--protocol", "rest", "{}"], "protocol 'rest' is disabled"),
            (["send", "--protocol", "testworker", "--topic", "lpr/#", "{}"], "wildcard"),
            (["send", "--priority", "urgent", "{}"], "unknown priority 'urgent'"),
            (["send-file", "--protocol", "testworker", "/nonexistent/x.jpg"], "cannot open /nonexistent/x.jpg"),
            (["send-file", "--protocol", "testworker", self.tmp], "is not a regular file"),
            (["send", "--protocol", "sftp", "{}"],
             "protocol 'sftp' carries files, not metadata (valid: auto, testworker)"),
            (["send-file", "--protocol", "mqtt", "/etc/hostname"],
             "protocol 'mqtt' carries metadata, not files (valid: auto, testworker)"),
        ]
        for args, words in cases:
            rc, out, err = gw.ctl(*args)
            self.assertNotEqual(rc, 0, args)
            self.assertIn(words, err, args)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertEqual(delivered(self.tmp), [])

    def test_permfail_goes_dead_requeue_and_purge(self):
        gw = self.gateway(cfg(self.tmp))
        rc, out, err = gw.ctl("--json", "send", "--protocol", "testworker", "--wait", '{"cmd":"permfail"}')
        self.assertEqual(rc, 1)
        o = json.loads(out)
        self.assertEqual(o["status"], "failed")
        self.assertIn("told to answer permfail", o["error"])
        dead = gw.ctl_json("queue", "dead")
        self.assertEqual([d["id"] for d in dead], [o["id"]])
        # requeue: it goes round again (and, still refused, comes back dead)
        rc, out, err = gw.ctl("queue", "requeue", o["id"])
        self.assertEqual(rc, 0, err)
        wait_for(lambda: len(gw.ctl_json("trace", o["id"])["route"]) == 2, what="a second attempt")
        wait_for(lambda: [d["id"] for d in gw.ctl_json("queue", "dead")] == [o["id"]], what="dead again")
        rc, out, err = gw.ctl("queue", "requeue", "all")
        self.assertEqual(rc, 0, err)
        wait_for(lambda: len(gw.ctl_json("trace", o["id"])["route"]) == 3, what="a third attempt")
        wait_for(lambda: gw.ctl_json("queue", "dead") != [], what="dead once more")
        rc, out, err = gw.ctl("queue", "purge", o["id"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(gw.ctl_json("queue", "dead"), [])

    def test_retry_all_sends_every_waiting_message_now(self):
        c = cfg(self.tmp)
        c["spool"].update({"retry_backoff_min_ms": 600000, "retry_backoff_max_ms": 600000})
        gw = self.gateway(c)
        mids = [gw.ctl("send", "--protocol", "testworker", '{"cmd":"retry","n":%d}' % i)[1].strip() for i in range(3)]
        wait_for(lambda: gw.ctl_json("status")["spool"]["waiting"] == 3, what="three waiting")
        self.assertEqual(gw.ctl("queue", "retry", "all")[0], 0)
        wait_for(lambda: all(len(gw.ctl_json("trace", m)["route"]) >= 2 for m in mids),
                 what="each tried again at once, not in ten minutes")

    def test_recovery_sends_high_priority_first(self):
        c = cfg(self.tmp)
        c["gateway"]["window"] = 1  # one at a time: the order shows
        gw = self.gateway(c)
        gw.ctl("pause", "testworker")
        low = [gw.ctl("send", "--protocol", "testworker", "--priority", "low", '{"l":%d}' % i)[1].strip()
               for i in range(3)]
        high = [gw.ctl("send", "--protocol", "testworker", "--priority", "high", '{"h":%d}' % i)[1].strip()
                for i in range(3)]
        normal = [gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)[1].strip() for i in range(3)]
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        gw.log.close()
        gw.start()  # not paused any more: the recovered messages go out
        wait_for(lambda: len(delivered(self.tmp)) == 9, what="all nine")
        self.assertEqual([r[0] for r in delivered(self.tmp)], high + normal + low)

    def test_client_that_sends_and_closes_loses_nothing(self):
        # A camera application that sends without waiting for the answers and
        # closes its connection at once (the clients' flush, then close): what
        # it wrote is read and delivered, though the answers find nobody (the
        # daemon used to drop the connection at the first failed answer, and
        # with it the requests still unread in the socket).
        import msgpack
        import socket
        import struct
        gw = self.gateway(cfg(self.tmp))
        n, pad = 1500, "p" * 3000  # 4.5 MB: more than the socket holds, so the client waits to write
        s = socket.socket(socket.AF_UNIX)
        s.connect(gw.sock)
        for i in range(n):
            b = msgpack.packb({"t": 32, "v": 1, "seq": i + 1, "name": "send",
                               "body": {"data": '{"n":%d,"pad":"%s"}' % (i, pad), "protocol": "testworker"}})
            s.sendall(struct.pack(">I", len(b)) + b)
            if i == n // 2:
                time.sleep(0.3)  # answers to the first half wait unread in the socket when it closes
        s.close()
        wait_for(lambda: len(delivered(self.tmp)) >= n, timeout=60,
                 what="all %d delivered" % n)
        self.assertEqual(len({r[0] for r in delivered(self.tmp)}), n)

    def test_retry_waits_in_queue_with_reason(self):
        gw = self.gateway(cfg(self.tmp))
        rc, out, err = gw.ctl("send", "--protocol", "testworker", '{"cmd":"retry"}')
        mid = out.strip()
        q = wait_for(lambda: [m for m in gw.ctl_json("queue") if m["id"] == mid and m["state"] == "waiting"],
                     what="waiting message")
        self.assertIn("told to answer retry", q[0]["last_error"])
        rc, out, err = gw.ctl("queue")
        self.assertIn(mid, out)
        tr = gw.ctl_json("trace", mid)
        self.assertGreaterEqual(len(tr["route"]), 1)
        self.assertEqual(tr["route"][0]["result"], "retry")
        rc, out, err = gw.ctl("queue", "retry", mid)
        self.assertEqual(rc, 0, err)
        st = gw.ctl_json("status")
        self.assertEqual(st["spool"]["depth"], 1)

    def test_trace_after_delivery_and_purge(self):
        gw = self.gateway(cfg(self.tmp))
        o = gw.ctl_json("send", "--protocol", "testworker", "--wait", '{"plate":"TRACE1"}')
        self.assertEqual(o["status"], "ok")
        tr = gw.ctl_json("trace", o["id"])
        self.assertEqual((tr["message"]["state"], tr["message"]["id"]), ("delivered", o["id"]))
        self.assertEqual([(h["protocol"], h["result"]) for h in tr["route"]], [("testworker", "ok")])
        rc, out, err = gw.ctl("trace", o["id"])
        self.assertEqual(rc, 0, err)
        self.assertIn("delivered", out)
        rc, out, err = gw.ctl("send", "--protocol", "testworker", '{"cmd":"retry"}')
        mid = out.strip()
        wait_for(lambda: [m for m in gw.ctl_json("queue") if m["id"] == mid and m["state"] == "waiting"],
                 what="waiting message")
        self.assertEqual(gw.ctl("queue", "purge", mid)[0], 0)
        tr = gw.ctl_json("trace", mid)
        self.assertEqual(tr["message"]["state"], "purged")
        self.assertEqual(tr["message"]["last_error"], "purged by an operator")
        rc, out, err = gw.ctl("trace", "01NOSUCHMESSAGE0000000000")
        self.assertEqual(rc, 1)
        self.assertIn("no message with id '01NOSUCHMESSAGE0000000000'", err)

    def test_many_pipelined_sends_all_delivered_once(self):
        gw = self.gateway(cfg(self.tmp))
        for wait in ([], ["--wait"]):
            r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "5000", "-w", "1000", "-p",
                                "testworker", *wait], capture_output=True, text=True, timeout=400)
            if r.returncode != 0:  # what the daemon says it holds, for the record
                print("status: %s\nworkers: %s" % (gw.ctl("--json", "status")[1], gw.ctl("--json", "workers")[1]))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(json.loads(r.stdout)["failed"], 0)
        wait_for(lambda: len(delivered(self.tmp)) >= 10000, what="10000 deliveries")
        ids = [rec[0] for rec in delivered(self.tmp)]
        self.assertEqual(len(ids), 10000)
        self.assertEqual(len(set(ids)), 10000)
        st = gw.ctl_json("status")["spool"]
        self.assertEqual((st["depth"], st["bytes"]), (0, 0))
        stats = gw.ctl_json("stats")["testworker"]
        self.assertEqual((stats["success"], stats["queued"], stats["inflight"]), (10000, 0, 0))

    def test_backlog_is_read_back_from_the_spool(self):
        c = cfg(self.tmp)
        c["gateway"]["max_message_bytes"] = 200000
        gw = self.gateway(c)
        gw.ctl("pause", "testworker")
        sums = {}
        for i in range(250):  # 25 MB: more than the router keeps in memory
            body = '{"n":%d,"pad":"%s"}' % (i, chr(97 + i % 26) * 100000)
            rc, out, err = gw.ctl("send", "--protocol", "testworker", body)
            self.assertEqual(rc, 0, err)
            s = 0
            for b in body.encode():
                s = (s * 31 + b) & 0xFFFFFFFFFFFFFFFF
            sums[out.strip()] = (len(body), s)
        rss = proc_number(gw.proc.pid, "status", "VmRSS")
        asan = under_asan(gw.proc.pid)
        gw.ctl("resume", "testworker")
        wait_for(lambda: len(delivered(self.tmp)) >= 250, timeout=60, what="backlog delivered")
        for rec in delivered(self.tmp):
            self.assertEqual((int(rec[1]), int(rec[2])), sums[rec[0]])
        print("\nsupervisor RSS with a 25 MB backlog: %d MB" % (rss // 1024))
        if not asan:
            self.assertLess(rss, 80 * 1024)

    def test_queued_messages_cost_little_memory(self):
        # A long outage queues many messages: the supervisor keeps a small record
        # of each (not its payload, not a fixed-size route), before and after a
        # restart that replays them from the spool.
        def rss_kb(pid):
            return proc_number(pid, "status", "VmRSS")
        n = 20000
        gw = self.gateway(cfg(self.tmp, delay_ms=600000))  # nothing is delivered, before or after the restart
        asan = under_asan(gw.proc.pid)
        gw.ctl("pause", "testworker")
        before = rss_kb(gw.proc.pid)
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", str(n), "-p", "testworker",
                            "-z", "200"], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        st = gw.ctl_json("status")["spool"]
        self.assertEqual(st["depth"], n)
        self.assertGreater(st["written_bytes"], n * 200)  # every ADD record carries its payload
        grown = rss_kb(gw.proc.pid) - before
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        gw.log.close()
        gw.start()
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], n)
        recovered = rss_kb(gw.proc.pid)
        print("\n%d queued messages of 200 bytes: supervisor grew by %d KB (%d bytes each); "
              "%d KB after a restart that replayed them" % (n, grown, grown * 1024 // n, recovered))
        if not asan:
            self.assertLess(grown * 1024 // n, 1500)
            self.assertLess(recovered * 1024 // n, 2000)

    def test_pause_and_resume(self):
        gw = self.gateway(cfg(self.tmp))
        self.assertEqual(gw.ctl("pause", "testworker")[0], 0)
        self.assertTrue(gw.workers()["testworker"]["paused"])
        mid = gw.ctl("send", "--protocol", "testworker", '{"n":1}')[1].strip()
        time.sleep(1)
        self.assertEqual(delivered(self.tmp), [])
        q = gw.ctl_json("queue")
        self.assertEqual(q[0]["id"], mid)
        self.assertIn("paused", q[0]["last_error"])
        self.assertEqual(gw.ctl("resume", "testworker")[0], 0)
        wait_for(lambda: delivered(self.tmp), what="delivery after resume")
        rc, out, err = gw.ctl("pause", "nosuch")
        self.assertEqual(rc, 1)
        self.assertIn("no protocol named 'nosuch'", err)

    def test_send_file_wait(self):
        gw = self.gateway(cfg(self.tmp))
        path = os.path.join(self.tmp, "plate.jpg")
        data = os.urandom(300000)
        with open(path, "wb") as f:
            f.write(data)
        rc, out, err = gw.ctl("--json", "send-file", "--protocol", "testworker", "--wait", path)
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertEqual(o["status"], "ok")
        rec = delivered(self.tmp)[0]
        self.assertEqual(int(rec[1]), len(data))
        # the spool's copy is gone after delivery, once the DONE that says so is synced
        files = os.path.join(gw.dir, "state", "spool", "files")
        wait_for(lambda: os.listdir(files) == [], timeout=5, what="the spool's copy removed")

    def test_send_file_from_tmpfs(self):
        gw = self.gateway(cfg(self.tmp))
        path = "/dev/shm/ucgw-test-%d.jpg" % os.getpid()
        with open(path, "wb") as f:
            f.write(os.urandom(70000))
        self.addCleanup(os.remove, path)
        rc, out, err = gw.ctl("send-file", "--protocol", "testworker", "--wait", path)
        self.assertEqual(rc, 0, err)
        self.assertEqual(int(delivered(self.tmp)[0][1]), 70000)

    def test_spool_full_rejects(self):
        c = cfg(self.tmp, delay_ms=60000)
        c["spool"]["max_messages"] = 5
        gw = self.gateway(c)
        for i in range(5):
            self.assertEqual(gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)[0], 0)
        rc, out, err = gw.ctl("send", "--protocol", "testworker", '{"n":6}')
        self.assertEqual(rc, 1)
        self.assertIn("spool full", err)

    def test_drop_oldest(self):
        c = cfg(self.tmp, delay_ms=60000)
        c["spool"].update(max_messages=3, full_policy="drop_oldest")
        c["gateway"]["window"] = 1
        gw = self.gateway(c)
        ids = [gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)[1].strip() for i in range(6)]
        q = [m["id"] for m in gw.ctl_json("queue")]
        self.assertEqual(len(q), 3)
        self.assertIn(ids[0], q)  # in flight: never dropped
        self.assertEqual(gw.ctl_json("status")["spool"]["dropped"], 3)
        self.assertIn("dropping the oldest message", gw.log_text())
        self.assertEqual(stats(gw)["testworker"], {"DROPPED": 3, "EXPIRED": 0})

    def test_ttl_expires(self):
        gw = self.gateway(cfg(self.tmp))
        rc, out, err = gw.ctl("send", "--protocol", "testworker", "--ttl", "1", '{"cmd":"retry"}')
        mid = out.strip()
        wait_for(lambda: gw.ctl_json("status")["spool"]["expired"] == 1, timeout=10, what="expiry")
        self.assertIn("message %s expired" % mid, gw.log_text())
        self.assertEqual(gw.ctl_json("queue"), [])
        self.assertEqual(stats(gw)["testworker"], {"DROPPED": 0, "EXPIRED": 1})

    def test_kill9_supervisor_loses_nothing(self):
        c = cfg(self.tmp, delay_ms=30000)
        gw = self.gateway(c)
        ids = set()
        for i in range(50):
            rc, out, err = gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)
            self.assertEqual(rc, 0, err)
            ids.add(out.strip())
        path = os.path.join(self.tmp, "img.bin")
        with open(path, "wb") as f:
            f.write(b"x" * 100000)
        rc, out, err = gw.ctl("send-file", "--protocol", "testworker", path)
        ids.add(out.strip())
        os.remove(path)  # the caller may delete its copy at once
        kids = gw.children()
        os.kill(gw.proc.pid, signal.SIGKILL)
        gw.proc.wait()
        wait_for(lambda: not any(os.path.exists("/proc/%d" % k) for k in kids), what="workers gone")
        self.assertEqual(delivered(self.tmp), [])
        gw.cfg["testworker"]["delay_ms"] = 0
        gw.write_config(gw.cfg)
        gw.log.close()
        gw.start()
        wait_for(lambda: len(delivered(self.tmp)) >= 51, what="all redelivered")
        got = [r[0] for r in delivered(self.tmp)]
        self.assertEqual(set(got), ids)
        self.assertEqual(len(got), len(ids))
        self.assertIn("recovered 51 undelivered messages", gw.log_text())

    def test_file_delivered_just_before_a_crash_is_not_dead_lettered(self):
        # The spool may remove its copy of a delivered file only once the DONE
        # record that says so is written: a crash in between left the ADD with
        # no DONE and no file, and the next start made a dead letter of a file
        # that had arrived ("cannot read the message back from the spool"; seen
        # once in tests/fault, a supervisor kill -9 under load). Here the crash
        # lands exactly there: crashafter.so kills ucgwd right after it unlinks
        # the spool's copy.
        env = preload("crashafter.so", UCGW_CRASH_AFTER_UNLINK="/spool/files/")
        gw = self.gateway(cfg(self.tmp, delay_ms=300), env=env)  # answered "accepted" before it is delivered
        path = os.path.join(self.tmp, "plate.jpg")
        with open(path, "wb") as f:
            f.write(os.urandom(50000))
        rc, out, err = gw.ctl("send-file", "--protocol", "testworker", path)
        self.assertEqual(rc, 0, err)
        mid = out.strip()
        self.assertEqual(gw.proc.wait(30), -signal.SIGKILL, "ucgwd was to die at the unlink")
        self.assertEqual([r[0] for r in delivered(self.tmp)], [mid])
        gw.log.close()
        gw.start()
        time.sleep(0.5)  # a recovered message with no file is dead-lettered as soon as its worker is ready
        self.assertEqual(gw.ctl_json("queue"), [])
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 0)
        self.assertEqual(os.listdir(os.path.join(gw.dir, "state", "spool", "files")), [])
        self.assertEqual([r[0] for r in delivered(self.tmp)], [mid])

    def test_dead_letters_at_a_segment_change_lose_no_other_message(self):
        # A message that fails at once (here: its key file is missing) is
        # dead-lettered while the spool routes the messages of a full segment,
        # in the middle of appending the next record: that record became a copy
        # of the DEAD, and its message was gone after a restart (19 of 300).
        c = cfg(self.tmp)
        c["spool"]["segment_bytes"] = 4096
        c["security"] = {"encryption_key_file": os.path.join(self.tmp, "no-such-key")}
        gw = self.gateway(c)
        ctl = Ctl(gw.sock)
        n = 300
        for i in range(n):  # pipelined: many in one turn of the loop, segment changes among them
            ctl.request("send", {"data": ('{"n":%d,"pad":"%s"}' % (i, "x" * 100)).encode(), "format": "json",
                                 "protocol": "testworker", "encrypt": True})
        replies = [ctl.reply() for _ in range(n)]
        ctl.close()
        self.assertTrue(all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:3])
        ids = {r["body"]["id"] for r in replies}
        wait_for(lambda: len(gw.ctl_json("queue", "dead", "--limit", "1000")) == n, what="all dead-lettered")
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        gw.log.close()
        gw.start()
        left = gw.ctl_json("queue", "--limit", "1000")
        self.assertEqual({m["id"] for m in left}, ids)
        self.assertEqual({m["state"] for m in left}, {"dead"})
        self.assertIn("recovered %d undelivered messages" % n, gw.log_text())

    def test_torn_tail_is_cut(self):
        c = cfg(self.tmp, delay_ms=30000)
        gw = self.gateway(c)
        ids = {gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)[1].strip() for i in range(5)}
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        segdir = os.path.join(gw.dir, "state", "spool", "seg")
        last = sorted(os.listdir(segdir))[-1]
        with open(os.path.join(segdir, last), "ab") as f:
            f.write(b"\x00\x00\x01\x00garbage-torn-write")
        gw.cfg["testworker"]["delay_ms"] = 0
        gw.write_config(gw.cfg)
        gw.log.close()
        gw.start()
        wait_for(lambda: len(delivered(self.tmp)) >= 5, what="redelivery")
        self.assertEqual({r[0] for r in delivered(self.tmp)}, ids)
        self.assertIn("cut a torn tail", gw.log_text())

    def test_drain_rate_limits_a_backlog(self):
        # a bucket that keeps fractions: low rates are kept too, not rounded up
        # to one message per tick
        for rate, n in ((20, 40), (2, 8)):
            with self.subTest(rate=rate):
                tmp = os.path.join(self.tmp, "rate%d" % rate)
                os.makedirs(tmp)
                c = cfg(tmp)
                c["spool"]["drain_rate"] = rate
                gw = self.gateway(c)
                gw.ctl("pause", "testworker")
                for i in range(n):
                    gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)
                t0 = time.monotonic()
                gw.ctl("resume", "testworker")
                wait_for(lambda: len(delivered(tmp)) == n, timeout=30, what="backlog drained")
                took = time.monotonic() - t0
                expect = (n - 1) / rate  # the first goes at once
                print("\n%d messages at drain_rate %d/s took %.2f s (%.2f expected)" % (n, rate, took, expect))
                self.assertGreater(took, expect * 0.85)
                self.assertLess(took, expect * 1.6 + 1)
                gw.stop()

    def test_corrupt_segment_moved_aside(self):
        c = cfg(self.tmp, delay_ms=30000)
        c["spool"]["segment_bytes"] = 4096
        gw = self.gateway(c)
        for i in range(60):
            gw.ctl("send", "--protocol", "testworker", '{"n":%d,"pad":"%s"}' % (i, "p" * 200))
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        segdir = os.path.join(gw.dir, "state", "spool", "seg")
        segs = sorted(os.listdir(segdir))
        self.assertGreater(len(segs), 2)
        with open(os.path.join(segdir, segs[0]), "r+b") as f:  # damage a record in the middle
            f.seek(700)
            f.write(b"\xff" * 16)
        gw.cfg["testworker"]["delay_ms"] = 0
        gw.write_config(gw.cfg)
        gw.log.close()
        gw.start()
        st = gw.ctl_json("status")["spool"]
        self.assertEqual(st["corrupt_segments"], 1)
        self.assertEqual(st["corrupt_records"], 1)
        self.assertIn("is corrupt in the middle; moved aside", gw.log_text())
        self.assertIn("damaged bytes at offset", gw.log_text())
        self.assertEqual(len(os.listdir(os.path.join(gw.dir, "state", "spool", "corrupt"))), 1)
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="the rest delivered")
        # only the damaged record is lost: replay went on at the next good one
        self.assertEqual(len({r[0] for r in delivered(self.tmp)}), 59)

    def test_damage_in_the_newest_segment_is_not_a_torn_tail(self):
        # A damaged record followed by good ones is not a write cut short by a
        # crash: the good records after it are kept, not truncated away.
        c = cfg(self.tmp, delay_ms=30000)
        gw = self.gateway(c)
        for i in range(20):
            gw.ctl("send", "--protocol", "testworker", '{"n":%d,"pad":"%s"}' % (i, "p" * 200))
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        segdir = os.path.join(gw.dir, "state", "spool", "seg")
        seg = os.path.join(segdir, sorted(os.listdir(segdir))[-1])
        with open(seg, "r+b") as f:
            f.seek(os.path.getsize(seg) // 2)
            f.write(b"\x00" * 8)
        gw.cfg["testworker"]["delay_ms"] = 0
        gw.write_config(gw.cfg)
        gw.log.close()
        gw.start()
        st = gw.ctl_json("status")["spool"]
        self.assertEqual((st["corrupt_segments"], st["corrupt_records"]), (1, 1))
        self.assertNotIn("torn tail", gw.log_text())
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="the rest delivered")
        self.assertEqual(len({r[0] for r in delivered(self.tmp)}), 19)

    def test_worker_killed_with_jobs_redelivers(self):
        c = cfg(self.tmp, delay_ms=600000)  # all ten in flight however slow the machine is
        gw = self.gateway(c)
        ids = {gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)[1].strip() for i in range(10)}
        gw.wait_worker("testworker", lambda w: w["inflight"] == 10, what="10 jobs in flight")
        pid = gw.workers()["testworker"]["pid"]
        os.kill(pid, signal.SIGKILL)
        crashdir = os.path.join(gw.dir, "crash", "testworker")
        wait_for(lambda: os.path.isdir(crashdir) and os.listdir(crashdir), what="the crash log")
        self.assertIn("jobs_in_flight: 10", open(os.path.join(crashdir, sorted(os.listdir(crashdir))[0])).read())
        c["testworker"]["delay_ms"] = 0  # the next worker answers at once
        gw.write_config(c)
        self.assertEqual(gw.ctl("reload")[0], 0)
        wait_for(lambda: {r[0] for r in delivered(self.tmp)} >= ids, timeout=30, what="redelivery after crash")
        self.assertEqual(len(delivered(self.tmp)), 10)


    def test_outside_kills_do_not_quarantine(self):
        # kill -9 from outside (an operator, the OOM killer's cousin in a test) is not
        # the message's fault: it goes round again however often that happens
        gw = self.gateway(cfg(self.tmp, delay_ms=2000))
        o = gw.ctl("send", "--protocol", "testworker", '{"n":1}')[1].strip()
        for i in range(4):
            w = gw.wait_worker("testworker", lambda w: w["state"] == "ready" and w["inflight"] == 1,
                               timeout=30, what="the job in flight (%d)" % i)
            os.kill(w["pid"], signal.SIGKILL)
            gw.wait_worker("testworker", lambda w, old=w["pid"]: w["pid"] != old, timeout=30)
        wait_for(lambda: o in {r[0] for r in delivered(self.tmp)}, timeout=30, what="delivered after 4 kills")
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        self.assertEqual(gw.workers()["testworker"]["restarts"], 4)

    def test_worker_that_closes_its_socket_and_hangs_counts_like_a_crash(self):
        # A worker that closes its socket to the supervisor and then does not
        # exit is killed by the supervisor once ping_timeout_ms has passed.
        # That is its jobs' doing as much as a crash is: a message that does
        # it to every worker ends quarantined like one that crashes them, not
        # sent round for ever as if an operator's kill -9 had hit each worker.
        c = cfg(self.tmp)
        c["gateway"].update({"ping_interval_ms": 200, "ping_timeout_ms": 1000, "restart_backoff_min_ms": 50,
                             "restart_max_deaths": 10})
        gw = self.gateway(c, env=preload("closehang.so", UCGW_CLOSEHANG_MARKER="close-and-hang"))
        normal = [gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)[1].strip() for i in range(10)]
        wait_for(lambda: {r[0] for r in delivered(self.tmp)} >= set(normal), what="the first 10 delivered")
        dead = {}
        for cmd in ("segv", "close-and-hang"):
            mid = gw.ctl("send", "--protocol", "testworker", '{"cmd":"%s"}' % cmd)[1].strip()
            dead[cmd] = wait_for(lambda: [d for d in gw.ctl_json("queue", "dead") if d["id"] == mid], timeout=30,
                                 what="%s quarantined" % cmd)[0]
            self.assertEqual(gw.ctl_json("status")["inflight"], 0)
        more = [gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)[1].strip() for i in range(10, 20)]
        wait_for(lambda: {r[0] for r in delivered(self.tmp)} >= set(more), what="the next 10 delivered")
        for cmd, d in dead.items():
            self.assertTrue(d["last_error"].startswith("quarantined: 3 workers died with this message in hand"),
                            "%s: %s" % (cmd, d))
        same = ("state", "kind", "protocol", "priority", "attempts", "next_try_ms")
        self.assertEqual({k: dead["segv"][k] for k in same}, {k: dead["close-and-hang"][k] for k in same})
        self.assertEqual(dead["segv"]["state"], "dead")
        got = [r[0] for r in delivered(self.tmp)]
        self.assertEqual(sorted(got), sorted(normal + more))  # each once, the two quarantined never
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 2)
        self.assertEqual(gw.workers()["testworker"]["restarts"], 6)
        self.assertEqual(gw.log_text().count("its socket closed (peer closed the connection) and it did not exit "
                                             "within 1000 ms; killing it"), 3)
        crashdir = os.path.join(gw.dir, "crash", "testworker")
        reasons = []
        for f in os.listdir(crashdir):
            with open(os.path.join(crashdir, f)) as log:
                reasons += [l for l in log if l.startswith("reason:")]
        self.assertEqual(len(reasons), 6)
        self.assertEqual(sum("did not exit within 1000 ms" in r for r in reasons), 3)


CLOSED = "worker closed its socket with the job in hand (peer closed the connection)"


class PoisonRaceTest(GatewayTest):
    """A message is quarantined (dead-lettered) once POISON_CRASHES (3) workers
    have died with it in hand. A worker whose socket closes hands its jobs on at
    once (router_worker_orphaned), and only its exit says whether the loss
    counts; so the death that brings a message to 3 can come while another
    worker already holds it. These tests put it there on purpose: mqtt is the
    message's protocol, with testworker as its fallback; closehang.so makes
    ucgw-mqtt close its socket and hang on the marked message, and the
    supervisor kills it for that ping_timeout_ms (1 s) later, a death that
    counts; testworker holds each job hold_ms (3 s) and answers retry while
    down_file exists. Each round: mqtt takes the message and hangs, testworker
    takes it at once, mqtt's death is counted 1 s later while testworker holds
    it, testworker answers 2 s after that. The third round's death is the third.
    Each test checks the message is dead-lettered at most once (one dead
    letter, one log line, spool.dead and the protocols' dead counts 1), never
    delivered twice, never lost, that a requeue brings it back once, and that
    the other messages are all delivered, each once."""

    MARK = '{"cmd":"close-and-hang"}'

    def pair(self, hold_ms=3000, sandbox=True, backoff_ms=200, job_timeout_ms=60000):
        self.down = os.path.join(self.tmp, "down")
        self.mq = Mosquitto(self)
        c = cfg(self.tmp, delay_ms=hold_ms, down_file=self.down)
        c["mqtt"] = {"broker_url": self.mq.url(), "client_id": "poison-race"}
        c["fallback"] = {"chains": {"mqtt": ["testworker"]}, "cool_after_failures": 1000}
        c["gateway"].update({"ping_interval_ms": 200, "ping_timeout_ms": 1000, "restart_backoff_min_ms": 50,
                             "restart_max_deaths": 100, "job_timeout_ms": job_timeout_ms})
        c["spool"].update({"retry_backoff_min_ms": backoff_ms, "retry_backoff_max_ms": 2 * backoff_ms})
        if not sandbox:
            c["security"] = {"sandbox": False}
        self.env = preload("closehang.so", UCGW_CLOSEHANG_MARKER="close-and-hang",
                           UCGW_CLOSEHANG_WORKER="ucgw-mqtt")
        gw = self.gateway(c, env=self.env)
        wait_for(lambda: gw.workers()["mqtt"]["connected"], what="mqtt up")
        return gw

    def send(self, gw, protocol, body):
        rc, out, err = gw.ctl("send", "--protocol", protocol, body)
        self.assertEqual(rc, 0, err)
        return out.strip()

    def deaths(self, gw, name="mqtt"):
        return gw.workers()[name]["restarts"]

    def message(self, gw, mid):
        return next((m for m in gw.ctl_json("queue") if m["id"] == mid), None)

    def route(self, gw, mid):
        return [(h["protocol"], h["result"]) for h in gw.ctl_json("trace", mid)["route"]]

    def wait_dead(self, gw, mid, timeout=60):
        return wait_for(lambda: [d for d in gw.ctl_json("queue", "dead") if d["id"] == mid], timeout=timeout,
                        what="message %s dead-lettered" % mid)[0]

    def assert_dead_once(self, gw, mid):
        self.assertEqual([d["id"] for d in gw.ctl_json("queue", "dead")], [mid])
        self.assertEqual(gw.log_text().count("message %s is dead-lettered" % mid), 1)
        self.assertEqual(gw.ctl_json("status")["spool"]["dead"], 1)
        self.assertEqual(sum(p["dead"] for p in gw.ctl_json("stats").values()), 1)
        self.assertNotIn(mid, [r[0] for r in delivered(self.tmp)])

    def held_by_testworker_at_third_death(self, gw, mid):
        """Waits for mqtt's third death; the message must be in testworker's hands then."""
        wait_for(lambda: self.deaths(gw) >= 3, timeout=60, what="mqtt's third death")
        m = self.message(gw, mid)
        self.assertEqual((m["state"], m["protocol"]), ("inflight", "testworker"), m)
        self.assertEqual(self.deaths(gw), 3)
        self.assertEqual(gw.ctl_json("queue", "dead"), [])

    def requeue_delivers_once(self, gw, mid, before):
        """The marked message requeued (down_file gone): mqtt hangs on it once more,
        testworker delivers it; mqtt's death, while testworker holds it, is its first."""
        rc, out, err = gw.ctl("queue", "requeue", mid)
        self.assertEqual(rc, 0, err)
        wait_for(lambda: mid in [r[0] for r in delivered(self.tmp)], timeout=30, what="the requeued message delivered")
        wait_for(lambda: self.deaths(gw) == before + 1, timeout=30, what="mqtt's death after the requeue")
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="spool empty")
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        self.assertEqual(gw.ctl_json("status")["spool"]["dead"], 0)
        tr = gw.ctl_json("trace", mid)
        self.assertEqual(tr["message"]["state"], "delivered")
        self.assertEqual([(h["protocol"], h["result"], h["error"]) for h in tr["route"][-2:]],
                         [("mqtt", "retry", CLOSED), ("testworker", "ok", None)])

    def dead_once_while_the_others_go(self, gw, mid, others):
        """mid is dead, once; with the test server back the others are
        delivered, each once, and mid stays dead."""
        self.assert_dead_once(gw, mid)
        os.remove(self.down)
        wait_for(lambda: len(delivered(self.tmp)) >= len(others), timeout=30, what="the others delivered")
        time.sleep(0.5)
        self.assert_dead_once(gw, mid)
        self.assert_each_once(others)

    def assert_each_once(self, ids):
        got = [r[0] for r in delivered(self.tmp)]
        self.assertEqual(sorted(got), sorted(ids))

    def test_third_death_while_the_fallback_holds_it_then_a_retry_dead_letters_it_once(self):
        gw = self.pair()
        open(self.down, "w").close()
        others = [self.send(gw, "testworker", '{"n":%d}' % i) for i in range(5)]
        mid = self.send(gw, "mqtt", self.MARK)
        self.held_by_testworker_at_third_death(gw, mid)
        d = self.wait_dead(gw, mid)
        self.assertEqual(d["last_error"], "quarantined: 3 workers died with this message in hand "
                                          "(last: then testworker answered retry: test server is down)")
        self.assertEqual(self.route(gw, mid), [("mqtt", "retry"), ("testworker", "retry")] * 3)
        self.assertTrue(all(h["error"] == CLOSED for h in gw.ctl_json("trace", mid)["route"][0::2]))
        self.assertEqual(self.deaths(gw), 3)
        self.dead_once_while_the_others_go(gw, mid, others)
        # A requeue brings it back with its count started afresh (as a restart of
        # ucgwd does): one more death does not dead-letter it, a delivery ends it.
        self.requeue_delivers_once(gw, mid, before=3)
        self.assert_each_once(others + [mid])

    def test_third_death_while_the_fallback_holds_it_then_a_delivery_ends_it(self):
        # The third death comes while testworker holds the message; testworker
        # delivers it: it is delivered (once), not thrown away as a dead letter.
        gw = self.pair()
        open(self.down, "w").close()
        mid = self.send(gw, "mqtt", self.MARK)
        two = [("mqtt", "retry"), ("testworker", "retry")] * 2
        # mqtt is back (restarted) when a round ends: the next round starts at
        # once (no backoff while a protocol of the chain is up), so the third
        # hop may already be on its way
        wait_for(lambda: self.route(gw, mid)[:4] == two, timeout=60, what="two rounds over")
        self.assertLessEqual(self.deaths(gw), 3)  # the third round's death may have come already
        os.remove(self.down)
        self.held_by_testworker_at_third_death(gw, mid)
        wait_for(lambda: mid in [r[0] for r in delivered(self.tmp)], timeout=30, what="delivered")
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, what="spool empty")
        tr = gw.ctl_json("trace", mid)
        self.assertEqual(tr["message"]["state"], "delivered")
        self.assertEqual(self.route(gw, mid), two + [("mqtt", "retry"), ("testworker", "ok")])
        time.sleep(0.5)
        self.assert_each_once([mid])
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        self.assertEqual(gw.ctl_json("status")["spool"]["dead"], 0)
        self.assertNotIn("is dead-lettered", gw.log_text())

    def test_third_death_while_the_fallback_holds_it_then_the_fallback_crashes(self):
        # After the third death testworker, which holds the message (and five
        # others), dies of SIGSEGV: its socket's end sends the message to the
        # dead letters at once (a failed attempt after the count reached 3) or,
        # should its exit be seen first, its death is a fourth. Either way once:
        # its later exit finds the message dead and counts nothing more.
        gw = self.pair()
        open(self.down, "w").close()
        others = [self.send(gw, "testworker", '{"n":%d}' % i) for i in range(5)]
        mid = self.send(gw, "mqtt", self.MARK)
        self.held_by_testworker_at_third_death(gw, mid)
        tw = gw.workers()["testworker"]
        os.kill(tw["pid"], signal.SIGSEGV)
        d = self.wait_dead(gw, mid, timeout=20)
        # (the first is cut at last_error's 160 bytes)
        self.assertRegex(d["last_error"], r"^quarantined: (3 workers died with this message in hand \(last: then "
                                          r"testworker answered retry: worker closed its socket|4 workers died with "
                                          r"this message in hand \(last: killed by signal 11 \(SIGSEGV\)\)$)")
        gw.wait_worker("testworker", lambda w: w["pid"] != tw["pid"] and w["state"] == "ready", what="testworker back")
        self.assertEqual(self.deaths(gw, "testworker"), 1)
        self.dead_once_while_the_others_go(gw, mid, others)
        self.requeue_delivers_once(gw, mid, before=3)
        self.assert_each_once(others + [mid])

    def test_third_death_while_the_fallback_holds_it_then_its_attempt_times_out(self):
        # testworker holds each job 3 s, longer than gateway.job_timeout_ms (2 s):
        # each attempt there times out and the message goes on while testworker
        # still has that copy, which it answers a second later (retry, down_file):
        # a stale result. The attempt in hand at the third death times out and
        # quarantines the message; the stale answer after that changes nothing.
        gw = self.pair(job_timeout_ms=2000)
        open(self.down, "w").close()
        mid = self.send(gw, "mqtt", self.MARK)
        self.held_by_testworker_at_third_death(gw, mid)
        d = self.wait_dead(gw, mid)
        self.assertEqual(d["last_error"], "quarantined: 3 workers died with this message in hand "
                                          "(last: then testworker answered retry: no answer within "
                                          "gateway.job_timeout_ms)")
        self.assertEqual(self.route(gw, mid), [("mqtt", "retry"), ("testworker", "retry")] * 3)
        time.sleep(2)  # the held copy's answer comes 1 s after the timeout
        self.assertEqual(self.route(gw, mid), [("mqtt", "retry"), ("testworker", "retry")] * 3)
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 1)
        self.assert_dead_once(gw, mid)
        self.assertEqual(self.deaths(gw), 3)
        # a job timeout testworker can meet again, then the requeue
        os.remove(self.down)
        gw.cfg["gateway"]["job_timeout_ms"] = 60000
        gw.write_config(gw.cfg)
        self.assertEqual(gw.ctl("reload")[0], 0)
        self.requeue_delivers_once(gw, mid, before=3)
        time.sleep(0.5)
        self.assert_each_once([mid])

    def test_fallback_dies_with_it_in_hand_after_the_third_death(self):
        # testworker dies of it too (fork-segv, when it would answer), and its
        # exit is seen before its socket's end (a child keeps it open), with the
        # message still in hand: the in-hand count of router_worker_lost. Round 1:
        # mqtt's death (1), then testworker's (2); round 2: mqtt's (3) while
        # testworker holds it, then testworker's (4) quarantines it.
        gw = self.pair(sandbox=False)
        mid = self.send(gw, "mqtt", '{"cmd":"close-and-hang","then":"fork-segv"}')
        d = self.wait_dead(gw, mid)
        self.assertEqual(d["last_error"], "quarantined: 4 workers died with this message in hand "
                                          "(last: killed by signal 11 (SIGSEGV))")
        self.assertEqual(self.route(gw, mid), [("mqtt", "retry"), ("testworker", "retry"), ("mqtt", "retry"),
                                               ("testworker", "permfail")])
        self.assertEqual((self.deaths(gw), self.deaths(gw, "testworker")), (2, 2))
        # each attempt counted once in the protocols' figures, as the route shows it
        st = gw.ctl_json("stats")
        self.assertEqual({p: (st[p]["success"], st[p]["retries"], st[p]["failure"], st[p]["dead"])
                          for p in ("mqtt", "testworker")}, {"mqtt": (0, 2, 0, 0), "testworker": (0, 1, 1, 1)})
        # testworker's deaths were seen with the job in hand, not as a closed socket
        self.assertIsNone(re.search(r"worker testworker \(pid \d+\) closed its socket", gw.log_text()))
        self.assert_dead_once(gw, mid)
        gw.wait_worker("testworker", lambda w: w["state"] == "ready", what="testworker back")
        others = [self.send(gw, "testworker", '{"n":%d}' % i) for i in range(5)]
        wait_for(lambda: len(delivered(self.tmp)) >= len(others), timeout=30, what="the others delivered")
        time.sleep(0.5)
        self.assert_dead_once(gw, mid)
        self.assert_each_once(others)

    def test_supervisor_restart_starts_the_count_afresh(self):
        # The count lives in ucgwd's memory, not in the spool: a message with two
        # deaths recorded starts from none after ucgwd restarts, and needs three
        # more to be quarantined (docs/operations.md says so).
        c = cfg(self.tmp)
        c["gateway"].update({"ping_interval_ms": 200, "ping_timeout_ms": 1000, "restart_backoff_min_ms": 50,
                             "restart_max_deaths": 100})
        c["fallback"] = {"cool_after_failures": 1000}
        env = preload("closehang.so", UCGW_CLOSEHANG_MARKER="close-and-hang")
        gw = self.gateway(c, env=env)
        mid = self.send(gw, "testworker", self.MARK)
        wait_for(lambda: self.deaths(gw, "testworker") >= 2, timeout=30, what="two deaths")
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        kids = gw.children()
        gw.kill()
        wait_for(lambda: not any(os.path.exists("/proc/%d" % k) for k in kids), what="workers gone")
        gw.start(env=env)
        self.assertIn(self.message(gw, mid)["state"], ("queued", "inflight", "waiting"))  # recovered, not dead
        d = self.wait_dead(gw, mid)
        self.assertEqual(self.deaths(gw, "testworker"), 3)
        self.assertTrue(d["last_error"].startswith("quarantined: 3 workers died with this message in hand"), d)
        self.assertEqual(gw.log_text().count("message %s is dead-lettered" % mid), 1)
        self.assertEqual(delivered(self.tmp), [])


if __name__ == "__main__":
    unittest.main()
