"""ucgw-rest against lpr-peer: bytes, Idempotency-Key, headers, each failure
class and its error text, a server that goes away and returns, TLS, volume."""
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lprpeer import LprPeer  # noqa: E402
from mosquitto import make_ca  # noqa: E402
from nginx import Nginx  # noqa: E402
from ucgwtest import BIN, GatewayTest, free_port, wait_for  # noqa: E402


class RestTest(GatewayTest):
    def gw_for(self, peer, **rest):
        r = {"base_url": peer.http_url(), "timeout": 2}
        r.update(rest)
        return self.gateway({"rest": r, "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000}})

    def up(self, gw, yes=True):
        wait_for(lambda: gw.workers()["rest"]["connected"] == yes, what="rest connected=%s" % yes)

    def health_says(self, gw, words):
        return wait_for(lambda: (lambda w: w if words in w["health"] else None)(gw.workers()["rest"]),
                        what="rest health saying %r" % words)

    def test_bytes_headers_and_id(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer, headers={"X-Camera": "gate-2"}, api_key="k-123", auth_header="Authorization: Bearer t0k")
        self.up(gw)
        body = '{"plate":"ABC123","confidence":0.97}'
        rc, out, err = gw.ctl("--json", "send", "--protocol", "rest", "--wait", body)
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        rec = peer.records("http")[0]
        self.assertEqual(rec["body"], body)
        self.assertEqual(rec["id"], o["id"])
        self.assertEqual(rec["path"], "/api/lpr/data")
        self.assertEqual(rec["ct"], "application/json")
        self.assertTrue(rec["ua"].startswith("ucgw/"))
        self.assertEqual(rec["auth"], "Bearer t0k")
        self.assertEqual(rec["xapikey"], "k-123")
        rc, out, err = gw.ctl("send", "--protocol", "rest", "--endpoint", "/api/other", "--wait", "{}")
        self.assertEqual(peer.records("http")[-1]["path"], "/api/other")

    def test_configured_headers_are_sent(self):
        peer = LprPeer(self)  # records X-API-Key and Authorization: set them as plain configured headers
        gw = self.gw_for(peer, headers={"X-API-Key": "from-headers", "Authorization": "Basic ZWRnZTpwdw=="})
        self.up(gw)
        rc, out, err = gw.ctl("send", "--protocol", "rest", "--wait", '{"plate":"H1"}')
        self.assertEqual(rc, 0, err)
        rec = peer.records("http")[0]
        self.assertEqual(rec["xapikey"], "from-headers")
        self.assertEqual(rec["auth"], "Basic ZWRnZTpwdw==")
        self.assertEqual(rec["ua"], "ucgw/" + gw.ctl_json("status")["version"])

    def test_bearer_jwt_minted_from_the_secret(self):
        import base64
        import hashlib
        import hmac
        peer = LprPeer(self)
        secret = os.path.join(self.tmp, "jwt.secret")
        with open(secret, "w") as f:
            f.write("s3cret-signing-key\n")
        os.chmod(secret, 0o600)
        gw = self.gw_for(peer, jwt_secret_file=secret)
        self.up(gw)
        rc, out, err = gw.ctl("send", "--protocol", "rest", "--wait", '{"plate":"J"}')
        self.assertEqual(rc, 0, err)
        auth = peer.records("http")[0]["auth"]
        self.assertTrue(auth.startswith("Bearer "), auth)
        head, claims, sig = auth[7:].split(".")
        pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
        self.assertEqual(json.loads(base64.urlsafe_b64decode(pad(head)))["alg"], "HS256")
        c = json.loads(base64.urlsafe_b64decode(pad(claims)))
        self.assertEqual(c["sub"], "test-cam-1")
        self.assertGreater(c["exp"], time.time())
        mac = hmac.new(b"s3cret-signing-key", (head + "." + claims).encode(), hashlib.sha256).digest()
        self.assertEqual(base64.urlsafe_b64encode(mac).rstrip(b"=").decode(), sig)
        self.assertNotIn("s3cret-signing-key", gw.log_text())

    def test_400_is_permanent_with_the_servers_reason(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        peer.mode("400")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "rest", "--wait", '{"plate":""}')
        self.assertEqual(rc, 1)
        o = json.loads(out)
        self.assertEqual(o["status"], "failed")
        self.assertIn('HTTP 400 Bad Request: {"error":"bad record: plate missing"}', o["error"])
        self.assertEqual(o["attempts"], 1)  # permanent: never retried
        self.assertEqual(len(gw.ctl_json("queue", "dead")), 1)
        peer.mode("401")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "rest", "--wait", '{"plate":"x"}')
        self.assertEqual(rc, 1)
        self.assertIn('HTTP 401 Unauthorized: {"error":"unauthorized"}', json.loads(out)["error"])
        self.assertEqual(len(gw.ctl_json("queue", "dead")), 2)
        self.assertEqual(len(peer.records("http")), 2)

    def test_retry_classes_then_delivered(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        # dropx2: libcurl itself sends again once when a kept-alive connection dies
        # under a request, so two drops make sure one reaches the worker.
        for mode, words in (("503x2", 'HTTP 503 Service Unavailable: {"error":"service unavailable"}'),
                            ("429x1", 'HTTP 429 Too Many Requests: {"error":"slow down"}'),
                            ("dropx2", "Empty reply from server"),
                            ("stallx1", "Operation timed out after 20")):
            peer.mode(mode)
            rc, out, err = gw.ctl("--json", "send", "--protocol", "rest", "--wait", '{"mode":"%s"}' % mode)
            self.assertEqual(rc, 0, err + out)
            o = json.loads(out)
            self.assertEqual(o["status"], "ok")
            self.assertGreaterEqual(o["attempts"], 2, o)
            self.assertIn(words, o["route"][0]["error"], o)
            if mode == "429x1":  # Retry-After: 1 is honoured, though the spool's backoff is 200 ms
                self.assertGreaterEqual(o["route"][1]["start_ms"] - o["route"][0]["start_ms"], 950, o)
        oks = [r["id"] for r in peer.records("http") if r["status"] == 200]
        self.assertEqual(len(oks), 4)
        self.assertEqual(len(set(oks)), 4)

    def test_retry_attempts_with_growing_waits(self):
        # rest.retry_attempts (the reference design's retries with growing sleeps):
        # the supervisor tries REST again after retry_backoff_min_ms, then twice
        # that, without a worker or the caller sleeping.
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        peer.mode("503x2")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "rest", "--wait", '{"n":1}')
        self.assertEqual(rc, 0, err + out)
        o = json.loads(out)
        self.assertEqual((o["status"], o["attempts"]), ("ok", 3), o)
        self.assertEqual([h["protocol"] for h in o["route"]], ["rest"] * 3, o)
        gaps = [o["route"][k + 1]["start_ms"] - o["route"][k]["start_ms"] for k in range(2)]
        print("\nREST tried again after %d ms, then %d ms (retry_backoff_min_ms 200)" % tuple(gaps))
        self.assertGreaterEqual(gaps[0], 190, o)
        self.assertGreaterEqual(gaps[1], 390, o)

    def test_many_retry_attempts(self):
        # rest.retry_attempts up to its maximum of 100: the waits double up to
        # retry_backoff_max_ms and stay there (the ASan/UBSan build checks
        # that no doubling overflows). The router looks at waiting messages
        # every 100 ms: 70 tries take about 7 s.
        peer = LprPeer(self)
        gw = self.gateway({"rest": {"base_url": peer.http_url(), "timeout": 2, "retry_attempts": 100},
                           "spool": {"retry_backoff_min_ms": 1, "retry_backoff_max_ms": 3},
                           "fallback": {"cool_after_failures": 1000}})  # no cool-down between the tries
        self.up(gw)
        peer.mode("503x70")
        rc, out, err = gw.ctl("--json", "send", "--protocol", "rest", "--wait", '{"n":1}')
        self.assertEqual(rc, 0, err + out)
        o = json.loads(out)
        self.assertEqual((o["status"], o["attempts"]), ("ok", 71), o)
        self.assertEqual(len(peer.records("http")), 71)

    def test_unreachable_at_start_then_up(self):
        port = free_port()
        gw = self.gateway({"rest": {"base_url": "http://127.0.0.1:%d" % port, "timeout": 2}})
        w = self.health_says(gw, "connect to 127.0.0.1:%d failed: Connection refused" % port)
        self.assertFalse(w["connected"])
        rc, out, err = gw.ctl("send", "--protocol", "rest", '{"early":1}')
        self.assertEqual(rc, 0, err)
        mid = out.strip()
        peer = LprPeer(self, port=port)  # the probe notices, nothing is restarted
        self.up(gw)
        wait_for(lambda: [r for r in peer.records("http") if r["id"] == mid], timeout=30, what="the early message")
        self.assertEqual(gw.workers()["rest"]["restarts"], 0)

    def test_bad_base_url_is_a_configuration_error(self):
        gw = self.gateway({"rest": {"base_url": "ftp://127.0.0.1/x"}})
        w = gw.wait_worker("rest", lambda w: w["state"] not in ("starting", "ready"), what="rest given up")
        self.assertIn("expected an http:// or https:// URL", gw.log_text())
        time.sleep(0.5)
        self.assertEqual(gw.workers()["rest"]["restarts"], w["restarts"])  # not restarted

    def test_server_down_and_back(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        port = peer.port
        peer.stop()
        ids = [gw.ctl("send", "--protocol", "rest", '{"n":%d}' % i)[1].strip() for i in range(20)]
        self.up(gw, False)
        time.sleep(0.5)
        peer2 = LprPeer(self, port=port, name="peer2")
        wait_for(lambda: {r["id"] for r in peer2.records("http")} >= set(ids), timeout=30, what="all 20")

    def test_keepalive_connections_closed_while_idle(self):
        # The pool's connections stay watched between requests; a server that
        # closes them all while they rest must cost nothing but new connections.
        # A host name, so that libcurl's resolver takes part too.
        peer = LprPeer(self)
        gw = self.gw_for(peer, base_url="http://localhost:%d" % peer.port)
        self.up(gw)
        load = [os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "300", "-w", "100", "-p", "rest", "--wait"]
        r = subprocess.run(load, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        port = peer.port
        peer.stop()  # every keep-alive connection is closed by the server
        peer2 = LprPeer(self, port=port, name="peer2")
        time.sleep(0.3)
        r = subprocess.run(load, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(len({x["id"] for x in peer2.records("http")}), 300)
        self.assertEqual(len({x["id"] for x in peer.records("http")}), 300)

    def test_server_closing_every_connection(self):
        # An HTTP/1.0 server: each answer ends its connection, so every request
        # opens a socket and the descriptor numbers come round again and again.
        seen, lock = [], threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    seen.append(self.headers["Idempotency-Key"])
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        gw = self.gateway({"rest": {"base_url": "http://127.0.0.1:%d" % srv.server_address[1], "timeout": 5}})
        self.up(gw)
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "500", "-w", "50", "-p", "rest",
                            "--wait"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with lock:
            self.assertEqual(len(set(seen)), 500)

    def test_tls_trusted_and_untrusted(self):
        ca, cert, key = make_ca(self.tmp)
        peer = LprPeer(self, tls=(cert, key))
        gw = self.gw_for(peer, ca_file=ca)
        self.up(gw)
        rc, out, err = gw.ctl("send", "--protocol", "rest", "--wait", '{"tls":1}')
        self.assertEqual(rc, 0, err)
        self.assertEqual(peer.records("http")[0]["body"], '{"tls":1}')
        gw2 = self.gateway({"rest": {"base_url": peer.http_url()}}, name="untrusted")
        w = self.health_says(gw2, "SSL certificate problem: unable to get local issuer certificate")
        self.assertFalse(w["connected"])
        rc, out, err = gw2.ctl("send", "--protocol", "rest", '{"tls":2}')
        time.sleep(1)
        self.assertEqual(len(peer.records("http")), 1)  # nothing crossed an unverified connection
        gw3 = self.gateway({"rest": {"base_url": peer.http_url(), "insecure": True}}, name="insecure")
        self.up(gw3)
        self.assertIn("rest.insecure is true: the server's certificate is NOT verified", gw3.log_text())
        rc, out, err = gw3.ctl("send", "--protocol", "rest", "--wait", '{"tls":3}')
        self.assertEqual(rc, 0, err)

    def test_encrypted_payloads_decrypt_to_what_was_sent(self):
        key = os.path.join(self.tmp, "aes.key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        peer = LprPeer(self)
        gw = self.gateway({"rest": {"base_url": peer.http_url(), "encrypt": True},
                           "security": {"encryption_key_file": key}})
        self.up(gw)
        body = '{"plate":"SECRET1","confidence":0.93}'
        rc, out, err = gw.ctl("send", "--protocol", "rest", "--wait", body)
        self.assertEqual(rc, 0, err)
        sent = json.loads(peer.records("http")[0]["body"])  # a JSON string: base64(nonce|tag|ciphertext)
        self.assertNotIn("SECRET1", sent)
        r = subprocess.run([os.path.join(BIN, "ucgwctl"), "decrypt", "--key-file", key, sent], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), body)
        gw2 = self.gateway({"rest": {"base_url": peer.http_url()}}, name="nokey")
        rc, out, err = gw2.ctl("send", "--protocol", "rest", "--encrypt", "{}")
        self.assertEqual(rc, 1)
        self.assertIn("security.encryption_key_file is not set", err)

    def test_slow_server_gets_the_pools_connections_at_once(self):
        # A server that takes 300 ms over each record: rest.connections requests
        # are in flight together, never more, and none waits for another's answer.
        peer = LprPeer(self)
        peer.delay(300)
        gw = self.gw_for(peer, connections=4)
        self.up(gw)
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "12", "-w", "12", "-p", "rest",
                            "--wait"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        t = sorted(x["t"] for x in peer.records("http"))
        self.assertEqual(len(t), 12)
        self.assertLess(t[3] - t[0], 250, "the first 4 arrived one after another: %s" % t)
        self.assertGreaterEqual(t[4] - t[0], 299, "a fifth request in flight with 4 connections: %s" % t)

    def test_thousand_messages(self):
        peer = LprPeer(self)
        gw = self.gw_for(peer)
        self.up(gw)
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "1000", "-w", "200", "-p", "rest",
                            "--wait"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        ids = [x["id"] for x in peer.records("http")]
        self.assertEqual(len(set(ids)), 1000)
        print("\n1000 messages over REST: %d duplicates; %s" % (len(ids) - len(set(ids)), r.stdout.strip()))

    def load(self, gw, n, *extra):
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", str(n), "-w", str(n), "-p", "rest",
                            "--wait", *extra], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_batches_carry_each_record_with_its_id_once(self):
        """rest.batch_max 50 over one connection, the peer answering after
        100 ms: the records share POSTs, each a JSON array of {"id", "data"}
        without an Idempotency-Key; every record arrives once, as sent."""
        peer = LprPeer(self)
        peer.delay(100)
        gw = self.gw_for(peer, connections=1, batch_max=50, batch_linger_ms=20)
        self.up(gw)
        self.load(gw, 400)
        recs = peer.records("http")
        got = []
        for r in recs:
            self.assertEqual(r["status"], 200)
            got += json.loads(r["body"])
        ids = [x["id"] for x in got]
        self.assertEqual((len(ids), len(set(ids))), (400, 400))
        self.assertLess(len(recs), 40, "POSTs for 400 records")
        self.assertTrue(all(len(json.loads(r["body"])) <= 50 for r in recs))
        self.assertTrue(all(isinstance(x["data"], dict) for x in got))
        self.assertFalse([r["id"] for r in recs if r.get("id")], "no Idempotency-Key on a batch")
        print("\n400 records in %d POSTs" % len(recs))

    def test_a_batch_refused_goes_again_one_record_per_post(self):
        peer = LprPeer(self)
        peer.mode("400x1")  # the first POST only
        gw = self.gw_for(peer, batch_max=10, batch_linger_ms=2000)
        self.up(gw)
        self.load(gw, 10)
        recs = peer.records("http")
        self.assertEqual(recs[0]["status"], 400)
        first = [x["id"] for x in json.loads(recs[0]["body"])]
        self.assertEqual(len(first), 10)
        alone = recs[1:]
        self.assertEqual(sorted(r["id"] for r in alone), sorted(first))  # each with its Idempotency-Key
        self.assertTrue(all(r["status"] == 200 for r in alone))
        self.assertTrue(all(isinstance(json.loads(r["body"]), dict) for r in alone))
        self.assertIn("refused a batch of 10 records (HTTP 400): sending them one per POST", gw.log_text())

    def test_a_batch_of_one_refused_goes_again_alone(self):
        """Light traffic: the linger sends a batch of one record, an array the
        server refuses (400); the record goes again as a plain POST, not to
        the dead letters."""
        peer = LprPeer(self)
        peer.mode("400x1")
        gw = self.gw_for(peer, batch_max=10, batch_linger_ms=50)
        self.up(gw)
        self.load(gw, 1)
        recs = peer.records("http")
        self.assertEqual(recs[0]["status"], 400)
        self.assertEqual(len(json.loads(recs[0]["body"])), 1)
        self.assertEqual([r["status"] for r in recs[1:]], [200])
        self.assertIsInstance(json.loads(recs[1]["body"]), dict)
        self.assertEqual(gw.ctl_json("queue", "dead"), [])

    def h2_through_nginx(self, settings_for):
        """300 messages through nginx (HTTP/2) to the peer, which answers each
        after 300 ms: all arrive once, every request nginx logged is HTTP/2,
        over at most rest.connections connections (streams multiplexed; one
        request per connection would take 300 x 0.3 / 2 = 45 s)."""
        peer = LprPeer(self)
        peer.delay(300)
        ngx = Nginx(self, backend_port=peer.port)
        rest = {"connections": 2, "timeout": 30}
        rest.update(settings_for(ngx))
        gw = self.gw_for(peer, **rest)
        self.up(gw)
        t0 = time.monotonic()
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "300", "-w", "300", "-p", "rest",
                            "--wait"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        print("\n300 messages over HTTP/2, each answered after 300 ms, 2 connections: %.1f s"
              % (time.monotonic() - t0))
        ids = [x["id"] for x in peer.records("http")]
        self.assertEqual((len(ids), len(set(ids))), (300, 300))
        protos = ngx.protocols()
        self.assertEqual(set(p for p, c in protos), {"HTTP/2.0"})
        self.assertLessEqual(len(set(c for p, c in protos)), 2, "connections nginx saw")
        self.assertIn("answers over HTTP/2: 200 requests at once", gw.log_text())

    def test_http2_negotiated_over_tls_multiplexes(self):
        self.h2_through_nginx(lambda n: {"base_url": n.tls_url(), "ca_file": n.ca})

    def test_http2_prior_knowledge_over_cleartext(self):
        curl = subprocess.run(["curl-config", "--vernum"], capture_output=True, text=True).stdout.strip()
        if curl and int(curl, 16) >= 0x080000:
            self.h2_through_nginx(lambda n: {"base_url": n.h2c_url(), "http2": "prior-knowledge"})
            return
        # libcurl 7.88 (Debian 12) fails every request on a reused h2c connection: refused, saying why
        ngx = Nginx(self, tls=False)
        gw = self.gateway({"rest": {"base_url": ngx.h2c_url(), "http2": "prior-knowledge"}})
        gw.wait_worker("rest", lambda w: w["state"] not in ("starting", "ready"), what="rest given up")
        self.assertIn("rest.http2 prior-knowledge needs libcurl 8.0.0 or later", gw.log_text())
        self.assertIn("curl issue #10634", gw.log_text())


if __name__ == "__main__":
    unittest.main()
