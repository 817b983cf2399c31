"""Packaging: the systemd unit verifies and its exposure score is printed; the
.deb builds with CPack and lintian finds no error (warnings are printed and
justified in packaging/lintian-overrides.md)."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, SRC  # noqa: E402


_DEBS = {}


def read(path):
    with open(path) as f:
        return f.read()


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def deb_field(deb, name):
    return subprocess.run(["dpkg-deb", "-I", deb, name], capture_output=True, text=True).stdout


def built_debs():
    """The packages, built once per run of this file: {package name: path}."""
    if not _DEBS:
        b = tempfile.mkdtemp(prefix="ucgw-deb-")
        subprocess.run(["cmake", "-S", SRC, "-B", b, "-DCMAKE_INSTALL_PREFIX=/usr", "-DUCGW_PACKAGE=ON",
                        "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
        subprocess.run(["cmake", "--build", b, "-j2"], check=True, capture_output=True)
        subprocess.run(["cpack", "-G", "DEB"], cwd=b, check=True, capture_output=True)
        for f in os.listdir(b):
            if f.endswith((".deb", ".ddeb")):
                _DEBS[f.split("_")[0]] = os.path.join(b, f)
        _DEBS["_dir"] = b
    return {k: v for k, v in _DEBS.items() if k != "_dir"}


def tearDownModule():
    if "_dir" in _DEBS:
        shutil.rmtree(_DEBS["_dir"], ignore_errors=True)


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
    def test_debs_build_hardened_and_lintian_is_clean(self):
        debs = built_debs()
        self.assertEqual(sorted(debs), ["libucgw-dev", "libucgw0", "libucgw0-dbgsym", "python3-ucgw", "ucgw",
                                        "ucgw-dbgsym"])
        root = os.path.join(self.tmp, "root")
        for name in debs:
            subprocess.run(["dpkg-deb", "-x", debs[name], root], check=True)
        for path in ("usr/sbin/ucgwd", "usr/bin/ucgwctl", "usr/libexec/ucgw/ucgw-mqtt", "usr/libexec/ucgw/ucgw-sftp",
                     "etc/ucgw/ucgw.yaml", "lib/systemd/system/ucgw.service", "usr/lib/tmpfiles.d/ucgw.conf",
                     "usr/share/man/man8/ucgwd.8.gz", "usr/share/man/man5/ucgw.yaml.5.gz",
                     "usr/share/doc/ucgw/configuration.md", "usr/share/doc/ucgw/operations.md",
                     "usr/share/doc/ucgw/examples/ucgw.yaml", "usr/lib/python3/dist-packages/ucgw/__init__.py",
                     "usr/lib/python3/dist-packages/ucgw/py.typed", "usr/lib/python3/dist-packages/ucgw/aio.py",
                     "usr/include/ucgw.h", "usr/lib/x86_64-linux-gnu/pkgconfig/ucgw.pc",
                     "usr/lib/x86_64-linux-gnu/libucgw.so.0", "usr/share/man/man3/ucgw.3.gz",
                     "usr/share/doc/libucgw-dev/examples/ucgw-send.c", "usr/share/doc/libucgw0/copyright",
                     "usr/share/doc/python3-ucgw/copyright"):
            self.assertTrue(os.path.lexists(os.path.join(root, path)), path)
        # no protocol of the test build ships (workers/protocols.h): not its worker, not its
        # section, not in the reference
        self.assertEqual(sorted(os.listdir(os.path.join(root, "usr/libexec/ucgw"))),
                         ["ucgw-mqtt", "ucgw-rest", "ucgw-rsync", "ucgw-sftp", "ucgw-websocket"])
        ucgwd = os.path.join(root, "usr/sbin/ucgwd")
        ref = run([ucgwd, "--config-reference"])
        self.assertNotIn("testworker", ref)
        self.assertNotIn("toyproto", ref)
        cfg = os.path.join(self.tmp, "test-row.yaml")
        with open(cfg, "w") as f:
            f.write("testworker: {}\n")
        r = subprocess.run([ucgwd, "-n", "-c", cfg], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown section 'testworker'", r.stderr)
        self.assertIn("/etc/ucgw/ucgw.yaml", deb_field(debs["ucgw"], "conffiles"))
        self.assertIn("libucgw.so.0 libucgw0 #MINVER#", deb_field(debs["libucgw0"], "symbols"))
        self.assertIn("activate-noawait ldconfig", deb_field(debs["libucgw0"], "triggers"))
        # the symbols file lists exactly what the library exports
        lib = os.path.join(root, "usr/lib/x86_64-linux-gnu/libucgw.so.0")
        exported = {l.split()[2].replace("@@", "@") for l in run(["nm", "-D", "--defined-only", lib]).splitlines()}
        listed = {l.split()[0] for l in deb_field(debs["libucgw0"], "symbols").splitlines() if l.startswith(" ")}
        self.assertEqual(exported - {"UCGW_0"}, listed - {"UCGW_0@UCGW_0"})
        self.assertIn("SONAME               libucgw.so.0", run(["objdump", "-p", lib]))
        self.check_hardened_and_split(root, debs)
        out = ""
        for name, deb in sorted(debs.items()):
            if deb.endswith(".deb"):
                r = subprocess.run(["lintian", "--tag-display-limit", "0", deb], capture_output=True, text=True)
                out += r.stdout + r.stderr
        print("\nlintian:\n" + "\n".join(l for l in out.splitlines() if l[:2] in ("E:", "W:")))
        self.assertFalse([l for l in out.splitlines() if l.startswith("E:")], out)
        # every warning is one packaging/lintian-overrides.md explains
        with open(os.path.join(SRC, "packaging", "lintian-overrides.md")) as f:
            explained = f.read()
        for l in out.splitlines():
            if l.startswith("W:"):
                self.assertIn("`%s" % l.split()[2], explained, l)
        # the shipped configuration is valid as shipped
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", os.path.join(SRC, "packaging", "ucgw.yaml")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)

    def check_hardened_and_split(self, root, debs):
        """dpkg-buildflags' hardening in every binary; stripped, with the debug
        information in the -dbgsym packages under the binaries' build ids."""
        dbg = os.path.join(self.tmp, "dbg")
        for name in ("ucgw-dbgsym", "libucgw0-dbgsym"):
            subprocess.run(["dpkg-deb", "-x", debs[name], dbg], check=True)
        bins = ["usr/sbin/ucgwd", "usr/bin/ucgwctl", "usr/lib/x86_64-linux-gnu/libucgw.so.0"] + \
            ["usr/libexec/ucgw/ucgw-" + w for w in ("websocket", "rest", "mqtt", "sftp", "rsync")]
        for b in bins:
            path = os.path.join(root, b)
            dyn = run(["readelf", "-d", "-W", path])
            self.assertRegex(dyn, r"\(FLAGS\)\s+BIND_NOW|\(BIND_NOW\)", b)
            self.assertIn("GNU_RELRO", run(["readelf", "-l", "-W", path]), b)
            imports = run(["nm", "-D", "--undefined-only", path])
            self.assertIn("__stack_chk_fail", imports, b)
            self.assertRegex(imports, r"__\w+_chk\b", b)
            info = run(["file", "-L", path])
            self.assertIn("stripped", info, b)
            self.assertNotIn("not stripped", info, b)
            if not b.endswith(".so.0"):
                self.assertIn("pie executable", info, b)
            build_id = re.search(r"BuildID\[sha1\]=([0-9a-f]+)", info).group(1)
            debug = os.path.join(dbg, "usr/lib/debug/.build-id", build_id[:2], build_id[2:] + ".debug")
            self.assertTrue(os.path.exists(debug), "%s: no %s" % (b, debug))
            self.assertIn(".debug_info", run(["readelf", "-S", "-W", debug]), b)
        # a crashing worker's backtrace (backtrace_symbols_fd) names its functions
        self.assertIn("worker_result", run(["nm", "-D", "--defined-only",
                                            os.path.join(root, "usr/libexec/ucgw/ucgw-mqtt")]))

    def test_crash_backtrace_names_functions(self):
        """A protocol worker that crashes prints a backtrace whose frames in
        the worker are named (its functions are exported), not bare offsets."""
        import glob
        from ucgwtest import Gateway, wait_for
        peer = subprocess.Popen([os.path.join(BIN, "lpr-peer"), "--port", "0"], stdout=subprocess.PIPE, text=True)
        try:
            port = int(peer.stdout.readline().split()[2])
            gw = Gateway(self.tmp, {"rest": {"base_url": "http://127.0.0.1:%d" % port}}).start()
            try:
                gw.wait_worker("rest", lambda w: w["connected"], what="rest connected")
                os.kill(gw.workers()["rest"]["pid"], 11)
                wait_for(lambda: glob.glob(os.path.join(gw.dir, "crash", "rest", "*.log")), what="a crash log")
                path = glob.glob(os.path.join(gw.dir, "crash", "rest", "*.log"))[0]
                wait_for(lambda: "--- end ---" in read(path), what="the whole crash log")
                text = read(path)
            finally:
                gw.stop()
                if gw.log:
                    gw.log.close()
        finally:
            peer.terminate()
            peer.wait(10)
            peer.stdout.close()
        self.assertIn("fatal signal 11 (SIGSEGV), backtrace:", text)
        self.assertRegex(text, r"ucgw-rest\(worker_main\+0x[0-9a-f]+\)", text)  # was ucgw-rest(+0x...)

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
        for cmd in ("systemctl", "deb-systemd-invoke", "systemd-tmpfiles", "adduser", "chgrp", "getent", "mkdir",
                    "chown", "chmod"):
            with open(os.path.join(stubs, cmd), "w") as f:
                f.write('#!/bin/sh\necho "%s $*" >> "%s"\n' % (cmd, log))
            os.chmod(os.path.join(stubs, cmd), 0o755)
        postinst = os.path.join(SRC, "packaging", "debian", "postinst")

        def run(args, systemd=True, everything=False):
            if os.path.exists(log):
                os.unlink(log)
            inner = 'PATH="%s:$PATH" sh "%s" %s' % (stubs, postinst, args)
            if systemd:
                inner = "mount -t tmpfs none /run && mkdir -p /run/systemd/system && " + inner
            subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", inner], check=True)
            with open(log) as f:
                return [l.strip() for l in f if everything or not l.startswith(("getent", "chgrp", "mkdir", "chown",
                                                                                "chmod"))]
        self.assertEqual(run("configure"), ["systemd-tmpfiles --create /usr/lib/tmpfiles.d/ucgw.conf",
                                            "systemctl --system daemon-reload"])
        self.assertEqual(run("configure 0.1.0-1"), ["systemd-tmpfiles --create /usr/lib/tmpfiles.d/ucgw.conf",
                                                    "systemctl --system daemon-reload",
                                                    "deb-systemd-invoke try-restart ucgw.service"])
        self.assertEqual(run("abort-upgrade 0.2.0-1"), ["systemctl --system daemon-reload",
                                                        "deb-systemd-invoke try-restart ucgw.service"])
        self.assertEqual(run("configure 0.1.0-1", systemd=False), [])
        # without systemd the directories are made too, each owned by ucgw, mode 0750
        calls = run("configure", systemd=False, everything=True)
        for d in ("/var/lib/ucgw", "/var/log/ucgw", "/run/ucgw"):
            self.assertIn("mkdir -p " + d, calls)
            self.assertIn("chown ucgw:ucgw " + d, calls)
            self.assertIn("chmod 0750 " + d, calls)
        # a first install: the home directory exists before adduser names it
        with open(os.path.join(stubs, "getent"), "w") as f:
            f.write('#!/bin/sh\necho "getent $*" >> "%s"\nexit 2\n' % log)
        calls = run("configure", systemd=False, everything=True)
        adduser = [i for i, c in enumerate(calls) if c.startswith("adduser")]
        self.assertEqual(len(adduser), 1, calls)
        self.assertLess(calls.index("mkdir -p /var/lib/ucgw"), adduser[0], calls)
        self.assertIn("--home /var/lib/ucgw", calls[adduser[0]])


APP_USER = "ucgwtestapp"
PY_SEND = """
import sys, ucgw
assert ucgw.__file__.startswith("/usr/lib/python3/dist-packages/ucgw/"), ucgw.__file__
gw = ucgw.UnifiedCommunicationGateway(*sys.argv[1:])   # /etc/ucgw/ucgw.yaml: the socket named there
r = gw.send_metadata({"plate": "PKGPY"}, wait=True, timeout=20)
print(r.id if r.success else r.error)
sys.exit(0 if r.success else 1)
"""


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("dpkg") and shutil.which("setpriv") and
                     shutil.which("lintian"), "needs root, dpkg and setpriv")
class InstallTest(unittest.TestCase):
    """The packages installed as an operator would (dpkg -i), the daemon
    started by the unit's own ExecStart as the ucgw user, a Python and a C
    application sending as a user in the ucgw group, then purged: nothing of
    them is left. Skipped where ucgw is already installed."""

    def setUp(self):
        if subprocess.run(["dpkg-query", "-W", "-f", "${Status}", "ucgw"], capture_output=True,
                          text=True).stdout.startswith("install ok"):
            self.skipTest("ucgw is installed on this machine: not touched")
        self.tmp = tempfile.mkdtemp(prefix="ucgw-inst-")
        os.chmod(self.tmp, 0o755)
        self.had_user = subprocess.run(["getent", "passwd", "ucgw"], capture_output=True).returncode == 0
        self.daemon = self.peer = None
        self.addCleanup(self.clean)

    def clean(self):
        for p in (self.daemon, self.peer):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        dpkg(["--purge", "python3-ucgw", "libucgw-dev", "libucgw0", "ucgw"], check=False)
        subprocess.run(["userdel", APP_USER], capture_output=True)
        if not self.had_user:  # ucgwd started as root by other tests drops its workers to 'ucgw' if it exists
            subprocess.run(["userdel", "-f", "ucgw"], capture_output=True)  # -f: even while such workers run
            subprocess.run(["groupdel", "ucgw"], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_install_run_send_purge(self):
        debs = built_debs()
        names = ("ucgw", "libucgw0", "libucgw-dev", "python3-ucgw")
        r = dpkg(["-i"] + [debs[n] for n in names])
        self.assertNotIn("warning", r.stdout + r.stderr, "dpkg -i said: " + r.stdout + r.stderr)
        files = []
        for n in names:
            files += [l for l in run(["dpkg", "-L", n]).splitlines() if os.path.isfile(l)]
        for d in ("/var/lib/ucgw", "/var/log/ucgw", "/run/ucgw"):
            st = os.stat(d)
            self.assertEqual((st.st_mode & 0o7777, run(["stat", "-c", "%U:%G", d]).strip()), (0o750, "ucgw:ucgw"), d)
        self.start_daemon()
        # an application user in the group 'ucgw', as the daemon's error message tells an operator to make
        subprocess.run(["useradd", "-M", "-N", "-G", "ucgw", "-s", "/usr/sbin/nologin", APP_USER], check=True)
        py = as_user(APP_USER, ["/usr/bin/python3", "-c", PY_SEND, "/etc/ucgw/ucgw.yaml"], cwd="/")
        self.assertEqual(py.returncode, 0, py.stdout + py.stderr)
        exe = os.path.join(self.tmp, "ucgw-send")
        cflags = run(["pkg-config", "--cflags", "--libs", "ucgw"]).split()
        subprocess.run(["cc", "-Wall", "-Werror", "/usr/share/doc/libucgw-dev/examples/ucgw-send.c", "-o", exe]
                       + cflags, check=True)
        c = as_user(APP_USER, [exe, "--wait", '{"plate":"PKGC"}'], cwd="/")
        self.assertEqual(c.returncode, 0, c.stdout + c.stderr)
        with open(self.record) as f:
            plates = {json.loads(l).get("body", "") for l in f if l.strip()}
        self.assertTrue(any("PKGPY" in p for p in plates) and any("PKGC" in p for p in plates), plates)
        # a user outside the group is told what to do
        nobody = as_user("nobody", ["/usr/bin/python3", "-c", PY_SEND], cwd="/")
        self.assertEqual(nobody.returncode, 1)
        self.assertIn("permission denied connecting to ucgwd at /run/ucgw/control.sock: add this user to", nobody.stdout)
        self.daemon.terminate()
        self.assertEqual(self.daemon.wait(30), 0, read(self.log)[-2000:])
        dpkg(["--purge", "python3-ucgw", "libucgw-dev", "libucgw0", "ucgw"])
        left = [f for f in files + ["/var/lib/ucgw", "/var/log/ucgw", "/run/ucgw", "/etc/ucgw"] if os.path.lexists(f)]
        self.assertEqual(left, [])

    def start_daemon(self):
        """lpr-peer as the REST server, named in /etc/ucgw/ucgw.yaml as an
        operator would; ucgwd by the unit's ExecStart, as ucgw."""
        self.record = os.path.join(self.tmp, "peer.jsonl")
        self.peer = subprocess.Popen([os.path.join(BIN, "lpr-peer"), "--record", self.record, "--port", "0"],
                                     stdout=subprocess.PIPE, text=True)
        port = int(self.peer.stdout.readline().split()[2])
        self.peer.stdout.close()
        cfg = "/etc/ucgw/ucgw.yaml"
        text = read(cfg)
        text = text.replace('rest:\n  enabled: false\n  base_url: "http://lprserver:8000"',
                            'rest:\n  enabled: true\n  base_url: "http://127.0.0.1:%d"' % port)
        self.assertIn("127.0.0.1:%d" % port, text)
        with open(cfg, "w") as f:
            f.write(text + '\nmetrics:\n  listen: ""\n')
        unit = read("/lib/systemd/system/ucgw.service")
        argv = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
        self.log = os.path.join(self.tmp, "ucgwd.log")
        with open(self.log, "wb") as log:
            self.daemon = subprocess.Popen(["setpriv", "--reuid=ucgw", "--regid=ucgw", "--init-groups", "--"] + argv,
                                           stdout=log, stderr=subprocess.STDOUT, cwd="/")
        for _ in range(300):
            if os.path.exists("/run/ucgw/control.sock"):
                break
            self.assertIsNone(self.daemon.poll(), "ucgwd exited; see " + self.log)
            time.sleep(0.05)
        self.assertEqual(run(["stat", "-c", "%U:%G %a", "/run/ucgw/control.sock"]).strip(), "ucgw:ucgw 660")


def dpkg(args, check=True):
    """dpkg, waiting for its lock when another dpkg or apt runs."""
    for _ in range(60):
        r = subprocess.run(["dpkg"] + args, capture_output=True, text=True)
        if "lock" not in r.stderr:
            break
        time.sleep(2)
    if check and r.returncode != 0:
        raise AssertionError("dpkg %s: %s" % (" ".join(args), r.stdout + r.stderr))
    return r


def as_user(user, argv, **kw):
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(["setpriv", "--reuid=" + user, "--regid=" + run(["id", "-gn", user]).strip(),
                           "--init-groups", "--"] + argv, capture_output=True, text=True, env=env, timeout=60, **kw)


if __name__ == "__main__":
    unittest.main()
