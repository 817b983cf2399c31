"""The README's first command ends in tests/demo.py: local servers, ucgwd with
all five protocols, sample detections and an image through each. It must keep
working: it exits 0 only when every send was delivered, the servers got four
detections and two whole images, and ucgwd stopped cleanly."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import SRC  # noqa: E402


class DemoTest(unittest.TestCase):
    def test_demo_delivers_everything(self):
        r = subprocess.run(["/usr/bin/python3", os.path.join(SRC, "tests", "demo.py")], capture_output=True,
                           text=True, timeout=300, env=os.environ.copy())
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
        out = r.stdout
        for proto in ("websocket", "rest", "mqtt", "sftp", "rsync"):
            self.assertIn(" delivered by %s after 1 attempt(s)" % proto, out)
        self.assertEqual(out.count(" delivered by "), 6, out)
        self.assertIn("stopping ucgwd (SIGTERM): exit status 0", out)
        self.assertTrue(out.rstrip().endswith("demo done: 4 detections and 2 images delivered, each acknowledged "
                                              "by its server"), out[-500:])
        self.assertNotIn("DEMO FAILED", r.stderr)


if __name__ == "__main__":
    unittest.main()
