"""What is delivered is what was accepted: a file sent with send-file is
snapshotted into the spool when it is accepted (a reflink where the file
system offers one, else a copy), so the camera truncating, rewriting or
appending to its file afterwards changes nothing that goes out, over SFTP or
rsync. A spool copy that changed all the same (a hand in spool/files) is a
dead letter with the reason, never delivered changed and never answered ok."""
import hashlib
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sshd import Sshd  # noqa: E402
from ucgwtest import GatewayTest, wait_for  # noqa: E402

SIZE = 300000


def sha(data):
    return hashlib.sha256(data).hexdigest()


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def truncate(path):
    os.truncate(path, 1000)


def rewrite(path):
    with open(path, "r+b") as f:  # in place: same inode, same size, other bytes
        f.write(os.urandom(SIZE))


def append(path):
    with open(path, "ab") as f:
        f.write(os.urandom(100000))


CHANGES = {"truncated": truncate, "rewritten": rewrite, "appended": append}


class SnapshotTest(GatewayTest):
    def gw_for(self, sshd, spool_dir=None):
        """sftp and rsync to the same sshd, no fallback (each file goes by the
        protocol it names), short waits between rounds."""
        ssh = {"port": sshd.port, "key_file": sshd.user_key, "known_hosts": sshd.known_hosts, "timeout": 10}
        spool = {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}
        if spool_dir:
            spool["dir"] = spool_dir
        return self.gateway({
            "sftp": dict(ssh, host="127.0.0.1", username=sshd.user, remote_path=sshd.remote),
            "rsync": dict(ssh, remote_host="127.0.0.1", remote_user=sshd.user,
                          remote_path=sshd.remote, options=["-a"]),
            "fallback": {"enabled": False},
            "spool": spool})

    def test_changed_after_accept_arrives_as_accepted(self):
        """Each of the three changes, with sftp and with rsync paused at accept
        and resumed after the change: the server gets the accepted bytes."""
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="sftp and rsync up")
        for proto in ("sftp", "rsync"):
            self.assertEqual(gw.ctl("pause", proto)[0], 0)
        sent = {}
        for proto in ("sftp", "rsync"):
            for change in CHANGES:
                name = "%s-%s.jpg" % (proto, change)
                path = os.path.join(self.tmp, name)
                data = os.urandom(SIZE)
                with open(path, "wb") as f:
                    f.write(data)
                rc, out, err = gw.ctl("send-file", "--protocol", proto, path)
                self.assertEqual(rc, 0, err)
                sent[name] = (out.strip(), path, data)
        for name, (_, path, _) in sent.items():
            CHANGES[name.split("-")[1][:-4]](path)
        for proto in ("sftp", "rsync"):
            self.assertEqual(gw.ctl("resume", proto)[0], 0)
        wait_for(lambda: gw.ctl_json("queue") == [], timeout=60, what="every file delivered")
        for name, (mid, _, data) in sent.items():
            got = read(os.path.join(sshd.remote, name))
            self.assertIsNotNone(got, "%s (%s) did not arrive: %s" % (name, mid, gw.ctl_json("queue", "dead")))
            self.assertEqual((len(got), sha(got)), (len(data), sha(data)),
                             "%s: the server got what the file held after it was accepted" % name)
        st = gw.ctl_json("stats")
        self.assertEqual(st["sftp"]["success"] + st["rsync"]["success"], 6, st)

    def small_btrfs(self):
        """A 256 MiB btrfs on a loop device in the test's directory (a file
        system with reflinks), unmounted at the end; skipped where it cannot be."""
        if os.geteuid() != 0 or not shutil.which("mkfs.btrfs"):
            self.skipTest("needs root and mkfs.btrfs (btrfs-progs) for a file system with reflinks")
        img, mnt = os.path.join(self.tmp, "btrfs.img"), os.path.join(self.tmp, "btrfs")
        with open(img, "wb") as f:
            f.truncate(256 << 20)
        os.makedirs(mnt)
        for argv in (["mkfs.btrfs", "-q", img], ["mount", "-o", "loop", img, mnt]):
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0:
                self.skipTest("cannot make a btrfs here: %s" % r.stderr.strip())
        self.addCleanup(subprocess.run, ["umount", "-l", mnt])
        os.chmod(mnt, 0o1777)
        return mnt

    def test_reflink_where_the_file_system_shares_blocks(self):
        """On btrfs the snapshot is a reflink: the spool's copy shares the
        camera file's blocks (no bytes copied), and a rewrite of the camera's
        file in place after accept still leaves the accepted bytes to deliver."""
        mnt = self.small_btrfs()
        sshd = Sshd(self)
        gw = self.gw_for(sshd, spool_dir=os.path.join(mnt, "spool"))
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        self.assertEqual(gw.ctl("pause", "sftp")[0], 0)
        path, data = os.path.join(mnt, "cam.jpg"), os.urandom(SIZE)
        with open(path, "wb") as f:
            f.write(data)
        rc, out, err = gw.ctl("send-file", "--protocol", "sftp", path)
        self.assertEqual(rc, 0, err)
        copy = os.path.join(mnt, "spool", "files", out.strip())
        du = subprocess.run(["btrfs", "filesystem", "du", "--raw", copy], capture_output=True, text=True)
        total, exclusive = (int(x) for x in du.stdout.splitlines()[-1].split()[:2])
        self.assertGreaterEqual(total, SIZE, du.stdout)
        self.assertEqual(exclusive, 0, "not a reflink: %s" % du.stdout)
        self.assertEqual(gw.ctl_json("status")["spool"]["reflinks"], 1)
        rewrite(path)
        self.assertEqual(gw.ctl("resume", "sftp")[0], 0)
        wait_for(lambda: gw.ctl_json("queue") == [], timeout=30, what="the file delivered")
        self.assertEqual(sha(read(os.path.join(sshd.remote, "cam.jpg"))), sha(data))

    def test_spool_copy_changed_is_dead_letter_with_reason(self):
        """The spool's own copy cut or grown by a hand (not the camera's file:
        that one no longer matters): a dead letter that says what was accepted
        and what the copy holds, nothing on the server, no ok."""
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="sftp and rsync up")
        files = os.path.join(gw.dir, "state", "spool", "files")
        ids = {}
        for proto in ("sftp", "rsync"):
            self.assertEqual(gw.ctl("pause", proto)[0], 0)
            path = os.path.join(self.tmp, "%s-hand.jpg" % proto)
            with open(path, "wb") as f:
                f.write(os.urandom(SIZE))
            rc, out, err = gw.ctl("send-file", "--protocol", proto, path)
            self.assertEqual(rc, 0, err)
            ids[proto] = out.strip()
        os.truncate(os.path.join(files, ids["sftp"]), 1000)
        with open(os.path.join(files, ids["rsync"]), "ab") as f:
            f.write(b"x" * 10)
        for proto in ("sftp", "rsync"):
            self.assertEqual(gw.ctl("resume", proto)[0], 0)
        dead = wait_for(lambda: (lambda d: d if len(d) == 2 else None)(
            {m["id"]: m["last_error"] for m in gw.ctl_json("queue", "dead")}), timeout=30, what="two dead letters")
        self.assertIn("changed after it was accepted: %d bytes then 1000 bytes" % SIZE, dead[ids["sftp"]])
        self.assertIn("changed after it was accepted: %d bytes then %d bytes" % (SIZE, SIZE + 10),
                      dead[ids["rsync"]])
        self.assertEqual([f for f in os.listdir(sshd.remote) if not f.startswith(".")], [])
        st = gw.ctl_json("stats")
        self.assertEqual(st["sftp"]["success"] + st["rsync"]["success"], 0, st)


if __name__ == "__main__":
    unittest.main()
