"""Security: payload encryption interoperable with the reference design's own
EncryptionManager (pycryptodome), and who may use the control socket (peer
credentials, API keys, HS256 JWTs), with an audit line for every refusal that
never holds the credential, and a daemon that keeps answering under a flood of
bad requests."""
import base64
import hashlib
import hmac
import json
import os
import pwd
import grp
import socket
import struct
import subprocess
import sys
import time
import unittest
from contextlib import contextmanager

import msgpack

try:  # the seed writes `from Crypto.Cipher import AES`; Debian's package names it Cryptodome
    from Crypto.Cipher import AES
except ImportError:
    from Cryptodome.Cipher import AES

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, GatewayTest, wait_for  # noqa: E402

UCGWCTL = os.path.join(BIN, "ucgwctl")


class EncryptionManager:
    """The seed's EncryptionManager, as written in unified-communication-architecture.md.

    As written it cannot read its own output: AES.new(key, AES.MODE_GCM) draws a
    16-byte nonce in pycryptodome, while decrypt_data takes 12. decrypt_data
    defines the format (nonce 12 | tag 16 | ciphertext), which is what the gateway
    writes; the gateway reads both."""

    def __init__(self, encryption_key):
        self.encryption_key = encryption_key

    def encrypt_data(self, data):
        json_data = json.dumps(data)
        cipher = AES.new(self.encryption_key, AES.MODE_GCM)
        ciphertext, tag = cipher.encrypt_and_digest(json_data.encode())
        return base64.b64encode(cipher.nonce + tag + ciphertext).decode()

    def decrypt_data(self, encrypted_data):
        data = base64.b64decode(encrypted_data.encode())
        nonce = data[:12]
        tag = data[12:28]
        ciphertext = data[28:]
        cipher = AES.new(self.encryption_key, AES.MODE_GCM, nonce=nonce)
        json_data = cipher.decrypt_and_verify(ciphertext, tag)
        return json.loads(json_data.decode())


class EncryptionManager12(EncryptionManager):
    """encrypt_data with the 12-byte nonce decrypt_data expects."""

    def encrypt_data(self, data):
        cipher = AES.new(self.encryption_key, AES.MODE_GCM, nonce=os.urandom(12))
        ciphertext, tag = cipher.encrypt_and_digest(json.dumps(data).encode())
        return base64.b64encode(cipher.nonce + tag + ciphertext).decode()


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def mint(secret, claims, alg="HS256", header=None, sign=True):
    """A JWT as PyJWT would make it; any alg, for the refusals."""
    header = header if header is not None else {"alg": alg, "typ": "JWT"}
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")).encode())
    if not sign:
        return signing_input + "."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}.get(alg, hashlib.sha256)
    sig = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(sig)


class RawCtl:
    """Pipelined requests over one control connection, with any auth field."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.buf = b""

    def send(self, seq, name, auth=None):
        m = {"t": 32, "v": 1, "seq": seq, "name": name}
        if auth is not None:
            m["auth"] = auth
        frame = msgpack.packb(m, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(frame)) + frame)

    def reply(self, timeout=30):
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    m = msgpack.unpackb(self.buf[4:4 + n], raw=False)
                    self.buf = self.buf[4 + n:]
                    return m
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("ucgwd closed the connection")
            self.buf += chunk

    def close(self):
        self.sock.close()


KEY1 = "k1-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
KEY2 = "k2-second-key-for-the-camera-app"
SECRET = "jwt-secret-0123456789abcdef0123456789"


def write_private(path, data, mode=0o600):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)
    return path


class EncryptionInteropTest(unittest.TestCase):
    """No daemon needed: ucgwctl's encrypt/decrypt run the gateway's C code path."""

    def setUp(self):
        import tempfile
        self.tmp = tempfile.mkdtemp(prefix="ucgw-test-crypto-")

    def tearDown(self):
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)

    def ctl(self, *args, input=None):
        r = subprocess.run([UCGWCTL, *args], input=input, capture_output=True, timeout=60)
        return r.returncode, r.stdout, r.stderr.decode(errors="replace")

    def key_files(self, key):
        """The same key in each accepted form."""
        return {
            "raw": write_private(os.path.join(self.tmp, "key.raw"), key),
            "hex": write_private(os.path.join(self.tmp, "key.hex"), key.hex() + "\n"),
            "base64": write_private(os.path.join(self.tmp, "key.b64"), base64.b64encode(key) + b"\n"),
        }

    def records(self):
        return [
            {"plate": "ABC123", "confidence": 0.97, "camera": "gate-1"},
            {"plate": "Ünïcödé-ß-東京", "bbox": [1, 2, 3, 4], "ok": True, "none": None},
            {},
            {"blob": "x" * 200000},
        ]

    def test_python_decrypts_what_the_gateway_encrypts(self):
        key = os.urandom(32)
        seed = EncryptionManager(key)
        for form, path in self.key_files(key).items():
            for rec in self.records():
                text = json.dumps(rec)
                rc, out, err = self.ctl("encrypt", "--key-file", path, "-", input=text.encode())
                self.assertEqual(rc, 0, err)
                payload = out.decode().strip()
                self.assertEqual(seed.decrypt_data(payload), rec, form)
                raw = base64.b64decode(payload)
                self.assertEqual(len(raw), 12 + 16 + len(text.encode()))
        # a fresh nonce every time
        path = self.key_files(key)["raw"]
        outs = {self.ctl("encrypt", "--key-file", path, '{"a":1}')[1] for _ in range(5)}
        self.assertEqual(len(outs), 5)
        # and the corrected Python reads it too
        self.assertEqual(EncryptionManager12(key).decrypt_data(outs.pop().decode()), {"a": 1})

    def test_seed_cannot_read_itself(self):
        seed = EncryptionManager(os.urandom(32))
        with self.assertRaises(ValueError):
            seed.decrypt_data(seed.encrypt_data({"plate": "ABC123"}))
        self.assertEqual(len(base64.b64decode(seed.encrypt_data({}))), 16 + 16 + 2)

    def test_gateway_decrypts_what_python_encrypts(self):
        key = os.urandom(32)
        for form, path in self.key_files(key).items():
            for rec, seed in [(r, m) for r in self.records()
                              for m in (EncryptionManager(key), EncryptionManager12(key))]:
                payload = seed.encrypt_data(rec)
                if len(payload) < 100000:
                    rc, out, err = self.ctl("decrypt", "--key-file", path, payload)
                else:  # too long for a command line argument
                    rc, out, err = self.ctl("decrypt", "--key-file", path, "-", input=payload.encode())
                self.assertEqual(rc, 0, err)
                self.assertEqual(json.loads(out.decode()), rec, form)
        # stdin with a trailing newline, as piped from a file
        path = self.key_files(key)["hex"]
        rc, out, err = self.ctl("decrypt", "--key-file", path, "-", input=(seed.encrypt_data({"n": 1}) + "\n").encode())
        self.assertEqual((rc, json.loads(out)), (0, {"n": 1}), err)
        # the key from the environment
        r = subprocess.run([UCGWCTL, "decrypt", seed.encrypt_data({"env": True})], capture_output=True,
                           env=dict(os.environ, UCGW_KEY_FILE=path))
        self.assertEqual(json.loads(r.stdout), {"env": True})

    def test_tampering_and_wrong_keys_refused(self):
        key = os.urandom(32)
        seed = EncryptionManager(key)
        path = self.key_files(key)["raw"]
        payload = base64.b64decode(seed.encrypt_data({"plate": "ABC123"}))
        for i in (0, 11, 12, 27, 28, len(payload) - 1):  # nonce, tag, ciphertext
            bad = bytearray(payload)
            bad[i] ^= 0x20
            rc, out, err = self.ctl("decrypt", "--key-file", path, base64.b64encode(bytes(bad)).decode())
            self.assertEqual(rc, 1)
            self.assertEqual(out, b"")
            self.assertIn("decryption failed", err)
        for bad in (base64.b64encode(payload[:-1]).decode(), base64.b64encode(payload[:20]).decode(),
                    "not base64 at all", base64.b64encode(payload).decode()[:-1],
                    base64.b64encode(payload).decode() + "====", "=" + base64.b64encode(payload).decode()[1:]):
            rc, out, err = self.ctl("decrypt", "--key-file", path, bad)
            self.assertEqual(rc, 1, bad)
            self.assertEqual(out, b"")
        other = write_private(os.path.join(self.tmp, "other.key"), os.urandom(32))
        rc, out, err = self.ctl("decrypt", "--key-file", other, base64.b64encode(payload).decode())
        self.assertEqual((rc, out), (1, b""))
        # the gateway's output does not open with another key under Python either
        rc, out, err = self.ctl("encrypt", "--key-file", path, '{"a":1}')
        with self.assertRaises(ValueError):
            EncryptionManager(os.urandom(32)).decrypt_data(out.decode().strip())

    def test_key_files_refused(self):
        key = os.urandom(32)
        open_key = write_private(os.path.join(self.tmp, "open.key"), key, 0o644)
        rc, out, err = self.ctl("decrypt", "--key-file", open_key, "AAAA")
        self.assertEqual(rc, 1)
        self.assertIn("readable or writable by group or others", err)
        self.assertIn("chmod 600", err)
        for name, data in (("short", key[:31]), ("hex63", key.hex()[:63]), ("b64_16", base64.b64encode(key[:16]))):
            p = write_private(os.path.join(self.tmp, name), data)
            rc, out, err = self.ctl("decrypt", "--key-file", p, "AAAA")
            self.assertEqual(rc, 1, name)
            self.assertIn("not an AES-256 key", err)
            self.assertNotIn(key.hex()[:16], err)
        rc, out, err = self.ctl("decrypt", "AAAA")
        self.assertEqual(rc, 2)
        self.assertIn("--key-file", err)


class AuthTest(GatewayTest):
    def sec_config(self, **security):
        s = {"require_auth": True, "api_keys": [KEY1, KEY2], "jwt_secret": SECRET,
             "audit_log": os.path.join(self.tmp, "audit", "audit.log")}
        s.update(security)
        # one worker: the harness waits for the workers to settle
        return {"gateway": {"log_level": "info"}, "security": s, "testworker": {}}

    @contextmanager
    def env(self, **kv):
        saved = {k: os.environ.get(k) for k in ("UCGW_API_KEY", "UCGW_JWT")}
        for k in saved:
            os.environ.pop(k, None)
        os.environ.update(kv)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def start(self, cfg, refuses_us=False):
        with self.env(UCGW_API_KEY=KEY1):
            if not refuses_us:
                return self.gateway(cfg)
            gw = self.gateway(cfg, wait_ready=False)
            wait_for(lambda: "unauthorized" in gw.ctl("status")[2], timeout=15, what="ucgwd refusing us")
            return gw

    def ctl(self, gw, *args, **env):
        with self.env(**env):
            return gw.ctl(*args)

    def audit_lines(self):
        try:
            with open(os.path.join(self.tmp, "audit", "audit.log")) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def assert_refused(self, gw, words, *args, **env):
        rc, out, err = self.ctl(gw, *(args or ("status",)), **env)
        self.assertEqual(rc, 1, (env, out))
        self.assertIn("unauthorized: " + words, err, env)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        return err

    def assert_secrets_absent(self, gw, secrets):
        texts = {"audit log": "\n".join(self.audit_lines()), "daemon log": gw.log_text()}
        for where, text in texts.items():
            for s in secrets:
                self.assertNotIn(s, text, "a credential in the %s" % where)
                if s.count(".") == 2:  # no part of a token either
                    for part in s.split("."):
                        if len(part) > 8:
                            self.assertNotIn(part, text, "part of a token in the %s" % where)

    def test_api_keys(self):
        gw = self.start(self.sec_config())
        self.assertEqual(self.ctl(gw, "status", UCGW_API_KEY=KEY1)[0], 0)
        self.assertEqual(self.ctl(gw, "status", UCGW_API_KEY=KEY2)[0], 0)
        n0 = len(self.audit_lines())
        self.assertEqual(n0, 0)
        self.assert_refused(gw, "missing credentials")
        self.assert_refused(gw, "invalid API key", UCGW_API_KEY="wrong-key")
        self.assert_refused(gw, "invalid API key", UCGW_API_KEY=KEY1[:-1])
        self.assert_refused(gw, "invalid API key", UCGW_API_KEY=KEY1 + "x")
        self.assert_refused(gw, "invalid API key", "workers", UCGW_API_KEY=KEY1.upper())
        # --api-key-file, private; one readable by others is refused before anything is sent
        good = write_private(os.path.join(self.tmp, "api.key"), KEY2 + "\n")
        rc, out, err = self.ctl(gw, "--api-key-file", good, "status")
        self.assertEqual(rc, 0, err)
        rc, out, err = self.ctl(gw, "--api-key-file", good, "status", UCGW_JWT="x.y.z")  # the option wins
        self.assertEqual(rc, 0, err)
        bad = write_private(os.path.join(self.tmp, "bad.key"), "wrong-key\n")
        rc, out, err = self.ctl(gw, "--api-key-file", bad, "status")
        self.assertIn("unauthorized: invalid API key", err)
        world = write_private(os.path.join(self.tmp, "world.key"), KEY1, 0o644)
        rc, out, err = self.ctl(gw, "--api-key-file", world, "status")
        self.assertEqual(rc, 2)
        self.assertIn("readable or writable by group or others", err)
        self.assert_refused(gw, "credential longer than 8192 bytes", UCGW_API_KEY="k" * 20000)
        lines = self.audit_lines()
        self.assertEqual(len(lines), 7, lines)
        self.assertIn('credential=none reason="missing credentials', lines[0])
        for l in lines:
            self.assertRegex(l, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ucgwd auth refused: uid=%d gid=\d+ pid=\d+ "
                                r'command="(status|workers)" credential=\S+ reason="' % os.getuid())
        self.assertIn('command="workers"', lines[4])
        self.assertIn('reason="invalid API key"', lines[1])
        self.assert_secrets_absent(gw, [KEY1, KEY2, "wrong-key", KEY1.upper()])
        # the daemon itself is fine
        self.assertEqual(self.ctl(gw, "status", UCGW_API_KEY=KEY1)[0], 0)

    def test_jwts(self):
        gw = self.start(self.sec_config())
        now = int(time.time())
        good = mint(SECRET, {"sub": "camera-app", "iat": now, "exp": now + 300})
        rc, out, err = self.ctl(gw, "status", UCGW_JWT=good)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.ctl(gw, "status", UCGW_JWT=mint(SECRET, {"sub": "no-exp"}))[0], 0)
        # UCGW_JWT is preferred over UCGW_API_KEY
        self.assertEqual(self.ctl(gw, "status", UCGW_JWT=good, UCGW_API_KEY="wrong")[0], 0)
        bad = {
            "token expired": mint(SECRET, {"sub": "a", "exp": now - 3600}),
            "token not valid yet": mint(SECRET, {"sub": "a", "nbf": now + 3600, "exp": now + 7200}),
            "token algorithm 'none' is not accepted": mint(SECRET, {"sub": "a", "exp": now + 300}, alg="none",
                                                           sign=False),
            "token algorithm 'HS512' is not accepted": mint(SECRET, {"sub": "a", "exp": now + 300}, alg="HS512"),
            "bad token signature": mint(SECRET + "x", {"sub": "a", "exp": now + 300}),
            "malformed token: header is not base64url": "!!!." + good.split(".", 1)[1],
            "malformed token: expected three parts": good + ".x",
        }
        # a good token with its signature replaced by another token's
        other = mint(SECRET, {"sub": "b", "exp": now + 300})
        tampered = good.rsplit(".", 1)[0] + "." + other.rsplit(".", 1)[1]
        for words, tok in list(bad.items()) + [("bad token signature", tampered)]:
            self.assert_refused(gw, words, UCGW_JWT=tok)
        # alg none signed with the secret anyway, and an HS256 header saying "none" in typ
        self.assert_refused(gw, "token algorithm 'none'",
                            UCGW_JWT=mint(SECRET, {"exp": now + 300}, header={"alg": "none", "typ": "JWT"}))
        lines = self.audit_lines()
        self.assertEqual(len(lines), 9, lines)
        self.assertTrue(all("credential=jwt" in l for l in lines))
        self.assertIn('reason="token expired"', lines[0])
        self.assert_secrets_absent(gw, [good, tampered, SECRET] + list(bad.values()))

    def test_peer_credentials(self):
        me = pwd.getpwuid(os.getuid()).pw_name
        my_group = grp.getgrgid(os.getgid()).gr_name
        other_user = next(p.pw_name for p in pwd.getpwall() if p.pw_uid != os.getuid())
        other_group = next(g.gr_name for g in grp.getgrall() if g.gr_gid != os.getgid())
        # not listed: refused, even root, even with a good key
        gw = self.start(self.sec_config(allowed_users=[other_user], require_auth=False), refuses_us=True)
        err = self.assert_refused(gw, "uid %d is not in security.allowed_users" % os.getuid(), UCGW_API_KEY=KEY1)
        self.assertIn("unauthorized", err)
        lines = self.audit_lines()
        self.assertGreaterEqual(len(lines), 1)
        self.assertIn("uid=%d " % os.getuid(), lines[-1])
        gw.kill()
        # listed by name, by number, through a group
        for sec in ({"allowed_users": [other_user, me]}, {"allowed_users": [str(os.getuid())]},
                    {"allowed_groups": [other_group, my_group]},
                    {"allowed_users": [other_user], "allowed_groups": [my_group]}):
            gw = self.start(self.sec_config(require_auth=False, **sec))
            rc, out, err = self.ctl(gw, "status")
            self.assertEqual(rc, 0, (sec, err))
            gw.kill()
        # a group that is not ours refuses; the key is still demanded from the allowed
        gw = self.start(self.sec_config(allowed_groups=[other_group], require_auth=False), refuses_us=True)
        self.assert_refused(gw, "uid %d is not in security.allowed_users or security.allowed_groups" % os.getuid())
        gw.kill()
        gw = self.start(self.sec_config(allowed_users=[me]))
        self.assert_refused(gw, "missing credentials")
        self.assertEqual(self.ctl(gw, "status", UCGW_API_KEY=KEY1)[0], 0)

    def test_without_require_auth_and_without_audit_log(self):
        cfg = self.sec_config(require_auth=False)
        del cfg["security"]["audit_log"]
        gw = self.gateway(cfg)
        self.assertEqual(self.ctl(gw, "status")[0], 0)
        self.assertEqual(self.ctl(gw, "status", UCGW_API_KEY="anything")[0], 0)
        cfg = self.sec_config()
        del cfg["security"]["audit_log"]
        gw2 = self.start(cfg)
        self.assert_refused(gw2, "invalid API key", UCGW_API_KEY="wrong-key")
        log = gw2.log_text()
        self.assertIn('auth refused: uid=%d' % os.getuid(), log)
        self.assertIn('reason="invalid API key"', log)
        self.assertNotIn("wrong-key", log)

    def test_reload_changes_keys(self):
        gw = self.start(self.sec_config())
        new = dict(gw.cfg, security=self.sec_config(api_keys=["k3-rotated-key"])["security"])
        gw.write_config(new)
        rc, out, err = self.ctl(gw, "reload", UCGW_API_KEY=KEY1)
        self.assertEqual(rc, 0, err)
        self.assert_refused(gw, "invalid API key", UCGW_API_KEY=KEY1)
        self.assertEqual(self.ctl(gw, "status", UCGW_API_KEY="k3-rotated-key")[0], 0)

    def test_flood_of_bad_requests(self):
        gw = self.start(self.sec_config())
        now = int(time.time())
        bad_auth = [None, "", "wrong", "a.b.c", mint(SECRET, {"exp": now - 100}),
                    mint(SECRET, {"exp": now + 100}, alg="none", sign=False), "x" * 100000,
                    mint("nope", {"exp": now + 100})]
        c = RawCtl(gw.sock)
        t0 = time.monotonic()
        for i in range(1000):
            c.send(i + 1, "status" if i % 3 else "send", bad_auth[i % len(bad_auth)])
        replies = [c.reply() for _ in range(1000)]
        elapsed = time.monotonic() - t0
        self.assertTrue(all(r["t"] == 33 and not r["ok"] and r["error"].startswith("unauthorized: ")
                            for r in replies), replies[:3])
        self.assertEqual(sorted(r["seq"] for r in replies), list(range(1, 1001)))
        # the same connection still gets an answer, and a good request goes through at once
        c.send(5000, "status", KEY1)
        r = c.reply()
        self.assertEqual((r["seq"], r["ok"]), (5000, True))
        c.close()
        t1 = time.monotonic()
        self.assertEqual(self.ctl(gw, "status", UCGW_API_KEY=KEY1)[0], 0)
        self.assertLess(time.monotonic() - t1, 5)
        self.assertLess(elapsed, 30, "1,000 refusals took %.1fs" % elapsed)
        lines = self.audit_lines()
        self.assertEqual(len(lines), 1000)
        self.assertTrue(all(len(l) < 600 for l in lines))
        # many short connections, too
        for i in range(50):
            c = RawCtl(gw.sock)
            c.send(1, "status", "bad-%d" % i)
            self.assertFalse(c.reply()["ok"])
            c.close()
        self.assertEqual(self.ctl(gw, "status", UCGW_API_KEY=KEY2)[0], 0)
        self.assertIsNone(gw.proc.poll())
        self.assert_secrets_absent(gw, [b for b in bad_auth if b and len(b) > 5] + [KEY1, KEY2])
        print("1,000 refused requests answered in %.2fs" % elapsed)


if __name__ == "__main__":
    unittest.main()
