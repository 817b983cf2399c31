"""What a local client or a bad file hands the daemon (issue 20, items 4-7):
every send-time field checked with a clear error, strict UTF-8 in JSON,
files named by the configuration that are not what they should be (a FIFO,
a symlink loop, /dev/zero, a directory) refused by name at start, at -n and
at reload without freezing the daemon, and a deeply nested YAML refused fast."""
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ctlclient import Ctl  # noqa: E402
from ucgwtest import BIN, GatewayTest, delivered, preload, proc_number, under_asan, wait_for  # noqa: E402
from ucgwtest import testworker_config as cfg  # noqa: E402


class SendValidationTest(GatewayTest):
    def test_validation_table(self):
        gw = self.gateway(cfg(self.tmp))
        ctl = Ctl(gw.sock)
        proc_file = "/proc/self/status"
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        cases = [  # every refusal names the key, says what was expected, and has its code
            ({"topic": "lpr/a\x00b"}, "send: topic contains a NUL character"),
            ({"topic": ""}, "send: MQTT topic '' is empty"),
            ({"topic": "lpr/+/x"}, "send: MQTT topic 'lpr/+/x' contains a wildcard (+ or #); a message is published "
                                   "to one topic"),
            ({"topic": "lpr/#"}, "send: MQTT topic 'lpr/#' contains a wildcard (+ or #); a message is published to "
                                 "one topic"),
            ({"topic": "lpr/\x07bell"}, "send: MQTT topic 'lpr/?bell' contains a control character"),
            ({"topic": "t" * 300}, "send: topic of 300 bytes is longer than the 255 allowed"),
            ({"topic": 5}, "send: topic must be a string (an MQTT topic), not an integer"),
            ({"endpoint": "/api/x\r\nHost: evil"},
             "send: endpoint '/api/x??Host: evil' has a character not allowed in a URL path (byte 0x0d at 6): "
             "no space, CR, LF or control character; percent-encode others"),
            ({"endpoint": "/api/a b"},
             "send: endpoint '/api/a b' has a character not allowed in a URL path (byte 0x20 at 6): "
             "no space, CR, LF or control character; percent-encode others"),
            ({"endpoint": "api"}, "send: endpoint 'api' must be a path starting with '/'"),
            ({"endpoint": "/a\x00b"}, "send: endpoint contains a NUL character"),
            ({"ttl_s": -5}, "send: ttl_s -5 is negative, expected a whole number of seconds from 0 (never expires) "
                            "to 3153600000"),
            ({"ttl_s": 2 ** 63}, "send: ttl_s 9223372036854775808 is too large, expected a whole number of seconds "
                                 "from 0 (never expires) to 3153600000"),
            ({"ttl_s": 1.5}, "send: ttl_s must be a whole number of seconds from 0 (never expires) to 3153600000, "
                             "not a float"),
            ({"wait": "yes"}, "send: wait must be true or false, not a string"),
            ({"priorty": "high"}, "send: unknown key 'priorty' (did you mean 'priority'? it takes: data, format, "
                                  "protocol, priority, topic, endpoint, ttl_s, encrypt, wait, id)"),
            ({"priority": "urgent"}, "send: unknown priority 'urgent' (valid: high, normal, low)"),
            ({"format": "xml"}, "send: unknown format 'xml' (valid: json, raw)"),
        ]
        for extra, text in cases:
            body = {"data": b'{"plate":"X"}', "format": "json", "protocol": "testworker"}
            body.update(extra)
            ctl.request("send", body)
            r = ctl.reply()
            self.assertFalse(r["ok"], extra)
            self.assertEqual(r["error"], text, extra)
            self.assertEqual(r["code"], 400, extra)
        # bytes that are not UTF-8 in a topic (a msgpack str): refused, and the reply is still UTF-8
        import msgpack
        frame = msgpack.packb({"t": 32, "v": 1, "seq": 999, "name": "send",
                               "body": {"data": b"{}", "protocol": "testworker", "topic": b"lpr/\xff\xfe"}},
                              use_bin_type=False)
        ctl.sock.sendall(struct.pack(">I", len(frame)) + frame)
        r = ctl.reply()
        self.assertEqual((r["seq"], r["error"]), (999, "send: MQTT topic 'lpr/??' is not valid UTF-8"))
        # valid ones still pass: empty levels, UTF-8, a query string, ttl 0
        for extra in ({"topic": "a//b/"}, {"topic": "lpr/caméra/🚗"}, {"endpoint": "/api/v1/x?y=1&z=%20"},
                      {"ttl_s": 0}, {"ttl_s": 3153600000}):
            body = {"data": b'{"plate":"X"}', "format": "json", "protocol": "testworker"}
            body.update(extra)
            ctl.request("send", body)
            r = ctl.reply()
            self.assertTrue(r["ok"], (extra, r))
        # files whose size says nothing of what they hold, and not files at all
        for path, text in ((proc_file, "the size of %s cannot be read: it is on a file system whose sizes say "
                                        "nothing of what a file holds (/proc, /sys...); copy it to a regular "
                                        "file first" % proc_file),
                           ("/sys/kernel/mm/transparent_hugepage/enabled", "the size of"),
                           (fifo, "%s is not a regular file (it is a FIFO)" % fifo),
                           (self.tmp, "%s is not a regular file (it is a directory)" % self.tmp),
                           ("/dev/zero", "/dev/zero is not a regular file (it is a character device)")):
            if not os.path.exists(path):
                continue
            ctl.request("send-file", {"path": path, "protocol": "testworker"})
            r = ctl.reply()
            self.assertFalse(r["ok"], path)
            self.assertIn(text, r["error"], path)
        # the same through ucgwctl, which passes the open file
        rc, out, err = gw.ctl("send-file", "--protocol", "testworker", proc_file)
        self.assertEqual(rc, 1)
        self.assertIn("cannot be read: it is on a file system whose sizes say nothing", err)
        rc, out, err = gw.ctl("send", "--protocol", "testworker", "--topic", "a/\tb", "{}")
        self.assertEqual(err, "ucgwctl: send: MQTT topic 'a/?b' contains a control character\n")
        ctl.close()
        wait_for(lambda: len(delivered(self.tmp)) == 5, what="the 5 valid ones delivered")
        self.assertEqual(gw.ctl_json("status")["spool"]["depth"], 0)

    def test_invalid_utf8_refused_valid_accepted(self):
        gw = self.gateway(cfg(self.tmp))
        ctl = Ctl(gw.sock)
        for bad in (b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\x80", b"\xf5\x80\x80\x80"):
            r = ctl.send(b'{"plate":"' + bad + b'"}', protocol="testworker")
            self.assertFalse(r["ok"], bad)
            self.assertEqual(r["error"], "payload is not valid JSON: invalid UTF-8 at byte 10", bad)
        for good in (b"\xf0\x9f\x9a\x97", "Ünïcödé-東京".encode(), b"\xf4\x8f\xbf\xbf", b"\xed\x9f\xbf"):
            r = ctl.send(b'{"plate":"' + good + b'"}', protocol="testworker")
            self.assertTrue(r["ok"], (good, r))
        ctl.close()
        wait_for(lambda: len(delivered(self.tmp)) == 4, what="the 4 valid ones")

    def test_frame_over_the_limit_says_which_limit(self):
        c = cfg(self.tmp)
        c["gateway"].update({"max_frame_bytes": 32768, "max_message_bytes": 8192})
        gw = self.gateway(c)
        s = socket.socket(socket.AF_UNIX)
        s.connect(gw.sock)
        s.sendall(struct.pack(">I", 40000) + b"\x80" * 100)
        buf = b""
        s.settimeout(10)
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        s.close()
        import msgpack
        m = msgpack.unpackb(buf[4:], raw=False)
        self.assertEqual(m["error"], "frame of 40000 bytes is larger than the limit of 32768 bytes "
                                     "(gateway.max_frame_bytes): a message may have at most "
                                     "gateway.max_message_bytes (8192) bytes; send less, send a file with "
                                     "send-file, or raise both in the configuration")


def bad_paths(tmp):
    """A FIFO, a loop of symbolic links, /dev/zero and a directory, with the words
    that name each."""
    fifo = os.path.join(tmp, "fifo")
    if not os.path.exists(fifo):
        os.mkfifo(fifo)
    loop = os.path.join(tmp, "loop")
    if not os.path.lexists(loop):
        os.symlink(loop, loop)
    return [(fifo, "is not a regular file (it is a FIFO)"),
            (loop, "Too many levels of symbolic links (a loop of symbolic links)"),
            ("/dev/zero", "is not a regular file (it is a character device)"),
            (tmp, "is not a regular file (it is a directory)")]


def sections(tmp, **extra):
    """Sections that load, for the keys below: no server needs to be up."""
    known = os.path.join(tmp, "known_hosts")
    open(known, "a").close()
    c = cfg(tmp)
    c.update({"sftp": {"host": "127.0.0.1", "port": 9, "username": "u", "password": "p", "known_hosts": known},
              "rsync": {"remote_host": "127.0.0.1", "port": 9, "remote_user": "u", "known_hosts": known},
              "mqtt": {"broker_url": "127.0.0.1:9", "client_id": "c"}})
    for sec, kv in extra.items():
        c.setdefault(sec, {}).update(kv)
    return c


FILE_KEYS = [("sftp", "key_file"), ("sftp", "known_hosts"), ("rsync", "key_file"), ("rsync", "known_hosts"),
             ("mqtt", "ca_file"), ("mqtt", "cert_file"), ("security", "encryption_key_file"),
             ("mqtt", "password_file")]


def key_words(sec, key, path):
    """How an error names the key and the path (a secret's KEY_file as written)."""
    return "%s %s" % (key if key == "password_file" else "%s.%s" % (sec, key), path)


class FileKeysTest(GatewayTest):
    def check(self, path):
        return subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", path], capture_output=True, text=True,
                              timeout=20)

    def test_check_mode_refuses_each_bad_file_for_each_key(self):
        for sec, key in FILE_KEYS:
            for path, words in bad_paths(self.tmp):
                gw = self.gateway(sections(self.tmp, **{sec: {key: path}}), start=False, name="n")
                r = self.check(gw.cfg_path)
                self.assertEqual(r.returncode, 1, (sec, key, path, r.stdout))
                self.assertIn(key_words(sec, key, path), r.stderr, (sec, key))
                self.assertIn(words, r.stderr, (sec, key))
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        # metrics.listen off loopback: -n says what start says
        gw = self.gateway(sections(self.tmp, metrics={"listen": "0.0.0.0:9630"}), start=False, name="m")
        r = self.check(gw.cfg_path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("metrics.listen '0.0.0.0:9630' is not a loopback address", r.stderr)

    def test_start_refuses_instead_of_hanging(self):
        for sec, key in (("sftp", "key_file"), ("rsync", "known_hosts"), ("mqtt", "ca_file")):
            for path, words in bad_paths(self.tmp):
                gw = self.gateway(sections(self.tmp, **{sec: {key: path}}), start=False, name="s")
                gw.start(wait_ready=False)
                try:
                    rc = gw.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.fail("ucgwd hangs at start with %s.%s = %s" % (sec, key, path))
                gw.kill()
                self.assertEqual(rc, 1, (sec, key, path))
                self.assertIn(key_words(sec, key, path), gw.log_text())
                self.assertIn(words, gw.log_text())
                os.unlink(gw.log_path)

    def test_reload_refuses_and_status_still_answers(self):
        gw = self.gateway(sections(self.tmp))
        ctl = Ctl(gw.sock)
        for sec, key in FILE_KEYS:
            for path, words in bad_paths(self.tmp):
                gw.write_config(sections(self.tmp, **{sec: {key: path}}, gateway=dict(gw.cfg["gateway"]),
                                         metrics={"listen": ""}))
                ctl.request("reload", {})
                try:
                    r = ctl.reply(timeout=10)
                except socket.timeout:
                    self.fail("reload with %s.%s = %s gets no answer" % (sec, key, path))
                self.assertFalse(r["ok"], (sec, key, path))
                self.assertIn("reload failed, keeping the old configuration: ", r["error"])
                self.assertIn(key_words(sec, key, path), r["error"])
                self.assertIn(words, r["error"])
                t = time.monotonic()
                ctl.request("status", {})
                self.assertTrue(ctl.reply(timeout=5)["ok"])
                self.assertLess(time.monotonic() - t, 2.0)
        self.assertEqual(gw.ctl_json("status")["reloads"], 0)
        ctl.close()


class HungFileTest(GatewayTest):
    """A file named by the configuration on a file system that stopped
    answering (hangread.so: its read() waits while a trigger file exists):
    every read gives up after 2 s with the key and the path, the loop answers,
    and what waited for the file goes on once it answers again."""

    def setUp(self):
        super().setUp()
        self.ca = os.path.join(self.tmp, "ca.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        os.path.join(self.tmp, "ca.key"), "-out", self.ca, "-days", "2", "-subj", "/CN=hung"],
                       check=True, capture_output=True)
        self.trigger = os.path.join(self.tmp, "hung")
        self.env = preload("hangread.so", UCGW_HANG_PATH=self.ca, UCGW_HANG_FILE=self.trigger)
        self.words = "reading mqtt.ca_file (%s) took longer than 2 s" % self.ca

    def config(self):
        c = cfg(self.tmp)
        c["mqtt"] = {"broker_url": "127.0.0.1:9", "client_id": "c", "ca_file": self.ca}
        return c

    def run_daemon(self, gw, *args):
        t = time.monotonic()
        r = subprocess.run([os.path.join(BIN, "ucgwd"), *args, "-c", gw.cfg_path], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, **self.env))
        with open(gw.log_path, "a") as f:  # tearDown looks for sanitizer reports there
            f.write(r.stdout + r.stderr)
        return r, time.monotonic() - t

    def test_check_and_start_give_up_with_the_key(self):
        open(self.trigger, "w").close()
        gw = self.gateway(self.config(), start=False)
        for args in (["-n"], []):
            r, took = self.run_daemon(gw, *args)
            print("\nucgwd%s with mqtt.ca_file hung: exit %d after %.1f s: %s"
                  % ("".join(" " + a for a in args), r.returncode, took, r.stderr.strip()))
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(self.words, r.stderr)
            self.assertLess(took, 10)
        os.unlink(self.trigger)
        r, _ = self.run_daemon(gw, "-n")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_worker_start_and_reload_do_not_wait_for_it(self):
        gw = self.gateway(self.config(), env=self.env)
        old = gw.wait_worker("mqtt", lambda w: w["pid"] > 0 and w["state"] == "ready")["pid"]
        open(self.trigger, "w").close()
        os.kill(old, 9)
        w = gw.wait_worker("mqtt", lambda w: "cannot start: reading mqtt.ca_file" in w["health"], timeout=15,
                           what="the worker's health naming the hung file")
        print("\nmqtt.ca_file hung: worker %s, health: %s" % (w["state"], w["health"]))
        self.assertEqual(w["state"], "backoff")
        self.assertTrue(self.words in w["health"] or "has not come back" in w["health"], w["health"])
        # While it stays hung, tries come back at once: status is never held up
        slowest = 0.0
        for _ in range(8):
            t = time.monotonic()
            rc, out, err = gw.ctl("status")
            self.assertEqual(rc, 0, err)
            slowest = max(slowest, time.monotonic() - t)
            time.sleep(0.25)
        ctl = Ctl(gw.sock)
        t = time.monotonic()
        ctl.request("reload", {})
        r = ctl.reply(timeout=15)
        print("reload meanwhile: %.1f s: %s; the slowest status: %.2f s"
              % (time.monotonic() - t, r["error"], slowest))
        self.assertFalse(r["ok"])
        self.assertIn("reading mqtt.ca_file (%s)" % self.ca, r["error"])
        self.assertLess(slowest, 1.5)
        ctl.close()
        self.assertIsNone(gw.proc.poll())
        os.unlink(self.trigger)  # the server answers again
        w = gw.wait_worker("mqtt", lambda w: w["state"] == "ready" and w["pid"] != old, timeout=40,
                           what="the worker started once the file can be read")


class YamlTest(GatewayTest):
    def test_deep_nesting_refused_fast(self):
        gw = self.gateway(cfg(self.tmp), start=False)
        gw.write_config(None, "gateway: " + "[" * 100000 + "]" * 100000 + "\n")
        t = time.monotonic()
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path], capture_output=True, text=True,
                           timeout=60)
        took = time.monotonic() - t
        print("\n100,000-deep flow collection: ucgwd -n refused it in %.0f ms (process start included)"
              % (took * 1000))
        self.assertEqual(r.returncode, 1)
        self.assertIn("ucgw.yaml:1:41: nested deeper than 32 levels, expected sections of keys (a configuration "
                      "needs 4)", r.stderr)
        self.assertLess(took, 2.0)  # the target is 100 ms; generous on a shared machine

    def test_status_answers_during_a_long_reload(self):
        gw = self.gateway(cfg(self.tmp))
        # 3.5 MB that libyaml takes a while to read (refused in the end: an unknown section)
        big = "gateway: {device_id: x}\nx: {" + ", ".join("k%d: v" % i for i in range(300000)) + "}\n"
        gw.write_config(None, big)
        ctl, poll = Ctl(gw.sock), Ctl(gw.sock)
        lat = []
        for _ in range(3):
            t0 = time.monotonic()
            ctl.request("reload", {})
            done = threading.Event()
            result = {}

            def wait_reload():
                result["r"] = ctl.reply(timeout=60)
                result["t"] = time.monotonic() - t0
                done.set()
            th = threading.Thread(target=wait_reload)
            th.start()
            while not done.is_set():
                t = time.monotonic()
                poll.request("status", {})
                self.assertTrue(poll.reply(timeout=60)["ok"])
                lat.append(time.monotonic() - t)
            th.join()
            self.assertIn("unknown section 'x'", result["r"]["error"])
        print("\nreload of a 3.5 MB file: %.0f ms; status meanwhile: %d answers, slowest %.1f ms"
              % (result["t"] * 1000, len(lat), max(lat) * 1000))
        self.assertGreater(len(lat), 1)
        self.assertLess(max(lat), result["t"] / 2)
        ctl.close()
        poll.close()


class MemoryTest(GatewayTest):
    def test_memory_returned_after_a_backlog_drains(self):
        """A small version of bench/bench_backlog.py (200,000 messages there):
        the supervisor's RSS after a backlog of 20,000 drains is back within
        20 % of where it was before it (after a warm-up: a daemon in service,
        whose table of the last 32,768 outcomes, 2.3 MB, is full: admission.c)."""
        c = cfg(self.tmp)
        c["gateway"]["log_level"] = "info"
        c["spool"]["max_messages"] = 50000
        del c["testworker"]["record"]
        gw = self.gateway(c)
        pid = gw.daemon_pid()

        def rss():
            return proc_number(pid, "status", "VmRSS")

        def backlog(n):
            self.assertEqual(gw.ctl("pause", "testworker")[0], 0)
            r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", str(n), "-w", "256", "-p",
                                "testworker", "-z", "250"], capture_output=True, text=True, timeout=600)
            self.assertEqual(json.loads(r.stdout)["failed"], 0, r.stdout)
            time.sleep(1.5)  # ucgwd samples its backlog every second
            peak = rss()
            done = " to 0 messages: "  # the trim once it has all drained, not one on the way down
            marks = gw.log_text().count(done)
            self.assertEqual(gw.ctl("resume", "testworker")[0], 0)
            wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == 0, timeout=300, what="drained")
            wait_for(lambda: gw.log_text().count(done) > marks, timeout=20, what="the memory given back")
            time.sleep(0.5)
            return peak, rss()
        backlog(33000)  # warm-up: every outcome slot taken, as in a daemon in service
        start = rss()
        peak, after = backlog(20000)
        print("\n20,000 queued: RSS %.1f MB before, %.1f MB at the peak, %.1f MB after the drain (%+.0f %%)"
              % (start / 1024, peak / 1024, after / 1024, (after - start) * 100 / start))
        self.assertGreater(peak, start + 5 * 1024)
        if not under_asan(pid):  # ASan keeps freed memory in its quarantine
            self.assertLess(after, start * 1.2)


if __name__ == "__main__":
    unittest.main()
