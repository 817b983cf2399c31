"""The loopback metrics listener: /metrics parses as Prometheus text and its
counters move; /api/dashboard carries the reference design's dashboard data;
a non-loopback address is refused; a protocol failing again and again cools down."""
import json
import os
import re
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from ucgwtest import BIN, GatewayTest, free_port, wait_for  # noqa: E402

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*)?\})? '
                    r'(-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$')


def parse_prometheus(text):
    """Strict enough: HELP/TYPE before samples of a family, every sample line well formed."""
    types, samples = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            assert NAME.match(line.split()[2]), line
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped"), line
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, "bad sample line: %r" % line
        base = re.sub(r"_(sum|count|bucket)$", "", m.group(1))
        assert m.group(1) in types or base in types, "sample before its TYPE: %r" % line
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(5))
    return types, samples


class MetricsTest(GatewayTest):
    def gw(self, **tw):
        self.port = free_port()
        t = {}
        t.update(tw)
        return self.gateway({"metrics": {"listen": "127.0.0.1:%d" % self.port}, "testworker": t,
                             "spool": {"retry_backoff_min_ms": 100, "retry_backoff_max_ms": 200}})

    def get(self, path):
        return urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path), timeout=5).read().decode()

    def test_prometheus_text_and_counters(self):
        gw = self.gw()
        _, before = parse_prometheus(self.get("/metrics"))
        r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", gw.sock, "-n", "500", "-p", "testworker", "--wait"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout)
        types, after = parse_prometheus(self.get("/metrics"))
        key = 'ucgw_messages_total{protocol="testworker",result="ok"}'
        self.assertEqual(after[key] - before.get(key, 0), 500)
        self.assertEqual(types["ucgw_messages_total"], "counter")
        self.assertEqual(types["ucgw_latency_seconds"], "summary")
        self.assertIn('ucgw_worker_up{worker="testworker"}', after)
        self.assertIn("ucgw_spool_messages", after)
        self.assertEqual(after['ucgw_worker_state{worker="testworker",state="ready"}'], 1)

    def test_dashboard_data(self):
        gw = self.gw()
        gw.ctl("send", "--protocol", "testworker", "--wait", '{"ok":1}')
        t0 = int(time.time() * 1000)
        rc, out, _ = gw.ctl("--json", "send", "--protocol", "testworker", "--wait", '{"cmd":"permfail"}')
        failed_id = json.loads(out)["id"]
        t1 = int(time.time() * 1000)
        d = json.loads(self.get("/api/dashboard"))
        for k in ("protocol_stats", "network_quality", "active_connections", "recent_errors", "workers", "spool"):
            self.assertIn(k, d)
        self.assertEqual(d["protocol_stats"]["testworker"]["success_rate"], 0.5)
        # each recent error says when (ms since the epoch), on which protocol, what, for which message
        self.assertEqual(len(d["recent_errors"]), 1, d["recent_errors"])
        e = d["recent_errors"][0]
        self.assertEqual(set(e), {"time", "protocol", "id", "message"})
        self.assertIsInstance(e["time"], int)
        self.assertTrue(t0 - 1000 <= e["time"] <= t1 + 1000, (t0, e["time"], t1))
        self.assertEqual(e["protocol"], "testworker")
        self.assertIn("permfail", e["message"])
        self.assertEqual(e["id"], failed_id)
        self.assertEqual(d["spool"]["dead"], 1)
        rc, out, _ = gw.ctl("--json", "send", "--protocol", "testworker", "--wait", '{"cmd":"permfail","n":2}')
        errs = json.loads(self.get("/api/dashboard"))["recent_errors"]
        self.assertEqual([x["id"] for x in errs], [json.loads(out)["id"], failed_id])  # the newest first
        self.assertGreaterEqual(errs[0]["time"], errs[1]["time"])
        self.assertEqual(errs[0]["message"], "test worker was told to answer permfail")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            self.get("/nope")
        self.assertEqual(cm.exception.code, 404)

    def test_non_loopback_refused(self):
        gw = self.gateway({"metrics": {"listen": "0.0.0.0:%d" % free_port()}, "testworker": {}}, start=False)
        for args in ([], ["-n"]):
            r = subprocess.run([os.path.join(BIN, "ucgwd")] + args + ["-c", gw.cfg_path], capture_output=True,
                               text=True, timeout=20)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("is not a loopback address", r.stderr)
            self.assertIn("unless metrics.allow_remote is true", r.stderr)  # what to change

    def test_non_loopback_allowed_when_asked(self):
        """metrics.allow_remote: true serves 0.0.0.0: /metrics and the pages by
        IP address, not by a name, and never an action from another host."""
        self.port = free_port()
        cfg = {"metrics": {"listen": "0.0.0.0:%d" % self.port, "allow_remote": True, "dashboard_actions": True},
               "testworker": {}}
        gw = self.gateway(cfg, start=False)
        r = subprocess.run([os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path], capture_output=True, text=True,
                           timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        gw.start()
        self.assertIn("is not loopback (metrics.allow_remote)", gw.log_text())
        import socket
        try:  # an address of this machine that is not loopback, if it has one
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.connect(("192.0.2.123", 9))
                ip = u.getsockname()[0]
        except OSError:
            ip = None
        for host in ["127.0.0.1"] + ([ip] if ip and not ip.startswith("127.") else []):
            base = "http://%s:%d" % (host, self.port)
            text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
            parse_prometheus(text)
            json.loads(urllib.request.urlopen(base + "/api/dashboard", timeout=5).read().decode())
            req = urllib.request.Request(base + "/api/dashboard", headers={"Host": "camera.example:%d" % self.port})
            with self.assertRaises(urllib.error.HTTPError) as cm:
                urllib.request.urlopen(req, timeout=5)
            self.assertEqual(cm.exception.code, 403)
        if not ip or ip.startswith("127."):
            self.skipTest("no address but loopback here: an action from another host was not tried")
        # another host's POST, even with a loopback Host: refused, and nothing paused
        req = urllib.request.Request("http://%s:%d/api/actions/pause" % (ip, self.port), data=b'{"name":"testworker"}',
                                     headers={"Host": "127.0.0.1:%d" % self.port, "Content-Type": "application/json"})
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=5)
        self.assertEqual(cm.exception.code, 403)
        self.assertIn("from this machine only", cm.exception.read().decode())
        self.assertFalse(gw.workers()["testworker"].get("paused"), gw.workers()["testworker"])

    def test_cooling_down_after_failures(self):
        gw = self.gw()
        for i in range(6):
            gw.ctl("send", "--protocol", "testworker", '{"cmd":"retry","n":%d}' % i)
        st = wait_for(lambda: (lambda s: s if s["network"]["testworker"]["cooling"] else None)(gw.ctl_json("status")),
                      what="cooling down")
        self.assertIn("told to answer retry", st["network"]["testworker"]["cooling"])
        self.assertIn("cooling down for 10.0 s", gw.log_text())

    def test_cooling_ends_with_a_probe_and_waiting_messages_go_at_once(self):
        # The server is down for a while: the protocol cools down, messages wait
        # with a long backoff. When the cool-down ends, one message probes; it
        # succeeds, and the others go at once, not when their backoff ends.
        down = os.path.join(self.tmp, "down")
        open(down, "w").close()
        gw = self.gateway({"testworker": {"down_file": down, "record": os.path.join(self.tmp, "rec")},
                           "fallback": {"cool_after_failures": 3, "cool_down_ms": 3000},
                           "spool": {"retry_backoff_min_ms": 120000, "retry_backoff_max_ms": 240000}})
        for i in range(6):
            gw.ctl("send", "--protocol", "testworker", '{"n":%d}' % i)
        wait_for(lambda: gw.ctl_json("status")["network"]["testworker"]["cooling"], what="cooling down")
        wait_for(lambda: gw.ctl_json("status")["spool"]["waiting"] == 6, what="all six waiting")
        # health reports ("connected") on a live link do not end the cool-down
        time.sleep(1)
        self.assertTrue(gw.ctl_json("status")["network"]["testworker"]["cooling"])
        os.unlink(down)
        t0 = time.monotonic()
        wait_for(lambda: os.path.exists(os.path.join(self.tmp, "rec")) and
                 len(open(os.path.join(self.tmp, "rec")).read().splitlines()) == 6,
                 timeout=20, what="all six delivered")
        took = time.monotonic() - t0
        print("\nall six delivered %.1f s after the server came back (cool-down 3 s, backoff 120 s)" % took)
        self.assertLess(took, 10)
        self.assertIn("cool-down over; a waiting message probes it", gw.log_text())
        self.assertIn("delivers again; waiting messages go out now", gw.log_text())


if __name__ == "__main__":
    unittest.main()
