#!/usr/bin/python3
"""Writes the seed corpus of every fuzz target into tests/fuzz/corpus/<target>/.
Run it again after changing a message, the schema or the token format; the
fuzzers grow their own corpora in build-fuzz/, from these seeds."""
import base64
import hashlib
import hmac
import json
import os
import shutil
import struct
import sys

import msgpack

try:
    from Crypto.Cipher import AES
except ImportError:
    from Cryptodome.Cipher import AES

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")

# proto/proto.h
HELLO, CONFIG, READY, PING, PONG, JOB, RESULT, HEALTH, PROGRESS, SHUTDOWN = range(1, 11)
REQUEST, REPLY, EVENT = 32, 33, 34


def pack(m):
    return msgpack.packb(m, use_bin_type=True)


def frame(m):
    b = pack(m) if isinstance(m, dict) else m
    return struct.pack(">I", len(b)) + b


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(secret, claims, header=None, alg="HS256", sign=True):
    header = header if header is not None else {"alg": alg, "typ": "JWT"}
    si = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(claims, separators=(",", ":")).encode())
    if not sign:
        return si + "."
    digest = hashlib.sha512 if alg == "HS512" else hashlib.sha256
    return si + "." + b64url(hmac.new(secret.encode(), si.encode(), digest).digest())


FAR = 2 ** 40  # an exp that stays in the future

MESSAGES = [
    {"t": HELLO, "v": 2, "name": "ucgw-mqtt", "pid": 1234},
    {"t": CONFIG, "v": 2, "device_id": "cam-1", "section": pack({"broker_url": "x", "qos": 1}),
     "max_frame": 16777216, "log_level": 6},
    {"t": READY, "detail": "connected to lprserver:1883"},
    {"t": READY},
    {"t": PING, "seq": 7},
    {"t": PONG, "seq": 7},
    {"t": JOB, "seq": 1, "id": "01HZZZZZZZZZZZZZZZZZZZZZZZ", "kind": 0, "payload": b'{"plate":"ABC123"}',
     "topic": "lpr/cam-1/data", "priority": 1, "attempt": 1, "encrypt": True},
    {"t": JOB, "seq": 2, "id": "01HZZZZZZZZZZZZZZZZZZZZZZZ", "kind": 1, "has_fd": True, "size": 1048576,
     "remote_name": "img.jpg", "endpoint": "/api/lpr/data"},
    {"t": RESULT, "seq": 1, "id": "01HZZZZZZZZZZZZZZZZZZZZZZZ", "status": 1, "error": "HTTP 503",
     "retry_after_ms": 2000, "rtt_us": 1500},
    {"t": HEALTH, "connected": False, "detail": "connection refused", "rtt_us": 0},
    {"t": PROGRESS, "seq": 2, "id": "01HZZZZZZZZZZZZZZZZZZZZZZZ", "done": 65536, "size": 1048576},
    {"t": SHUTDOWN},
    {"t": REQUEST, "v": 1, "seq": 1, "name": "status"},
    {"t": REQUEST, "v": 1, "seq": 2, "name": "send", "auth": "key-one",
     "body": {"data": b'{"plate":"ABC123"}', "format": "json", "protocol": "auto", "priority": "high",
              "wait": True, "encrypt": False, "ttl_s": 60}},
    {"t": REPLY, "v": 1, "seq": 1, "ok": False, "error": "unauthorized: invalid API key"},
    {"t": REPLY, "v": 1, "seq": 2, "ok": True, "body": {"id": "01HZZZZZZZZZZZZZZZZZZZZZZZ", "status": "accepted",
                                                         "nested": [1, -2, 3.5, None, True, {"a": b"\x00"}]}},
    {"t": EVENT, "seq": 2, "name": "progress", "body": {"done": 10, "size": 20}},
]

BAD_MESSAGES = [
    pack({"t": 99}), pack({"t": PING}), pack({"t": PING, "seq": "x"}), pack({"t": PING, "seq": 1}) + b"\x00",
    pack({"t": PING, "seq": 1, "bogus": 1}), pack([1, 2, 3]), b"\xdf\xff\xff\xff\xff", b"\xc1",
    pack({"t": REQUEST, "v": 1, "seq": 1, "name": "a\x00b"}),
    b"\x83\xa1t\x05\xa3seq\x01\xa3seq\x02",  # duplicate seq
]


def control_requests():
    now_ok = {"sub": "op", "exp": FAR}
    auths = [None, "key-one", "key-two", "wrong", token("fuzz-secret", now_ok),
             token("fuzz-secret", {"exp": 1000}), token("fuzz-secret", {"nbf": FAR}),
             token("fuzz-secret", now_ok, alg="none", sign=False), token("fuzz-secret", now_ok, alg="HS512"),
             token("other", now_ok), "a.b.c", "eyJ.x"]
    reqs = []
    for i, a in enumerate(auths):
        m = {"t": REQUEST, "v": 1, "seq": i + 1, "name": "status"}
        if a is not None:
            m["auth"] = a
        reqs.append(m)
    bodies = [("send", {"data": b'{"plate":"ABC123","bbox":[1,2,3,4],"s":"\\u00e9"}', "format": "json",
                        "protocol": "auto", "priority": "normal", "wait": False}),
              ("send", {"data": "[1, 2.5e3, true, null]", "format": "json"}),
              ("send", {"data": b"{not json", "format": "raw"}),
              # strict UTF-8: an emoji passes; an overlong form, a surrogate, U+110000 do not
              ("send", {"data": b'{"s":"\xf0\x9f\x9a\x97"}', "format": "json"}),
              ("send", {"data": b'{"s":"\xe0\x80\x80"}', "format": "json"}),
              ("send", {"data": b'["\xed\xa0\x80"]', "format": "json"}),
              ("send", {"data": b'"\xf4\x90\x80\x80"', "format": "json"}),
              ("send", {"data": b"{}", "topic": "a/\x00b", "endpoint": "/x y\r\n", "ttl_s": -5}),
              ("send-file", {"path": "/tmp/x.jpg", "fd": True, "remote_name": "x.jpg"}),
              ("queue", {"action": "retry", "id": "all", "limit": 10}), ("trace", {"id": "01H"}),
              ("restart", {"name": "mqtt"}), ("pause", {"name": "rest"})]
    for i, (name, body) in enumerate(bodies):
        reqs.append({"t": REQUEST, "v": 1, "seq": 100 + i, "name": name, "auth": "key-one", "body": body})
    reqs.append({"t": REQUEST, "v": 2, "seq": 1, "name": "status", "auth": "key-one"})
    return reqs


def jwt_seeds():
    out = []
    io = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2"
          "MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
    for t in (io, token("fuzz-secret", {"sub": "x", "exp": 1700000100}),
              token("fuzz-secret", {"exp": 1}), token("x", {}, alg="none", sign=False), "a.b.c", "...", ""):
        out.append(b"\x00" + t.encode())
    headers = [b'{"alg":"HS256","typ":"JWT"}', b'{"alg":"none"}', b'{"alg":"HS512","typ":"JWT"}',
               b'{"typ":"JWT",\r\n "alg":"HS256"}', b'{"alg":"\\u0048S256","kid":"k1","crit":["b64"]}']
    claims = [b'{"sub":"camera","iat":1700000000,"exp":1700000300}', b'{"exp":1699990000}',
              b'{"nbf":1800000000}', b'{"aud":["a",{"b":[1,2]}],"exp":1.7e9,"x":null,"y":false}',
              b'{"sub":"\\ud83d\\ude00\\n\\"","exp":-1}', b"{}"]
    for h in headers:
        for c in claims[:3] if h != headers[0] else claims:
            out.append(b"\x01" + h + b"\n" + c)
    for s in (b"camera-app", b"", b'quote" backslash\\ newline\n \x01 \xff', "東京".encode()):
        out.append(b"\x02" + s)
    return out


def crypto_seeds():
    key = b"0123456789abcdef0123456789abcdef"  # fuzz_crypto.c's key
    out = [b"", b"Zg==", b"Zm9vYmFy", b"Zm9vYg", b"-_-_", b"+/+/", b"Zh==", b"====",
           key, key.hex().encode() + b"\n", base64.b64encode(key) + b"\r\n"]
    for pt, nlen in ((b'{"plate": "ABC123"}', 12), (b"", 12), (b'{"plate": "SEED16"}', 16)):
        c = AES.new(key, AES.MODE_GCM, nonce=bytes(range(nlen)))
        ct, tag = c.encrypt_and_digest(pt)
        out.append(base64.b64encode(c.nonce + tag + ct))
    return out


def config_seeds():
    seeds = []
    with open(os.path.join(SRC, "packaging", "ucgw.yaml"), "rb") as f:
        seeds.append(f.read())
    seeds.append(b"""websocket:
  server_url: "ws://lprserver:8765"
  reconnect_attempts: 3
  reconnect_delay: 5
rest:
  base_url: "http://lprserver:8000"
  timeout: 30
  retry_attempts: 3
mqtt:
  broker_url: "lprserver"
  client_id: "aicamera-edge-001"
  username: "edge_user"
  password: "secure_password"
sftp:
  host: "lprserver"
  username: "edge_user"
  key_file: "/home/camuser/.ssh/id_rsa"
  remote_path: "/data/lpr_images"
rsync:
  remote_host: "lprserver"
  remote_user: "edge_user"
  remote_path: "/data/lpr_images"
  options: ["-azP", "--delete"]
protocol_selection:
  auto_select: true
fallback:
  enabled: true
  max_attempts: 3
""")
    seeds.append(b"""gateway: {device_id: cam, log_level: debug, window: 16}
security:
  require_auth: yes
  api_keys: [a, b]
  jwt_secret: s
  allowed_users: [root]
  allowed_groups: [adm]
  audit_log: /dev/null
rest:
  base_url: https://x
  headers: {X-A: "1", X-B: "2"}
testworker: {mode: slow, delay_ms: 5}
""")
    seeds.append(b"gateway:\n  device_id: &a cam\nspool: {dir: *a}\n")
    seeds.append(b"rest:\n  base_url: x\n  api_key_file: /nonexistent\n")
    seeds.append(b"%YAML 1.1\n---\n[1, 2]\n...\n")
    seeds.append(b"gateway:\n  windw: 3\n")
    seeds.append(b"gateway: " + b"[" * 100 + b"]" * 100 + b"\n")  # deeper than the nesting limit
    return seeds


def write(target, blobs):
    d = os.path.join(CORPUS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for i, b in enumerate(blobs):
        with open(os.path.join(d, "seed-%02d" % i), "wb") as f:
            f.write(b)


def main():
    msgs = [pack(m) for m in MESSAGES] + BAD_MESSAGES
    write("fuzz_msg", msgs)
    frames = [frame(m) for m in MESSAGES]
    write("fuzz_frame", [b"".join(frames[:6]), b"".join(frames[12:16]), frames[0] + frames[1][:7],
                         struct.pack(">I", 0), struct.pack(">I", 0xffffffff) + b"\x80",
                         frame(BAD_MESSAGES[0]) + frames[4], frames[6] * 3, b""])
    reqs = control_requests()  # first byte 1: the peer is allowed; 0: it is not
    write("fuzz_control", [b"\x01" + pack(m) for m in reqs] + [b"\x00" + pack(m) for m in reqs[:2]])
    write("fuzz_config", config_seeds())
    write("fuzz_jwt", jwt_seeds())
    write("fuzz_crypto", crypto_seeds())
    print("corpus written to", CORPUS)


if __name__ == "__main__":
    sys.exit(main())
