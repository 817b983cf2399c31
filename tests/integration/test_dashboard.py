"""The dashboard's HTTP side without a browser: the page and its files come from
the binary with a strict Content-Security-Policy; /api/events streams the data
(history first, then every second and on changes), at most 16 streams, a closed
one is forgotten, and an open one does not hold up shutdown; the buttons' POSTs
are refused when metrics.dashboard_actions is off, from another site, without
the credential security.require_auth asks for, or from a uid not allowed; and
they work when all is well."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, GatewayTest, free_port, wait_for  # noqa: E402

KEY = "dash-key-0123456789abcdef"


def recv_all(s):
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def http(port, method, path, headers=None, body=b"", host=None, timeout=10):
    """One raw request, every header under our control. (status, headers, body)."""
    h = {"Host": host or "127.0.0.1:%d" % port}
    h.update(headers or {})
    if isinstance(body, str):
        body = body.encode()
    if method == "POST" or body:
        h.setdefault("Content-Length", str(len(body)))
    lines = ["%s %s HTTP/1.1" % (method, path)] + ["%s: %s" % kv for kv in h.items() if kv[1] is not None]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = recv_all(s)
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *hdr_lines = head.decode().split("\r\n")
    headers_out = {}
    for l in hdr_lines:
        k, _, v = l.partition(":")
        headers_out[k.strip().lower()] = v.strip()
    return int(status_line.split()[1]), headers_out, rest


class Events:
    """A Server-Sent Events reader on a plain socket."""

    def __init__(self, port, host=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(("GET /api/events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n"
                           % (host or "127.0.0.1:%d" % port)).encode())
        self.f = self.sock.makefile("rb")
        self.status = int(self.f.readline().split()[1])
        self.headers = {}
        while True:
            line = self.f.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode().partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.retry = None

    def next(self, timeout=5):
        """(event name, parsed data) of the next event."""
        self.sock.settimeout(timeout)
        event, data = None, []
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("the event stream ended")
            line = line.rstrip(b"\r\n").decode()
            if not line:
                if data:
                    return event, json.loads("\n".join(data))
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "retry":
                self.retry = int(value)

    def close(self):
        self.f.close()
        self.sock.close()


class DashboardTest(GatewayTest):
    def gw(self, actions=False, security=None, wait_ready=True, **extra):
        self.port = free_port()
        cfg = {"metrics": {"listen": "127.0.0.1:%d" % self.port, "dashboard_actions": actions},
               "testworker": {}, "spool": {"retry_backoff_min_ms": 100, "retry_backoff_max_ms": 200}}
        if security:
            cfg["security"] = security
        cfg.update(extra)
        if security and security.get("require_auth"):
            os.environ["UCGW_API_KEY"] = KEY  # for the harness's own ucgwctl
            self.addCleanup(os.environ.pop, "UCGW_API_KEY", None)
        gw = self.gateway(cfg, wait_ready=wait_ready)
        if not wait_ready:  # ucgwctl may be refused: wait through the dashboard's data
            def ready():
                try:
                    d = json.loads(http(self.port, "GET", "/api/dashboard?history=0")[2])
                except OSError:
                    return False
                return all(w["status"] == "ready" for w in d["workers"])
            wait_for(ready, timeout=15, what="workers ready (seen on /api/dashboard)")
        return gw

    def post(self, action, body=None, headers=None, **kw):
        h = {"Content-Type": "application/json", "Origin": "http://127.0.0.1:%d" % self.port}
        h.update(headers or {})
        status, hdrs, raw = http(self.port, "POST", "/api/actions/" + action, h,
                                 json.dumps(body if body is not None else {}), **kw)
        return status, json.loads(raw) if hdrs.get("content-type", "").startswith("application/json") else raw

    # ---- the page ----

    def test_page_served_from_the_binary_with_a_strict_policy(self):
        self.gw()
        for path, ctype in (("/", "text/html"), ("/index.html", "text/html"), ("/dashboard.js", "text/javascript"),
                            ("/dashboard.css", "text/css"), ("/favicon.svg", "image/svg+xml")):
            status, h, body = http(self.port, "GET", path)
            self.assertEqual(status, 200, path)
            self.assertTrue(h["content-type"].startswith(ctype), (path, h))
            self.assertIn("default-src 'self'", h["content-security-policy"])
            self.assertEqual(h["x-content-type-options"], "nosniff")
            self.assertEqual(h["cache-control"], "no-cache")
            self.assertEqual(int(h["content-length"]), len(body))
            text = body.decode()
            # nothing from the internet: no external script, style, font or image
            self.assertIsNone(re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import""",
                                        text), path)
        status, _, body = http(self.port, "GET", "/")
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "supervisor", "dashboard", "index.html"),
                  "rb") as f:
            self.assertEqual(body, f.read())
        self.assertIn(b'<script src="/dashboard.js"', body)
        self.assertNotIn(b"<script>", body)  # no inline script: the policy would block it
        self.assertNotIn(b"style=", body)
        status, _, body = http(self.port, "GET", "/nope")
        self.assertEqual(status, 404)
        status, h, _ = http(self.port, "PUT", "/")
        self.assertEqual((status, h.get("allow")), (405, "GET"))

    def test_host_must_be_a_loopback_name(self):
        self.gw()
        for host in ("127.0.0.1:%d" % self.port, "localhost:8080", "[::1]:9630", "localhost", "127.0.0.2"):
            self.assertEqual(http(self.port, "GET", "/api/dashboard", host=host)[0], 200, host)
        for host in ("evil.example:%d" % self.port, "evil.example", "127.0.0.1.evil.example", "[::2]:1", "localhost:x"):
            status, _, body = http(self.port, "GET", "/api/dashboard", host=host)
            self.assertEqual(status, 403, host)
            self.assertIn(b"not a loopback name", body)
        # Prometheus scrapers are not asked
        self.assertEqual(http(self.port, "GET", "/metrics", host="prometheus.local:9630")[0], 200)

    # ---- the data ----

    def test_dashboard_json_has_what_the_page_shows(self):
        gw = self.gw()
        gw.ctl("send", "--protocol", "testworker", "--wait", '{"ok":1}')
        gw.ctl("send", "--protocol", "testworker", "--wait", '{"cmd":"permfail"}')
        time.sleep(1.3)  # one history sample taken
        d = json.loads(http(self.port, "GET", "/api/dashboard")[2])
        g = d["gateway"]
        self.assertEqual((g["device_id"], g["state"], g["actions"], g["auth_required"]),
                         ("test-cam-1", "running", False, False))
        p = d["protocol_stats"]["testworker"]
        self.assertEqual((p["status"], p["success"], p["failure"], p["paused"]), ("up", 1, 1, False))
        self.assertEqual(p["success_rate_60s"], 0.5)
        self.assertGreater(p["rate_per_s"], 0)
        w = d["workers"][0]
        self.assertEqual((w["name"], w["status"], w["restarts"], w["crash"]), ("testworker", "ready", 0, None))
        s = d["spool"]
        self.assertEqual((s["dead"], s["near_limit"], s["full"], s["full_policy"]), (1, False, False, "reject"))
        self.assertEqual(d["recent_errors"][0]["protocol"], "testworker")
        h = d["history"]
        self.assertGreaterEqual(h["len"], 1)
        th = h["protocols"]["testworker"]
        self.assertEqual(sum(th["ok"]), 1)
        self.assertEqual(sum(th["fail"]), 1)
        self.assertEqual(len(th["p99_ms"]), h["len"])
        self.assertEqual(json.loads(http(self.port, "GET", "/api/dashboard?history=0")[2])["history"]["len"], 0)

    def test_crash_log_summary_and_restarting(self):
        gw = self.gw(gateway={"restart_backoff_min_ms": 2000, "restart_backoff_max_ms": 2000})
        pid = gw.workers()["testworker"]["pid"]
        os.kill(pid, signal.SIGKILL)

        def worker():
            return json.loads(http(self.port, "GET", "/api/dashboard?history=0")[2])["workers"][0]
        w = wait_for(lambda: (lambda w: w if w["status"] == "restarting" else None)(worker()), what="restarting")
        self.assertEqual(json.loads(http(self.port, "GET", "/api/dashboard?history=0")[2])
                         ["protocol_stats"]["testworker"]["status"], "restarting")
        self.assertIn("SIGKILL", w["last_exit"])
        self.assertIn("killed by signal 9", w["crash"]["summary"])
        self.assertIn("pid%d" % pid, w["crash"]["file"])
        w = wait_for(lambda: (lambda w: w if w["status"] == "ready" else None)(worker()), what="ready again")
        self.assertEqual(w["restarts"], 1)

    def test_spool_near_limit(self):
        gw = self.gw(testworker={"delay_ms": 60000}, spool={"max_messages": 10})
        for i in range(9):
            gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)
        s = json.loads(http(self.port, "GET", "/api/dashboard?history=0")[2])["spool"]
        self.assertEqual((s["depth"], s["max_messages"], s["near_limit"], s["full"]), (9, 10, True, False))
        self.assertAlmostEqual(s["fill"], 0.9)

    # ---- the event stream ----

    def test_events_stream_history_then_every_second(self):
        gw = self.gw()
        ev = Events(self.port)
        self.assertEqual(ev.status, 200)
        self.assertEqual(ev.headers["content-type"], "text/event-stream")
        self.assertEqual(ev.headers["cache-control"], "no-store")
        name, first = ev.next()
        self.assertEqual(name, "dashboard")
        self.assertEqual(ev.retry, 2000)
        self.assertIn("testworker", first["protocol_stats"])
        t0 = time.monotonic()
        _, second = ev.next(timeout=3)
        self.assertLess(time.monotonic() - t0, 1.6)
        self.assertGreater(second["gateway"]["time_ms"], first["gateway"]["time_ms"])
        # later events carry only the history not sent yet
        self.assertLessEqual(second["history"]["len"], 2)
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "300", "-p", "testworker", "--wait"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        seen_ok, deadline = 0, time.monotonic() + 6
        while time.monotonic() < deadline:
            _, d = ev.next(timeout=3)
            seen_ok += sum(d["history"]["protocols"]["testworker"]["ok"])
            if d["protocol_stats"]["testworker"]["success"] == 300 and seen_ok == 300:
                break
        self.assertEqual(d["protocol_stats"]["testworker"]["success"], 300)
        self.assertEqual(seen_ok, 300, "each delivered message in exactly one history sample")
        ev.close()

    def test_events_pushed_at_once_on_a_change(self):
        gw = self.gw(actions=True)
        ev = Events(self.port)
        ev.next()
        ev.next(timeout=3)  # in step with the 1 s pushes
        time.sleep(0.2)
        t0 = time.monotonic()
        self.assertEqual(gw.ctl("pause", "testworker")[0], 0)
        while True:
            _, d = ev.next(timeout=3)
            if d["protocol_stats"]["testworker"]["paused"]:
                break
        self.assertLess(time.monotonic() - t0, 0.7)
        self.assertEqual(d["protocol_stats"]["testworker"]["status"], "paused")
        ev.close()

    def test_at_most_16_streams_and_closed_ones_are_forgotten(self):
        gw = self.gw()
        streams = [Events(self.port) for _ in range(16)]
        for s in streams:
            self.assertEqual(s.status, 200)
            s.next()
        extra = Events(self.port)
        self.assertEqual(extra.status, 503)
        self.assertEqual(extra.headers.get("retry-after"), "5")
        extra.close()
        for s in streams[:4]:
            s.close()

        def accepted():
            e = Events(self.port)
            ok = e.status == 200
            e.close()
            return ok
        wait_for(accepted, timeout=5, what="a stream accepted after others closed")
        # the remaining ones still get their events
        for s in streams[4:]:
            s.next(timeout=3)
        for s in streams[4:]:
            s.close()
        # and after all of them closed, 16 fit again
        time.sleep(0.3)
        again = [Events(self.port) for _ in range(16)]
        self.assertEqual([e.status for e in again], [200] * 16)
        for e in again:
            e.close()
        self.assertEqual(gw.stop(), 0)

    def test_shutdown_with_streams_open(self):
        gw = self.gw()
        streams = [Events(self.port) for _ in range(3)]
        for s in streams:
            s.next()
        # open streams must not keep the daemon (its loop) alive: it exits as
        # soon as its workers have (seconds under ASan on a busy machine)
        gw.proc.send_signal(signal.SIGTERM)
        self.assertEqual(gw.proc.wait(30), 0)
        self.assertIn("all workers stopped; exiting", gw.log_text())
        for s in streams:
            with self.assertRaises(EOFError):
                while True:
                    s.next(timeout=5)
            s.close()

    # ---- the buttons ----

    def test_actions_refused_when_read_only(self):
        gw = self.gw(actions=False)
        status, body = self.post("restart", {"name": "testworker"})
        self.assertEqual(status, 403)
        self.assertIn("read-only (metrics.dashboard_actions is false)", body["error"])
        self.assertEqual(gw.workers()["testworker"]["restarts"], 0)
        self.assertIn("dashboard action refused", gw.log_text())

    def test_actions_work_when_enabled(self):
        gw = self.gw(actions=True)
        pid = gw.workers()["testworker"]["pid"]
        status, body = self.post("restart", {"name": "testworker"})
        self.assertEqual((status, body), (200, {"ok": True, "action": "restart", "name": "testworker"}))
        gw.wait_worker("testworker", lambda w: w["state"] == "ready" and w["pid"] != pid, what="restarted")
        self.assertEqual(self.post("pause", {"name": "testworker"})[0], 200)
        self.assertTrue(gw.workers()["testworker"]["paused"])
        self.assertEqual(self.post("resume", {"name": "testworker"})[0], 200)
        self.assertFalse(gw.workers()["testworker"]["paused"])
        # a dead letter, then retried from the page: it goes out again (and dies again, permfail)
        gw.ctl("send", "--protocol", "testworker", "--wait", '{"cmd":"permfail"}')
        self.assertEqual(len(gw.ctl_json("queue", "dead")), 1)
        status, body = self.post("retry-dead")
        self.assertEqual((status, body["requeued"]), (200, 1))
        wait_for(lambda: len(gw.ctl_json("queue", "dead")) == 1 and
                 gw.ctl_json("stats")["testworker"]["failure"] == 2, what="tried again")
        self.assertEqual(self.post("retry-waiting")[1]["retried"], 0)
        # what the control socket would say
        # (the control socket's code is the status, and in the body for the page to act on)
        status, body = self.post("restart", {"name": "nosuch"})
        self.assertEqual((status, body["code"]), (404, 404))
        self.assertIn("no worker named 'nosuch'", body["error"])
        status, body = self.post("restart", {})
        self.assertEqual((status, body["code"]), (400, 400))
        self.assertIn("which one?", body["error"])
        status, _, raw = http(self.port, "POST", "/api/actions/restart", {"Content-Type": "application/json"},
                              '{"name": "testworker"')
        self.assertEqual(status, 400)
        self.assertIn("the body is not JSON", json.loads(raw)["error"])
        self.assertEqual(self.post("explode")[0], 404)
        self.assertEqual(http(self.port, "GET", "/api/actions/restart")[0], 405)
        self.assertIn("dashboard action: restart testworker", gw.log_text())
        # ucgwctl learnt the same: queue requeue all
        wait_for(lambda: len(gw.ctl_json("queue", "dead")) == 1, what="dead again")
        self.assertEqual(gw.ctl_json("queue", "requeue", "all"), {"requeued": 1})
        wait_for(lambda: gw.ctl_json("stats")["testworker"]["failure"] == 3, what="tried a third time")

    def test_body_in_a_later_packet(self):
        """A browser may send the headers and the body in two writes."""
        gw = self.gw(actions=True)
        body = b'{"name": "testworker"}'
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(("POST /api/actions/pause HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                       "Content-Length: %d\r\n\r\n" % (self.port, len(body))).encode())
            time.sleep(0.3)
            s.sendall(body[:5])
            time.sleep(0.2)
            s.sendall(body[5:])
            data = recv_all(s)
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"), data)
        self.assertTrue(gw.workers()["testworker"]["paused"])
        status, _, raw = http(self.port, "POST", "/api/actions/pause", {"Content-Type": "application/json",
                                                                         "Content-Length": "12x"}, "{}")
        self.assertEqual(status, 400)
        status, _, raw = http(self.port, "POST", "/api/actions/pause", {"Content-Type": "application/json",
                                                                         "Content-Length": "99999"}, "{}")
        self.assertEqual(status, 413)

    def test_cross_site_requests_refused(self):
        gw = self.gw(actions=True)
        own = "http://127.0.0.1:%d" % self.port
        cases = [
            ({"Origin": "http://evil.example"}, None, 403, "another origin"),
            ({"Origin": "null"}, None, 403, "another origin"),
            ({"Origin": "http://127.0.0.1:%d" % (self.port + 1)}, None, 403, "another origin"),
            ({"Origin": own, "Sec-Fetch-Site": "cross-site"}, None, 403, "another site"),
            ({"Origin": own, "Sec-Fetch-Site": "same-site"}, None, 403, "another site"),
            ({"Origin": "http://evil.example:%d" % self.port}, "evil.example:%d" % self.port, 403,
             "not a loopback name"),  # DNS rebinding: same origin to the browser, not to us
            ({"Content-Type": "text/plain"}, None, 415, "application/json"),
            ({"Content-Type": "application/x-www-form-urlencoded"}, None, 415, "application/json"),
            ({"Content-Type": "multipart/form-data; boundary=x"}, None, 415, "application/json"),
            ({"Content-Type": "application/jsonp"}, None, 415, "application/json"),
            ({"Content-Type": None}, None, 415, "application/json"),
        ]
        for headers, host, code, words in cases:
            status, body = self.post("restart", {"name": "testworker"}, headers=headers, host=host)
            self.assertEqual(status, code, headers)
            self.assertIn(words, body["error"] if isinstance(body, dict) else body.decode(), headers)
        self.assertEqual(gw.workers()["testworker"]["restarts"], 0)
        self.assertEqual(gw.workers()["testworker"]["state"], "ready")
        # a tool without Origin (curl) is not a browser on another site
        status, _ = self.post("pause", {"name": "testworker"}, headers={"Origin": None})
        self.assertEqual(status, 200)
        status, _ = self.post("resume", {"name": "testworker"},
                              headers={"Content-Type": "application/json; charset=utf-8"})
        self.assertEqual(status, 200)

    def test_actions_need_the_credential_when_auth_is_required(self):
        audit = os.path.join(self.tmp, "audit.log")
        gw = self.gw(actions=True, security={"require_auth": True, "api_keys": [KEY], "audit_log": audit})
        d = json.loads(http(self.port, "GET", "/api/dashboard?history=0")[2])
        self.assertTrue(d["gateway"]["auth_required"])
        status, body = self.post("restart", {"name": "testworker"})
        self.assertEqual((status, body["code"]), (401, 401))
        self.assertIn("unauthorized: missing credentials", body["error"])
        status, body = self.post("restart", {"name": "testworker"}, headers={"Authorization": "Bearer wrong"})
        self.assertEqual((status, body["code"]), (401, 401))
        self.assertIn("unauthorized: invalid API key", body["error"])
        status, body = self.post("restart", {"name": "testworker"}, headers={"Authorization": "Basic " + KEY})
        self.assertEqual(status, 401)
        self.assertEqual(gw.workers()["testworker"]["restarts"], 0)
        with open(audit) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2, lines)  # the control socket's audit lines, uid and command
        self.assertIn('uid=%d' % os.getuid(), lines[0])
        self.assertIn('command="restart" credential=none reason="missing credentials', lines[0])
        self.assertIn('credential=api-key reason="invalid API key"', lines[1])
        self.assertNotIn("wrong", "\n".join(lines))
        pid = gw.workers()["testworker"]["pid"]
        status, body = self.post("restart", {"name": "testworker"}, headers={"Authorization": "Bearer " + KEY})
        self.assertEqual(status, 200, body)
        gw.wait_worker("testworker", lambda w: w["state"] == "ready" and w["pid"] != pid, what="restarted")

    def test_actions_checked_against_allowed_users(self):
        gw = self.gw(actions=True, security={"allowed_users": ["nobody"]}, wait_ready=False)
        status, body = self.post("pause", {"name": "testworker"})
        self.assertEqual(status, 401)
        self.assertIn("uid %d is not in security.allowed_users" % os.getuid(), body["error"])
        gw2_cfg = dict(gw.cfg)
        gw2_cfg["security"] = {"allowed_users": [str(os.getuid())]}
        gw.write_config(gw2_cfg)
        gw.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in gw.log_text(), what="reload")
        status, body = self.post("pause", {"name": "testworker"})
        self.assertEqual(status, 200, body)


if __name__ == "__main__":
    unittest.main()
