"""Bounds on what a local client, a browser tab or a start-up failure can do to
ucgwd (issue 20 items 1-3, issue 21's start-up crash):

- a control client that pipelines requests and never reads its replies has its
  reading held (ucgwd grows by a few MB, not GBs), then is disconnected with a
  log line naming its uid;
- 300 idle control connections (root's, or another user's) do not lock root out;
- 2,000 slowloris connections to the dashboard under `ulimit -n 1024`: status
  is answered throughout, the log does not flood, a worker killed meanwhile
  comes back, ucgwd does not exit;
- every start-up failure of the control socket, the dashboard listener and the
  spool exits 1 with a clear message and no crash or sanitizer report."""
import errno
import os
import resource
import socket
import struct
import subprocess
import sys
import time
import unittest

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import (BIN, SANITIZER_MARKS, GatewayTest, delivered, free_port, preload,  # noqa: E402
                      proc_number, testworker_config, wait_for)

NOBODY = 65534


def status_frame(seq):
    frame = msgpack.packb({"t": 32, "v": 1, "seq": seq, "name": "status", "body": {}}, use_bin_type=True)
    return struct.pack(">I", len(frame)) + frame


def small_quarantine():
    """ucgwd's environment: ASan's quarantine of freed memory kept small, so
    that RSS measures what ucgwd holds (no effect in the plain build)."""
    return {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8"}


def timed_status(gw, timeout=10):
    t0 = time.monotonic()
    try:
        rc, out, err = gw.ctl("status", timeout=timeout)
    except subprocess.TimeoutExpired:
        rc, err = 124, "no answer within %d s" % timeout
    return rc, time.monotonic() - t0, err


def open_for(path, uid):
    """Make path's directories searchable and the socket usable by uid."""
    d = os.path.dirname(path)
    while d != "/":
        os.chmod(d, os.stat(d).st_mode | 0o011)
        d = os.path.dirname(d)


def start_limited(gw, nofile):
    """Start gw's ucgwd with RLIMIT_NOFILE nofile (soft and hard), as `ulimit -n` would."""
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    gw.log = open(gw.log_path, "ab")
    gw.proc = subprocess.Popen([os.path.join(BIN, "ucgwd"), "-c", gw.cfg_path], stdout=gw.log,
                               stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=limit)
    wait_for(lambda: gw.ctl("status")[0] == 0, timeout=15, what="ucgwd control socket")
    gw.wait_worker("testworker", lambda w: w["state"] == "ready")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ControlLimits(GatewayTest):
    def test_pipelining_client_that_never_reads_is_held_then_dropped(self):
        cfg = testworker_config(self.tmp)
        cfg["gateway"]["control_stall_timeout_s"] = 12  # past the 8 s of pipelining below
        gw = self.gateway(cfg, env=small_quarantine())
        pid = gw.daemon_pid()
        before = proc_number(pid, "status", "VmRSS")
        s = socket.socket(socket.AF_UNIX)
        s.connect(gw.sock)
        s.setblocking(False)
        frames = b"".join(status_frame(i) for i in range(1, 1001))
        sent, pending, t_end = 0, b"", time.monotonic() + 8
        worst = 0.0
        next_probe = time.monotonic() + 1
        while time.monotonic() < t_end:
            if not pending:
                pending = frames
            try:
                n = s.send(pending)
                pending = pending[n:]
                sent += n
            except BlockingIOError:
                time.sleep(0.01)
            if time.monotonic() >= next_probe:
                rc, took, err = timed_status(gw)
                self.assertEqual(rc, 0, err)
                worst = max(worst, took)
                next_probe = time.monotonic() + 1
        grown = proc_number(pid, "status", "VmRSS") - before
        print("\nclient pipelined %d KB of status requests and read nothing: ucgwd grew by %d KB; "
              "the slowest ucgwctl status meanwhile took %.2f s" % (sent // 1024, grown, worst))
        self.assertLess(grown, 16 * 1024)
        self.assertLess(worst, 3.0)
        # The replies it does not read: after 12 s it is disconnected, its uid named.
        wait_for(lambda: "has read none of its replies for 12 s" in gw.log_text(), timeout=30, step=0.5,
                 what="the stalled client disconnected")
        line = [l for l in gw.log_text().splitlines() if "has read none of its replies" in l][0]
        self.assertIn("uid %d" % os.geteuid(), line)
        self.assertIn("pid %d" % os.getpid(), line)
        s.close()
        self.assertIsNone(gw.proc.poll())

    def test_idle_client_is_closed_an_active_one_is_not(self):
        cfg = testworker_config(self.tmp)
        cfg["gateway"]["control_idle_timeout_s"] = 2
        gw = self.gateway(cfg)
        idle = socket.socket(socket.AF_UNIX)
        idle.connect(gw.sock)
        self.addCleanup(idle.close)
        active = socket.socket(socket.AF_UNIX)
        active.connect(gw.sock)
        self.addCleanup(active.close)
        active.settimeout(5)
        t_end, seq = time.monotonic() + 5, 0
        while time.monotonic() < t_end:  # one request a second: never idle for 2 s
            seq += 1
            active.sendall(status_frame(seq))
            n = struct.unpack(">I", active.recv(4, socket.MSG_WAITALL))[0]
            reply = msgpack.unpackb(active.recv(n, socket.MSG_WAITALL), raw=False)
            self.assertTrue(reply["ok"], reply)
            time.sleep(1)
        idle.settimeout(1)
        self.assertEqual(idle.recv(1), b"", "the idle connection is still open after 5 s")
        lines = [l for l in gw.log_text().splitlines() if "has sent no request for 2 s" in l]
        print("\nidle control client: %s" % (lines[0] if lines else "not closed"))
        self.assertEqual(len(lines), 1, lines)  # the idle one, not the active one
        self.assertIn("pid %d uid %d " % (os.getpid(), os.geteuid()), lines[0])
        active.sendall(status_frame(seq + 1))
        self.assertGreater(len(active.recv(4, socket.MSG_WAITALL)), 0)

    def hold_connections(self, gw, n, uid=None):
        """A child process (as uid, when given) holding n idle connections."""
        code = ("import os, socket, sys, time\n"
                "uid = %r\n"
                "if uid is not None:\n"
                "    os.setgid(uid); os.setuid(uid)\n"
                "socks = []\n"
                "for i in range(%d):\n"
                "    s = socket.socket(socket.AF_UNIX); s.connect(%r); socks.append(s)\n"
                "print('held', flush=True)\n"
                "time.sleep(600)\n") % (uid, n, gw.sock)
        p = self.spawn(["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE, text=True)
        self.addCleanup(p.stdout.close)
        self.assertEqual(p.stdout.readline().strip(), "held")
        return p

    def test_idle_connections_of_one_user_lock_nobody_out(self):
        cfg = testworker_config(self.tmp)
        cfg["gateway"]["control_socket_mode"] = "0666"
        gw = self.gateway(cfg)
        users = [None]
        if os.geteuid() == 0:
            open_for(gw.sock, NOBODY)
            users.insert(0, NOBODY)  # another user's first: on the old code they take every slot
        for uid in users:
            self.hold_connections(gw, 300, uid)
            time.sleep(0.5)
            rc, took, err = timed_status(gw)
            print("\n300 idle connections of uid %s: ucgwctl status answered in %.2f s (rc %d)"
                  % (uid if uid is not None else os.geteuid(), took, rc))
            self.assertEqual(rc, 0, err)
            self.assertLess(took, 3.0)
        self.assertIn("closing the longest idle connection", gw.log_text())
        self.assertIsNone(gw.proc.poll())

    @unittest.skipUnless(os.geteuid() == 0, "root's connections are the ones not capped")
    def test_root_with_40_busy_connections_is_not_capped(self):
        """40 waited sends of root's in flight at once, each on its own
        connection (over the per-user cap of 32): none is refused, and
        `ucgwctl status` is answered meanwhile."""
        import threading
        cfg = testworker_config(self.tmp, delay_ms=3000)
        gw = self.gateway(cfg)
        socks = []
        for i in range(40):
            s = socket.socket(socket.AF_UNIX)
            s.connect(gw.sock)
            self.addCleanup(s.close)
            body = {"protocol": "testworker", "data": b'{"n": %d}' % i, "content_type": "application/json",
                    "wait": True}
            frame = msgpack.packb({"t": 32, "v": 1, "seq": 1, "name": "send", "body": body}, use_bin_type=True)
            s.sendall(struct.pack(">I", len(frame)) + frame)
            socks.append(s)
        time.sleep(0.5)
        rc, took, err = timed_status(gw)
        self.assertEqual(rc, 0, err)
        answers = []

        def read(s):
            s.settimeout(20)
            n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
            answers.append(msgpack.unpackb(s.recv(n, socket.MSG_WAITALL), raw=False))
        ts = [threading.Thread(target=read, args=(s,)) for s in socks]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(sum(1 for a in answers if a.get("ok")), 40, [a for a in answers if not a.get("ok")][:3])

    def test_out_of_descriptors_accept_pauses_not_spins(self):
        cfg = testworker_config(self.tmp)
        cfg["gateway"]["control_socket_mode"] = "0666"
        gw = self.gateway(cfg, start=False)
        start_limited(gw, 36)
        holder = self.hold_connections(gw, 40)  # more than ucgwd has descriptors left for
        pid = gw.proc.pid
        wait_for(lambda: "Too many open files" in gw.log_text(), what="accept failing for want of descriptors")
        cpu0 = cpu_seconds(pid)
        time.sleep(3)
        cpu = cpu_seconds(pid) - cpu0
        failures = gw.log_text().count("Too many open files")
        print("\nout of descriptors with 40 clients waiting: ucgwd used %.2f s of CPU in 3 s, "
              "logged the accept failure %d time(s)" % (cpu, failures))
        self.assertLess(cpu, 0.5)
        self.assertLessEqual(failures, 2)
        holder.kill()
        holder.wait()
        wait_for(lambda: gw.ctl("status")[0] == 0, timeout=10, what="status once the clients left")
        self.assertIsNone(gw.proc.poll())


    @unittest.skipUnless(os.geteuid() == 0, "needs root to hold another user's connections")
    def test_root_gets_in_when_out_of_descriptors(self):
        """Another user holds every descriptor ucgwd has (ulimit -n 40, 60
        connections): root's `ucgwctl status` is still answered, through the
        spare descriptor, and the other user's waiting ones are told why."""
        cfg = testworker_config(self.tmp)
        cfg["gateway"]["control_socket_mode"] = "0666"
        gw = self.gateway(cfg, start=False)
        start_limited(gw, 40)
        open_for(gw.sock, NOBODY)
        self.hold_connections(gw, 60, NOBODY)
        wait_for(lambda: "Too many open files" in gw.log_text(), what="ucgwd out of descriptors")
        for i in range(3):
            rc, took, err = timed_status(gw, timeout=5)
            print("\nout of descriptors, 60 connections of uid %d: root's ucgwctl status answered in %.2f s (rc %d)"
                  % (NOBODY, took, rc))
            self.assertEqual(rc, 0, err)
            self.assertLess(took, 3.0)
        self.assertIn("refusing a client of uid %d" % NOBODY, gw.log_text())
        self.assertIsNone(gw.proc.poll())


class WorkerStart(GatewayTest):
    def test_worker_that_cannot_start_for_want_of_descriptors_waits(self):
        trigger = os.path.join(self.tmp, "nofds")
        gw = self.gateway(testworker_config(self.tmp), env=preload("nofds.so", UCGW_NOFDS_FILE=trigger))
        old = gw.workers()["testworker"]["pid"]
        open(trigger, "w").close()
        os.kill(old, 9)
        w = gw.wait_worker("testworker", lambda w: "cannot start: socketpair: Too many open files" in w["health"],
                           what="the worker's health saying why it cannot start")
        print("\nworker out of descriptors: state %s, health: %s" % (w["state"], w["health"]))
        self.assertEqual(w["state"], "backoff")
        self.assertIn("LimitNOFILE", w["health"])
        rc, took, err = timed_status(gw)
        self.assertEqual(rc, 0, err)
        time.sleep(2)  # a few more tries, each waiting longer
        self.assertIsNone(gw.proc.poll(), "ucgwd exited")
        tries = gw.log_text().count("worker testworker cannot start")
        self.assertLessEqual(tries, 4)
        os.unlink(trigger)
        w = gw.wait_worker("testworker", lambda w: w["state"] == "ready" and w["pid"] != old, timeout=40,
                           what="the worker started once descriptors are back")
        self.assertEqual(w["health"].find("cannot start"), -1)


    def test_file_job_out_of_descriptors_waits_not_dead(self):
        trigger = os.path.join(self.tmp, "nofds")
        cfg = testworker_config(self.tmp)
        files = os.path.join(self.tmp, "gw0", "state", "spool", "files") + "/"
        gw = self.gateway(cfg, env=preload("nofds.so", UCGW_NOFDS_FILE=trigger, UCGW_NOFDS_OPEN_PREFIX=files))
        path = os.path.join(self.tmp, "plate.jpg")
        with open(path, "wb") as f:
            f.write(b"\xff\xd8jpeg" * 100)
        gw.ctl("pause", "testworker")
        rc, out, err = gw.ctl("send-file", "--protocol", "testworker", path)
        self.assertEqual(rc, 0, err)
        mid = out.strip()
        open(trigger, "w").close()
        gw.ctl("resume", "testworker")
        wait_for(lambda: "cannot open" in gw.log_text(), what="the spooled file failing to open")
        time.sleep(1.5)
        self.assertEqual(gw.ctl_json("queue", "dead"), [], "a file job dead-lettered for want of descriptors")
        os.unlink(trigger)
        wait_for(lambda: any(r and r[0] == mid for r in delivered(self.tmp)), timeout=30,
                 what="the file delivered once descriptors are back")


class DashboardLimits(GatewayTest):
    def test_slowloris_under_ulimit_1024(self):
        need = 2000 + 256
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < need:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, min(hard, 8192)), max(hard, need)))
            except (ValueError, OSError):
                self.skipTest("cannot open %d descriptors here (limit %d/%d)" % (need, soft, hard))
        port = free_port()
        cfg = testworker_config(self.tmp)
        cfg["metrics"] = {"listen": "127.0.0.1:%d" % port}

        gw = self.gateway(cfg, start=False)
        start_limited(gw, 1024)
        lines_before = len(gw.log_text().splitlines())

        socks, worst, probes = [], 0.0, 0
        t0 = time.monotonic()

        def probe():
            nonlocal worst, probes
            rc, took, err = timed_status(gw)
            self.assertEqual(rc, 0, "ucgwctl status failed after %d slowloris connections: %s" % (len(socks), err))
            worst = max(worst, took)
            probes += 1

        for i in range(2000):
            s = socket.socket()
            s.setblocking(False)
            rc = s.connect_ex(("127.0.0.1", port))
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                continue
            try:
                s.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line
            except OSError:
                pass
            socks.append(s)
            if i % 250 == 0:
                probe()
        # Meanwhile a worker dies and must come back: its socketpair and pipe need descriptors.
        old = gw.workers()["testworker"]["pid"]
        os.kill(old, 9)
        deadline = time.monotonic() + 20
        back = None
        while time.monotonic() < deadline:
            probe()
            w = gw.workers()["testworker"]
            if w["state"] == "ready" and w["pid"] != old:
                back = w
                break
            time.sleep(0.3)
        self.assertIsNotNone(back, "the killed worker did not come back")
        # Hold them past the request timeout: ucgwd closes them and takes the ones waiting.
        while time.monotonic() - t0 < 15:
            probe()
            time.sleep(0.3)
        self.assertIsNone(gw.proc.poll(), "ucgwd exited")
        lines = len(gw.log_text().splitlines()) - lines_before
        print("\n2000 slowloris connections under ulimit -n 1024 for %.0f s: %d status probes, the slowest "
              "%.2f s; %d log lines meanwhile; the killed worker came back as pid %d"
              % (time.monotonic() - t0, probes, worst, lines, back["pid"]))
        self.assertLess(worst, 3.0)
        self.assertLess(lines, 100)
        self.assertIn("sent no complete request within 10 s", gw.log_text())
        for s in socks:
            s.close()
        # The dashboard serves again.
        def metrics_up():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                    c.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    return c.recv(100).startswith(b"HTTP/1.1 200")
            except OSError:
                return False
        wait_for(metrics_up, timeout=30, step=0.5, what="/metrics answered again")


class StartupFailures(GatewayTest):
    """Each failure: exit 1, the reason said, nothing crashed, nothing left behind."""

    def run_daemon(self, cfg, name, preexec=None):
        gw = self.gateway(cfg, start=False, name=name)
        if preexec:
            for p in (gw.cfg_path,):
                os.chmod(p, 0o644)
            open_for(gw.cfg_path, NOBODY)
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-c", gw.cfg_path], capture_output=True, text=True,
                           timeout=30, preexec_fn=preexec)
        out = r.stdout + r.stderr
        with open(gw.log_path, "a") as f:  # tearDown looks for sanitizer reports there
            f.write(out)
        return r.returncode, out

    def check(self, cfg, name, expect, preexec=None):
        rc, out = self.run_daemon(cfg, name, preexec)
        print("\n%s: exit %d: %s" % (name, rc, out.strip().splitlines()[-1] if out.strip() else ""))
        self.assertEqual(rc, 1, out)
        self.assertIn(expect, out)
        self.assertIn("ucgwd is not starting", out)
        self.assertFalse([l for l in out.splitlines() if any(m in l for m in SANITIZER_MARKS)], out)
        self.assertNotIn("SEGV", out)
        return out

    def test_control_socket_path_is_a_directory(self):
        cfg = testworker_config(self.tmp)
        path = os.path.join(self.tmp, "sockdir")
        os.makedirs(path)
        cfg["gateway"]["control_socket"] = path
        self.check(cfg, "isdir", "exists and is not a socket")

    def test_control_socket_path_too_long(self):
        cfg = testworker_config(self.tmp)
        cfg["gateway"]["control_socket"] = os.path.join(self.tmp, "x" * 120, "control.sock")
        self.check(cfg, "toolong", "gateway.control_socket is too long")

    def test_control_socket_directory_not_writable(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run ucgwd as another user")
        ro = os.path.join(self.tmp, "ro")
        os.makedirs(ro)
        os.chmod(self.tmp, 0o755)
        cfg = testworker_config(self.tmp)
        cfg["gateway"]["control_socket"] = os.path.join(ro, "control.sock")

        def as_nobody():
            os.setgid(NOBODY)
            os.setuid(NOBODY)

        self.check(cfg, "readonly", "Permission denied", preexec=as_nobody)
        cfg["gateway"]["control_socket"] = os.path.join(ro, "sub", "control.sock")
        self.check(cfg, "readonly2", "cannot create %s" % os.path.join(ro, "sub"), preexec=as_nobody)

    def test_metrics_address_in_use(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            cfg = testworker_config(self.tmp)
            cfg["metrics"] = {"listen": "127.0.0.1:%d" % taken.getsockname()[1]}
            self.check(cfg, "inuse", "address already in use")
            self.assertFalse(os.path.exists(cfg["gateway"]["control_socket"]), "control socket left behind")

    def test_spool_directory_unusable(self):
        cfg = testworker_config(self.tmp)
        state = os.path.join(self.tmp, "state-file")
        with open(state, "w") as f:
            f.write("not a directory\n")
        cfg["gateway"]["state_dir"] = state
        # the configuration's check names it before the spool is tried
        self.check(cfg, "spool", "gateway.state_dir %s is not a directory (it is a regular file)" % state)
        self.assertFalse(os.path.exists(cfg["gateway"]["control_socket"]), "control socket left behind")


if __name__ == "__main__":
    unittest.main()
