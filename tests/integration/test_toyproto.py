"""A protocol added through its descriptor alone: the test build's toy
protocol (tests/tools/ucgw-toyproto.c, its row in tests/tools/test_protocols.c;
nothing else in ucgw names it) is configured, started in its sandbox, probed
by the network monitor, and carries metadata and a file to a TCP peer, byte
for byte. A release build knows nothing of it."""
import hashlib
import os
import socket
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, GatewayTest, wait_for  # noqa: E402


class Peer:
    """A TCP server that keeps what each connection sent (the network
    monitor's probes connect too, and send nothing)."""

    def __init__(self, test):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.data = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        test.addCleanup(self.sock.close)

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            buf = bytearray()
            with self.lock:
                self.data.append(buf)
            threading.Thread(target=self.read, args=(c, buf), daemon=True).start()

    def read(self, c, buf):
        with c:
            while True:
                try:
                    b = c.recv(65536)
                except OSError:
                    return
                if not b:
                    return
                with self.lock:
                    buf += b

    def messages(self):
        """{id: bytes} of every whole message received: "ID SIZE\\n" + bytes + "\\n"."""
        out = {}
        with self.lock:
            streams = [bytes(b) for b in self.data]
        for s in streams:
            while b"\n" in s:
                head, rest = s.split(b"\n", 1)
                mid, size = head.decode().split()
                size = int(size)
                if len(rest) < size + 1:
                    break
                out[mid] = rest[:size]
                s = rest[size + 1:]
        return out


class ToyProtocolTest(GatewayTest):
    def test_delivers_through_the_descriptor_alone(self):
        peer = Peer(self)
        gw = self.gateway({"toyproto": {"server": "127.0.0.1:%d" % peer.port},
                           "network_monitor": {"interval_ms": 200}})
        gw.wait_worker("toyproto", lambda w: w["state"] == "ready" and w["connected"], what="toyproto connected")
        payload = '{"plate":"TOY-1","n":%d}' % 42
        rc, out, err = gw.ctl("send", "--protocol", "toyproto", "--wait", payload)
        self.assertEqual(rc, 0, err)
        path = os.path.join(self.tmp, "plate.jpg")
        blob = os.urandom(200000)
        with open(path, "wb") as f:
            f.write(blob)
        rc, out, err = gw.ctl("--json", "send-file", "--protocol", "toyproto", "--wait", path)
        self.assertEqual(rc, 0, err)
        got = wait_for(lambda: (lambda m: m if len(m) == 2 else None)(peer.messages()), what="both at the peer")
        bodies = sorted(got.values(), key=len)
        self.assertEqual(bodies[0], payload.encode())
        self.assertEqual(hashlib.sha256(bodies[1]).hexdigest(), hashlib.sha256(blob).hexdigest())
        # auto finds it too: the only protocol enabled
        rc, out, err = gw.ctl("--json", "send", "--wait", '{"auto":1}')
        self.assertEqual(rc, 0, err)
        self.assertIn('"protocol":"toyproto"', out.replace(" ", ""))
        # the network monitor probes its server, where the row says it is
        wait_for(lambda: gw.ctl_json("status")["network"]["toyproto"]["quality"] != "unknown",
                 what="toyproto's server measured")
        # its stats, like any protocol's
        self.assertEqual(gw.ctl_json("stats")["toyproto"]["success"], 3)

    def test_bad_server_is_a_configuration_error(self):
        gw = self.gateway({"toyproto": {"server": "not-an-address"}}, start=False)
        gw.start(wait_ready=False)
        wait_for(lambda: "toyproto.server 'not-an-address' is not address:port" in gw.log_text(),
                 what="the worker's reason in the log")
        gw.wait_worker("toyproto", lambda w: w["state"] == "failed", what="toyproto failed, not restarted")

    def test_test_rows_stay_out_of_what_users_read(self):
        ref = subprocess.run([os.path.join(BIN, "ucgwd"), "--config-reference"], capture_output=True,
                             text=True, check=True).stdout
        for name in ("toyproto", "testworker"):
            self.assertNotIn(name, ref)
            for argv in (["ucgwd", "--help"], ["ucgwctl", "--help"], ["ucgwctl", "restart", "--help"]):
                r = subprocess.run([os.path.join(BIN, argv[0])] + argv[1:], capture_output=True, text=True)
                self.assertNotIn(name, r.stdout + r.stderr, argv)


if __name__ == "__main__":
    unittest.main()
