"""The supervisor against real worker processes: start, crash, restart policy,
watchdog, reload, control socket robustness, shutdown."""
import glob
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, GatewayTest, unreachable_protocols, wait_for  # noqa: E402


def read_reply(s, timeout=5):
    """One frame from ucgwd, decoded, and the bytes that came after it."""
    import msgpack
    s.settimeout(timeout)
    buf = b""
    while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
        chunk = s.recv(65536)  # a reset comes only after what was sent before it
        if not chunk:
            raise AssertionError("ucgwd hung up without a reply (got %r)" % buf)
        buf += chunk
    n = struct.unpack(">I", buf[:4])[0]
    return msgpack.unpackb(buf[4:4 + n], raw=False), buf[4 + n:]


def error_reply(s, timeout=5):
    """The one reply ucgwd sends before it hangs up on a malformed request, and
    whether it then hung up."""
    m, rest = read_reply(s, timeout)
    try:
        hung_up = rest == b"" and s.recv(65536) == b""
    except ConnectionResetError:  # it closed with bytes of ours unread
        hung_up = True
    return m, hung_up


def base_config(**test):
    tw = {"mode": "normal"}
    tw.update(test)
    return {
        "gateway": {"restart_backoff_min_ms": 50, "restart_max_deaths": 4, "restart_window_s": 30,
                    "ping_interval_ms": 200, "ping_timeout_ms": 1500, "handshake_timeout_ms": 3000,
                    "log_level": "info"},
        **unreachable_protocols(),
        "testworker": tw,
    }


class SupervisorTest(GatewayTest):
    def test_all_workers_ready_and_listed(self):
        gw = self.gateway(base_config())
        ws = gw.workers()
        self.assertEqual(set(ws), {"websocket", "rest", "mqtt", "sftp", "rsync", "testworker"})
        for w in ws.values():
            self.assertEqual(w["state"], "ready", w)
            self.assertGreater(w["pid"], 0)
            self.assertEqual(w["restarts"], 0)
            self.assertEqual(w["last_exit"], "")
        rc, out, _ = gw.ctl("workers")
        self.assertEqual(rc, 0)
        self.assertIn("WORKER", out)
        self.assertIn("testworker", out)
        # a worker whose server is down has its health, its own words why, on
        # the line under its row; one that is up has none
        ws = wait_for(lambda: (lambda w: w if not w["mqtt"]["connected"] and w["mqtt"]["health"] else None)(
            gw.workers()), what="mqtt's health")
        rc, out, _ = gw.ctl("workers")
        lines = out.splitlines()
        for name, w in ws.items():
            row = [i for i, l in enumerate(lines) if l.startswith(name + " ")]
            self.assertEqual(len(row), 1, out)
            under = lines[row[0] + 1] if row[0] + 1 < len(lines) else ""
            if w["connected"] or not w["health"]:
                self.assertFalse(under.startswith(" "), out)
            else:
                self.assertTrue(under.startswith(" " * 13) and under.strip(), out)
        self.assertIn(ws["mqtt"]["health"][:40], out)
        rc, out, _ = gw.ctl("status")
        self.assertEqual(rc, 0)
        self.assertIn("test-cam-1", out)

    def test_kill9_restarts_with_crash_log(self):
        gw = self.gateway(base_config())
        old = gw.workers()["testworker"]
        os.kill(old["pid"], signal.SIGKILL)
        new = gw.wait_worker("testworker", lambda w: w["state"] == "ready" and w["pid"] != old["pid"])
        self.assertEqual(new["restarts"], 1)
        self.assertIn("signal 9", new["last_exit"])
        self.assertEqual(new["generation"], old["generation"] + 1)
        logs = glob.glob(os.path.join(gw.dir, "crash", "testworker", "*.log"))
        self.assertEqual(len(logs), 1)
        text = open(logs[0]).read()
        self.assertIn("worker: testworker", text)
        self.assertIn("pid: %d" % old["pid"], text)
        self.assertIn("signal: 9 (SIGKILL)", text)
        self.assertIn("test worker starting in mode normal", text)  # its stderr
        self.assertIn("worker testworker pid %d killed by signal 9 (SIGKILL)" % old["pid"], gw.log_text())

    def test_only_the_newest_crash_logs_are_kept(self):
        cfg = base_config()
        cfg["gateway"].update({"crash_logs_keep": 2, "restart_max_deaths": 10})
        gw = self.gateway(cfg)
        killed = []
        for _ in range(4):  # crash_logs_keep + 2
            old = gw.workers()["testworker"]
            os.kill(old["pid"], signal.SIGKILL)
            killed.append((old["pid"], old["generation"]))
            gw.wait_worker("testworker", lambda w: w["state"] == "ready" and w["pid"] != old["pid"])
        logs = sorted(glob.glob(os.path.join(gw.dir, "crash", "testworker", "*.log")))
        self.assertEqual(len(logs), 2, logs)
        kept = []
        for path in logs:
            with open(path) as f:
                text = f.read()
            pid = int(text.split("\npid: ")[1].split("\n")[0])
            gen = int(text.split("\ngeneration: ")[1].split("\n")[0])
            self.assertTrue(path.endswith("-pid%d.log" % pid), path)
            kept.append((pid, gen))
        self.assertEqual(kept, killed[-2:])  # the two newest, oldest first
        self.assertEqual(gw.workers()["testworker"]["restarts"], 4)

    def test_worker_of_another_protocol_version_is_refused(self):
        os.environ["UCGW_TESTWORKER_HELLO_VERSION"] = "99"
        try:
            gw = self.gateway(base_config())
        finally:
            del os.environ["UCGW_TESTWORKER_HELLO_VERSION"]
        w = gw.wait_worker("testworker", lambda w: w["state"] == "failed", timeout=30)
        self.assertEqual(w["restarts"], 4)  # restart_max_deaths: never once ready
        self.assertIn("signal 9", w["last_exit"])
        self.assertRegex(gw.log_text(), r"worker testworker \(pid \d+\): handshake: the worker speaks protocol "
                                        r"version 99, this ucgwd speaks 2 \(worker and ucgwd from different ucgw "
                                        r"versions\?\); killing it")
        self.assertNotIn("worker testworker ready", gw.log_text())
        with open(sorted(glob.glob(os.path.join(gw.dir, "crash", "testworker", "*.log")))[0]) as f:
            text = f.read()
        self.assertIn("reason: handshake: the worker speaks protocol version 99", text)
        self.assertEqual(gw.workers()["rest"]["state"], "ready")  # the others are unaffected

    def test_crash_loop_ends_failed(self):
        gw = self.gateway(base_config(mode="crash"))
        w = gw.wait_worker("testworker", lambda w: w["state"] == "failed", timeout=30)
        self.assertEqual(w["restarts"], 4)
        self.assertIn("SIGABRT", w["last_exit"])
        logs = glob.glob(os.path.join(gw.dir, "crash", "testworker", "*.log"))
        self.assertEqual(len(logs), 4)
        text = open(sorted(logs)[-1]).read()
        self.assertIn("fatal signal 6 (SIGABRT), backtrace:", text)
        self.assertIn("marked failed", gw.log_text())
        # the others are unaffected
        self.assertEqual(gw.workers()["rest"]["state"], "ready")
        # an operator restart brings it back (and it fails again, with a fresh count)
        rc, out, err = gw.ctl("restart", "testworker")
        self.assertEqual(rc, 0, err)

    def test_exit2_is_not_restarted(self):
        gw = self.gateway(base_config(mode="exit2"))
        w = gw.wait_worker("testworker", lambda w: w["state"] == "failed")
        time.sleep(0.5)
        w = gw.workers()["testworker"]
        self.assertEqual(w["state"], "failed")
        self.assertEqual(w["restarts"], 1)
        self.assertEqual(w["last_exit"], "exit status 2")
        self.assertIn("mode exit2 says this configuration is bad", gw.log_text())
        self.assertIn("bad-configuration code; not restarting", gw.log_text())

    def test_ping_watchdog_kills_hung_worker(self):
        gw = self.gateway(base_config(mode="hang"))
        old = gw.workers()["testworker"]["pid"]
        w = gw.wait_worker("testworker", lambda w: w["pid"] != old and w["restarts"] >= 1, timeout=20)
        self.assertIn("signal 9", w["last_exit"])
        text = open(sorted(glob.glob(os.path.join(gw.dir, "crash", "testworker", "*.log")))[0]).read()
        self.assertIn("reason: did not answer pings", text)

    def test_handshake_timeout(self):
        cfg = base_config(ready_delay_ms=2500)
        cfg["gateway"]["handshake_timeout_ms"] = 500
        gw = self.gateway(cfg, wait_ready=False)
        gw.start_ok = wait_for(lambda: gw.ctl("status")[0] == 0, what="socket")
        w = gw.wait_worker("testworker", lambda w: w["restarts"] >= 1)
        self.assertIn("signal 9", w["last_exit"])
        self.assertIn("no ready within handshake_timeout_ms", gw.log_text())

    def test_reload_bad_config_keeps_old(self):
        gw = self.gateway(base_config())
        before = gw.workers()
        gw.write_config(None, text="gateway:\n  control_socket: %s\n  restart_max_deaths: lots\n" % gw.sock)
        rc, out, err = gw.ctl("reload")
        self.assertEqual(rc, 1)
        self.assertIn("keeping the old configuration", err)
        self.assertIn("ucgw.yaml:3:", err)
        os.kill(gw.proc.pid, signal.SIGHUP)
        wait_for(lambda: gw.log_text().count("keeping the old configuration") >= 2, what="SIGHUP refusal")
        after = gw.workers()
        self.assertEqual({n: w["pid"] for n, w in before.items()}, {n: w["pid"] for n, w in after.items()})

    def test_reload_restarts_only_changed_sections(self):
        cfg = base_config()
        gw = self.gateway(cfg)
        before = gw.workers()
        cfg["testworker"]["delay_ms"] = 5
        del cfg["rsync"]
        gw.write_config(cfg)
        rc, out, err = gw.ctl("reload")
        self.assertEqual(rc, 0, err)
        # A worker asked to stop stays "ready" until it exits: wait for testworker's new pid too.
        after = gw.wait_workers(lambda ws: "rsync" not in [w["name"] for w in ws] and
                                all(w["state"] == "ready" for w in ws) and
                                all(w["pid"] != before["testworker"]["pid"] for w in ws if w["name"] == "testworker"),
                                what="reload applied")
        after = {w["name"]: w for w in after}
        self.assertNotEqual(after["testworker"]["pid"], before["testworker"]["pid"])
        for n in ("websocket", "rest", "mqtt", "sftp"):
            self.assertEqual(after[n]["pid"], before[n]["pid"], n)
        self.assertNotIn("rsync", after)

    def test_garbage_on_control_socket(self):
        gw = self.gateway(base_config())
        rnd = random.Random(7)
        for i in range(30):
            s = socket.socket(socket.AF_UNIX)
            s.connect(gw.sock)
            if i % 3 == 0:
                payload = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 300)))
            elif i % 3 == 1:
                payload = struct.pack(">I", 0xFFFFFFF0) + b"x" * 10  # oversize frame
            else:
                body = bytes([0x81, 0xa1, 0x74, 0x63])  # {"t": 99}
                payload = struct.pack(">I", len(body)) + body
            s.sendall(payload)
            s.settimeout(2)
            try:
                s.recv(4096)
            except (socket.timeout, ConnectionResetError):
                pass
            s.close()
        rc, out, err = gw.ctl("status")
        self.assertEqual(rc, 0, err)
        self.assertEqual(gw.proc.poll(), None)
        # a frame refused by its length alone gets the error reply too (seq 0), then the hang-up
        for payload, words in ((struct.pack(">I", 0xFFFFFFF0) + b"x" * 10,
                                "frame of 4294967280 bytes is larger than the limit of 16777216 bytes "
                                "(gateway.max_frame_bytes): a message may have at most gateway.max_message_bytes"),
                               (struct.pack(">I", 0) + b"x" * 10, "malformed request: empty frame")):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(gw.sock)
                s.sendall(payload)
                m, hung_up = error_reply(s)
            self.assertEqual((m["t"], m["seq"], m["ok"]), (33, 0, False), m)
            self.assertIn(words, m["error"])
            self.assertTrue(hung_up)
        self.assertIn("frame of 4294967280 bytes is larger than the limit of 16777216 bytes; dropping it",
                      gw.log_text())
        self.assertEqual(gw.ctl("status")[0], 0)

    def test_max_frame_bytes_from_config(self):
        """gateway.max_frame_bytes is the control socket's limit and the workers'
        too; it must hold a message of max_message_bytes, encrypted, plus 16384."""
        key = os.path.join(self.tmp, "payload.key")
        with open(key, "wb") as f:
            f.write(bytes(range(32)))
        os.chmod(key, 0o600)
        need = 4 * ((40000 + 28 + 2) // 3) + 2 + 16384  # base64 of nonce|tag|ciphertext, quoted
        c = base_config()
        c["gateway"].update({"max_message_bytes": 40000, "max_frame_bytes": need - 1, "log_level": "debug"})
        c["security"] = {"encryption_key_file": key}
        gw = self.gateway(c, start=False)
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("gateway.max_frame_bytes (%d) is too small for gateway.max_message_bytes (40000): "
                      "a message of that size needs frames of up to %d bytes" % (need - 1, need), r.stderr)
        self.assertRegex(r.stderr, r"ucgw\.yaml:\d+:\d+: ")
        c["gateway"]["max_frame_bytes"] = need
        gw.write_config(c)
        gw.start()
        self.assertIn("ucgw-testworker: frames from the supervisor: up to %d bytes" % need, gw.log_text())
        # the largest message, encrypted, fits the worker's limit
        body = '{"p":"%s"}' % ("x" * (40000 - 8))
        rc, out, err = gw.ctl("--json", "send", "--protocol", "testworker", "--encrypt", "--wait", body)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["status"], "ok", out)
        old = gw.workers()["testworker"]["pid"]
        self.assertEqual(gw.proc.poll(), None)
        # a control frame over the limit: the error reply, and the daemon goes on
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(gw.sock)
            s.sendall(struct.pack(">I", need + 1) + b"\x80" * 1000)
            m, hung_up = error_reply(s)
        self.assertEqual(m["error"], "frame of %d bytes is larger than the limit of %d bytes "
                         "(gateway.max_frame_bytes): a message may have at most gateway.max_message_bytes "
                         "(40000) bytes; send less, send a file with send-file, or raise both in the "
                         "configuration" % (need + 1, need))
        self.assertTrue(hung_up)
        # a new limit restarts the workers with it, and holds for the control socket at once
        c["gateway"]["max_frame_bytes"] = need + 1000
        gw.write_config(c)
        rc, out, err = gw.ctl("reload")
        self.assertEqual(rc, 0, err)
        gw.wait_worker("testworker", lambda w: w["pid"] != old and w["state"] == "ready")
        self.assertIn("worker testworker: gateway.max_frame_bytes changed; restarting it", gw.log_text())
        self.assertIn("ucgw-testworker: frames from the supervisor: up to %d bytes" % (need + 1000), gw.log_text())
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(gw.sock)
            s.sendall(struct.pack(">I", need + 1001))
            m, _ = error_reply(s)
        self.assertIn("larger than the limit of %d bytes" % (need + 1000), m["error"])

    def test_malformed_frame_from_worker_restarts_it(self):
        gw = self.gateway(base_config())
        old = gw.workers()["testworker"]["pid"]
        rc, out, err = gw.ctl("send", "--protocol", "testworker", '{"cmd":"garbage"}')
        self.assertEqual(rc, 0, err)
        w = gw.wait_worker("testworker", lambda w: w["pid"] != old and w["state"] == "ready")
        self.assertGreaterEqual(w["restarts"], 1)
        self.assertIn("malformed frame", gw.log_text())
        self.assertEqual(gw.proc.poll(), None)
        # the message that keeps killing it is quarantined, and the worker stays up
        dead = wait_for(lambda: gw.ctl_json("queue", "dead"), what="quarantine")
        self.assertEqual(dead[0]["id"], out.strip())
        self.assertIn("quarantined: 3 workers died", dead[0]["last_error"])
        w = gw.wait_worker("testworker", lambda w: w["state"] == "ready")
        self.assertEqual(w["restarts"], 3)

    def test_socket_mode_and_systemd_notify(self):
        ns = os.path.join(self.tmp, "notify.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        srv.bind(ns)
        srv.settimeout(10)
        os.environ["NOTIFY_SOCKET"] = ns
        try:
            gw = self.gateway(base_config())
        finally:
            del os.environ["NOTIFY_SOCKET"]
        got = srv.recv(4096).decode()
        self.assertIn("READY=1", got)
        self.assertEqual(os.stat(gw.sock).st_mode & 0o777, 0o660)
        gw.stop()
        self.assertIn("STOPPING=1", srv.recv(4096).decode())
        srv.close()

    def test_pause_without_a_name(self):
        import msgpack
        gw = self.gateway(base_config())
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(gw.sock)
            for seq, name in ((1, "pause"), (2, "resume")):
                frame = msgpack.packb({"t": 32, "v": 1, "seq": seq, "name": name})
                s.sendall(struct.pack(">I", len(frame)) + frame)
                m, _ = read_reply(s)
                self.assertEqual((m["seq"], m["ok"], m["error"]), (seq, False, "%s: which protocol? (give its name)"
                                                                    % name))
        rc, out, err = gw.ctl("pause", "nosuch")
        self.assertEqual(rc, 1)
        self.assertIn("pause: no protocol named 'nosuch'", err)

    def test_unknown_command_and_worker(self):
        gw = self.gateway(base_config())
        rc, out, err = gw.ctl("restart", "nosuch")
        self.assertEqual(rc, 1)
        self.assertIn("no worker named 'nosuch'", err)
        rc, out, err = gw.ctl("frobnicate")
        self.assertEqual(rc, 2)
        self.assertIn("unknown command", err)

    def test_sigterm_exits_zero_no_children(self):
        gw = self.gateway(base_config())
        kids = [w["pid"] for w in gw.workers().values()]
        self.assertEqual(len(kids), 6)
        self.assertEqual(gw.stop(), 0)
        for pid in kids:
            self.assertFalse(os.path.exists("/proc/%d" % pid) and
                             open("/proc/%d/stat" % pid).read().split()[2] != "Z", pid)
        self.assertFalse(os.path.exists(gw.sock))

    def test_ctl_shutdown(self):
        gw = self.gateway(base_config())
        rc, out, err = gw.ctl("shutdown")
        self.assertEqual(rc, 0, err)
        self.assertEqual(gw.proc.wait(20), 0)

    def test_second_instance_refused_stale_socket_removed(self):
        gw = self.gateway(base_config())
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-c", gw.cfg_path], capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn("another ucgwd is already running", r.stderr)
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        self.assertTrue(os.path.exists(gw.sock))  # stale now
        gw.log.close()
        gw.start()
        self.assertEqual(gw.ctl("status")[0], 0)

    def test_ctl_when_daemon_down(self):
        r = subprocess.run([os.path.join(BIN, "ucgwctl"), "-s", os.path.join(self.tmp, "none.sock"), "status"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 3)
        self.assertIn("ucgwd is not running", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)

    def test_check_mode(self):
        gw = self.gateway(base_config(), start=False)
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        gw.write_config(None, text="mqtt:\n  brokr_url: x\n")
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("ucgw.yaml:2:3:", r.stderr)
        self.assertIn("broker_url", r.stderr)


if __name__ == "__main__":
    unittest.main()
