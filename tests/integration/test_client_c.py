"""libucgw (clients/c) against the real daemon and the test worker.

clients/c/tests/test_libucgw.c does the checking (blocking and non-blocking
calls, tickets, callbacks, errors and the daemon's words, files and memfds,
threads on one handle, stats, timeouts, authentication, a daemon restarting
under a handle); this file starts the daemons it talks to, restarts them when it
asks, and checks the deliveries in the test worker's record. A smoke program is
also linked against libucgw.a, and built against an installed copy of the
library with pkg-config."""
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, BUILD, SRC, GatewayTest, wait_for  # noqa: E402

KEY = "k1-libucgw-test-key-0123456789abcdef"
SECRET = "jwt-secret-for-libucgw-tests-0123456789"


def jwt(secret, claims):
    def enc(obj):
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()
    signing_input = enc({"alg": "HS256", "typ": "JWT"}) + "." + enc(claims)
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


def records(path):
    try:
        with open(path) as f:
            return [l.split() for l in f if l.strip()]
    except FileNotFoundError:
        return []


def sanitized():
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            return any(l.strip() == "UCGW_SANITIZE:BOOL=ON" for l in f)
    except FileNotFoundError:
        return False


class CClientTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.record = os.path.join(self.tmp, "delivered.txt")
        self.file = os.path.join(self.tmp, "plate-0001.jpg")
        with open(self.file, "wb") as f:
            f.write(os.urandom(200000))

    def check_output(self, out, record):
        """Every "file ID SIZE" line is in the record with that size, and the
        record holds as many deliveries as the program expected."""
        lines = out.splitlines()
        self.assertEqual([l for l in lines if l.startswith("FAIL")], [])
        expect = [int(l.split()[1]) for l in lines if l.startswith("expect ")]
        self.assertEqual(len(expect), 1, out)
        try:
            wait_for(lambda: len(records(record)) >= expect[0], timeout=30,
                     what="%d deliveries in the record" % expect[0])
        except AssertionError as e:
            gw = getattr(self, "main_gw", None)
            raise AssertionError("%s: %d there; queue: %s; log: %s" % (
                e, len(records(record)), gw.ctl("queue", "--limit", "all")[1][:2000] if gw else "?",
                gw.log_text()[-3000:] if gw else "?")) from None
        recs = records(record)
        self.assertEqual(len(recs), expect[0])
        self.assertEqual(len(set(r[0] for r in recs)), len(recs), "a message delivered twice")
        sizes = {r[0]: int(r[1]) for r in recs}
        files = [l.split()[1:] for l in lines if l.startswith("file ")]
        self.assertTrue(files, out)
        for mid, size in files:
            self.assertEqual(sizes.get(mid), int(size), "file %s" % mid)

    def test_libucgw(self):
        gw = self.main_gw = self.gateway({"testworker": {"record": self.record}})
        slow = self.gateway({"testworker": {"delay_ms": 600}}, name="slow")
        env = {k: v for k, v in os.environ.items() if k not in ("UCGW_API_KEY", "UCGW_JWT", "UCGW_SOCKET")}
        auth = self.gateway({"security": {"require_auth": True, "api_keys": [KEY], "jwt_secret": SECRET},
                             "testworker": {}}, name="auth", start=False)
        token = jwt(SECRET, {"sub": "camera-app", "iat": int(time.time()), "exp": int(time.time()) + 600})
        saved = os.environ.get("UCGW_API_KEY")
        os.environ["UCGW_API_KEY"] = KEY  # the harness's readiness check needs it
        try:
            auth.start()
        finally:
            if saved is None:
                os.environ.pop("UCGW_API_KEY")
            else:
                os.environ["UCGW_API_KEY"] = saved
        p = subprocess.Popen([os.path.join(BIN, "test_libucgw"), "-s", gw.sock, "-f", self.file, "-S", slow.sock,
                              "-A", auth.sock, "-k", KEY, "-j", token, "-R"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
        self.cleanups_procs.append(p)
        out = []
        for line in p.stdout:
            out.append(line)
            if line.strip() == "RESTART":
                gw.stop()
                slow.kill()
                gw.start()
                slow.start()
                p.stdin.write("go\n")
                p.stdin.flush()
        rc = p.wait(timeout=120)
        text = "".join(out)
        err = p.stderr.read()
        for f in (p.stdin, p.stdout, p.stderr):
            f.close()
        print("\n" + text + err)
        self.assertEqual(rc, 0, text + err)
        self.check_output(text, self.record)

    def test_static_library(self):
        """libucgw.a keeps the codec's and the logger's names to itself: the
        smoke program defines its own log_info, msg_encode, fatal, xmalloc."""
        gw = self.gateway({"testworker": {"record": self.record}})
        r = subprocess.run([os.path.join(BIN, "test_libucgw_static"), gw.sock, self.file], capture_output=True,
                           text=True, timeout=60)
        print("\n" + r.stdout + r.stderr)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("app: own functions intact", r.stderr)
        self.check_output(r.stdout, self.record)

    def test_installed_with_pkg_config(self):
        """cmake --install (the library's components) into a prefix, then build
        the smoke program the way an application would: pkg-config, shared and
        static."""
        if not shutil.which("pkg-config") or not shutil.which("cc"):
            self.skipTest("no pkg-config or cc")
        prefix = os.path.join(self.tmp, "prefix")
        for comp in ("libucgw", "libucgw-dev"):
            r = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix, "--component", comp],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        pcs = [os.path.join(d, f) for d, _, fs in os.walk(prefix) for f in fs if f == "ucgw.pc"]
        self.assertEqual(len(pcs), 1, pcs)
        pcdir = os.path.dirname(pcs[0])
        self.assertTrue(os.path.exists(os.path.join(prefix, "include", "ucgw.h")))
        env = dict(os.environ, PKG_CONFIG_PATH=pcdir)

        def pkg(*args):
            r = subprocess.run(["pkg-config", "--define-variable=prefix=" + prefix, *args, "ucgw"],
                               capture_output=True, text=True, env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            return r.stdout.split()
        self.assertEqual(pkg("--modversion"), ["0.1.0"])
        san = ["-fsanitize=address,undefined"] if sanitized() else []
        smoke = os.path.join(SRC, "clients", "c", "tests", "smoke.c")
        gw = self.gateway({"testworker": {"record": self.record}})
        expected = 0
        for kind, flags in (("shared", pkg("--cflags", "--libs")),
                            ("static", pkg("--cflags") + ["-Wl,-Bstatic", "-lucgw", "-Wl,-Bdynamic"] +
                             [f for f in pkg("--libs", "--static") if f != "-lucgw"])):
            exe = os.path.join(self.tmp, "smoke-" + kind)
            r = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", *san, "-o", exe, smoke, *flags],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, "%s: %s" % (" ".join(flags), r.stderr))
            libdir = pkg("--variable=libdir")[0]
            r = subprocess.run([exe, gw.sock, self.file], capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, LD_LIBRARY_PATH=libdir))
            print("\n%s: %s%s" % (kind, r.stdout, r.stderr))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            expected += 2
            wait_for(lambda: len(records(self.record)) == expected, what="%d deliveries" % expected)
            ldd = subprocess.run(["ldd", exe], capture_output=True, text=True,
                                 env=dict(os.environ, LD_LIBRARY_PATH=libdir)).stdout
            if kind == "shared":
                self.assertIn(os.path.join(libdir, "libucgw.so.0"), ldd)
            else:
                self.assertNotIn("libucgw", ldd)


if __name__ == "__main__":
    unittest.main()
