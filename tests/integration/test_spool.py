"""The spool on disk: stray copies in spool/files removed at start (and only
those)."""
import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import GatewayTest, preload, wait_for  # noqa: E402


def cfg(tmp, **tw):
    t = {"record": os.path.join(tmp, "delivered.txt")}
    t.update(tw)
    return {"gateway": {"log_level": "info", "max_message_bytes": 4096, "job_timeout_ms": 5000},
            "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000},
            "testworker": t}


def delivered(tmp):
    try:
        with open(os.path.join(tmp, "delivered.txt")) as f:
            return [l.split() for l in f if l.strip()]
    except FileNotFoundError:
        return []


def checksum(data):
    """The test worker's record of a delivery: sum = sum * 31 + byte (mod 2^64)."""
    s = 0
    for b in data:
        s = (s * 31 + b) & 0xFFFFFFFFFFFFFFFF
    return s


def spool_dir(gw, *sub):
    return os.path.join(gw.dir, "state", "spool", *sub)


def restart(gw, env=None, **tw):
    """Start gw again (after a kill or a stop), with test worker settings changed."""
    gw.cfg["testworker"].update(tw)
    gw.write_config(gw.cfg)
    if gw.log:
        gw.log.close()
        gw.log = None
    return gw.start(env=env)


def kill9(gw):
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait()


class StrayFilesTest(GatewayTest):
    def file(self, name, n):
        path = os.path.join(self.tmp, name)
        data = os.urandom(n)
        with open(path, "wb") as f:
            f.write(data)
        return path, data

    def send_file(self, gw, path):
        rc, out, err = gw.ctl("send-file", "--protocol", "testworker", path)
        self.assertEqual(rc, 0, err)
        os.remove(path)  # the caller may delete its copy once accepted
        return out.strip()

    def states(self, gw):
        return {m["id"]: m["state"] for m in gw.ctl_json("queue")}

    def test_strays_removed_at_start_live_copies_kept(self):
        gw = self.gateway(cfg(self.tmp))
        files = spool_dir(gw, "files")
        # X is delivered: its DONE is in the spool and its copy was removed
        px, dx = self.file("x.jpg", 40000)
        rc, out, err = gw.ctl("--json", "send-file", "--protocol", "testworker", "--wait", px)
        self.assertEqual(rc, 0, err)
        x = json.loads(out)["id"]
        wait_for(lambda: os.listdir(files) == [], what="the delivered copy removed")
        # the live ones: a dead letter, one waiting for its retry, one queued behind a paused worker
        d = self.send_file(gw, self.file("permfail-d.jpg", 30000)[0])
        w = self.send_file(gw, self.file("retry-w.jpg", 20000)[0])
        wait_for(lambda: self.states(gw) == {d: "dead", w: "waiting"}, what="dead letter and waiting one")
        self.assertEqual(gw.ctl("pause", "testworker")[0], 0)
        pl, dl = self.file("l.jpg", 123457)
        l = self.send_file(gw, pl)
        self.assertEqual(self.states(gw)[l], "queued")
        kill9(gw)
        self.assertEqual(set(os.listdir(files)), {d, w, l})
        # The strays, as crashes leave them: X's copy (its DONE reached the disk,
        # its unlink did not), a copy whose ADD was never written (not accepted),
        # a copy cut short before its rename.
        never = x[:-4] + ("ZZZZ" if not x.endswith("ZZZZ") else "YYYY")
        strays = {x: 40000, never: 1000, x + ".tmp": 777}
        for name, n in strays.items():
            with open(os.path.join(files, name), "wb") as f:
                f.write(os.urandom(n))
        # at the restart the worker is not ready at once: l is still queued when we look
        gw.cfg["testworker"]["ready_delay_ms"] = 1500
        gw.write_config(gw.cfg)
        gw.log.close()
        gw.log = None
        gw.start(wait_ready=False)
        wait_for(lambda: gw.ctl("status")[0] == 0, timeout=15, what="ucgwd answering")
        self.assertEqual(set(os.listdir(files)), {d, w, l})
        st = gw.ctl_json("status")["spool"]
        self.assertEqual((st["stray_files_removed"], st["stray_bytes_removed"]), (3, sum(strays.values())))
        self.assertIn("removed 3 stray files (%d bytes)" % sum(strays.values()), gw.log_text())
        # l is delivered intact from the copy that was kept
        wait_for(lambda: any(r[0] == l for r in delivered(self.tmp)), timeout=20, what="l delivered")
        rec = [r for r in delivered(self.tmp) if r[0] == l]
        self.assertEqual(rec, [[l, str(len(dl)), str(checksum(dl))]])
        self.assertEqual([r[0] for r in delivered(self.tmp)].count(x), 1)  # X is not sent again
        self.assertEqual(self.states(gw)[d], "dead")
        self.assertIn(w, self.states(gw))
        wait_for(lambda: set(os.listdir(files)) == {d, w}, what="l's copy removed after its delivery")

    def test_crash_between_done_and_unlink_leaves_a_stray_that_goes(self):
        # The real way a stray is made: two delivered files' DONE records are
        # synced by one group commit, and ucgwd dies (crashafter.so) right
        # after it removed the first copy: the second's DONE is durable, its
        # copy stays. The next start removes it, and keeps the dead letter's.
        env = preload("crashafter.so", UCGW_CRASH_AFTER_UNLINK="/spool/files/")
        c = cfg(self.tmp)
        c["spool"]["fsync_interval_ms"] = 300  # both DONE records in one group commit
        gw = self.gateway(c, env=env)
        files = spool_dir(gw, "files")
        d = self.send_file(gw, self.file("permfail-d.jpg", 30000)[0])
        wait_for(lambda: self.states(gw) == {d: "dead"}, what="dead letter")
        self.assertEqual(gw.ctl("pause", "testworker")[0], 0)
        a = self.send_file(gw, self.file("a.jpg", 50000)[0])
        b = self.send_file(gw, self.file("b.jpg", 60000)[0])
        self.assertEqual(gw.ctl("resume", "testworker")[0], 0)
        self.assertEqual(gw.proc.wait(30), -signal.SIGKILL, "ucgwd was to die at the first unlink")
        self.assertEqual(sorted(r[0] for r in delivered(self.tmp)), sorted([a, b]))
        left = set(os.listdir(files)) - {d}
        self.assertEqual(len(left), 1, left)
        size = os.path.getsize(os.path.join(files, next(iter(left))))
        restart(gw)
        self.assertEqual(os.listdir(files), [d])
        st = gw.ctl_json("status")["spool"]
        self.assertEqual((st["stray_files_removed"], st["stray_bytes_removed"]), (1, size))
        self.assertIn("removed 1 stray files (%d bytes)" % size, gw.log_text())
        self.assertEqual(self.states(gw), {d: "dead"})
        time.sleep(0.5)
        self.assertEqual(sorted(r[0] for r in delivered(self.tmp)), sorted([a, b]))  # neither sent again

    def test_nothing_removed_while_a_record_may_be_missing(self):
        # A damaged stretch in a segment may have been the ADD of a message
        # whose copy is all that is left of it: no copy goes while a segment
        # was not read to its end, nor while one waits in spool/corrupt.
        gw = self.gateway(cfg(self.tmp))
        files = spool_dir(gw, "files")
        self.assertEqual(gw.ctl("pause", "testworker")[0], 0)
        lost = self.send_file(gw, self.file("lost.jpg", 20000)[0])
        kept = self.send_file(gw, self.file("retry-kept.jpg", 30000)[0])
        for i in range(5):  # good records after the damage: it is not a torn tail
            gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)
        kill9(gw)
        segdir = spool_dir(gw, "seg")
        seg = os.path.join(segdir, sorted(os.listdir(segdir))[-1])
        with open(seg, "r+b") as f:
            data = f.read()
            at = data.index(lost.encode())  # in lost's ADD, the first record that names it
            f.seek(at)
            f.write(b"\xff" * 8)
        stray = kept[:-4] + ("ZZZZ" if not kept.endswith("ZZZZ") else "YYYY")
        with open(os.path.join(files, stray), "wb") as f:
            f.write(b"s" * 1000)
        restart(gw)
        st = gw.ctl_json("status")["spool"]
        self.assertEqual((st["corrupt_segments"], st["corrupt_records"], st["stray_files_removed"]), (1, 1, 0))
        self.assertEqual(set(os.listdir(files)), {lost, kept, stray})
        self.assertIn("kept 2 files (21000 bytes)", gw.log_text())
        self.assertIn("a segment could not be read to its end", gw.log_text())
        self.assertIn(kept, self.states(gw))  # rescued from the damaged segment
        gw.stop()
        restart(gw)  # the damaged segment waits in spool/corrupt: still kept
        self.assertEqual(set(os.listdir(files)), {lost, kept, stray})
        self.assertIn("spool/corrupt may name them", gw.log_text())
        gw.stop()
        corrupt = spool_dir(gw, "corrupt")
        for n in os.listdir(corrupt):  # the operator has looked at it
            os.remove(os.path.join(corrupt, n))
        restart(gw)
        self.assertEqual(set(os.listdir(files)), {kept})
        self.assertEqual(gw.ctl_json("status")["spool"]["stray_files_removed"], 2)
        self.assertIn(kept, self.states(gw))


if __name__ == "__main__":
    unittest.main()
