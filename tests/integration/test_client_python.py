"""The Python client against the real daemon: the reference design's API."""
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
from ucgw import CommunicationResult, UnifiedCommunicationGateway  # noqa: E402
from ucgwtest import GatewayTest, wait_for  # noqa: E402


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
        with open(self.record) as f:
            return [l.split() for l in f if l.strip()]

    def test_send_metadata_like_the_reference(self):
        r = self.client.send_metadata({"plate": "ABC123"}, protocol="testworker", priority="high")
        self.assertIsInstance(r, CommunicationResult)
        self.assertTrue(r.success, r.error)
        self.assertEqual(r.data["protocol"], "testworker")
        self.assertEqual(self.lines()[0][0], r.data["id"])

    def test_failure_carries_the_reason(self):
        r = self.client.send_metadata({"cmd": "permfail"}, protocol="testworker")
        self.assertFalse(r.success)
        self.assertIn("permfail", r.error)
        r = self.client.send_metadata({"a": 1}, protocol="nosuch")
        self.assertFalse(r.success)
        self.assertIn("unknown metadata protocol", r.error)

    def test_send_file(self):
        p = os.path.join(self.tmp, "img.jpg")
        with open(p, "wb") as f:
            f.write(os.urandom(50000))
        r = self.client.send_file(p, protocol="testworker")
        self.assertTrue(r.success, r.error)
        self.assertEqual(int(self.lines()[0][1]), 50000)
        r = self.client.send_file(os.path.join(self.tmp, "missing.jpg"))
        self.assertFalse(r.success)
        self.assertIn("cannot open", r.error)

    def test_not_running(self):
        c = UnifiedCommunicationGateway(socket_path=os.path.join(self.tmp, "none.sock"))
        r = c.send_metadata({"a": 1})
        self.assertFalse(r.success)
        self.assertIn("not running", r.error)

    def test_threads_share_one_handle(self):
        ids, errors = [], []

        def work():
            for i in range(100):
                r = self.client.send_metadata({"n": i}, protocol="testworker", wait=(i % 2 == 0))
                (ids if r.success else errors).append(r.data["id"] if r.success else r.error)
        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(set(ids)), 400)
        wait_for(lambda: len(self.lines()) == 400, what="400 delivered")
        st = self.client.stats()
        self.assertTrue(st.success)
        self.assertEqual(st.data["testworker"]["success"], 400)


if __name__ == "__main__":
    unittest.main()
