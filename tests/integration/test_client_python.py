"""The Python client (clients/python/ucgw) against the real daemon and the test
worker: the reference design's API (send_metadata, send_file,
CommunicationResult), errors as results, threads, timeouts, authentication, a
daemon that restarts or is not running."""
import base64
import datetime
import hashlib
import hmac
import json
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from ucgw import (Code, CommunicationResult, GatewayNotRunning, UnifiedCommunicationGateway, is_id, new_id)  # noqa: E402
from lprpeer import LprPeer  # noqa: E402
from ucgwtest import GatewayTest, wait_for  # noqa: E402

KEY = "k1-python-client-test-key-0123456789"
SECRET = "jwt-secret-for-the-python-client-0123456789"


def jwt(secret, claims):
    """An HS256 token, as the camera application's issuer would make it."""
    def enc(obj):
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()
    signing_input = enc({"alg": "HS256", "typ": "JWT"}) + "." + enc(claims)
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


class PythonClientTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.record = os.path.join(self.tmp, "delivered.txt")
        self.gw = self.gateway({"testworker": {"record": self.record}})
        self.client = UnifiedCommunicationGateway(socket_path=self.gw.sock, timeout=30)

    def tearDown(self):
        self.client.close()
        super().tearDown()

    def lines(self):
        try:
            with open(self.record) as f:
                return [l.split() for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def delivered(self):
        return {l[0]: int(l[1]) for l in self.lines()}

    def test_send_metadata_like_the_reference(self):
        data = {"plate": "ABC123", "confidence": 0.97, "camera": "gate-1"}
        r = self.client.send_metadata(data, protocol="testworker", priority="high", wait=True)
        self.assertIsInstance(r, CommunicationResult)
        self.assertTrue(r.success, r.error)
        self.assertIsNone(r.error)
        self.assertEqual(r.data["status"], "ok")
        self.assertEqual(r.data["protocol"], "testworker")
        self.assertEqual(r.data["attempts"], 1)
        self.assertEqual(len(r.data["id"]), 26)
        self.assertEqual(r.id, r.data["id"])
        sent = json.dumps(data, separators=(",", ":")).encode()
        self.assertEqual(self.delivered()[r.id], len(sent))

    def test_protocol_auto_by_default(self):
        """send_metadata without a protocol, as the reference's callers write it:
        'auto', so ucgwd picks one of the real protocols (never the test worker)."""
        peer = LprPeer(self)
        gw = self.gateway({"websocket": {"server_url": peer.ws_url()}, "rest": {"base_url": peer.http_url()}},
                          name="auto")
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="websocket and rest up")
        with UnifiedCommunicationGateway(socket_path=gw.sock, timeout=30) as c:
            r = c.send_metadata({"plate": "AUTO1", "confidence": 0.9}, wait=True)
        self.assertTrue(r.success, r.error)
        self.assertIn(r.data["protocol"], ("websocket", "rest"))
        self.assertEqual(r.data["attempts"], 1)
        self.assertEqual([rec["id"] for rec in peer.records() if rec.get("id") == r.id], [r.id])

    def test_constructed_like_the_reference(self):
        """The reference passed a config object: a mapping, an object or a path work."""
        class Config:
            socket_path = self.gw.sock
            websocket = rest = mqtt = None  # the reference's protocol settings: ucgwd's business now
        for cfg in ({"socket_path": self.gw.sock, "rest": {}}, Config(), self.gw.sock):
            with UnifiedCommunicationGateway(cfg) as c:
                r = c.send_metadata({"cfg": type(cfg).__name__}, protocol="testworker", wait=True)
                self.assertTrue(r.success, (cfg, r.error))
        saved = os.environ.get("UCGW_SOCKET")
        os.environ["UCGW_SOCKET"] = self.gw.sock
        try:
            self.assertTrue(UnifiedCommunicationGateway().status().success)
        finally:
            if saved is None:
                os.environ.pop("UCGW_SOCKET")
            else:
                os.environ["UCGW_SOCKET"] = saved

    def test_kinds_of_data(self):
        when = datetime.datetime(2024, 8, 16, 12, 30, 5)
        cases = [
            ({"plate": "DT1", "seen": when}, b'{"plate":"DT1","seen":"2024-08-16T12:30:05"}'),
            ('{"plate":"STR1"}', b'{"plate":"STR1"}'),             # JSON text: checked as JSON
            ("plate=STR2", b"plate=STR2"),                         # other text: raw
            (b"\x00\x01binary", b"\x00\x01binary"),                # bytes: raw
            ([1, 2, 3], b"[1,2,3]"),
        ]
        for data, wire in cases:
            r = self.client.send_metadata(data, protocol="testworker", wait=True)
            self.assertTrue(r.success, (data, r.error))
            self.assertEqual(self.delivered()[r.id], len(wire), data)
        r = self.client.send_metadata("plate=STR3", protocol="testworker", format="json", wait=True)
        self.assertFalse(r.success)
        self.assertIn("payload is not valid JSON", r.error)
        self.assertIs(r.code, Code.BAD_REQUEST)
        r = self.client.send_metadata({"x": object()}, protocol="testworker", wait=True)
        self.assertFalse(r.success)
        self.assertIn("not JSON serializable", r.error)
        self.assertIsNone(r.code)  # refused here, not by ucgwd

    def test_larger_than_the_frame_limit(self):
        """ucgwd answers a frame over gateway.max_frame_bytes and hangs up while
        the client still writes: the result carries its words."""
        r = self.client.send_metadata(b"x" * (20 << 20), protocol="testworker", format="raw", wait=True)
        self.assertFalse(r.success)
        self.assertIn("frame of 20971", r.error)
        self.assertIn("is larger than the limit of 16777216 bytes", r.error)
        self.assertIs(r.code, Code.TOO_LARGE)
        self.assertTrue(self.client.send_metadata({"after": "big"}, protocol="testworker", wait=True).success)

    def test_without_wait(self):
        r = self.client.send_metadata({"plate": "NW1"}, protocol="testworker", wait=False)
        self.assertTrue(r.success, r.error)
        self.assertEqual(r.data["status"], "accepted")
        wait_for(lambda: r.id in self.delivered(), what="the accepted message delivered")

    def test_failure_carries_the_reason(self):
        r = self.client.send_metadata({"cmd": "permfail"}, protocol="testworker", wait=True)
        self.assertFalse(r.success)
        self.assertIn("permfail", r.error)
        self.assertEqual(r.data["status"], "failed")
        dead = self.client.queue("dead")
        self.assertTrue(dead.success, dead.error)
        self.assertIn(r.id, [m["id"] for m in dead.data])
        for kw, words in (({"protocol": "nosuch"}, "unknown metadata protocol 'nosuch'"),
                          ({"protocol": "rest"}, "protocol 'rest' is disabled"),
                          ({"priority": "urgent"}, "unknown priority 'urgent'"),
                          ({"topic": "lpr/#"}, "wildcard")):
            r = self.client.send_metadata({"a": 1}, **kw, wait=True)
            self.assertFalse(r.success, kw)
            self.assertIn(words, r.error)
            self.assertIsNone(r.data)

    def test_programming_errors_raise(self):
        with self.assertRaises(TypeError):
            self.client.send_metadata({"a": 1}, bogus=1, wait=True)
        with self.assertRaises(ValueError):
            self.client.send_metadata({"a": 1}, ttl_s=-1, wait=True)
        with self.assertRaises(TypeError):
            self.client.send_metadata({"a": 1}, protocol=None, wait=True)
        with self.assertRaises(TypeError):
            self.client.send_file(3.5, wait=True)
        with self.assertRaises(ValueError):
            UnifiedCommunicationGateway(socket_path=self.gw.sock, timeout=0)

    def test_send_file(self):
        p = os.path.join(self.tmp, "plate-0001.jpg")
        with open(p, "wb") as f:
            f.write(os.urandom(50000))
        r = self.client.send_file(p, protocol="testworker", wait=True)
        self.assertTrue(r.success, r.error)
        self.assertEqual(self.delivered()[r.id], 50000)
        with open(p, "rb") as f:  # an open file, named at the server by remote_name
            r = self.client.send_file(f, protocol="testworker", remote_name="plate-0002.jpg",
                                      progress=lambda done, size: None, wait=True)
        self.assertTrue(r.success, r.error)
        self.assertEqual(self.delivered()[r.id], 50000)
        r = self.client.send_file(os.path.join(self.tmp, "missing.jpg"), wait=True)
        self.assertFalse(r.success)
        self.assertIn("cannot open", r.error)
        r = self.client.send_file(self.tmp, wait=True)
        self.assertFalse(r.success)
        self.assertIn("is not a regular file", r.error)
        r = self.client.send_file(p, protocol="mqtt", wait=True)
        self.assertFalse(r.success)
        self.assertIn("protocol 'mqtt' carries metadata, not files", r.error)
        self.assertIs(r.code, Code.BAD_REQUEST)

    def test_not_running(self):
        c = UnifiedCommunicationGateway(socket_path=os.path.join(self.tmp, "none.sock"))
        for r in (c.send_metadata({"a": 1}, wait=True), c.send_file(self.record if os.path.exists(self.record) else __file__, wait=True),
                  c.status(), c.stats()):
            self.assertFalse(r.success)
            self.assertIn("ucgwd is not running (no socket at", r.error)
        with self.assertRaises(GatewayNotRunning):
            c.connect()
        self.assertFalse(c.is_running())
        stale = os.path.join(self.tmp, "stale.sock")
        s = socket.socket(socket.AF_UNIX)
        s.bind(stale)
        s.close()
        r = UnifiedCommunicationGateway(socket_path=stale).send_metadata({"a": 1}, wait=True)
        self.assertFalse(r.success)
        self.assertIn("not running (nobody listening on", r.error)
        self.assertTrue(self.client.is_running())

    def test_daemon_restart(self):
        self.assertTrue(self.client.send_metadata({"n": 1}, protocol="testworker", wait=True).success)
        self.gw.stop()
        r = self.client.send_metadata({"n": 2}, protocol="testworker", wait=True)
        self.assertFalse(r.success)
        self.assertIn("not running", r.error)
        self.gw.start()
        r = self.client.send_metadata({"n": 3}, protocol="testworker", wait=True)
        self.assertTrue(r.success, r.error)
        self.assertEqual(len(self.lines()), 2)

    def test_threads_share_one_handle(self):
        ids, errors = [], []
        lock = threading.Lock()

        def work(t):
            for i in range(200):
                r = self.client.send_metadata({"t": t, "n": i}, protocol="testworker", wait=(i + t) % 2 == 0)
                with lock:
                    (ids if r.success else errors).append(r.id if r.success else r.error)
        ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(set(ids)), 800)
        wait_for(lambda: len(self.lines()) == 800, what="800 delivered")
        self.assertEqual(set(self.delivered()), set(ids))
        st = self.client.stats()
        self.assertTrue(st.success, st.error)
        self.assertEqual(st.data["testworker"]["success"], 800)

    def test_status_queue_trace(self):
        st = self.client.status()
        self.assertTrue(st.success, st.error)
        self.assertEqual(st.data["pid"], self.gw.proc.pid)
        self.assertIn("testworker", [w["name"] for w in self.client.workers().data])
        q = self.client.queue()
        self.assertTrue(q.success, q.error)
        self.assertEqual(q.data, [])
        r = self.client.trace("01HZZZZZZZZZZZZZZZZZZZZZZZ")
        self.assertFalse(r.success)
        self.assertIn("no message with id", r.error)

    def test_fork(self):
        """A child process uses its own connection, not the parent's."""
        self.assertTrue(self.client.status().success)
        pid = os.fork()
        if pid == 0:
            r = self.client.send_metadata({"from": "child"}, protocol="testworker", wait=True)
            os._exit(0 if r.success else 1)
        r = self.client.send_metadata({"from": "parent"}, protocol="testworker", wait=True)
        _, status = os.waitpid(pid, 0)
        self.assertTrue(r.success, r.error)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertEqual(len(self.lines()), 2)


class SlowWorkerTest(GatewayTest):
    """The test worker answers after 600 ms."""

    def setUp(self):
        super().setUp()
        self.gw = self.gateway({"testworker": {"delay_ms": 600}})
        self.client = UnifiedCommunicationGateway(socket_path=self.gw.sock)

    def tearDown(self):
        self.client.close()
        super().tearDown()

    def test_timeout(self):
        t0 = time.monotonic()
        r = self.client.send_metadata({"late": 1}, protocol="testworker", timeout=0.1, wait=True)
        self.assertLess(time.monotonic() - t0, 0.5)
        self.assertFalse(r.success)
        self.assertIn("not delivered within 0.1 s; ucgwd keeps it in its spool and still delivers it", r.error)
        self.assertEqual(r.data["status"], "pending")
        r = self.client.send_metadata({"next": 1}, protocol="testworker", wait=True)  # not the late answer
        self.assertTrue(r.success, r.error)
        self.assertEqual(r.data["status"], "ok")

    def test_late_answer_then_closed(self):
        """A waited send timed out; its late answer arrives, then ucgwd closes
        the connection (restarted, or idle). The next call connects afresh
        instead of writing into the closed one behind the unread answer."""
        r = self.client.send_metadata({"late": 2}, protocol="testworker", timeout=0.1, wait=True)
        self.assertFalse(r.success)
        time.sleep(1.0)  # the late answer is in the socket now
        self.gw.stop()
        self.gw.start()
        r = self.client.queue()  # not sent again by the client: it must go out on a live connection
        self.assertTrue(r.success, r.error)

    def test_waiting_threads_overlap(self):
        results = []

        def one(i):
            results.append(self.client.send_metadata({"slow": i}, protocol="testworker", wait=True))
        t0 = time.monotonic()
        ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.monotonic() - t0
        self.assertEqual([r.success for r in results], [True] * 8)
        self.assertLess(dt, 2.4, "eight waited sends of 600 ms each took %.2f s: serialised?" % dt)

    def test_daemon_killed_while_waiting(self):
        """The connection breaks before the answer: the client sends the same
        request again once ucgwd is back, within the call's timeout; when
        ucgwd stays away, the result says so at the timeout."""
        out = []
        t = threading.Thread(target=lambda: out.append(self.client.send_metadata(
            {"x": 1}, protocol="testworker", wait=True, timeout=20)))
        t.start()
        time.sleep(0.2)
        self.gw.kill()
        time.sleep(0.5)
        self.gw.start()
        t.join(20)
        self.assertTrue(out[0].success, out[0].error)
        self.assertEqual(out[0].data["status"], "ok")
        self.gw.kill()
        t0 = time.monotonic()
        r = self.client.send_metadata({"after": "kill"}, protocol="testworker", wait=True, timeout=1)
        self.assertLess(time.monotonic() - t0, 3)
        self.assertFalse(r.success)
        self.assertIn("not running", r.error)


class AsyncResendTest(GatewayTest):
    """The asyncio client: a waited send whose connection breaks (ucgwd killed)
    is sent again once ucgwd is back and answered; others go on meanwhile."""

    def test_killed_and_back(self):
        import asyncio
        from ucgw.aio import AsyncUnifiedCommunicationGateway
        gw = self.gateway({"testworker": {"delay_ms": 600}})

        async def main():
            async with AsyncUnifiedCommunicationGateway(socket_path=gw.sock, timeout=20) as c:
                waited = asyncio.ensure_future(c.send_metadata({"x": 1}, protocol="testworker", wait=True))
                await asyncio.sleep(0.2)
                gw.kill()
                await asyncio.sleep(0.3)
                gw.start()
                r = await waited
                self.assertTrue(r.success, r.error)
                self.assertEqual(r.data["status"], "ok")
                gw.kill()
                t0 = time.monotonic()
                r = await c.send_metadata({"y": 1}, protocol="testworker", timeout=1)
                self.assertLess(time.monotonic() - t0, 3)
                self.assertFalse(r.success)
                self.assertIn("not running", r.error)
        asyncio.run(main())


class CodesTest(GatewayTest):
    """Both clients hand over ucgwd's code: the application acts on it, not on the words."""

    def test_codes_sync_and_async(self):
        import asyncio
        from ucgw.aio import AsyncUnifiedCommunicationGateway
        gw = self.gateway({"testworker": {}})
        c = UnifiedCommunicationGateway(socket_path=gw.sock)
        self.assertIs(c.trace("01JF0000000000000000000000").code, Code.NOT_FOUND)
        self.assertIs(c.queue("requeue", id="nosuch").code, Code.NOT_FOUND)
        self.assertIs(c.queue("bogus").code, Code.BAD_REQUEST)
        r = c.send_metadata({"a": 1}, protocol="nosuch")
        self.assertEqual((r.success, r.code), (False, Code.NOT_FOUND), r)
        r = c.send_metadata({"a": 1}, protocol="testworker", encrypt=True)
        self.assertEqual((r.success, r.code), (False, Code.UNAVAILABLE), r)
        c.close()

        async def main():
            async with AsyncUnifiedCommunicationGateway(socket_path=gw.sock, timeout=20) as a:
                r = await a.send_metadata({"a": 1}, protocol="nosuch")
                self.assertEqual((r.success, r.code), (False, Code.NOT_FOUND), r)
                r = await a.queue("bogus")
                self.assertIs(r.code, Code.BAD_REQUEST)
                r = await a.send_metadata(b"x" * (20 << 20), protocol="testworker", format="raw")
                self.assertEqual((r.success, r.code), (False, Code.TOO_LARGE), r)
        asyncio.run(main())


class NeverBlocksTest(GatewayTest):
    """Every protocol down (the test worker's server is 'down'): a send
    returns once accepted; a waited one at its timeout, with the last error."""

    def setUp(self):
        super().setUp()
        self.record = os.path.join(self.tmp, "delivered.txt")
        self.down = os.path.join(self.tmp, "down")
        open(self.down, "w").close()
        self.gw = self.gateway({"testworker": {"record": self.record, "down_file": self.down},
                                "spool": {"retry_backoff_min_ms": 100, "retry_backoff_max_ms": 300}})
        self.client = UnifiedCommunicationGateway(socket_path=self.gw.sock)

    def tearDown(self):
        self.client.close()
        super().tearDown()

    def delivered(self):
        try:
            with open(self.record) as f:
                return [l.split()[0] for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def test_default_returns_once_accepted(self):
        takes_ids = self.takes_ids()
        t0 = time.monotonic()
        r = self.client.send_metadata({"plate": "DOWN1"})
        self.assertLess(time.monotonic() - t0, 2)
        self.assertTrue(r.success, r.error)
        self.assertEqual(r.data["status"], "accepted")
        self.assertTrue(is_id(r.id), r.id)
        t0 = time.monotonic()
        w = self.client.send_metadata({"plate": "DOWN2"}, protocol="testworker", wait=True, timeout=1.5)
        self.assertLess(time.monotonic() - t0, 4)
        self.assertFalse(w.success)
        self.assertIn("not delivered within 1.5 s; ucgwd keeps it in its spool and still delivers it", w.error)
        self.assertEqual(w.data["status"], "pending")
        if takes_ids:  # the id is known before ucgwd answers: its last error is asked for
            self.assertRegex(w.error, r"\(last error: (testworker: )?test server is down\)$")
            self.assertTrue(w.data["last_error"].endswith("test server is down"), w.data)
        os.unlink(self.down)
        wait_for(lambda: r.id in self.delivered()
                 and len(self.delivered()) == 3, what="delivered once the server is back")

    def takes_ids(self):
        mine = new_id()
        return self.client.send_metadata({"probe": 1}, protocol="testworker", id=mine).id == mine

    def test_client_given_id(self):
        mine = new_id()
        r = self.client.send_metadata({"plate": "ID1"}, protocol="testworker", id=mine)
        self.assertTrue(r.success, r.error)
        if r.id != mine:
            self.skipTest("this ucgwd does not take a client's id yet")
        again = self.client.send_metadata({"plate": "ID1"}, protocol="testworker", id=mine)
        self.assertTrue(again.success, again.error)
        self.assertEqual(again.id, mine)
        os.unlink(self.down)
        wait_for(lambda: mine in self.delivered(), what="delivered")
        time.sleep(0.5)
        self.assertEqual(self.delivered().count(mine), 1)
        with self.assertRaises(ValueError):
            self.client.send_metadata({"a": 1}, id="not-a-ulid")


class ExactlyOnceTest(GatewayTest):
    """ucgwd killed (-9) and started again in the middle of a burst of sends:
    every send succeeds, and the server sees exactly the ids the sends
    returned (a resent message is the first one, never a copy under a new id;
    a message in flight at the kill may arrive twice under its own id, which
    the server's idempotency check drops)."""

    def test_kill_during_a_burst(self):
        record = os.path.join(self.tmp, "delivered.txt")
        gw = self.gateway({"testworker": {"record": record}})
        client = UnifiedCommunicationGateway(socket_path=gw.sock, timeout=30)
        mine = new_id()
        if client.send_metadata({"probe": 1}, protocol="testworker", id=mine).id != mine:
            self.skipTest("this ucgwd does not take a client's id yet")
        ids, errors, n = [mine], [], 600

        def burst():
            for i in range(n):
                r = client.send_metadata({"n": i}, protocol="testworker")
                (ids if r.success else errors).append(r.id if r.success else r.error)
        t = threading.Thread(target=burst)
        t.start()
        wait_for(lambda: len(ids) > n // 4, timeout=30, what="a quarter sent")
        gw.kill()
        gw.start()
        t.join(60)
        client.close()
        self.assertEqual(errors, [])
        self.assertEqual(len(set(ids)), n + 1)

        def seen():
            try:
                with open(record) as f:
                    return [l.split()[0] for l in f if l.strip()]
            except FileNotFoundError:
                return []
        wait_for(lambda: set(seen()) >= set(ids), timeout=30, what="every accepted id delivered")
        self.assertEqual(set(seen()) - set(ids), set(), "delivered under an id no send returned")
        print("\n%d sends, ucgwd killed once: %d deliveries of %d ids" % (n + 1, len(seen()), len(set(seen()))))


class AuthTest(GatewayTest):
    def test_api_key(self):
        saved = {k: os.environ.pop(k, None) for k in ("UCGW_API_KEY", "UCGW_JWT")}
        try:
            os.environ["UCGW_API_KEY"] = KEY  # for the harness's readiness check, and the default below
            gw = self.gateway({"security": {"require_auth": True, "api_keys": [KEY], "jwt_secret": SECRET},
                               "testworker": {}})
            r = UnifiedCommunicationGateway(socket_path=gw.sock, api_key="").status()
            self.assertFalse(r.success)
            self.assertIn("unauthorized: missing credentials", r.error)
            self.assertIs(r.code, Code.UNAUTHORIZED)
            r = UnifiedCommunicationGateway(socket_path=gw.sock, api_key="wrong").send_metadata(
                {"a": 1}, protocol="testworker", wait=True)
            self.assertFalse(r.success)
            self.assertIn("unauthorized: invalid API key", r.error)
            self.assertIs(r.code, Code.UNAUTHORIZED)
            r = UnifiedCommunicationGateway(socket_path=gw.sock, api_key=KEY).send_metadata(
                {"a": 1}, protocol="testworker", wait=True)
            self.assertTrue(r.success, r.error)
            self.assertIsNone(r.code)
            r = UnifiedCommunicationGateway(socket_path=gw.sock).status()  # $UCGW_API_KEY
            self.assertTrue(r.success, r.error)
            now = int(time.time())
            token = jwt(SECRET, {"sub": "camera-app", "iat": now, "exp": now + 300})
            r = UnifiedCommunicationGateway(socket_path=gw.sock, api_key=token).send_metadata(
                {"jwt": 1}, protocol="testworker", wait=True)
            self.assertTrue(r.success, r.error)
            old = jwt(SECRET, {"sub": "camera-app", "exp": now - 3600})
            r = UnifiedCommunicationGateway(socket_path=gw.sock, api_key=old).status()
            self.assertFalse(r.success)
            self.assertIn("unauthorized: token expired", r.error)
            self.assertIs(r.code, Code.UNAUTHORIZED)
            client = UnifiedCommunicationGateway(socket_path=gw.sock, api_key=old)
            client.api_key = token  # a renewed token, on the same object
            self.assertTrue(client.status().success)
            client.close()
        finally:
            os.environ.pop("UCGW_API_KEY", None)
            for k, v in saved.items():
                if v is not None:
                    os.environ[k] = v


if __name__ == "__main__":
    unittest.main()
