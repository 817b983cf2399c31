"""ucgw-sftp against a real OpenSSH sshd: files arrive byte-identical, never
half under their final name, resume after a cut, only to a trusted host key."""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ctlclient import Ctl  # noqa: E402
from sshd import Sshd  # noqa: E402
from ucgwtest import BIN, FaultProxy, GatewayTest, wait_for, wait_port  # noqa: E402


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def spool_records(path):
    """(offset, type, body) of each record of a spool segment: u32 body length,
    u32 CRC-32C, u8 type, a msgpack map (supervisor/spool.c)."""
    import msgpack
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off + 9 <= len(data):
        n = struct.unpack(">I", data[off:off + 4])[0]
        yield off, data[off + 8], msgpack.unpackb(data[off + 9:off + 9 + n], raw=False)
        off += 9 + n


def strace_events(path):
    """(call, path, return value) of each system call in the log of strace -f -y:
    the path is the file of the descriptor (-y) or the first string argument;
    a call split by another thread's is put back together where it returned."""
    events, pending = [], {}
    with open(path, errors="replace") as f:
        lines = f.readlines()
    for line in lines:
        pid, _, rest = line.rstrip("\n").partition(" ")
        rest = rest.lstrip()  # strace pads the pid
        m = re.match(r"<\.\.\. \w+ resumed>(.*)", rest)
        if m:
            rest = pending.pop(pid, "") + m.group(1)
        elif rest.endswith("<unfinished ...>"):
            pending[pid] = rest[:-len("<unfinished ...>")]
            continue
        m = re.match(r"(\w+)\((.*)\)\s+=\s+(-?\d+)", rest)
        if not m:
            continue
        call, args, ret = m.group(1), m.group(2), int(m.group(3))
        f = re.search(r'"([^"]*)"', args) if call.startswith("unlink") else re.match(r"\d+<([^>]*)>", args)
        events.append((call, f.group(1) if f else "", ret))
    return events


class PasswordSshd(Sshd):
    """The test's sshd with password logins, for its user (root when the tests
    run as root, whose password is locked). So that no system file changes,
    sshd runs in a mount namespace of its own where a copy of /etc/shadow with
    a password for that user is bind-mounted over the real one; only this sshd
    sees it, and it goes away with it."""
    PASSWORD = "pl4te-camera pass"

    @staticmethod
    def usable():
        if os.geteuid() != 0:
            return "needs root (a mount namespace) for a password login without changing /etc/shadow"
        if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
            return "unshare --mount is not allowed here"
        return None

    def start(self):
        with open(self.config) as f:
            conf = f.read()
        conf = conf.replace("PasswordAuthentication no", "PasswordAuthentication yes")
        conf = conf.replace("PermitRootLogin prohibit-password", "PermitRootLogin yes")
        conf = conf.replace("LogLevel ERROR", "LogLevel INFO")
        with open(self.config, "w") as f:
            f.write(conf)
        self.hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=self.PASSWORD,
                                     capture_output=True, text=True, check=True).stdout.strip()
        self.shadow = os.path.join(self.dir, "shadow")
        with open("/etc/shadow") as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            fields = line.split(":")
            if fields[0] == self.user:
                fields[1] = self.hashed
                lines[i] = ":".join(fields)
        fd = os.open(self.shadow, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        log = open(os.path.join(self.dir, "sshd.log"), "ab")
        self.proc = self.test.spawn(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                                     'mount --bind "$0" /etc/shadow && exec /usr/sbin/sshd -D -e -f "$1"',
                                     self.shadow, self.config], stdout=log, stderr=log)
        log.close()
        wait_port(self.port, "sshd on %d" % self.port)

    def log_text(self):
        with open(os.path.join(self.dir, "sshd.log"), errors="replace") as f:
            return f.read()


class SftpTest(GatewayTest):
    def gw_for(self, sshd, spool=None, start=None, **extra):
        """A gateway with this sshd's SFTP section (extra: its keys), spool keys
        added to the test's own, start: Gateway.start's arguments."""
        s = {"host": "127.0.0.1", "port": sshd.port, "username": sshd.user, "key_file": sshd.user_key,
             "known_hosts": sshd.known_hosts, "remote_path": sshd.remote, "timeout": 10}
        gateway = extra.pop("gateway", {})
        s.update(extra)
        s = {k: v for k, v in s.items() if v is not None}  # None: leave the key out
        return self.gateway({"sftp": s, "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000,
                                                  **(spool or {})},
                             "gateway": gateway}, **(start or {}))

    def make(self, name, size):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        return path

    def test_small_and_large_files_identical(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        for name, size in (("plate-small.jpg", 100 * 1024), ("plate-large.bin", 50 * 1024 * 1024)):
            p = self.make(name, size)
            rc, out, err = gw.ctl("--json", "send-file", "--protocol", "sftp", "--wait", p)
            self.assertEqual(rc, 0, err + out)
            self.assertEqual(json.loads(out)["protocol"], "sftp")
            self.assertEqual(sha(os.path.join(sshd.remote, name)), sha(p))
        self.assertEqual([f for f in os.listdir(sshd.remote) if "ucgw-part" in f], [])
        rc, out, err = gw.ctl("send-file", "--protocol", "sftp", "--remote-name", "renamed.jpg", "--wait",
                              self.make("x.jpg", 1000))
        self.assertEqual(rc, 0, err)
        self.assertTrue(os.path.exists(os.path.join(sshd.remote, "renamed.jpg")))

    def test_same_name_again_replaces_the_file(self):
        # a re-delivery (the worker died after its rename, before its ok) and a
        # camera that reuses names both find the target there already
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        for size in (5000, 7000):
            p = self.make("again-%d.jpg" % size, size)
            o = json.loads(gw.ctl("--json", "send-file", "--protocol", "sftp", "--remote-name", "again.jpg",
                                  "--wait", p)[1])
            self.assertEqual((o["status"], o["attempts"]), ("ok", 1), o)
            self.assertEqual(sha(os.path.join(sshd.remote, "again.jpg")), sha(p))
        self.assertEqual(sorted(os.listdir(sshd.remote)), ["again.jpg"])

    def test_final_name_only_when_complete(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd, buffer_bytes=65536)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        p = self.make("big.bin", 80 * 1024 * 1024)
        final = os.path.join(sshd.remote, "big.bin")
        seen_partial = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                if os.path.exists(final) and os.path.getsize(final) != 80 * 1024 * 1024:
                    seen_partial.append(os.path.getsize(final))
        t = threading.Thread(target=watch)
        t.start()
        rc, out, err = gw.ctl("send-file", "--protocol", "sftp", "--wait", p)
        stop.set()
        t.join()
        self.assertEqual(rc, 0, err)
        self.assertEqual(seen_partial, [])
        self.assertEqual(sha(final), sha(p))

    def test_stale_part_of_another_message_is_not_resumed(self):
        # parts left by other messages of the same remote name: one of the old
        # naming (.NAME.ucgw-part) and one of another message id. Appending to
        # either would give the right size and the wrong bytes.
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        stale = {".x.jpg.ucgw-part": os.urandom(3000), ".x.jpg.01ARZ3NDEKTSV4RRFFQ69G5FAV.ucgw-part": os.urandom(3000)}
        for name, data in stale.items():
            with open(os.path.join(sshd.remote, name), "wb") as f:
                f.write(data)
        p = self.make("x.jpg", 5000)
        rc, out, err = gw.ctl("--json", "send-file", "--protocol", "sftp", "--wait", p)
        self.assertEqual(rc, 0, err + out)
        self.assertEqual(json.loads(out)["status"], "ok")
        self.assertEqual(sha(os.path.join(sshd.remote, "x.jpg")), sha(p))
        # another message's part is not this worker's to delete
        self.assertEqual(sorted(os.listdir(sshd.remote)), sorted(["x.jpg", *stale]))
        for name, data in stale.items():
            with open(os.path.join(sshd.remote, name), "rb") as f:
                self.assertEqual(f.read(), data)

    def test_longest_name_keeps_its_part_within_a_file_name(self):
        # the part's name adds the id and a suffix; for a 250-byte name (UTF-8)
        # it is shortened so that the server can create it
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        name = "\u00e9" * 122 + "x.jpg"
        self.assertEqual(len(name.encode()), 249)
        p = self.make("long.jpg", 20000)
        o = json.loads(gw.ctl("--json", "send-file", "--protocol", "sftp", "--remote-name", name, "--wait", p)[1])
        self.assertEqual((o["status"], o["attempts"]), ("ok", 1), o)
        self.assertEqual(sha(os.path.join(sshd.remote, name)), sha(p))
        self.assertEqual(os.listdir(sshd.remote), [name])

    def test_cut_transfer_resumes(self):
        # the connection goes through a proxy that counts the bytes it forwards
        # to sshd; the cut closes every connection and refuses new ones until
        # the part on the server has stopped growing
        sshd = Sshd(self)
        proxy = FaultProxy(self, sshd.port)
        self.addCleanup(proxy.ctl.close)
        self.addCleanup(proxy.ctl_file.close)
        kh = sshd.known_hosts_as("127.0.0.1", proxy.port, "proxy_known_hosts")
        gw = self.gw_for(sshd, port=proxy.port, known_hosts=kh, buffer_bytes=32768)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        size = 40 * 1024 * 1024
        p = self.make("cut.bin", size)
        proxy.command("bandwidth %d" % (16 * 1024 * 1024))
        rc, out, err = gw.ctl("send-file", "--protocol", "sftp", p)
        self.assertEqual(rc, 0, err)
        part = os.path.join(sshd.remote, ".cut.bin.%s.ucgw-part" % out.strip())
        final = os.path.join(sshd.remote, "cut.bin")

        def part_size():
            try:
                return os.path.getsize(part)
            except FileNotFoundError:
                return None
        wait_for(lambda: (part_size() or 0) > 5 * 1024 * 1024, timeout=30, step=0.01, what="part file growing")
        proxy.command("drop")
        sizes = [part_size()]
        while True:  # sshd writes what it had received, then nothing more comes
            time.sleep(0.3)
            sizes.append(part_size())
            if sizes[-1] == sizes[-2]:
                break
        at_cut = sizes[-1]
        self.assertLess(at_cut, size)
        up_at_cut = int(proxy.command("stats").split()[3])
        # from here on the part may only grow, until it becomes the final file
        seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                n = part_size()
                if n is not None:
                    seen.append(n)
                time.sleep(0.002)
        t = threading.Thread(target=watch)
        t.start()
        try:
            proxy.command("pass")  # (which lifts the cap)
            wait_for(lambda: os.path.exists(final), timeout=60, what="file completed after the cut")
        finally:
            stop.set()
            t.join()
        self.assertEqual(sha(final), sha(p))
        self.assertGreater(len(seen), 10)
        self.assertGreaterEqual(min(seen), at_cut, "the part shrank after the cut: the upload started again")
        self.assertEqual(seen, sorted(seen), "the part shrank after the cut")
        # what went to sshd after the cut: the rest of the file, plus SSH and
        # SFTP framing and a new login; not the whole file again
        after = int(proxy.command("stats").split()[3]) - up_at_cut
        rest = size - at_cut
        print("\ncut at %d of %d bytes; %d bytes sent after the cut for the %d left" % (at_cut, size, after, rest))
        self.assertGreaterEqual(after, rest)
        self.assertLess(after, rest * 1.05 + 256 * 1024)
        tr = gw.ctl_json("stats")["sftp"]
        self.assertEqual(tr["success"], 1)
        self.assertNotIn(".cut.bin.", " ".join(os.listdir(sshd.remote)))

    def test_part_of_a_refused_write_is_removed(self):
        # a write the server refuses with an SFTP status (here: past the file
        # size it allows, as on a full disk) may be followed by pipelined writes
        # it accepted, past the hole: such a part must not be resumed from its
        # size, so the failed attempt removes it (a cut connection keeps its part:
        # test_cut_transfer_resumes)
        sshd = Sshd(self, file_size_limit=256 * 1024)
        gw = self.gw_for(sshd, spool={"retry_backoff_min_ms": 4000, "retry_backoff_max_ms": 4000})
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        p = self.make("full.bin", 1024 * 1024)
        rc, out, err = gw.ctl("send-file", "--protocol", "sftp", p)
        self.assertEqual(rc, 0, err)
        mid = out.strip()
        m = wait_for(lambda: [m for m in gw.ctl_json("queue") if m["id"] == mid and m.get("last_error")],
                     what="a refused write")[0]
        self.assertIn("writing", m["last_error"])
        self.assertIn("SFTP status", m["last_error"])
        self.assertEqual([f for f in os.listdir(sshd.remote) if "ucgw-part" in f], [],
                         "the part of a refused write was left to be resumed")
        sshd.lift_file_size_limit()
        final = os.path.join(sshd.remote, "full.bin")
        wait_for(lambda: os.path.exists(final), timeout=30, what="the file once the server takes it")
        self.assertEqual(sha(final), sha(p))
        self.assertEqual(os.listdir(sshd.remote), ["full.bin"])

    def unwritable(self, d):
        """Make directory d refuse new files to the ssh user (root too: the
        immutable attribute); undone at the end of the test."""
        os.chmod(d, 0o555)
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", d], capture_output=True).returncode != 0:
                self.skipTest("chattr +i is not supported here: root could write %s" % d)
            self.addCleanup(lambda: subprocess.run(["chattr", "-i", d], capture_output=True))
        # before tearDown's rmtree, which runs before the cleanups
        self.writable_again = lambda: (subprocess.run(["chattr", "-i", d], capture_output=True)
                                       if os.geteuid() == 0 else None, os.chmod(d, 0o755))

    def tearDown(self):
        if getattr(self, "writable_again", None):
            self.writable_again()
        super().tearDown()

    def test_unwritable_directory_is_permanent(self):
        # the server refuses the file for good: permfail with the server's
        # reason, not a retry forever
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        self.unwritable(sshd.remote)
        p = self.make("denied.jpg", 5000)
        rc, out, err = gw.ctl("--json", "send-file", "--protocol", "sftp", "--wait", p)
        o = json.loads(out)
        self.assertEqual(o["attempts"], 1, o)
        self.assertNotEqual(o["status"], "ok", o)
        dead = gw.ctl_json("queue", "dead")
        self.assertEqual(len(dead), 1, dead)
        self.assertIn("permission denied", dead[0]["last_error"])
        self.assertEqual(os.listdir(sshd.remote), [])
        self.assertEqual(gw.ctl_json("stats")["sftp"]["failure"], 1)

    def test_drop_after_permission_denied_is_retried(self):
        # a permission refused earlier in the session must not make a later
        # network drop (no SFTP status at all) a permanent failure: the second
        # file is answered retry and arrives once the link is back
        sshd = Sshd(self)
        proxy = FaultProxy(self, sshd.port)
        kh = sshd.known_hosts_as("127.0.0.1", proxy.port, "proxy_known_hosts")
        gw = self.gw_for(sshd, port=proxy.port, known_hosts=kh, timeout=3)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        self.unwritable(sshd.remote)
        rc, out, err = gw.ctl("--json", "send-file", "--protocol", "sftp", "--wait", self.make("denied.jpg", 5000))
        self.assertEqual(len(gw.ctl_json("queue", "dead")), 1)
        self.writable_again()
        proxy.command("drop")  # the session's socket closes; no new connection
        p = self.make("after-drop.jpg", 50000)
        rc, out, err = gw.ctl("send-file", "--protocol", "sftp", p)
        self.assertEqual(rc, 0, err)
        mid = out.strip()
        m = wait_for(lambda: [m for m in gw.ctl_json("queue") if m["id"] == mid and m.get("last_error")],
                     what="a failed attempt")[0]
        self.assertNotIn("permission", m["last_error"])
        self.assertNotEqual(m["state"], "dead", m)
        self.assertEqual(len(gw.ctl_json("queue", "dead")), 1, "a dropped connection dead-lettered the file")
        proxy.command("pass")
        final = os.path.join(sshd.remote, "after-drop.jpg")
        wait_for(lambda: os.path.exists(final), timeout=30, what="the file after the link is back")
        self.assertEqual(sha(final), sha(p))
        self.assertEqual(gw.ctl_json("stats")["sftp"]["failure"], 1)

    def test_stop_during_uploads(self):
        # SIGTERM while three files crawl up a slow link: the worker stops its
        # upload thread before the jobs are answered and freed (a use after
        # free and a crash in OpenSSL at exit before), exits cleanly, and after
        # a restart every file arrives complete, under its final name only
        sshd = Sshd(self)
        proxy = FaultProxy(self, sshd.port)
        kh = sshd.known_hosts_as("127.0.0.1", proxy.port, "proxy_known_hosts")
        gw = self.gw_for(sshd, port=proxy.port, known_hosts=kh, gateway={"shutdown_timeout_ms": 1000})
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        proxy.command("bandwidth 4000000")
        size = 20 * 1024 * 1024
        paths = [self.make("slow%d.bin" % i, size) for i in range(3)]
        for p in paths:
            self.assertEqual(gw.ctl("send-file", "--protocol", "sftp", p)[0], 0)

        def parts():
            return [f for f in os.listdir(sshd.remote) if f.endswith(".ucgw-part")]
        wait_for(lambda: parts() and os.path.getsize(os.path.join(sshd.remote, parts()[0])) > 2 * 1024 * 1024,
                 timeout=30, step=0.05, what="an upload under way")
        t0 = time.monotonic()
        rc = gw.stop()
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, gw.log_text()[-3000:])
        # shutdown_timeout_ms, then the worker stops its thread at once
        self.assertLess(took, 6, "ucgwd took %.1f s to stop" % took)
        log = gw.log_text()
        for bad in ("AddressSanitizer", "LeakSanitizer", "SIGSEGV", "SIGABRT", "fatal signal", "runtime error:"):
            self.assertNotIn(bad, log)
        self.assertRegex(log, r"worker sftp pid \d+ exit status 0 ")
        self.assertEqual([f for f in os.listdir(sshd.remote) if not f.endswith(".ucgw-part")], [])
        proxy.command("pass")
        gw.start()
        names = sorted(os.path.basename(p) for p in paths)
        wait_for(lambda: sorted(os.listdir(sshd.remote)) == names, timeout=60, what="the three files after restart")
        for p in paths:
            self.assertEqual(sha(os.path.join(sshd.remote, os.path.basename(p))), sha(p))
        wait_for(lambda: gw.ctl_json("queue") == [], what="an empty queue")

    def start_with_hosts(self, gw, hosts):
        """Start gw's ucgwd in a mount namespace where the file hosts is /etc/hosts."""
        gw.log = open(gw.log_path, "ab")
        gw.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                                    'mount --bind "$0" /etc/hosts && exec "$1" -c "$2"', hosts,
                                    os.path.join(BIN, "ucgwd"), gw.cfg_path],
                                   stdout=gw.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: gw.ctl("status")[0] == 0, timeout=15, what="ucgwd control socket")

    def named_twice(self, label, timeout):
        """An sshd and a name resolving to ::1, then 127.0.0.1 (hosts: the file for
        start_with_hosts), with the sftp configuration for it; skipped where
        ucgwd cannot be given its own /etc/hosts."""
        why = PasswordSshd.usable()
        if why:
            self.skipTest(why.replace("a password login without changing /etc/shadow",
                                      "a name with two addresses without changing /etc/hosts"))
        sshd = Sshd(self)
        name = "sftp-%s.test" % label
        hosts = os.path.join(self.tmp, "hosts")
        self.write_hosts(hosts, name, "127.0.0.1")
        kh = sshd.known_hosts_as(name, sshd.port, "%s_known_hosts" % label)
        cfg = {"sftp": {"host": name, "port": sshd.port, "username": sshd.user, "key_file": sshd.user_key,
                        "known_hosts": kh, "remote_path": sshd.remote, "timeout": timeout}}
        return sshd, name, hosts, cfg

    @staticmethod
    def write_hosts(hosts, name, second):
        with open(hosts, "w") as f:
            f.write("::1 %s\n%s %s\n" % (name, second, name))

    def silent_address(self, host, port):
        """A listener on host:port that never answers a connect, like an address
        that does not route: its queue (backlog 0) is full with one connection
        made here, so the kernel drops every further SYN."""
        ls = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.addCleanup(ls.close)
        ls.bind((host, port))
        ls.listen(0)
        filler = socket.create_connection((host, port), timeout=5)
        self.addCleanup(filler.close)
        probe = socket.socket(ls.family)
        probe.settimeout(0.5)
        try:
            probe.connect((host, port))
            self.skipTest("a full listen queue does not drop connects on this kernel")
        except socket.timeout:
            pass
        finally:
            probe.close()

    def test_every_address_is_tried(self):
        # a name whose first address refuses (::1, where sshd does not listen)
        # and whose next one is the server: the worker goes on to the next.
        # ucgwd runs in a mount namespace with its own /etc/hosts.
        sshd, name, hosts, cfg = self.named_twice("multi", 10)
        gw = self.gateway(cfg, start=False)
        self.start_with_hosts(gw, hosts)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up through the second address")
        p = self.make("multi.jpg", 20000)
        o = json.loads(gw.ctl("--json", "send-file", "--protocol", "sftp", "--wait", p)[1])
        self.assertEqual((o["status"], o["attempts"]), ("ok", 1), o)
        self.assertEqual(sha(os.path.join(sshd.remote, "multi.jpg")), sha(p))
        gw.kill()
        # no address answers: the last one's failure is the reason
        self.write_hosts(hosts, name, "127.0.0.2")
        self.start_with_hosts(gw, hosts)
        w = wait_for(lambda: (lambda w: w if "connect to" in w["health"] else None)(gw.workers()["sftp"]),
                     what="connect failure")
        self.assertEqual(w["health"], "connect to %s:%d (127.0.0.2) failed: Connection refused" % (name, sshd.port))

    def test_an_address_that_never_answers_costs_its_share_of_the_timeout(self):
        # The name's first address (::1) takes the connect and never answers;
        # its next one is the server. The addresses share the timeout, so the
        # worker goes on after half of it (it waited all of it before); and
        # when no address answers, all of them together take the timeout once.
        sshd, name, hosts, cfg = self.named_twice("silent", 8)
        self.silent_address("::1", sshd.port)
        gw = self.gateway(cfg, start=False)
        t0 = time.monotonic()
        self.start_with_hosts(gw, hosts)
        wait_for(lambda: gw.workers()["sftp"]["connected"], timeout=20, what="sftp up through the second address")
        took = time.monotonic() - t0
        print("\nfirst address silent, timeout 8 s: connected through the second after %.1f s" % took)
        self.assertGreaterEqual(took, 3.9)  # the first address had its half
        self.assertLess(took, 7.0)  # and no more: the whole timeout is 8 s
        p = self.make("silent.jpg", 20000)
        o = json.loads(gw.ctl("--json", "send-file", "--protocol", "sftp", "--wait", p)[1])
        self.assertEqual((o["status"], o["attempts"]), ("ok", 1), o)
        self.assertEqual(sha(os.path.join(sshd.remote, "silent.jpg")), sha(p))
        gw.kill()
        # neither address answers: the timeout once for both, the last one's failure the reason
        self.silent_address("127.0.0.2", sshd.port)
        self.write_hosts(hosts, name, "127.0.0.2")
        cfg["sftp"]["timeout"] = 4
        gw.write_config(cfg)
        t0 = time.monotonic()
        self.start_with_hosts(gw, hosts)
        w = wait_for(lambda: (lambda w: w if "connect to" in w["health"] else None)(gw.workers()["sftp"]),
                     timeout=20, what="connect failure")
        took = time.monotonic() - t0
        print("neither address answers, timeout 4 s: failure reported after %.1f s" % took)
        self.assertEqual(w["health"], "connect to %s:%d (127.0.0.2) failed: Connection timed out" % (name, sshd.port))
        self.assertGreaterEqual(took, 3.9)
        self.assertLess(took, 7.0)

    def test_unknown_host_key_refused(self):
        sshd = Sshd(self)
        other = os.path.join(self.tmp, "other_known_hosts")
        os.system("ssh-keygen -q -N '' -t ed25519 -f %s/otherkey" % self.tmp)
        with open(os.path.join(self.tmp, "otherkey.pub")) as f:
            pub = " ".join(f.read().split()[:2])
        with open(other, "w") as f:
            f.write("[127.0.0.1]:%d %s\n" % (sshd.port, pub))
        gw = self.gw_for(sshd, known_hosts=other)
        w = wait_for(lambda: (lambda w: w if "host key" in w["health"] else None)(gw.workers()["sftp"]),
                     what="host key refusal")
        self.assertIn("CHANGED host key", w["health"])
        self.assertIn(sshd.fingerprint, w["health"])
        gw.ctl("send-file", "--protocol", "sftp", self.make("secret.jpg", 1000))
        time.sleep(1.5)
        self.assertEqual(os.listdir(sshd.remote), [])
        q = gw.ctl_json("queue")
        self.assertIn("refusing to upload", q[0]["last_error"])
        # a pinned fingerprint works instead of known_hosts
        gw2 = self.gw_for(sshd, known_hosts="/nonexistent", host_key_fingerprint=sshd.fingerprint)
        wait_for(lambda: gw2.workers()["sftp"]["connected"], what="pinned key accepted")

    def test_host_not_in_known_hosts_refused(self):
        # known_hosts has the server's very key, but for another port, and a
        # comment; then an empty known_hosts: the host is in neither
        sshd = Sshd(self)
        with open(sshd.known_hosts) as f:
            key = f.read().split(None, 1)[1]
        for name, text in (("other_port", "# a comment\n[127.0.0.1]:%d %s" % (sshd.port + 1, key)), ("empty", "")):
            kh = os.path.join(self.tmp, name + "_known_hosts")
            with open(kh, "w") as f:
                f.write(text)
            gw = self.gw_for(sshd, known_hosts=kh)
            w = wait_for(lambda: (lambda w: w if "host key" in w["health"] else None)(gw.workers()["sftp"]),
                         what="host key refusal")
            self.assertEqual(w["health"], "unknown host key for 127.0.0.1:%d (%s) is not in known_hosts: "
                             "refusing to upload" % (sshd.port, sshd.fingerprint))
            self.assertFalse(w["connected"])
            rc, out, err = gw.ctl("send-file", "--protocol", "sftp", self.make(name + ".jpg", 1000))
            self.assertEqual(rc, 0, err)
            wait_for(lambda: (gw.ctl_json("queue") or [{}])[0].get("last_error"), what="an attempt")
            time.sleep(1)
            self.assertEqual(os.listdir(sshd.remote), [])
            q = gw.ctl_json("queue")
            self.assertEqual(len(q), 1, q)
            self.assertIn("is not in known_hosts: refusing to upload", q[0]["last_error"])
            self.assertEqual(gw.ctl_json("stats")["sftp"]["success"], 0)
            gw.kill()

    def test_password_authentication(self):
        why = PasswordSshd.usable()
        if why:
            self.skipTest(why)
        sshd = PasswordSshd(self)
        with open("/etc/shadow") as f:  # the system's own is untouched
            self.assertNotIn(sshd.hashed, f.read())
        gw = self.gw_for(sshd, key_file=None, password=PasswordSshd.PASSWORD)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up with a password")
        p = self.make("pw.jpg", 30000)
        o = json.loads(gw.ctl("--json", "send-file", "--protocol", "sftp", "--wait", p)[1])
        self.assertEqual(o["status"], "ok", o)
        self.assertEqual(sha(os.path.join(sshd.remote, "pw.jpg")), sha(p))
        self.assertIn("Accepted password for %s from 127.0.0.1" % sshd.user, sshd.log_text())
        self.assertNotIn("Accepted publickey", sshd.log_text())
        gw.kill()
        # a wrong password: refused, said so, nothing uploaded
        gw = self.gw_for(sshd, key_file=None, password="not " + PasswordSshd.PASSWORD)
        w = wait_for(lambda: (lambda w: w if "authentication" in w["health"] else None)(gw.workers()["sftp"]),
                     what="authentication refused")
        self.assertTrue(w["health"].startswith("SSH authentication as %s failed: " % sshd.user), w["health"])
        gw.ctl("send-file", "--protocol", "sftp", self.make("pw2.jpg", 1000))
        wait_for(lambda: (gw.ctl_json("queue") or [{}])[0].get("last_error"), what="an attempt")
        self.assertEqual(os.listdir(sshd.remote), ["pw.jpg"])
        self.assertIn("Failed password for %s from 127.0.0.1" % sshd.user, sshd.log_text())

    def test_key_with_passphrase(self):
        sshd = Sshd(self)
        phrase = "a long camera passphrase"
        keys = {}
        for fmt, args in (("pem", ["-m", "PEM"]), ("openssh", [])):
            keys[fmt] = os.path.join(self.tmp, "user_key_" + fmt)
            subprocess.run(["ssh-keygen", "-q", "-N", phrase, "-t", "ecdsa", "-b", "256", *args, "-f", keys[fmt]],
                           check=True)
            with open(keys[fmt] + ".pub") as src, open(sshd.authorized, "a") as dst:
                dst.write(src.read())
        for fmt, key in keys.items():
            with open(key) as f:
                self.assertIn("ENCRYPTED" if fmt == "pem" else "OPENSSH PRIVATE KEY", f.read())
            gw = self.gw_for(sshd, key_file=key, key_passphrase=phrase)
            wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up with the %s key" % fmt)
            p = self.make("pp-%s.jpg" % fmt, 30000)
            o = json.loads(gw.ctl("--json", "send-file", "--protocol", "sftp", "--wait", p)[1])
            self.assertEqual(o["status"], "ok", o)
            self.assertEqual(sha(os.path.join(sshd.remote, "pp-%s.jpg" % fmt)), sha(p))
            gw.kill()
        # the wrong passphrase: refused, said so, nothing uploaded
        gw = self.gw_for(sshd, key_file=keys["pem"], key_passphrase="not " + phrase)
        w = wait_for(lambda: (lambda w: w if "authentication" in w["health"] else None)(gw.workers()["sftp"]),
                     what="authentication refused")
        self.assertTrue(w["health"].startswith("SSH authentication as %s failed: " % sshd.user), w["health"])
        gw.ctl("send-file", "--protocol", "sftp", self.make("pp-wrong.jpg", 1000))
        wait_for(lambda: (gw.ctl_json("queue") or [{}])[0].get("last_error"), what="an attempt")
        self.assertEqual(sorted(os.listdir(sshd.remote)), ["pp-openssh.jpg", "pp-pem.jpg"])

    def test_missing_remote_directories_created(self):
        sshd = Sshd(self)
        remote = os.path.join(sshd.remote, "a", "b", "c")
        self.assertFalse(os.path.exists(os.path.join(sshd.remote, "a")))
        gw = self.gw_for(sshd, remote_path=remote)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        p = self.make("deep.jpg", 30000)
        o = json.loads(gw.ctl("--json", "send-file", "--protocol", "sftp", "--wait", p)[1])
        self.assertEqual((o["status"], o["attempts"]), ("ok", 1), o)
        self.assertEqual(sha(os.path.join(remote, "deep.jpg")), sha(p))
        self.assertEqual(os.listdir(remote), ["deep.jpg"])

    def test_missing_file_and_unreadable(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd, gateway={"control_socket_mode": "0666"})
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        missing = os.path.join(self.tmp, "nope.jpg")
        rc, out, err = gw.ctl("send-file", "--protocol", "sftp", missing)
        self.assertEqual((rc, err), (1, "ucgwctl: cannot open %s: No such file or directory\n" % missing))
        # unreadable: ucgwctl opens the file with its caller's rights, so run it
        # as a user that may use the control socket but not read the file
        if os.geteuid() != 0:
            self.skipTest("needs root to run ucgwctl as another user")
        os.chmod(self.tmp, 0o711)  # the socket and the files below, reachable by nobody
        os.chmod(gw.dir, 0o711)
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                     os.path.join(BIN, "ucgwctl"), "-s", gw.sock, "--json", "send-file", "--protocol", "sftp"]
        readable, secret = self.make("readable.jpg", 1000), self.make("secret.jpg", 1000)
        os.chmod(readable, 0o644)
        os.chmod(secret, 0o600)
        self.assertEqual(os.stat(secret).st_uid, 0)
        # the socket is open to nobody: a file it can read goes out
        r = subprocess.run([*as_nobody, "--wait", readable], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr + r.stdout)
        self.assertEqual(json.loads(r.stdout)["status"], "ok")
        self.assertEqual(sha(os.path.join(sshd.remote, "readable.jpg")), sha(readable))
        r = subprocess.run([*as_nobody, "--wait", secret], capture_output=True, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stdout, r.stderr),
                         (1, "", "ucgwctl: cannot open %s: Permission denied\n" % secret))
        # nor may it have the daemon open the file for it by path alone
        raw = ("import msgpack, socket, struct, sys\n"
               "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
               "b = msgpack.packb({'t': 32, 'v': 1, 'seq': 7, 'name': 'send-file', "
               "'body': {'path': sys.argv[2], 'protocol': 'sftp'}})\n"
               "s.sendall(struct.pack('>I', len(b)) + b)\n"
               "n = struct.unpack('>I', s.recv(4))[0]; d = b''\n"
               "while len(d) < n: d += s.recv(n - len(d))\n"
               "print(msgpack.unpackb(d).get('error'))\n")
        r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
                            "-c", raw, gw.sock, secret], capture_output=True, text=True, timeout=60)
        self.assertIn("send-file: a path without the open file is accepted only from root", r.stdout, r.stderr)
        self.assertEqual(gw.ctl_json("queue"), [])
        self.assertEqual(os.listdir(sshd.remote), ["readable.jpg"])
        self.assertEqual(gw.ctl_json("stats")["sftp"]["success"], 1)

    def test_copy_of_a_delivered_file_goes_only_after_its_done_is_synced(self):
        # The spool removes its copy of a delivered file once the DONE record
        # that cancels the file's ADD is written. Written is not durable: after
        # a power cut the ADD could be on disk without its DONE, the copy gone,
        # and the next start made a dead letter of a file that had arrived. So
        # unless spool.fsync is never, a sync of the segment holding the DONE
        # comes between its write and the unlink of the copy. Seen from
        # outside with strace: every write to a segment, every sync, every
        # unlink; the DONE records' offsets come from the segment afterwards.
        if not shutil.which("strace"):
            self.skipTest("needs strace")
        if subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "true"], capture_output=True).returncode:
            self.skipTest("strace cannot trace here (ptrace not allowed)")
        sshd = Sshd(self)
        paths = [self.make("p%02d.jpg" % i, 20000 + i) for i in range(20)]
        for mode in ("always", "batch", "never"):
            trace = os.path.join(self.tmp, "strace-%s.txt" % mode)
            wrapper = ["strace", "-f", "-qq", "-y", "-s", "0", "-o", trace,
                       "-e", "trace=write,fdatasync,fsync,unlink,unlinkat", "--"]
            # LeakSanitizer cannot run under ptrace (the ASan build): no leak check in these runs
            env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"}
            gw = self.gw_for(sshd, spool={"fsync": mode}, start={"wrapper": wrapper, "env": env})
            wait_for(lambda: gw.workers()["sftp"]["connected"], timeout=30, what="sftp up")
            for f in os.listdir(sshd.remote):
                os.remove(os.path.join(sshd.remote, f))
            for p in paths:
                self.assertEqual(gw.ctl("send-file", "--protocol", "sftp", p)[0], 0)
            wait_for(lambda: all(os.path.exists(os.path.join(sshd.remote, os.path.basename(p))) for p in paths),
                     timeout=60, what="20 files over SFTP (fsync %s)" % mode)
            files = os.path.join(gw.dir, "state", "spool", "files")
            wait_for(lambda: os.listdir(files) == [], what="the spool's copies removed (fsync %s)" % mode)
            os.kill(gw.daemon_pid(), signal.SIGTERM)
            self.assertEqual(gw.proc.wait(30), 0)
            seg = os.path.join(gw.dir, "state", "spool", "seg")
            done_at = {}  # id -> (segment, offset of its DONE record)
            for name in os.listdir(seg):
                for off, rtype, body in spool_records(os.path.join(seg, name)):
                    if rtype == 2:
                        done_at[body["id"]] = (os.path.join(seg, name), off)
            events = strace_events(trace)
            written = {}  # segment -> bytes written so far
            synced = []   # (event index, segment)
            writes = []   # (event index, segment, start, end)
            unlinked = {}  # id -> event index
            for i, (call, path, ret) in enumerate(events):
                if "/spool/seg/" in path and call == "write" and ret > 0:
                    start = written.get(path, 0)
                    writes.append((i, path, start, start + ret))
                    written[path] = start + ret
                elif "/spool/seg/" in path and call in ("fdatasync", "fsync") and ret == 0:
                    synced.append((i, path))
                elif call in ("unlink", "unlinkat") and "/spool/files/" in path and ret == 0:
                    unlinked[os.path.basename(path)] = i
            self.assertEqual(len(unlinked), len(paths), "unlinks of the spool's copies (fsync %s)" % mode)
            if mode == "never":
                self.assertEqual(synced, [], "fsync never syncs no segment")
                continue
            for mid, at in unlinked.items():
                segpath, off = done_at[mid]
                w = [i for i, p, a, b in writes if p == segpath and a <= off < b]
                self.assertEqual(len(w), 1, "the write that carried the DONE of %s" % mid)
                self.assertTrue(any(w[0] < i < at for i, p in synced if p == segpath),
                                "fsync %s: the copy of %s was removed (event %d) after its DONE was written "
                                "(event %d) with no sync of %s in between" % (mode, mid, at, w[0], segpath))

    def test_many_files_in_flight_arrive_whole_and_once(self):
        # several lanes at once, sizes from empty to several times the bytes
        # a file keeps in flight: each arrives whole, under its name, once
        sshd = Sshd(self)
        gw = self.gw_for(sshd, files_in_flight=6, buffer_bytes=65536)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        sizes = [0, 1, 4095, 30000, 102400, 300 * 1024, 2 * 1024 * 1024 + 7]
        paths = [self.make("m%03d.jpg" % i, sizes[i % len(sizes)]) for i in range(49)]
        ctl = Ctl(gw.sock)
        self.addCleanup(ctl.close)
        for p in paths:
            ctl.request("send-file", {"path": p, "protocol": "sftp"})
        for _ in paths:
            ctl.reply()
        wait_for(lambda: gw.ctl_json("stats")["sftp"]["success"] == len(paths), timeout=120, what="all acknowledged")
        names = sorted(os.listdir(sshd.remote))
        self.assertEqual(names, sorted(os.path.basename(p) for p in paths))
        for p in paths:
            self.assertEqual(sha(os.path.join(sshd.remote, os.path.basename(p))), sha(p), p)
        st = gw.ctl_json("stats")["sftp"]
        self.assertEqual(st["success"], len(paths), st)
        self.assertEqual(st.get("failure", 0), 0, st)
        with open(gw.log_path, errors="replace") as f:
            self.assertNotIn("connecting again", f.read(), "a session broke")

    def test_cut_mid_batch_loses_nothing_and_shows_no_half_file(self):
        sshd = Sshd(self)
        proxy = FaultProxy(self, sshd.port)
        self.addCleanup(proxy.ctl.close)
        self.addCleanup(proxy.ctl_file.close)
        kh = sshd.known_hosts_as("127.0.0.1", proxy.port, "proxy_known_hosts")
        gw = self.gw_for(sshd, port=proxy.port, known_hosts=kh, files_in_flight=4, buffer_bytes=65536)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        size = 256 * 1024
        paths = [self.make("c%03d.jpg" % i, size) for i in range(40)]
        proxy.command("bandwidth %d" % (2 * 1024 * 1024))
        bad, stop = [], threading.Event()

        def watch():  # a final name never shows fewer bytes than the file has
            while not stop.is_set():
                for n in os.listdir(sshd.remote):
                    if n.endswith(".jpg"):
                        try:
                            got = os.path.getsize(os.path.join(sshd.remote, n))
                        except FileNotFoundError:
                            continue
                        if got != size:
                            bad.append((n, got))
                time.sleep(0.002)
        t = threading.Thread(target=watch)
        t.start()
        try:
            ctl = Ctl(gw.sock)
            self.addCleanup(ctl.close)
            for p in paths:
                ctl.request("send-file", {"path": p, "protocol": "sftp"})
            for _ in paths:
                ctl.reply()
            wait_for(lambda: len([n for n in os.listdir(sshd.remote) if n.endswith(".jpg")]) >= 5, timeout=60,
                     step=0.01, what="some files done")
            proxy.command("drop")
            time.sleep(1)
            self.assertLess(len([n for n in os.listdir(sshd.remote) if n.endswith(".jpg")]), len(paths))
            proxy.command("pass")
            wait_for(lambda: gw.ctl_json("stats")["sftp"]["success"] == len(paths), timeout=120,
                     what="every file after the cut")
        finally:
            stop.set()
            t.join()
        self.assertEqual(bad, [], "a final name showed part of a file")
        with open(gw.log_path, errors="replace") as f:
            self.assertIn("connecting again", f.read(), "the cut did not break the session mid-batch")
        for p in paths:
            self.assertEqual(sha(os.path.join(sshd.remote, os.path.basename(p))), sha(p), p)
        self.assertEqual(sorted(n for n in os.listdir(sshd.remote)), sorted(os.path.basename(p) for p in paths))

    def test_hundred_small_files_one_session(self):
        sshd = Sshd(self)
        gw = self.gw_for(sshd)
        wait_for(lambda: gw.workers()["sftp"]["connected"], what="sftp up")
        paths = [self.make("s%03d.jpg" % i, 10240) for i in range(100)]
        t0 = time.monotonic()
        for p in paths:
            self.assertEqual(gw.ctl("send-file", "--protocol", "sftp", p)[0], 0)
        wait_for(lambda: len([f for f in os.listdir(sshd.remote) if f.endswith(".jpg")]) == 100, timeout=60,
                 what="100 files")
        print("\n100 files of 10 KiB over SFTP in %.2f s" % (time.monotonic() - t0))
        for p in paths[:5]:
            self.assertEqual(sha(os.path.join(sshd.remote, os.path.basename(p))), sha(p))


if __name__ == "__main__":
    unittest.main()
