"""tests/tools/faultproxy.py itself, since other tests rely on it: one live
connection through the proxy to an echo server while every mode is switched
in turn: pass, latency (the round trip grows by twice the set delay, once each
way), bandwidth (N bytes take about N/rate), blackhole (nothing arrives, the
connection stays), drop (the connection is closed, new ones refused), pass."""
import os
import socket
import statistics
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import FaultProxy, GatewayTest, wait_for  # noqa: E402
from echoserver import EchoServer  # noqa: E402


def recv_exactly(c, n, timeout=5):
    c.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        chunk = c.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def rtt(c, n=5):
    """The median round trip of n small pings, in seconds; each must come back intact."""
    times = []
    for i in range(n):
        msg = b"ping %03d" % i
        t0 = time.monotonic()
        c.sendall(msg)
        assert recv_exactly(c, len(msg)) == msg
        times.append(time.monotonic() - t0)
    return statistics.median(times)


class FaultProxyTest(GatewayTest):
    def test_every_mode_on_a_live_connection(self):
        srv = EchoServer()
        self.addCleanup(srv.close)
        proxy = FaultProxy(self, srv.port)
        c = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        self.addCleanup(c.close)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        # pass: bytes go through untouched, fast
        base = rtt(c)
        self.assertLess(base, 0.05)

        # latency 100: each chunk waits 100 ms each way, so the round trip grows by about 200 ms
        self.assertEqual(proxy.command("latency 100"), "ok")
        slow = rtt(c, 3)
        print("\nround trip: %.1f ms, with latency 100: %.1f ms" % (base * 1000, slow * 1000))
        self.assertGreaterEqual(slow - base, 0.19)
        self.assertLess(slow - base, 0.35)

        # bandwidth: 150,000 bytes at 200,000 B/s take about 0.75 s to reach the server
        self.assertEqual(proxy.command("pass"), "ok")
        self.assertLess(rtt(c, 3), 0.05)  # pass ends the latency
        srv.echo = False
        self.assertEqual(proxy.command("bandwidth 200000"), "ok")
        n, before = 150000, srv.received
        t0 = time.monotonic()
        c.sendall(os.urandom(n))
        wait_for(lambda: srv.received - before >= n, timeout=10, step=0.005, what="150,000 bytes at the server")
        took = time.monotonic() - t0
        print("150,000 bytes at 200,000 B/s: %.2f s (expected 0.75)" % took)
        self.assertEqual(srv.received - before, n)
        self.assertGreaterEqual(took, 0.7)
        self.assertLess(took, 1.2)
        srv.echo = True
        self.assertEqual(proxy.command("pass"), "ok")
        self.assertLess(rtt(c, 3), 0.05)  # pass ends the cap

        # blackhole: nothing arrives at either end, the connection stays open
        self.assertEqual(proxy.command("blackhole"), "ok")
        before = srv.received
        c.sendall(b"into the hole")
        c.settimeout(0.6)
        with self.assertRaises(socket.timeout):  # no answer, and no end of stream either
            c.recv(100)
        self.assertEqual(srv.received, before)
        self.assertEqual(srv.open, 1)
        # back to pass: the same connection carries data again (what was held comes first)
        self.assertEqual(proxy.command("pass"), "ok")
        self.assertEqual(recv_exactly(c, 13), b"into the hole")
        self.assertLess(rtt(c, 3), 0.05)
        self.assertTrue(proxy.command("stats").startswith("connections 1 "), proxy.command("stats"))

        # drop: the live connection is closed, and a new one is closed at once
        self.assertEqual(proxy.command("drop"), "ok")
        c.settimeout(2)
        try:
            self.assertEqual(c.recv(100), b"")
        except ConnectionResetError:
            pass
        wait_for(lambda: srv.open == 0, timeout=2, what="the server's side closed too")
        c2 = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        self.addCleanup(c2.close)
        c2.sendall(b"anyone?")
        try:
            self.assertEqual(c2.recv(100), b"")
        except ConnectionResetError:
            pass
        self.assertEqual(srv.accepted, 1)  # the refused connection never reached the server

        # pass again: a new connection works
        self.assertEqual(proxy.command("pass"), "ok")
        c3 = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        self.addCleanup(c3.close)
        self.assertLess(rtt(c3, 3), 0.05)
        self.assertEqual(srv.accepted, 2)
        self.assertTrue(proxy.command("stats").startswith("connections 2 "), proxy.command("stats"))

    def test_unknown_command_is_refused(self):
        srv = EchoServer()
        self.addCleanup(srv.close)
        proxy = FaultProxy(self, srv.port)
        self.assertEqual(proxy.command("jitter 5"), "error: unknown command jitter")


if __name__ == "__main__":
    unittest.main()
