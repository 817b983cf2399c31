"""ucgw-rsync against a real sshd and the real rsync: files arrive identical,
queued files go together in one run, --delete and a missing rsync are refused."""
import hashlib
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sshd import Sshd  # noqa: E402
from ucgwtest import GatewayTest, wait_for  # noqa: E402


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class RsyncTest(GatewayTest):
    def gw_for(self, sshd, **extra):
        r = {"remote_host": "127.0.0.1", "port": sshd.port, "remote_user": sshd.user, "key_file": sshd.user_key,
             "known_hosts": sshd.known_hosts, "remote_path": sshd.remote, "options": ["-a"], "timeout": 60}
        r.update(extra)
        return self.gateway({"rsync": r})

    def make(self, name, size):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        return path

    def test_small_and_large_identical(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        for name, size in (("a.jpg", 100 * 1024), ("big.bin", 30 * 1024 * 1024)):
            p = self.make(name, size)
            rc, out, err = gw.ctl("--json", "send-file", "--protocol", "rsync", "--wait", p)
            self.assertEqual(rc, 0, err + out)
            self.assertEqual(json.loads(out)["protocol"], "rsync")
            self.assertEqual(sha(os.path.join(sshd.remote, name)), sha(p))

    def test_queued_files_share_runs(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        paths = [self.make("f%03d.jpg" % i, 100 * 1024) for i in range(100)]
        t0 = time.monotonic()
        for p in paths:
            self.assertEqual(gw.ctl("send-file", "--protocol", "rsync", p)[0], 0)
        wait_for(lambda: len([f for f in os.listdir(sshd.remote) if f.endswith(".jpg")]) == 100, timeout=120,
                 what="100 files")
        print("\n100 files of 100 KiB over rsync in %.2f s" % (time.monotonic() - t0))
        for p in paths[::20]:
            self.assertEqual(sha(os.path.join(sshd.remote, os.path.basename(p))), sha(p))
        wait_for(lambda: gw.ctl_json("stats")["rsync"]["success"] == 100, what="100 ok results")

    def test_delete_option_refused(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd, options=["-azP", "--delete"])
        w = gw.wait_worker("rsync", lambda w: w["state"] == "failed")
        self.assertEqual(w["last_exit"], "exit status 2")
        self.assertIn("rsync.options: --delete is refused: it can delete files on the server", gw.log_text())

    def test_missing_rsync_binary(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd, rsync_path="/nonexistent/rsync")
        w = gw.wait_worker("rsync", lambda w: w["state"] == "failed")
        self.assertEqual(w["last_exit"], "exit status 2")
        self.assertIn("program '/nonexistent/rsync' not found", gw.log_text())

    def test_unknown_host_key_refused(self):
        sshd = Sshd(self)
        kh = os.path.join(self.tmp, "empty_known_hosts")
        open(kh, "w").close()
        gw = self.gw_for(sshd, known_hosts=kh)
        gw.ctl("send-file", "--protocol", "rsync", self.make("secret.jpg", 1000))
        q = wait_for(lambda: [m for m in gw.ctl_json("queue") if m["last_error"]], what="refusal")
        self.assertIn("Host key verification failed", q[0]["last_error"])
        self.assertFalse(os.path.exists(os.path.join(sshd.remote, "secret.jpg")))


if __name__ == "__main__":
    unittest.main()
