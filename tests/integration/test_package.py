"""Packaging: the systemd unit verifies and its exposure score is printed; the
.deb builds with CPack and lintian finds no error (warnings are printed and
justified in packaging/lintian-overrides.md)."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, SRC  # noqa: E402


class PackageTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ucgw-pkg-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def unit_for_here(self):
        """The unit with ExecStart pointing at this build, and its man pages findable."""
        man = os.path.join(self.tmp, "man")
        for page, sec in (("ucgwd.8", "8"), ("ucgwctl.8", "8"), ("ucgw.yaml.5", "5")):
            os.makedirs(os.path.join(man, "man" + sec), exist_ok=True)
            shutil.copy(os.path.join(SRC, "docs", "man", page), os.path.join(man, "man" + sec, page))
        text = open(os.path.join(SRC, "packaging", "ucgw.service")).read()
        path = os.path.join(self.tmp, "ucgw.service")
        with open(path, "w") as f:
            f.write(text.replace("/usr/sbin/ucgwd", os.path.join(BIN, "ucgwd")))
        return path, dict(os.environ, MANPATH=man)

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
    def test_unit_verifies(self):
        path, env = self.unit_for_here()
        r = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = subprocess.run(["systemd-analyze", "security", "--offline=true", path], capture_output=True, text=True,
                           env=env)
        score = [l for l in r.stdout.splitlines() if "Overall exposure level" in l]
        print("\n" + (score[0] if score else r.stdout[-300:]))
        self.assertTrue(score)
        self.assertLess(float(score[0].split("level for ucgw.service:")[1].split()[0]), 3.0)

    @unittest.skipUnless(shutil.which("lintian") and shutil.which("dpkg-deb"), "lintian not installed")
    def test_deb_builds_and_lintian_is_clean(self):
        b = os.path.join(self.tmp, "build-deb")
        subprocess.run(["cmake", "-S", SRC, "-B", b, "-DCMAKE_INSTALL_PREFIX=/usr", "-DUCGW_PACKAGE=ON",
                        "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
        subprocess.run(["cmake", "--build", b, "-j2"], check=True, capture_output=True)
        subprocess.run(["cpack", "-G", "DEB"], cwd=b, check=True, capture_output=True)
        debs = [f for f in os.listdir(b) if f.endswith(".deb")]
        self.assertEqual(len(debs), 1)
        deb = os.path.join(b, debs[0])
        listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
        for path in ("./usr/sbin/ucgwd", "./usr/bin/ucgwctl", "./usr/libexec/ucgw/ucgw-mqtt",
                     "./usr/libexec/ucgw/ucgw-sftp", "./etc/ucgw/ucgw.yaml", "./lib/systemd/system/ucgw.service",
                     "./usr/lib/tmpfiles.d/ucgw.conf", "./usr/share/man/man8/ucgwd.8.gz",
                     "./usr/share/man/man5/ucgw.yaml.5.gz", "./usr/share/doc/ucgw/configuration.md"):
            self.assertIn(path, listing)
        conffiles = subprocess.run(["dpkg-deb", "-I", deb, "conffiles"], capture_output=True, text=True).stdout
        self.assertIn("/etc/ucgw/ucgw.yaml", conffiles)
        r = subprocess.run(["lintian", "--tag-display-limit", "0", deb], capture_output=True, text=True)
        out = r.stdout + r.stderr
        print("\nlintian:\n" + "\n".join(l for l in out.splitlines() if l[:2] in ("E:", "W:")))
        self.assertFalse([l for l in out.splitlines() if l.startswith("E:")], out)
        # the shipped configuration is valid as shipped
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", os.path.join(SRC, "packaging", "ucgw.yaml")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare"), "needs root and unshare")
    def test_postinst_restarts_a_running_service_on_upgrade(self):
        """packaging/debian/postinst as dh_installsystemd --no-start writes it: the
        units reloaded; on an upgrade (configure with the old version) try-restart,
        which restarts ucgw only if it runs; nothing started on a first install.
        Run with the commands it calls stubbed, under a private /run that holds
        /run/systemd/system (the test of 'systemd is running')."""
        stubs = os.path.join(self.tmp, "stubs")
        log = os.path.join(self.tmp, "calls")
        os.makedirs(stubs)
        for cmd in ("systemctl", "deb-systemd-invoke", "systemd-tmpfiles", "adduser", "chgrp", "getent"):
            with open(os.path.join(stubs, cmd), "w") as f:
                f.write('#!/bin/sh\necho "%s $*" >> "%s"\n' % (cmd, log))
            os.chmod(os.path.join(stubs, cmd), 0o755)
        postinst = os.path.join(SRC, "packaging", "debian", "postinst")

        def run(args, systemd=True):
            if os.path.exists(log):
                os.unlink(log)
            inner = 'PATH="%s:$PATH" sh "%s" %s' % (stubs, postinst, args)
            if systemd:
                inner = "mount -t tmpfs none /run && mkdir -p /run/systemd/system && " + inner
            subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", inner], check=True)
            with open(log) as f:
                return [l.strip() for l in f if not l.startswith(("getent", "chgrp"))]
        self.assertEqual(run("configure"), ["systemd-tmpfiles --create /usr/lib/tmpfiles.d/ucgw.conf",
                                            "systemctl --system daemon-reload"])
        self.assertEqual(run("configure 0.1.0-1"), ["systemd-tmpfiles --create /usr/lib/tmpfiles.d/ucgw.conf",
                                                    "systemctl --system daemon-reload",
                                                    "deb-systemd-invoke try-restart ucgw.service"])
        self.assertEqual(run("abort-upgrade 0.2.0-1"), ["systemctl --system daemon-reload",
                                                        "deb-systemd-invoke try-restart ucgw.service"])
        self.assertEqual(run("configure 0.1.0-1", systemd=False), [])


if __name__ == "__main__":
    unittest.main()
