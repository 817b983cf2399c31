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
from ucgwtest import BIN, GatewayTest, delivered, wait_for  # noqa: E402
from ucgwtest import testworker_config as cfg  # noqa: E402


class SendValidationTest(GatewayTest):
    def test_validation_table(self):
        gw = self.gateway(cfg(self.tmp))
        ctl = Ctl(gw.sock)
        proc_file = "/proc/self/status"
        fifo = os.path.join(self.tmp, "fifo")
        os.mkfifo(fifo)
        cases = [
            ({"topic": "lpr/a\x00b"}, "topic contains a NUL character"),
            ({"topic": ""}, "MQTT topic '' is empty"),
            ({"topic": "lpr/+/x"}, "MQTT topic 'lpr/+/x' contains a wildcard (+ or #); a message is published to one topic"),
            ({"topic": "lpr/#"}, "MQTT topic 'lpr/#' contains a wildcard (+ or #); a message is published to one topic"),
            ({"topic": "lpr/\x07bell"}, "MQTT topic 'lpr/?bell' contains a control character"),
            ({"topic": "t" * 300}, "topic of 300 bytes is longer than the 255 allowed"),
            ({"topic": 5}, "topic must be a string"),
            ({"endpoint": "/api/x\r\nHost: evil"},
             "endpoint '/api/x??Host: evil' has a character not allowed in a URL path (byte 0x0d at 6): "
             "no space, CR, LF or control character; percent-encode others"),
            ({"endpoint": "/api/a b"},
             "endpoint '/api/a b' has a character not allowed in a URL path (byte 0x20 at 6): "
             "no space, CR, LF or control character; percent-encode others"),
            ({"endpoint": "api"}, "endpoint 'api' must be a path starting with '/'"),
            ({"endpoint": "/a\x00b"}, "endpoint contains a NUL character"),
            ({"ttl_s": -5}, "ttl_s -5 is negative, expected seconds from 0 (never expires) to 3153600000"),
            ({"ttl_s": 2 ** 63}, "ttl_s 9223372036854775808 is too large, expected seconds from 0 (never expires) "
                                 "to 3153600000"),
            ({"ttl_s": 1.5}, "ttl_s must be a whole number of seconds from 0 (never expires) to 3153600000"),
        ]
        for extra, text in cases:
            body = {"data": b'{"plate":"X"}', "format": "json", "protocol": "testworker"}
            body.update(extra)
            ctl.request("send", body)
            r = ctl.reply()
            self.assertFalse(r["ok"], extra)
            self.assertEqual(r["error"], text, extra)
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
        self.assertEqual(err, "ucgwctl: MQTT topic 'a/?b' contains a control character\n")
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


if __name__ == "__main__":
    unittest.main()
