"""tests/tools/linkem.c (ucgw-linkem) itself, since the link benchmark and the tests that
put a server behind a link rely on it: a bulk transfer fills the link's rate and no more
(also when two connections share it), a one-byte ping-pong takes one round trip, the
buffer bounds what it holds and the sender stalls, an outage (down) moves nothing and
keeps connections, and jitter keeps the order."""
import os
import socket
import statistics
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from linkem import Link, PROFILES, payload_capacity  # noqa: E402
from echoserver import EchoServer  # noqa: E402

MB = 1000 * 1000


def connect(link):
    s = socket.create_connection(("127.0.0.1", link.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def ping(s, byte=b"x"):
    t = time.monotonic()
    s.sendall(byte)
    assert s.recv(1) == byte
    return time.monotonic() - t


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.005)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


class LinkemTest(unittest.TestCase):
    def server(self, **kw):
        srv = EchoServer(**kw)
        self.addCleanup(srv.close)
        return srv

    def send_through(self, link, srv, nbytes, conns=1, more=()):
        """Send nbytes over each of conns connections at once (and one to each server of more, behind
        the same link); seconds until the servers have them all."""
        block = b"\0" * 65536
        socks = [connect(link) for _ in range(conns)]
        socks += [socket.create_connection(("127.0.0.1", link.port_for(m.port))) for m in more]
        t0 = time.monotonic()

        def send(s):
            left = nbytes
            while left > 0:
                left -= s.send(block[:min(left, len(block))])
        threads = [threading.Thread(target=send, args=(s,)) for s in socks]
        for t in threads:
            t.start()
        wait_until(lambda: srv.received + sum(m.received for m in more) >= nbytes * len(socks), 60,
                   "%d bytes at the servers" % (nbytes * len(socks)))
        elapsed = time.monotonic() - t0
        for t in threads:
            t.join()
        for s in socks:
            s.close()
        return elapsed

    def test_bulk_fills_the_link(self):
        """10 MB at 20 Mbit/s and 100 ms RTT arrive at 90 % of the rate or better, not above it."""
        srv = self.server(echo=False)
        link = Link.for_test(self, srv.port, profile="lte")
        elapsed = self.send_through(link, srv, 10 * MB)
        rate = 10 * MB / elapsed
        cap = payload_capacity("lte")
        print("10 MB over lte: %.2f s, %.1f%% of the rate" % (elapsed, 100 * rate / cap))
        self.assertGreaterEqual(rate, 0.9 * cap)
        self.assertLessEqual(rate, 1.02 * cap)

    def test_connections_share_the_link(self):
        """Three connections at once, two to one server and one to another (--route), get
        the one link's rate between them, not thrice it."""
        srv, other = self.server(echo=False), self.server(echo=False)
        link = Link.for_test(self, srv.port, profile="lte", more_targets=(other.port,))
        elapsed = self.send_through(link, srv, 3 * MB, conns=2, more=(other,))
        self.assertEqual(other.received, 3 * MB)
        rate = 9 * MB / elapsed
        print("3 x 3 MB over lte: %.2f s, %.1f%% of the rate" % (elapsed, 100 * rate / payload_capacity("lte")))
        self.assertGreaterEqual(rate, 0.88 * payload_capacity("lte"))
        self.assertLessEqual(rate, 1.02 * payload_capacity("lte"))

    def test_ping_pong_takes_one_round_trip(self):
        """A new connection's first answer takes 2 RTT (its handshake, as on a real link), every
        later one-byte ping one RTT within 10 ms; 30 connections pinging at once, too."""
        srv = self.server()
        link = Link.for_test(self, srv.port, profile="lte")
        rtt = 2 * PROFILES["lte"][0] / 1000
        s = connect(link)
        t0 = time.monotonic()
        ping(s)
        first = time.monotonic() - t0
        self.assertAlmostEqual(first, 2 * rtt, delta=0.015, msg="first answer, with the handshake")
        times = [ping(s) for _ in range(15)]
        print("ping over lte: first %.1f ms, then median %.1f ms, max %.1f ms"
              % (first * 1000, statistics.median(times) * 1000, max(times) * 1000))
        self.assertAlmostEqual(statistics.median(times), rtt, delta=0.010)
        for t in times:  # one late answer is the loaded machine's scheduler, not the link
            self.assertGreaterEqual(t, rtt - 0.002)
            self.assertLessEqual(t, rtt + 0.050)
        s.close()

        many = [connect(link) for _ in range(30)]
        for c in many:
            ping(c)
        results = []
        threads = [threading.Thread(target=lambda c=c: results.append(ping(c))) for c in many]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(len(results), 30)
        print("30 pings at once: median %.1f ms, max %.1f ms" % (statistics.median(results) * 1000, max(results) * 1000))
        self.assertAlmostEqual(statistics.median(results), rtt, delta=0.015)
        for t in results:
            self.assertGreaterEqual(t, rtt - 0.002)
            self.assertLessEqual(t, rtt + 0.060)
        for c in many:
            c.close()

    def test_buffer_bounds_what_it_holds(self):
        """A sender faster than the link stalls: the link holds no more than its buffer (plus one
        read), and what the sender could write is what arrived plus the buffer and the
        kernel's socket buffers, not all it wanted to send. A receiver that stops reading
        stops its sender too."""
        srv = self.server(echo=False)
        buffer = 100_000
        link = Link.for_test(self, srv.port, profile="poor", buffer_bytes=buffer)
        s = connect(link)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.setblocking(False)
        block = b"\0" * 65536
        sent, stalls = 0, 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:
            try:
                sent += s.send(block)
            except BlockingIOError:
                stalls += 1
                time.sleep(0.005)
        st = link.stats()
        print("poor, buffer %d: sent %d in 2 s, delivered %d, max queued %d"
              % (buffer, sent, st["up_bytes"], st["up_max_queued"]))
        self.assertGreater(stalls, 0, "the sender never stalled")
        self.assertLessEqual(st["up_max_queued"], buffer + 65536)
        self.assertLessEqual(sent, st["up_bytes"] + st["up_queued"] + 2 * MB,
                             "the sender could write far more than the link took")
        self.assertLessEqual(st["up_bytes"], 2.2 * payload_capacity("poor"))

        srv.paused.set()  # a receiver that reads nothing: its sender stops, the link's memory stays bounded
        time.sleep(1.5)
        before = link.stats()
        time.sleep(0.5)
        after = link.stats()
        print("receiver paused: up_in %d then %d, backlog %d" % (before["up_in"], after["up_in"], after["up_backlog"]))
        self.assertEqual(before["up_in"], after["up_in"], "the relay still reads from a sender whose receiver is stuck")
        self.assertLessEqual(after["up_backlog"], 256 * 1024 + buffer + 65536)
        srv.paused.clear()
        s.close()

    def test_down_moves_nothing_and_keeps_connections(self):
        """down: nothing passes either way, open connections stay open, new ones are accepted
        and wait; up: all of it arrives, within a round trip (a new one's handshake: two)."""
        srv = self.server()
        link = Link.for_test(self, srv.port, profile="lte")
        rtt = 2 * PROFILES["lte"][0] / 1000
        old = connect(link)
        ping(old)
        received = srv.received
        link.down()
        self.assertEqual(link.stats()["state"], "down")
        old.sendall(b"a")
        new = connect(link)  # accepted by the relay, as a radio's socket would be
        new.sendall(b"b")
        for c in (old, new):
            c.settimeout(1.0)
        with self.assertRaises(socket.timeout):
            old.recv(1)
        self.assertEqual(srv.received, received, "bytes crossed a link that is down")
        self.assertEqual(srv.accepted, 1, "a connection reached the server while the link was down")
        self.assertEqual(link.stats()["connections"], 2)
        t_up = time.monotonic()
        link.up()
        self.assertEqual(old.recv(1), b"a")
        t_old = time.monotonic() - t_up
        self.assertEqual(new.recv(1), b"b")
        t_new = time.monotonic() - t_up
        print("after up: old connection answered in %.0f ms, new in %.0f ms" % (t_old * 1000, t_new * 1000))
        self.assertLessEqual(t_old, rtt + 0.02)
        self.assertAlmostEqual(t_new, 2 * rtt, delta=0.03)
        old.close()
        new.close()

    def test_jitter_keeps_order(self):
        """With jitter, round trips vary but bytes keep their order."""
        srv = self.server()
        link = Link.for_test(self, srv.port, profile="lte", jitter_ms=20)
        s = connect(link)
        ping(s)
        sent = bytes(range(256)) * 2
        got = bytearray()
        stamps = {}

        def reader():
            while len(got) < len(sent):
                data = s.recv(4096)
                for b in data:
                    stamps.setdefault(len(got), time.monotonic())
                    got.append(b)
        t = threading.Thread(target=reader)
        t.start()
        sent_at = []
        for i in range(len(sent)):
            sent_at.append(time.monotonic())
            s.send(sent[i:i + 1])
            time.sleep(0.002)
        t.join(10)
        self.assertEqual(bytes(got), sent)
        times = [stamps[i] - sent_at[i] for i in range(len(sent))]
        print("jitter 20 ms: round trips from %.0f to %.0f ms" % (min(times) * 1000, max(times) * 1000))
        self.assertGreater(max(times) - min(times), 0.010)
        self.assertGreaterEqual(min(times), 0.100 - 0.040 - 0.002)
        self.assertLessEqual(max(times), 0.100 + 0.040 + 0.050)
        s.close()


if __name__ == "__main__":
    unittest.main()
