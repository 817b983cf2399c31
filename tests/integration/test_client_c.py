"""libucgw (clients/c) against the real daemon: its test program exercises the
blocking and non-blocking calls, errors, files, threads and stats."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, GatewayTest, wait_for  # noqa: E402


class CClientTest(GatewayTest):
    def test_libucgw(self):
        record = os.path.join(self.tmp, "delivered.txt")
        gw = self.gateway({"testworker": {"record": record}})
        f = os.path.join(self.tmp, "img.jpg")
        with open(f, "wb") as fh:
            fh.write(os.urandom(20000))
        r = subprocess.run([os.path.join(BIN, "test_libucgw"), gw.sock, f], capture_output=True, text=True,
                           timeout=120)
        print("\n" + r.stdout)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(record) as fh:
            lines = [l for l in fh if l.strip()]
        self.assertEqual(len(lines), 1 + 1 + 50 + 800)


if __name__ == "__main__":
    unittest.main()
