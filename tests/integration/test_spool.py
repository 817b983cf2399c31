"""The spool on disk: stray copies in spool/files removed at start (and only
those), and the compaction of an old segment, which must not stall the loop
while its copies are synced nor lose or duplicate a message when ucgwd is
killed around it."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ctlclient import Ctl  # noqa: E402
from ucgwtest import BIN, GatewayTest, delivered, preload, small_tmpfs, wait_for  # noqa: E402
from ucgwtest import testworker_config as cfg  # noqa: E402


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


    def test_a_copy_cut_short_or_missing_is_a_dead_letter_not_sent(self):
        # A power cut between an ADD's write and the sync of the copy it names
        # (or someone's hand in spool/files) leaves a copy shorter than the
        # file accepted, or none: at start the message is dead-lettered with
        # the reason, and nothing short is delivered as if whole; a whole one
        # beside them goes out as ever, and the verdict holds after a restart.
        gw = self.gateway(cfg(self.tmp))
        files = spool_dir(gw, "files")
        self.assertEqual(gw.ctl("pause", "testworker")[0], 0)
        short = self.send_file(gw, self.file("short.jpg", 50000)[0])
        gone = self.send_file(gw, self.file("gone.jpg", 20000)[0])
        pw, dw = self.file("whole.jpg", 30000)
        whole = self.send_file(gw, pw)
        kill9(gw)
        os.truncate(os.path.join(files, short), 12345)
        os.remove(os.path.join(files, gone))
        restart(gw)
        dead = {m["id"]: m["last_error"] for m in gw.ctl_json("queue", "dead")}
        self.assertEqual(dead, {short: "the spool's copy of the file is 12345 of its 50000 bytes (cut short)",
                                gone: "the spool's copy of the file is missing"})
        log = gw.log_text()
        self.assertIn("message %s (%s) is dead-lettered: the spool's copy of the file is 12345 of its 50000 "
                      "bytes (cut short)" % (short, os.path.join(files, short)), log)
        self.assertIn("message %s (%s) is dead-lettered: the spool's copy of the file is missing"
                      % (gone, os.path.join(files, gone)), log)
        self.assertEqual(gw.ctl_json("status")["spool"]["dead"], 2)
        wait_for(lambda: any(r[0] == whole for r in delivered(self.tmp)), timeout=20, what="whole delivered")
        time.sleep(0.5)
        self.assertEqual(delivered(self.tmp), [[whole, str(len(dw)), str(checksum(dw))]])
        gw.stop()
        restart(gw)
        dead = {m["id"]: m["last_error"] for m in gw.ctl_json("queue", "dead")}
        self.assertEqual(set(dead), {short, gone})
        self.assertIn("cut short", dead[short])
        self.assertEqual(gw.ctl_json("status")["spool"]["dead"], 2)

    def test_a_copy_refused_for_want_of_room_gives_its_room_back(self):
        # The copy of a file from another file system fits, its ADD does not:
        # the send is refused ("spool full"), the copy removed, and its
        # descriptor (waiting for a sync that no accepted message starts)
        # closed with it, so that its blocks come back at once and the next
        # small message is accepted (before: ucgwd held the deleted copy open
        # and refused everything until a restart).
        mnt = small_tmpfs(self, os.path.join(self.tmp, "mnt"))
        c = cfg(self.tmp)
        c["spool"]["dir"] = os.path.join(mnt, "spool")
        gw = self.gateway(c)
        self.assertEqual(gw.ctl("pause", "testworker")[0], 0)
        time.sleep(0.3)
        st = os.statvfs(mnt)
        with open(os.path.join(mnt, "filler"), "wb") as f:
            f.write(b"x" * (st.f_bavail * st.f_frsize - 40 * 4096))
        st = os.statvfs(mnt)
        room = st.f_bavail * st.f_frsize
        src = os.path.join(self.tmp, "img.jpg")  # on another file system: copied in
        with open(src, "wb") as f:
            f.write(os.urandom(room))
        rc, out, err = gw.ctl("send-file", "--protocol", "testworker", src)
        self.assertEqual(rc, 1, out)
        self.assertIn("spool full", err)
        held = []
        for fd in os.listdir("/proc/%d/fd" % gw.proc.pid):
            try:
                t = os.readlink("/proc/%d/fd/%s" % (gw.proc.pid, fd))
            except OSError:
                continue
            if t.startswith(mnt) and t.endswith("(deleted)"):
                held.append(t)
        self.assertEqual(held, [])
        st = os.statvfs(mnt)
        self.assertGreaterEqual(st.f_bavail * st.f_frsize, room - 2 * 4096)
        rc, out, err = gw.ctl("send", "--protocol", "testworker", '{"a":1}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 1)


class UnreadableSegmentTest(GatewayTest):
    """A segment that cannot be read at start is not an empty one: it is never
    deleted. It goes to spool/corrupt (or, when even that fails, stays where it
    is, out of use), the log says why, and no copy in spool/files is removed as
    a stray meanwhile. failopen.so makes open() (and rename()) of it fail."""

    def fill(self):
        """Queued messages over a few 4 KiB segments, a stray copy; ucgwd killed.
        Returns the gateway, the oldest segment's path and bytes, the ids in it
        and the others."""
        c = cfg(self.tmp)
        c["spool"].update(segment_bytes=4096)
        gw = self.gateway(c)
        self.assertEqual(gw.ctl("pause", "testworker")[0], 0)
        ctl = Ctl(gw.sock)
        ids = []
        for i in range(12):  # about 1 KiB each: three or four segments
            r = ctl.send('{"n":%d,"pad":"%s"}' % (i, "p" * 900), protocol="testworker")
            self.assertTrue(r["ok"], r)
            ids.append(r["body"]["id"])
        ctl.close()
        kill9(gw)
        segdir = spool_dir(gw, "seg")
        segs = sorted(f for f in os.listdir(segdir) if f.endswith(".log"))
        self.assertGreaterEqual(len(segs), 3, segs)
        path = os.path.join(segdir, segs[0])
        with open(path, "rb") as f:
            data = f.read()
        inside = [i for i in ids if i.encode() in data]
        self.assertTrue(inside and len(inside) < len(ids), (inside, ids))
        with open(os.path.join(spool_dir(gw, "files"), "Z" * len(ids[0])), "wb") as f:
            f.write(b"s" * 1000)  # a stray: kept while a segment could not be read
        return gw, path, data, inside, [i for i in ids if i not in inside]

    def delivered_ids(self):
        return sorted(r[0] for r in delivered(self.tmp))

    def wait_delivered(self, gw, ids):
        wait_for(lambda: self.delivered_ids() == sorted(ids) or None, timeout=30, what="delivered")
        wait_for(lambda: gw.ctl_json("queue") == [], what="the queue empty")

    def test_unreadable_segment_is_moved_aside_not_deleted(self):
        gw, path, data, inside, rest = self.fill()
        restart(gw, env=preload("failopen.so", UCGW_FAIL_OPEN=path))
        corrupt = spool_dir(gw, "corrupt")
        moved = os.listdir(corrupt) if os.path.isdir(corrupt) else []
        self.assertEqual(len(moved), 1, "the unreadable segment was deleted, not moved aside")
        self.assertTrue(moved[0].startswith(os.path.basename(path)[:20] + "-"), moved)
        with open(os.path.join(corrupt, moved[0]), "rb") as f:
            self.assertEqual(f.read(), data, "moved aside as it was")
        self.assertFalse(os.path.exists(path))
        log = gw.log_text()
        self.assertIn("cannot read segment %s (none of its records replayed): Input/output error" % path, log)
        self.assertIn("segment %s cannot be read; moved aside to" % path, log)
        st = gw.ctl_json("status")["spool"]
        self.assertEqual(st["corrupt_segments"], 1)
        self.assertEqual(st["stray_files_removed"], 0)
        self.assertIn("kept 1 files (1000 bytes)", log)
        self.assertIn("a segment could not be read to its end", log)
        self.wait_delivered(gw, rest)  # the others go on as before

    def test_segment_that_cannot_be_moved_either_stays_and_is_read_later(self):
        gw, path, data, inside, rest = self.fill()
        restart(gw, env=preload("failopen.so", UCGW_FAIL_OPEN=path, UCGW_FAIL_RENAME=path))
        self.assertTrue(os.path.exists(path), "the unreadable segment was deleted")
        log = gw.log_text()
        self.assertIn("segment %s cannot be read, and cannot be moved aside" % path, log)
        self.assertIn("kept where it is", log)
        self.assertIn("kept 1 files (1000 bytes)", log)
        self.wait_delivered(gw, rest)
        # traffic through many segments: the old ones go, it stays
        ctl = Ctl(gw.sock)
        more = []
        for i in range(40):
            r = ctl.send('{"m":%d,"pad":"%s"}' % (i, "p" * 900), protocol="testworker")
            self.assertTrue(r["ok"], r)
            more.append(r["body"]["id"])
        ctl.close()
        self.wait_delivered(gw, rest + more)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data, "kept as it was")
        gw.stop()
        # readable again: its messages are replayed and delivered; nothing was lost
        restart(gw)
        self.assertIn("recovered %d undelivered messages" % len(inside),
                      gw.log_text().split("cannot be moved aside")[-1])
        self.wait_delivered(gw, rest + more + inside)
        self.assertFalse(os.path.exists(path), "delivered: its segment goes")
        self.assertEqual(gw.ctl_json("status")["spool"]["stray_files_removed"], 1)


def segments(segdir):
    return sorted(f for f in os.listdir(segdir) if f.endswith(".log"))


class CompactionTest(GatewayTest):
    """The oldest segment holds a few live messages (a dead letter, one waiting
    for its retry) among many delivered ones; when the spool grows past four
    segments it is compacted: its live records are copied forward and it goes
    once the copies are durable."""

    PAD = "p" * 900

    def burst(self, ctl, k, first):
        """k messages of about 1 KiB, numbered from first, all requested before any answer is read."""
        for i in range(first, first + k):
            ctl.request("send", {"data": ('{"n":%d,"pad":"%s"}' % (i, self.PAD)).encode(), "format": "json",
                                 "protocol": "testworker"})

    def answers(self, ctl, k):
        for _ in range(k):
            r = ctl.reply(timeout=60)
            self.assertTrue(r["ok"], r)

    def setup_compaction(self, tmp, fsync, env):
        c = cfg(tmp)
        c["spool"].update(segment_bytes=65536, fsync=fsync)
        gw = self.gateway(c, env=env, name="gw-" + fsync)
        segdir = spool_dir(gw, "seg")
        ctl = Ctl(gw.sock)

        def send(payload):
            r = ctl.send(payload, protocol="testworker")
            self.assertTrue(r["ok"], r)
            return r["body"]["id"]

        p = send('{"cmd":"permfail","n":"P","pad":"%s"}' % self.PAD)  # a dead letter in segment 1
        w = send('{"cmd":"retry","n":"W","pad":"%s"}' % self.PAD)  # and one waiting for its retry
        sent = 0
        while len(segments(segdir)) < 4:  # the fifth starts the compaction
            self.burst(ctl, 20, sent)
            self.answers(ctl, 20)
            sent += 20
        ctl.close()
        wait_for(lambda: len(delivered(tmp)) == sent, timeout=30, what="the filler delivered")
        wait_for(lambda: {m["id"]: m["state"] for m in gw.ctl_json("queue")} == {p: "dead", w: "waiting"}
                 or None, timeout=10, what="P dead, W waiting")
        first = segments(segdir)[0]
        self.assertEqual(len(segments(segdir)), 4)
        return gw, segdir, first, p, w, sent

    ROLL = 80  # more than a segment: the fourth fills, a fifth is opened

    def roll(self, gw, sent):
        """Open a fifth segment, which compacts the first; the answers are left to read."""
        ctl = Ctl(gw.sock)
        self.burst(ctl, self.ROLL, sent)
        return ctl

    def copied(self, segdir, first, mid):
        """Is a copy of mid's ADD written to a segment after the first?"""
        def found():
            for f in segments(segdir):
                if f != first:
                    try:
                        with open(os.path.join(segdir, f), "rb") as fh:
                            if mid.encode() in fh.read():
                                return True
                    except FileNotFoundError:  # compacted away between the listing and the open
                        pass
            return False
        return found

    def check_after_restart(self, gw, segdir, first, p, w):
        q = gw.ctl_json("queue")
        self.assertEqual(sorted(m["id"] for m in q), sorted([p, w]), "each once, nothing else")
        self.assertEqual({m["id"]: m["state"] for m in q}[p], "dead")
        self.assertNotIn(first, os.listdir(segdir))
        # their payloads are read back from the copies: the worker answers what they ask
        self.assertEqual(gw.ctl("queue", "requeue", p)[0], 0)

        def tried(mid, answer, state):
            m = {m["id"]: m for m in gw.ctl_json("queue")}[mid]
            return m["attempts"] >= 1 and m["state"] == state and answer in (m["last_error"] or "")
        wait_for(lambda: tried(p, "told to answer permfail", "dead"), what="P dead again, its payload read back")
        wait_for(lambda: tried(w, "told to answer retry", "waiting"), what="W tried, its payload read back")
        self.assertNotIn("cannot read", gw.log_text())

    def test_compaction_sync_does_not_stall_the_loop(self):
        for fsync in ("batch", "always", "never"):
            with self.subTest(fsync=fsync):
                tmp = os.path.join(self.tmp, fsync)
                os.makedirs(tmp)
                trigger = os.path.join(tmp, "slow")
                synclog = os.path.join(tmp, "syncs")
                env = preload("slowsync.so", UCGW_SLOW_SYNC_FILE=trigger, UCGW_SLOW_SYNC_MS="1500",
                              UCGW_SLOW_SYNC_LOG=synclog)
                gw, segdir, first, p, w, sent = self.setup_compaction(tmp, fsync, env)
                open(trigger, "w").close()  # every fdatasync takes 1.5 s from now on
                ctl = self.roll(gw, sent)
                wait_for(self.copied(segdir, first, p), what="the compaction's copies written")
                t0 = time.monotonic()
                rc, out, err = gw.ctl("status")
                took = time.monotonic() - t0
                self.assertEqual(rc, 0, err)
                print("\nfsync %s: status answered in %.3f s while the compaction synced" % (fsync, took))
                self.assertLess(took, 0.75, "the loop waited for a sync")
                if fsync == "never":
                    # nothing to wait for
                    wait_for(lambda: first not in os.listdir(segdir), timeout=1, what="compacted segment gone")
                else:
                    # the old segment stays until the copies are durable...
                    self.assertIn(first, os.listdir(segdir))
                    # ... which happens off the loop
                    wait_for(lambda: first not in os.listdir(segdir), timeout=15, what="compacted segment gone")
                    with open(synclog) as f:
                        threads = f.read().split()
                    self.assertIn("pool", threads)
                    self.assertNotIn("main", threads)
                self.answers(ctl, self.ROLL)
                ctl.close()
                os.remove(trigger)
                wait_for(lambda: len(delivered(tmp)) == sent + self.ROLL, timeout=30, what="all delivered")
                wait_for(lambda: sorted(m["id"] for m in gw.ctl_json("queue")) == sorted([p, w]),
                         what="P and W left")
                kill9(gw)  # right after the compaction: nothing lost
                restart(gw)
                self.check_after_restart(gw, segdir, first, p, w)
                gw.stop()

    def test_kill9_while_the_copies_sync_loses_and_duplicates_nothing(self):
        # Killed after the copies were written and before the old segment went,
        # the spool holds two ADD records of each copied message: the next
        # start takes the later one as the message, once.
        trigger = os.path.join(self.tmp, "slow")
        env = preload("slowsync.so", UCGW_SLOW_SYNC_FILE=trigger, UCGW_SLOW_SYNC_MS="3000")
        gw, segdir, first, p, w, sent = self.setup_compaction(self.tmp, "batch", env)
        open(trigger, "w").close()
        ctl = self.roll(gw, sent)
        wait_for(self.copied(segdir, first, p), what="the compaction's copies written")
        # the new messages written, the copies' sync still sleeping; the new
        # messages wait for that sync too (routed only once durable)
        wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 2 + self.ROLL, what="the roll written")
        self.assertIn(first, os.listdir(segdir))
        self.assertEqual(len(delivered(self.tmp)), sent, "a message went out before it was durable")
        kill9(gw)
        ctl.close()
        os.remove(trigger)
        restart(gw)
        self.assertIn("recovered %d undelivered messages" % (2 + self.ROLL), gw.log_text())
        wait_for(lambda: len(delivered(self.tmp)) == sent + self.ROLL, timeout=30, what="the roll delivered")
        wait_for(lambda: sorted(m["id"] for m in gw.ctl_json("queue")) == sorted([p, w]), what="P and W left")
        self.assertEqual(len({r[0] for r in delivered(self.tmp)}), sent + self.ROLL, "each once")
        self.check_after_restart(gw, segdir, first, p, w)


class PinnedSegmentTest(GatewayTest):
    """A dead letter in the oldest segment must not pin every later one: while
    traffic rolls segments, the spool compacts the pinned one forward (checked
    at each segment change), and stays a few segments long."""

    def test_dead_letter_does_not_pin_the_spool(self):
        c = cfg(self.tmp)
        c["spool"].update(segment_bytes=16384)
        gw = self.gateway(c)
        segdir = spool_dir(gw, "seg")
        ctl = Ctl(gw.sock)
        r = ctl.send('{"cmd":"permfail","n":"D"}', protocol="testworker")
        self.assertTrue(r["ok"], r)
        d = r["body"]["id"]
        wait_for(lambda: {m["id"]: m["state"] for m in gw.ctl_json("queue")} == {d: "dead"} or None,
                 what="D dead")
        first = segments(segdir)[0]
        pad = "p" * 900
        sent, most = 0, 0
        for _ in range(40):  # about 1 KiB each, 16 to a segment: some 50 segment changes
            for _ in range(20):
                sent += 1
                ctl.request("send", {"data": ('{"n":%d,"pad":"%s"}' % (sent, pad)).encode(), "format": "json",
                                     "protocol": "testworker"})
            for _ in range(20):
                r = ctl.reply()
                self.assertTrue(r["ok"], r)
            most = max(most, len(segments(segdir)))
        ctl.close()
        newest = int(segments(segdir)[-1][:20])
        wait_for(lambda: len(delivered(self.tmp)) == sent, timeout=30, what="the traffic delivered")
        print("\n%d messages, %d segments written, at most %d on disk at once" % (sent, newest, most))
        self.assertGreater(newest, 40)
        self.assertLessEqual(most, 6, "segments pinned by the dead letter")
        self.assertNotIn(first, segments(segdir), "the dead letter's first segment was compacted away")
        self.assertLessEqual(len(segments(segdir)), 6)
        self.assertEqual({m["id"]: m["state"] for m in gw.ctl_json("queue")}, {d: "dead"})
        self.assertEqual(gw.ctl_json("status")["spool"]["dead"], 1)
        # after a crash it is still there, once, still dead, its payload read back from its copy
        kill9(gw)
        restart(gw)
        q = gw.ctl_json("queue")
        self.assertEqual([(m["id"], m["state"]) for m in q], [(d, "dead")])
        self.assertIn("recovered 1 undelivered messages", gw.log_text())
        self.assertEqual(gw.ctl("queue", "requeue", d)[0], 0)

        def dead_again():
            m = {m["id"]: m for m in gw.ctl_json("queue")}[d]
            return m["attempts"] >= 1 and m["state"] == "dead" and "told to answer permfail" in (m["last_error"] or "")
        wait_for(dead_again, what="D tried again and dead again")
        self.assertNotIn("cannot read", gw.log_text())
        self.assertEqual(len(delivered(self.tmp)), sent)


class SyncOffTheLoopTest(GatewayTest):
    """Every sync of the spool runs in libuv's thread pool: a file job's file
    (its snapshot: a reflink or a copy, from this or another file system) and its directory entry, a
    full segment left for the next one. While such a sync is slow, ucgwd goes on
    answering; the client waits for its "accepted" until the sync ends.
    slowsync.so makes each fdatasync and fsync take 1.5 s while the trigger file
    exists and logs the thread that made it."""

    SLOW_MS = 1500

    def start_slow(self, fsync, **spool):
        tmp = os.path.join(self.tmp, fsync)
        os.makedirs(tmp)
        trigger = os.path.join(tmp, "slow")
        synclog = os.path.join(tmp, "syncs")
        c = cfg(tmp)
        c["spool"].update(fsync=fsync, **spool)
        env = preload("slowsync.so", UCGW_SLOW_SYNC_FILE=trigger, UCGW_SLOW_SYNC_MS=str(self.SLOW_MS),
                      UCGW_SLOW_SYNC_LOG=synclog)
        gw = self.gateway(c, env=env, name="gw-" + fsync)
        open(trigger, "w").close()  # from now on every fdatasync takes 1.5 s
        return gw, tmp, trigger, synclog

    def status_time(self, gw):
        t0 = time.monotonic()
        rc, out, err = gw.ctl("status")
        self.assertEqual(rc, 0, err)
        return time.monotonic() - t0

    def threads(self, synclog):
        try:
            with open(synclog) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def check_threads(self, fsync, synclog):
        threads = self.threads(synclog)
        if fsync == "never":
            self.assertEqual(threads, [], "spool.fsync never syncs nothing")
        else:
            self.assertIn("pool", threads)
            self.assertNotIn("main", threads, "a sync ran on the loop")

    def test_file_job_sync_does_not_stall_the_loop(self):
        # in the same file system as the spool: snapshotted (a reflink, else a copy), synced later
        self.file_jobs(lambda tmp: tmp)

    def test_copied_file_job_sync_does_not_stall_the_loop(self):
        # The camera writes to tmpfs, the spool is on disk: the file is copied
        # across file systems, and the copy is synced with the group commit.
        shm = "/dev/shm"
        if not os.path.isdir(shm) or os.stat(shm).st_dev == os.stat(self.tmp).st_dev:
            self.skipTest("needs %s on a file system other than %s's" % (shm, self.tmp))
        src = tempfile.mkdtemp(prefix="ucgw-test-src-", dir=shm)
        self.addCleanup(shutil.rmtree, src, True)

        def srcdir(tmp):
            d = os.path.join(src, os.path.basename(tmp))
            os.makedirs(d)
            return d
        self.file_jobs(srcdir, copied=True)

    def file_jobs(self, srcdir, copied=False):
        for fsync in ("batch", "always", "never"):
            with self.subTest(fsync=fsync):
                gw, tmp, trigger, synclog = self.start_slow(fsync)
                path = os.path.join(srcdir(tmp), "cam.jpg")
                data = os.urandom(50000)
                with open(path, "wb") as f:
                    f.write(data)
                if copied:  # across file systems: copy_file_range cannot, the read/write loop copies it
                    with self.assertRaises(OSError, msg="linkable: not a test of the copy") as e:
                        os.link(path, os.path.join(spool_dir(gw, "files"), "probe"))
                    self.assertEqual(e.exception.errno, errno.EXDEV)
                t0 = time.monotonic()
                send = subprocess.Popen([os.path.join(BIN, "ucgwctl"), "-s", gw.sock, "--json", "send-file",
                                         "--protocol", "testworker", path],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                self.cleanups_procs.append(send)
                time.sleep(0.3)  # the file is snapshotted and its sync started
                took = self.status_time(gw)
                out, err = send.communicate(timeout=30)
                accepted = time.monotonic() - t0
                self.assertEqual(send.returncode, 0, err)
                mid = json.loads(out)["id"]
                print("\nfsync %s: %s file job accepted after %.3f s, status answered in %.3f s meanwhile"
                      % (fsync, "tmpfs" if copied else "same-fs", accepted, took))
                self.assertLess(took, 0.75, "the loop waited for a sync")
                if fsync != "never":
                    # "accepted" only once the file, its directory entry and the ADD are synced: one
                    # after the other, in one group commit
                    self.assertGreaterEqual(accepted, 3 * self.SLOW_MS / 1000.0 * 0.9)
                    self.assertGreaterEqual(len(self.threads(synclog)), 3)
                self.check_threads(fsync, synclog)
                wait_for(lambda: any(r[0] == mid for r in delivered(tmp)), timeout=30, what="the file delivered")
                rec = [r for r in delivered(tmp) if r[0] == mid]
                self.assertEqual(rec, [[mid, str(len(data)), str(checksum(data))]])
                wait_for(lambda: os.listdir(spool_dir(gw, "files")) == [], timeout=15,
                         what="the delivered copy removed")
                os.remove(trigger)
                gw.stop()

    def test_segment_change_sync_does_not_stall_the_loop(self):
        for fsync in ("batch", "always", "never"):
            with self.subTest(fsync=fsync):
                gw, tmp, trigger, synclog = self.start_slow(fsync, segment_bytes=4096)
                segdir = spool_dir(gw, "seg")

                def newest():  # delivered segments go: count by their numbers
                    return max((int(f[:20]) for f in os.listdir(segdir) if f.endswith(".log")), default=0)
                before = newest()
                ctl = Ctl(gw.sock)
                pad = "p" * 900
                n = 12  # about 1 KiB each: several segment changes
                for i in range(n):
                    ctl.request("send", {"data": ('{"n":%d,"pad":"%s"}' % (i, pad)).encode(), "format": "json",
                                         "protocol": "testworker"})
                wait_for(lambda: newest() >= before + 2 or None, timeout=10,
                         what="segments changed")
                took = self.status_time(gw)
                t0 = time.monotonic()
                ids = []
                for _ in range(n):
                    r = ctl.reply(timeout=60)
                    self.assertTrue(r["ok"], r)
                    ids.append(r["body"]["id"])
                ctl.close()
                print("\nfsync %s: %d segment changes, status answered in %.3f s meanwhile, the last "
                      "\"accepted\" %.3f s later" % (fsync, newest() - before, took,
                                                     time.monotonic() - t0))
                self.assertLess(took, 0.75, "the loop waited for a sync")
                self.check_threads(fsync, synclog)
                wait_for(lambda: {r[0] for r in delivered(tmp)} >= set(ids), timeout=60, what="all delivered")
                os.remove(trigger)
                # nothing accepted is lost after a crash (one whose DONE was not written yet is sent again)
                kill9(gw)
                restart(gw)
                wait_for(lambda: gw.ctl_json("queue") == [], timeout=30, what="the queue empty")
                self.assertEqual({r[0] for r in delivered(tmp)}, set(ids))
                gw.stop()


if __name__ == "__main__":
    unittest.main()
