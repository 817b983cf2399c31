"""ucgw-rsync against a real sshd and the real rsync: files arrive identical,
queued files go together in one run, a cut transfer resumes and is answered ok
only once the whole file is on the server, progress keeps a slow transfer from
the job timeout, rsync's exit codes map to retry with its message, a full
disk leaves no partial data that holds its room, options refused by either
rsync hold every file (the reason in the worker's health) until a reload or a
check finds them taken; options that could lose files (--delete, --inplace,
...) are warned of by the configuration check and refused by the worker, as is
a missing rsync."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from sshd import Sshd  # noqa: E402
from ucgw import UnifiedCommunicationGateway  # noqa: E402
from ucgwtest import BIN, GatewayTest, small_tmpfs, wait_for, writable_by_workers  # noqa: E402


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def size_or_none(path):
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return None


class RsyncTest(GatewayTest):
    def gw_for(self, sshd, gateway=None, start=True, cfg=None, **extra):
        r = {"remote_host": "127.0.0.1", "port": sshd.port, "remote_user": sshd.user, "key_file": sshd.user_key,
             "known_hosts": sshd.known_hosts, "remote_path": sshd.remote, "options": ["-a"], "timeout": 60}
        r.update(extra)
        c = dict(cfg or {})
        c.update({"rsync": r, "gateway": dict(gateway or {})})
        return self.gateway(c, start=start)

    def gw_alone(self, sshd, **extra):
        """rsync with fallback disabled and short waits between rounds: what
        rsync answers decides whether a file waits or is dead-lettered."""
        return self.gw_for(sshd, cfg={"fallback": {"enabled": False},
                                      "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}}, **extra)

    def failing(self, gw):
        """The messages in the queue that have failed at least once."""
        return [m for m in gw.ctl_json("queue") if m["last_error"]]

    def files_under(self, root):
        """Every regular file under root (relative paths, sorted): what a
        transfer left on the server. Directories are not listed."""
        return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)

    def make(self, name, size):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        return path

    def test_small_and_large_identical(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        for name, size in (("a.jpg", 100 * 1024), ("big.bin", 30 * 1024 * 1024)):
            p = self.make(name, size)
            rc, out, err = gw.ctl("--json", "send-file", "--protocol", "rsync", "--wait", p)
            self.assertEqual(rc, 0, err + out)
            self.assertEqual(json.loads(out)["protocol"], "rsync")
            self.assertEqual(sha(os.path.join(sshd.remote, name)), sha(p))

    def test_queued_files_share_runs(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        paths = [self.make("f%03d.jpg" % i, 100 * 1024) for i in range(100)]
        t0 = time.monotonic()
        for p in paths:
            self.assertEqual(gw.ctl("send-file", "--protocol", "rsync", p)[0], 0)
        wait_for(lambda: len([f for f in os.listdir(sshd.remote) if f.endswith(".jpg")]) == 100, timeout=120,
                 what="100 files")
        print("\n100 files of 100 KiB over rsync in %.2f s" % (time.monotonic() - t0))
        for p in paths[::20]:
            self.assertEqual(sha(os.path.join(sshd.remote, os.path.basename(p))), sha(p))
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 100, what="100 ok results")

    def test_next_run_prepared_while_one_runs(self):
        """While a run sends, the next run's rsync starts and waits for its
        list: the files queued meanwhile go to it, all of them whole, and every
        run's ssh goes over the worker's one master connection."""
        sshd = Sshd(self)
        # 8 MiB at 2,000 KB/s: four seconds of a run, for six sends to queue in on a loaded machine
        gw = self.gw_for(sshd, gateway={"log_level": "debug"}, options=["-a", "--bwlimit=2000"])
        big = self.make("big.bin", 8 * 1024 * 1024)
        self.assertEqual(gw.ctl("send-file", "--protocol", "rsync", big)[0], 0)
        wait_for(lambda: any(f.startswith(".big.bin.") for f in os.listdir(sshd.remote)), timeout=30, step=0.01,
                 what="the first run sending")
        small = [self.make("n%02d.jpg" % i, 50 * 1024) for i in range(6)]
        for p in small:
            self.assertEqual(gw.ctl("send-file", "--protocol", "rsync", p)[0], 0)
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 1 + len(small), timeout=60, what="all delivered")
        for p in [big] + small:
            self.assertEqual(sha(os.path.join(sshd.remote, os.path.basename(p))), sha(p))
        log = gw.log_text()
        self.assertRegex(log, r"run 2: [1-6] files to the rsync prepared \d+\.\d s ago")
        self.assertNotIn("rsync exit", log)
        self.assertEqual(len(self.ssh_masters(gw)), 1, "one ssh master, the worker's child")

    @staticmethod
    def ssh_masters(gw):
        """pids of the ssh -M processes whose parent is one of gw's workers."""
        workers, out = set(gw.children()), []
        for d in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/stat" % d) as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open("/proc/%s/cmdline" % d) as f:
                    argv = f.read().split("\0")
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                continue
            if ppid in workers and "-M" in argv and "-N" in argv:
                out.append(int(d))
        return out

    def test_cut_transfer_resumes(self):
        """The sshd session killed in the middle of a file: the file is answered
        ok only once it is whole on the server, and its final name never shows
        a part of it."""
        sshd = Sshd(self)
        gw = self.gw_for(sshd, options=["-a", "--bwlimit=20000"])
        size = 40 * 1024 * 1024
        p = self.make("cut.bin", size)
        final = os.path.join(sshd.remote, "cut.bin")
        halves = []

        def look():
            n = size_or_none(final)
            if n is not None and n != size:
                halves.append(n)

        def temp_growing():  # rsync writes .cut.bin.XXXXXX beside the target
            look()
            return any(f.startswith(".cut.bin.") and (size_or_none(os.path.join(sshd.remote, f)) or 0) > 5 << 20
                       for f in os.listdir(sshd.remote))
        self.assertEqual(gw.ctl("send-file", "--protocol", "rsync", p)[0], 0)
        wait_for(temp_growing, timeout=30, step=0.01, what="rsync's temporary file growing")
        for pid in sshd.session_processes():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while gw.ctl_json("stats")["rsync"]["success"] != 1:
            self.assertLess(time.monotonic(), deadline, "no ok for cut.bin: %s" % gw.ctl_json("queue"))
            for _ in range(20):
                look()
                time.sleep(0.01)
        self.assertEqual(halves, [], "the final name showed a part of the file")
        self.assertEqual(sha(final), sha(p))
        self.assertEqual([f for f in os.listdir(sshd.remote) if not f.startswith(".")], ["cut.bin"])
        self.assertEqual([f for f in os.listdir(sshd.remote) if f.startswith(".cut.bin")], [])
        st = gw.ctl_json("stats")["rsync"]
        self.assertGreaterEqual(st["retries"], 1, st)  # the cut attempt was not answered ok

    def test_partial_data_reused(self):
        """What an interrupted transfer left in the partial directory is the
        basis of the next: only the rest of the file goes over the wire."""
        sshd = Sshd(self)
        gw = self.gw_for(sshd, gateway={"log_level": "debug"})
        size, have = 48 * 1024 * 1024, 40 * 1024 * 1024
        p = self.make("resume.bin", size)
        os.makedirs(os.path.join(sshd.remote, ".ucgw-partial"))
        with open(p, "rb") as src, open(os.path.join(sshd.remote, ".ucgw-partial", "resume.bin"), "wb") as dst:
            dst.write(src.read(have))
        rc, out, err = gw.ctl("--json", "send-file", "--protocol", "rsync", "--wait", p)
        self.assertEqual(rc, 0, err + out)
        self.assertEqual(sha(os.path.join(sshd.remote, "resume.bin")), sha(p))
        m = re.search(r"1 files in [0-9.]+ s, exit 0; (\d+) bytes of file data sent, (\d+) matched", gw.log_text())
        self.assertTrue(m, gw.log_text()[-2000:])
        literal, matched = int(m.group(1)), int(m.group(2))
        self.assertLess(literal, size - have + 1024 * 1024)
        self.assertGreater(matched, have - 1024 * 1024)
        self.assertFalse(os.path.exists(os.path.join(sshd.remote, ".ucgw-partial", "resume.bin")))

    def test_slow_transfer_progress_keeps_the_job(self):
        """A run longer than gateway.job_timeout_ms that keeps moving is not
        timed out: rsync's progress goes to the supervisor while it runs, for
        the file it sends, the files after it in the same run and those that
        wait for the next run."""
        sshd = Sshd(self)
        gw = self.gw_for(sshd, gateway={"job_timeout_ms": 3000}, options=["-a", "--bwlimit=2000"])
        lead, big, small = self.make("a-lead.jpg", 1000), self.make("b-big.bin", 12 * 1024 * 1024), \
            self.make("c-small.jpg", 1000)
        # paused, then resumed: the three reach the worker together; the lead
        # goes alone (a run starts at the first file), big and small share the next run
        self.assertEqual(gw.ctl("pause", "rsync")[0], 0)
        ids = []
        for path in (lead, big, small):
            rc, out, err = gw.ctl("send-file", "--protocol", "rsync", path)
            self.assertEqual(rc, 0, err)
            ids.append(out.strip())
        client = UnifiedCommunicationGateway(socket_path=gw.sock, timeout=60)
        seen = []
        self.assertEqual(gw.ctl("resume", "rsync")[0], 0)
        t0 = time.monotonic()
        r = client.send_file(self.make("d-watched.bin", 6 * 1024 * 1024), protocol="rsync", wait=True,
                             progress=lambda done, size: seen.append((time.monotonic() - t0, done, size)))
        self.assertTrue(r.success, r.error)
        self.assertEqual(r.data["attempts"], 1, r.data)
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 4, timeout=60, what="4 ok results")
        st = gw.ctl_json("stats")["rsync"]
        self.assertEqual(st["retries"], 0, st)
        for path in (lead, big, small):
            self.assertEqual(sha(os.path.join(sshd.remote, os.path.basename(path))), sha(path))
        # the watched file: progress while it went, growing (the client passes
        # on the newest report it has when it looks, so not every one)
        done = [d for _, d, _ in seen]
        self.assertGreaterEqual(len([d for d in set(done) if 0 < d < 6 * 1024 * 1024]), 2, seen)
        self.assertEqual(done, sorted(done), seen)
        self.assertTrue(all(size == 6 * 1024 * 1024 for _, _, size in seen), seen)

    def test_one_failed_file_does_not_hold_back_its_run(self):
        """Two files in one run, one of which the server cannot take (a
        directory is in the way): the other is answered ok, the failed one goes
        back with rsync's reason, and is never answered ok."""
        sshd = Sshd(self)
        gw = self.gw_for(sshd, gateway={"log_level": "debug"})
        os.makedirs(os.path.join(sshd.remote, "blocked.jpg", "inside"))
        paths = [self.make(n, 5000) for n in ("lead.jpg", "good.jpg", "blocked.jpg")]
        self.assertEqual(gw.ctl("pause", "rsync")[0], 0)
        for path in paths:
            self.assertEqual(gw.ctl("send-file", "--protocol", "rsync", path)[0], 0)
        self.assertEqual(gw.ctl("resume", "rsync")[0], 0)
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 2, timeout=30, what="lead and good ok")
        q = wait_for(lambda: [m for m in gw.ctl_json("queue") if m["last_error"]], what="the refusal")
        self.assertEqual(len(q), 1, q)
        self.assertIn("rsync exit 23", q[0]["last_error"])
        self.assertIn("could not make way for new regular file: blocked.jpg", q[0]["last_error"])
        self.assertEqual(sha(os.path.join(sshd.remote, "good.jpg")), sha(paths[1]))
        self.assertIn("1 of 2 files proven on the server", gw.log_text())
        time.sleep(2)  # its retries fail the same way
        self.assertEqual(gw.ctl_json("stats")["rsync"]["success"], 2)

    def test_exit_codes_map_to_retry(self):
        """What the server's file system says waits and is tried again (exit
        11: a path through a regular file; 23: a directory it cannot write
        to), with rsync's message. (What cannot work without changing the
        options holds the files too: test_refused_options_hold_files.)"""
        sshd = Sshd(self)
        # a path through a regular file: rsync exit 11 (file I/O at the server)
        afile = os.path.join(self.tmp, "remote", "afile")
        open(afile, "w").close()
        gw = self.gw_alone(sshd, remote_path=os.path.join(afile, "sub"))
        p = self.make("x.jpg", 1000)
        self.assertEqual(gw.ctl("send-file", "--protocol", "rsync", p)[0], 0)
        # The server's message comes through ssh's stderr, which sshd may pass
        # on after the end of rsync's output: now and then (1 in 30 here, with
        # rsync alone on the command line too) the client never gets it; the
        # next round's does.
        q = wait_for(lambda: [m for m in self.failing(gw) if "Not a directory" in m["last_error"]], timeout=30,
                     what="rsync's reason in the queue")
        self.assertRegex(q[0]["last_error"], r"rsync exit 11: .*mkdir .*sub/?\" failed: Not a directory")
        time.sleep(1.5)  # rounds go by
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        self.assertEqual(gw.ctl_json("stats")["rsync"]["success"], 0)
        self.assertGreaterEqual(gw.ctl_json("stats")["rsync"]["retries"], 2)
        os.unlink(afile)  # the operator clears the way: the file goes out by itself
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 1, timeout=30, what="x.jpg delivered")
        self.assertEqual(sha(os.path.join(afile, "sub", "x.jpg")), sha(p))
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        # a directory the user cannot write to (root cannot write into /proc
        # either): rsync exit 23, which may work later
        if os.geteuid() == 0:
            ro = "/proc"
        else:
            ro = os.path.join(self.tmp, "remote", "readonly")
            os.makedirs(ro)
            os.chmod(ro, 0o555)
        gw2 = self.gw_alone(sshd, remote_path=ro)
        gw2.ctl("send-file", "--protocol", "rsync", self.make("y.jpg", 1000))
        q = wait_for(lambda: self.failing(gw2), what="the refusal")
        self.assertIn("rsync exit 23", q[0]["last_error"])
        self.assertRegex(q[0]["last_error"], r"mkstemp .*y\.jpg.* failed: (Permission denied|No such file)")
        self.assertEqual(gw2.ctl_json("stats")["rsync"]["success"], 0)
        self.assertEqual(gw2.ctl_json("queue", "dead"), [])

    def test_full_remote_disk_waits_for_room(self):
        """The server's disk (4 MiB) fills up under a file of 8 MiB (rsync
        exit 11, 'No space left on device'), with fallback disabled: the file
        waits in the spool with rsync's reason, is not dead-lettered, and
        arrives whole once the server has room again. Between its rounds
        nothing of it is on the server: rsync moves what it wrote into the
        partial directory (no temporary file stays), which would fill the
        disk to its last byte for as long as it is full, and the worker
        deletes it. So a small file sent meanwhile arrives (on the full
        disk's room, in the same runs as the big one, before it)."""
        small = small_tmpfs(self, os.path.join(self.tmp, "remote", "small"))
        lpr = os.path.join(small, "lpr")
        sshd = Sshd(self)
        gw = self.gw_alone(sshd, remote_path=lpr, gateway={"log_level": "debug"})

        def used():
            st = os.statvfs(small)
            return (st.f_blocks - st.f_bfree) * st.f_frsize

        def between_rounds(expect):
            """No round in progress, and on the server only what expect says
            (and room): a round starts again and again, so at some moment."""
            return gw.workers()["rsync"]["inflight"] == 0 and self.files_under(small) == expect and \
                used() < 512 * 1024
        p = self.make("plate.bin", 8 * 1024 * 1024)
        rc, out, err = gw.ctl("send-file", "--protocol", "rsync", p)
        self.assertEqual(rc, 0, err)
        mid = out.strip()
        q = wait_for(lambda: [m for m in self.failing(gw) if "No space left on device" in m["last_error"]],
                     timeout=30, what="rsync's reason in the queue")
        print("\nfull remote disk: %s" % q[0]["last_error"])
        self.assertIn("rsync exit 11: rsync: [receiver] write failed on", q[0]["last_error"])
        self.assertEqual(q[0]["id"], mid)
        wait_for(lambda: between_rounds([]), timeout=20, step=0.005, what="nothing of plate.bin on the server")
        self.assertRegex(gw.log_text(), r"run \d+: the server's disk is full: deleted the partial data of 1 of "
                         r"these 1 files, so that it holds no room \(they go whole next time\): plate\.bin")
        time.sleep(1.5)  # rounds go by
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        self.assertEqual(gw.ctl_json("stats")["rsync"]["success"], 0)
        # the room the big file does not hold is there for a small one
        a = self.make("a-small.jpg", 100 * 1024)
        self.assertEqual(gw.ctl("send-file", "--protocol", "rsync", a)[0], 0)
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 1, timeout=30, what="a-small.jpg delivered")
        self.assertEqual(sha(os.path.join(lpr, "a-small.jpg")), sha(a))
        wait_for(lambda: between_rounds(["lpr/a-small.jpg"]), timeout=20, step=0.005,
                 what="only a-small.jpg on the server")
        # room again
        self.assertEqual(subprocess.run(["mount", "-o", "remount,size=64m", small]).returncode, 0)
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 2, timeout=30, what="the file delivered")
        self.assertEqual(sha(os.path.join(lpr, "plate.bin")), sha(p))
        self.assertEqual(self.files_under(small), ["lpr/a-small.jpg", "lpr/plate.bin"])
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 0)
        route = gw.ctl_json("trace", mid)["route"]
        self.assertGreaterEqual(len(route), 2, route)
        self.assertEqual(route[-1]["result"], "ok", route)

    def test_refused_options_hold_files(self):
        """An option the server's rsync refuses (as rsync before 3.2.3
        refuses the worker's --mkpath): it exits 1 before the two talk, this
        side sees the connection close (exit 12), and the server's message
        says why. No file can go until the options change, so none is
        dead-lettered: the run's files go back (retry) with the server's
        message, the worker's health says what is refused (connected false),
        and the files sent after (here those that came while the first went
        alone, and two more) are not tried at all. The operator fixes
        rsync.options and reloads: every file goes out. An option this rsync
        refuses itself (exit 1) is held the same way."""
        sshd = Sshd(self)
        gw = self.gw_alone(sshd, options=["-a", "--rsync-path=rsync --server --no-such-option"])
        paths = [self.make("held%d.jpg" % i, 1000 + i) for i in range(5)]
        ids = []

        def send(path):
            rc, out, err = gw.ctl("send-file", "--protocol", "rsync", path)
            self.assertEqual(rc, 0, err)
            ids.append(out.strip())
        self.assertEqual(gw.ctl("pause", "rsync")[0], 0)
        for path in paths[:3]:
            send(path)
        self.assertEqual(gw.ctl("resume", "rsync")[0], 0)
        w = gw.wait_worker("rsync", lambda w: not w["connected"] and "refused" in w["health"],
                           what="the refusal in the worker's health")
        print("\nhealth: %s" % w["health"])
        self.assertIn("the server's rsync refused an option: --no-such-option: unknown option (rsync exit 12)",
                      w["health"])
        self.assertIn("files wait until rsync.options is fixed and reloaded", w["health"])
        for path in paths[3:]:
            send(path)
        wait_for(lambda: len(self.failing(gw)) == 5, what="five files back")
        errors = [h["error"] for i in ids for h in gw.ctl_json("trace", i)["route"]]
        tried = [e for e in errors if re.search(r"rsync exit 12: rsync: on remote machine: --no-such-option: "
                                                r"unknown option rsync error: syntax or usage error \(code 1\)", e)]
        self.assertEqual(len(tried), 1, errors)  # the first file: the one run that tried
        held = [e for e in errors if e.startswith("not sent: the server's rsync refused an option: "
                                                  "--no-such-option: unknown option (rsync exit 12)")]
        self.assertEqual(len(held) + len(tried), len(errors), errors)
        self.assertGreaterEqual(len(held), 4, errors)
        time.sleep(1.5)
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        self.assertEqual(gw.ctl_json("stats")["rsync"]["success"], 0)
        self.assertEqual(len(re.findall(r"files proven on the server", gw.log_text())), 1)  # one run tried
        self.assertEqual(self.files_under(sshd.remote), [])
        # the options fixed
        gw.cfg["rsync"]["options"] = ["-a"]
        gw.write_config(gw.cfg)
        self.assertEqual(gw.ctl("reload")[0], 0)
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 5, timeout=30, what="the five delivered")
        for path in paths:
            self.assertEqual(sha(os.path.join(sshd.remote, os.path.basename(path))), sha(path))
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        self.assertTrue(gw.workers()["rsync"]["connected"])
        # an option this rsync refuses: exit 1, held the same way
        gw2 = self.gw_alone(sshd, options=["-a", "--bwlimit=fast"])
        self.assertEqual(gw2.ctl("send-file", "--protocol", "rsync", self.make("z.jpg", 1000))[0], 0)
        w = gw2.wait_worker("rsync", lambda w: not w["connected"] and "refused" in w["health"],
                            what="the refusal in the worker's health")
        self.assertIn("this rsync refused an option: --bwlimit=fast is invalid (rsync exit 1)", w["health"])
        q = wait_for(lambda: self.failing(gw2), what="z.jpg back")
        self.assertIn("rsync exit 1: rsync: --bwlimit=fast is invalid", q[0]["last_error"])
        time.sleep(1)
        self.assertEqual(gw2.ctl_json("queue", "dead"), [])

    def test_refusal_ends_when_a_check_passes(self):
        """The server's rsync refuses the options until its operator fixes it
        (here a wrapper that adds an unknown option while a flag file is
        there): the files wait, and the worker checks now and then (a dry run
        of no files; first after 5 s) whether the server takes the options;
        once it does, the files go out without a reload or restart."""
        sshd = Sshd(self)
        flag = os.path.join(self.tmp, "server-refuses")
        open(flag, "w").close()
        wrapper = os.path.join(self.tmp, "server-rsync")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nif [ -e "%s" ]; then exec rsync --server --no-such-option "$@"; fi\n'
                    'exec rsync "$@"\n' % flag)
        os.chmod(wrapper, 0o755)
        gw = self.gw_alone(sshd, options=["-a", "--rsync-path=" + wrapper], gateway={"log_level": "debug"})
        p = self.make("later.jpg", 5000)
        self.assertEqual(gw.ctl("send-file", "--protocol", "rsync", p)[0], 0)
        gw.wait_worker("rsync", lambda w: not w["connected"] and "--no-such-option" in w["health"],
                       what="the refusal in the worker's health")
        time.sleep(1)
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        os.unlink(flag)  # the server's side fixed
        t0 = time.monotonic()
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 1, timeout=30, what="later.jpg delivered")
        print("\ndelivered %.1f s after the fix" % (time.monotonic() - t0))
        self.assertEqual(sha(os.path.join(sshd.remote, "later.jpg")), sha(p))
        self.assertIn("check: rsync to %s@127.0.0.1:%s/ takes rsync.options now" % (sshd.user, sshd.remote),
                      gw.log_text())
        w = gw.workers()["rsync"]
        self.assertTrue(w["connected"], w)
        self.assertEqual((w["restarts"], gw.ctl_json("status")["reloads"]), (0, 0))
        self.assertEqual(gw.ctl_json("queue", "dead"), [])

    def test_sshd_restarted_mid_delivery(self):
        """sshd restarted in the middle of a file, its sessions ended with it
        (a server rebooting), with fallback disabled: the cut run (rsync exit
        255 or 12) and the runs while sshd is away are retried; the file
        arrives whole once sshd is back, and nothing is dead-lettered."""
        sshd = Sshd(self)
        gw = self.gw_alone(sshd, options=["-a", "--bwlimit=20000"])
        size = 40 * 1024 * 1024
        p = self.make("restart.bin", size)

        def temp_growing():
            return any(f.startswith(".restart.bin.") and (size_or_none(os.path.join(sshd.remote, f)) or 0) > 5 << 20
                       for f in os.listdir(sshd.remote))
        rc, out, err = gw.ctl("send-file", "--protocol", "rsync", p)
        self.assertEqual(rc, 0, err)
        mid = out.strip()
        wait_for(temp_growing, timeout=30, step=0.01, what="rsync's temporary file growing")
        sessions = sshd.session_processes()
        sshd.stop()
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        q = wait_for(lambda: self.failing(gw), timeout=30, what="the cut run answered")
        print("\nsshd restarted: %s" % q[0]["last_error"])
        self.assertRegex(q[0]["last_error"], r"rsync exit (255|12|10)")
        time.sleep(2)  # rounds while sshd is away: ssh cannot connect (exit 255)
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        sshd.start()
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 1, timeout=60, what="the file delivered")
        self.assertEqual(sha(os.path.join(sshd.remote, "restart.bin")), sha(p))
        self.assertEqual([f for f in os.listdir(sshd.remote) if f.startswith(".restart.bin")], [])
        self.assertEqual(gw.ctl_json("queue", "dead"), [])
        route = gw.ctl_json("trace", mid)["route"]
        self.assertEqual(route[-1]["result"], "ok", route)
        self.assertTrue(all(h["result"] == "retry" for h in route[:-1]), route)

    def test_staging_directory_removed_under_the_worker(self):
        """A cleaner of old files in the temporary directory removes the
        worker's staging directory while it idles: the next file goes out all
        the same (the worker makes the directory again), where before no run
        could start and the file sat unanswered until the job timeout, and
        again after it. With the temporary directory gone too, the file goes
        back at once with the reason, and out once the directory is back."""
        sshd = Sshd(self)
        tmpdir = os.path.join(self.tmp, "workertmp")
        os.makedirs(tmpdir)
        writable_by_workers(os.path.join(tmpdir, ".keep"))  # the workers run as nobody under root
        os.chmod(tmpdir, 0o1777)
        gw = self.gw_for(sshd, start=False)
        gw.start(env={"TMPDIR": tmpdir})
        first = self.make("first.jpg", 1000)
        rc, out, err = gw.ctl("--json", "send-file", "--protocol", "rsync", "--wait", first)
        self.assertEqual(rc, 0, err + out)
        stages = [d for d in os.listdir(tmpdir) if d.startswith("ucgw-rsync-")]
        self.assertEqual(len(stages), 1, stages)
        shutil.rmtree(os.path.join(tmpdir, stages[0]))
        second = self.make("second.jpg", 1000)
        rc, out, err = gw.ctl("--json", "send-file", "--protocol", "rsync", "--wait", second, timeout=20)
        self.assertEqual(rc, 0, err + out)
        self.assertEqual(json.loads(out)["attempts"], 1, out)
        self.assertEqual(sha(os.path.join(sshd.remote, "second.jpg")), sha(second))
        self.assertIn("the staging directory %s had gone; made again" % os.path.join(tmpdir, stages[0]),
                      gw.log_text())
        # the temporary directory itself gone: each file goes back at once
        # with the reason, and out once the directory is there again
        shutil.rmtree(tmpdir)
        third = self.make("third.jpg", 1000)
        self.assertEqual(gw.ctl("send-file", "--protocol", "rsync", third)[0], 0)
        q = wait_for(lambda: [m for m in gw.ctl_json("queue") if m["last_error"]], what="the file answered retry")
        self.assertIn("cannot make the staging directory %s/run" % os.path.join(tmpdir, stages[0]),
                      q[0]["last_error"])
        self.assertIn("No such file or directory", q[0]["last_error"])
        os.makedirs(tmpdir)
        os.chmod(tmpdir, 0o1777)
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 3, timeout=20, what="third.jpg delivered")
        self.assertEqual(sha(os.path.join(sshd.remote, "third.jpg")), sha(third))
        self.assertEqual(gw.ctl_json("queue", "dead"), [])

    def test_refused_options(self):
        """Options that could delete, half-write or skip files on the server:
        `ucgwd -n` warns of each at its place in the file, with why (the file
        loads: the reference design's own configuration asks for --delete), and
        the rsync worker refuses to start with one (bad configuration: not
        restarted; the reason in the log and `ucgwctl workers`)."""
        sshd = Sshd(self)
        for opts, word, refused, why in (
                (["-azP", "--delete"], "--delete", "'--delete'", "it can delete files on the server"),
                (["-a", "--inplace"], "--inplace", "'--inplace'", "so the server could see a half file"),
                (["-a", "--append-verify"], "--append-verify", "'--append-verify'",
                 "so the server could see a half file"),
                (["-a", "--append"], "--append", "'--append'", "so the server could see a half file"),
                (["-azn"], "-azn", "'-n' (in '-azn')", "rsync would not send the files and still exit 0")):
            gw = self.gw_for(sshd, start=False, options=opts)
            r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("configuration is valid (with the warnings above)", r.stdout)
            with open(gw.cfg_path) as f:
                lines = f.read().splitlines()
            line = next(i for i, l in enumerate(lines) if '"%s"' % word in l)
            col = lines[line].index('"%s"' % word) + 1
            self.assertIn("ucgwd: warning: %s:%d:%d: refused option %s in 'options' of section 'rsync': "
                          % (gw.cfg_path, line + 1, col, refused), r.stderr)
            self.assertIn(why, r.stderr)
            self.assertIn("the rsync worker will not start until it is removed", r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        gw = self.gw_for(sshd, options=["-a", "--delete"])
        w = gw.wait_worker("rsync", lambda w: w["state"] == "failed")
        self.assertEqual(w["last_exit"], "exit status 2")
        self.assertIn("rsync.options: --delete is refused: it can delete files on the server", gw.log_text())
        self.assertEqual(os.listdir(sshd.remote), [])

    def test_missing_rsync_binary(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd, rsync_path="/nonexistent/rsync")
        w = gw.wait_worker("rsync", lambda w: w["state"] == "failed")
        self.assertEqual(w["last_exit"], "exit status 2")
        self.assertIn("program '/nonexistent/rsync' not found", gw.log_text())

    def test_unknown_host_key_refused(self):
        sshd = Sshd(self)
        kh = os.path.join(self.tmp, "empty_known_hosts")
        open(kh, "w").close()
        gw = self.gw_for(sshd, known_hosts=kh)
        gw.ctl("send-file", "--protocol", "rsync", self.make("secret.jpg", 1000))
        q = wait_for(lambda: [m for m in gw.ctl_json("queue") if m["last_error"]], what="refusal")
        self.assertIn("Host key verification failed", q[0]["last_error"])
        self.assertFalse(os.path.exists(os.path.join(sshd.remote, "secret.jpg")))

    def test_rsync_does_not_hold_the_workers_socket(self):
        """rsync and its ssh, started by ucgw-rsync, hold none of the worker's
        descriptors of its socket to ucgwd: one that outlived a crash of the
        worker would keep ucgwd from seeing the socket close, and could write
        frames into it."""
        sshd = Sshd(self)
        gw = self.gw_for(sshd, options=["-a", "--bwlimit=2000"])
        wpid = gw.wait_worker("rsync", lambda w: w["state"] == "ready" and w["pid"] > 0)["pid"]

        def socket_inodes(pid):
            out = set()
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                except OSError:
                    continue
                if target.startswith("socket:"):
                    out.add(target)
            return out

        def descendants(pid):
            kids = {}
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        with open("/proc/%s/stat" % d) as f:
                            kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
                    except (OSError, IndexError):
                        pass
            out, todo = [], [pid]
            while todo:
                for k in kids.get(todo.pop(), []):
                    out.append(k)
                    todo.append(k)
            return out

        def exe(pid):
            try:
                return os.readlink("/proc/%d/exe" % pid)
            except OSError:
                return None

        ours = socket_inodes(wpid)
        worker_exe = exe(wpid)
        rc, out, err = gw.ctl("send-file", "--protocol", "rsync", self.make("slow.bin", 6 * 1024 * 1024))
        self.assertEqual(rc, 0, err)
        # A child between its fork and its exec still runs ucgw-rsync and holds
        # every descriptor (close-on-exec acts at the exec): only what a child
        # runs after its exec counts, looked at until rsync and its ssh run.
        held, seen = {}, set()

        def look():
            for k in descendants(wpid):
                e = exe(k)
                if e is None or e == worker_exe:
                    continue
                try:
                    shared = socket_inodes(k) & ours
                except FileNotFoundError:
                    continue
                seen.add(os.path.basename(e))
                if shared:
                    held[k] = (e, shared)
            return {"rsync", "ssh"} <= seen
        wait_for(look, step=0.01, what="rsync and ssh running")
        self.assertEqual(held, {}, "children of ucgw-rsync hold its sockets")
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 1, timeout=60, what="delivered")


if __name__ == "__main__":
    unittest.main()
