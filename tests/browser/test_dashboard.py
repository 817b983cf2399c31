"""The dashboard in a real browser: Debian's chromium driven by playwright-core
(dashboard.test.mjs), against the real daemon with a real mosquitto and lpr-peer
(REST and WebSocket). This script sets the scene and does what the browser
script asks for at its steps (a burst of sends, kill -9 of a worker, stopping
the broker); the browser script checks what the page shows and saves
screenshots under BUILD/artifacts/.

Skipped (exit 77) when /usr/bin/chromium, node or tests/browser/node_modules/
playwright-core is missing: packaging/install-deps.sh installs the first two,
`npm ci` in tests/browser the third."""
import os
import shutil
import signal
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
from ucgwtest import BIN, BUILD, GatewayTest, free_port, wait_for  # noqa: E402
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402

SKIP = 77
CHROMIUM = os.environ.get("UCGW_CHROMIUM", "/usr/bin/chromium")
NODE = shutil.which("node")
PLAYWRIGHT = os.path.join(HERE, "node_modules", "playwright-core", "package.json")
ARTIFACTS = os.path.join(BUILD, "artifacts")


def missing():
    why = []
    if not os.access(CHROMIUM, os.X_OK):
        why.append("%s is missing (apt-get install chromium)" % CHROMIUM)
    if not NODE:
        why.append("node is missing (apt-get install nodejs npm)")
    if not os.path.exists(PLAYWRIGHT):
        why.append("playwright-core is missing (cd tests/browser && npm ci)")
    return why


class BrowserDashboardTest(GatewayTest):
    def scene(self):
        self.mq = Mosquitto(self)
        self.peer = LprPeer(self)
        self.port = free_port()
        self.gw = self.gateway({
            "gateway": {"device_id": "gate-2-cam", "restart_backoff_min_ms": 3000, "restart_backoff_max_ms": 3000},
            "metrics": {"listen": "127.0.0.1:%d" % self.port, "dashboard_actions": True},
            "mqtt": {"broker_url": self.mq.url()},
            "rest": {"base_url": self.peer.http_url()},
            "websocket": {"server_url": self.peer.ws_url()},
            "network_monitor": {"interval_ms": 500},
            "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000, "max_messages": 1000},
        })
        wait_for(lambda: all(w["connected"] for w in self.gw.workers().values()), timeout=20,
                 what="every worker connected")

    def step(self, name):
        """What the browser script asks for; returns the words it gets back."""
        if name == "burst":
            # spread over some seconds, all three at once: the charts get a shape
            loads = [self.spawn([os.path.join(BIN, "ucgw-load"), "-s", self.gw.sock, "-n", str(n), "-p", proto,
                                 "--wait", "--rate", str(rate)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
                     for proto, n, rate in (("mqtt", 400, 80), ("rest", 200, 40), ("websocket", 300, 100))]
            for p in loads:
                out = p.communicate(timeout=120)[0]
                self.assertEqual(p.returncode, 0, out)
            # one the REST server refuses: a recent error, then delivered by the next protocol
            self.peer.mode("400x1")
            rc, out, err = self.gw.ctl("--json", "send", "--protocol", "rest", "--wait", '{"plate":"ERR-1"}')
            self.assertEqual(rc, 0, err)
            return "sent 400 mqtt, 200 rest, 300 websocket, 1 refused by REST"
        if name == "kill-mqtt":
            pid = self.gw.workers()["mqtt"]["pid"]
            os.kill(pid, signal.SIGKILL)
            return "killed mqtt pid %d" % pid
        if name == "stop-broker":
            self.mq.stop()
            return "broker stopped"
        if name == "fill-spool":
            # the broker is down and the other protocols paused: 850 of 1000 wait
            for p in ("rest", "websocket"):
                self.assertEqual(self.gw.ctl("pause", p)[0], 0)
            r = subprocess.run([os.path.join(BIN, "ucgw-load"), "-s", self.gw.sock, "-n", "850", "-p", "mqtt"],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            return "850 messages wait in a spool of 1000"
        if name == "start-broker":
            self.mq.start()
            for p in ("rest", "websocket"):
                self.assertEqual(self.gw.ctl("resume", p)[0], 0)
            return "broker started, rest and websocket resumed"
        raise AssertionError("the browser script asked for an unknown step %r" % name)

    def run_browser(self, mode, **env):
        os.makedirs(ARTIFACTS, exist_ok=True)
        url = "http://127.0.0.1:%d/" % self.port
        env = dict(os.environ, UCGW_CHROMIUM=CHROMIUM, UCGW_ARTIFACTS=ARTIFACTS, **env)
        node = self.spawn([NODE, os.path.join(HERE, "dashboard.test.mjs"), url, mode], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=HERE)
        out = []
        for line in node.stdout:
            out.append(line)
            sys.stdout.write("  node: " + line)
            sys.stdout.flush()
            if line.startswith("STEP "):
                words = self.step(line.split()[1])
                node.stdin.write("DONE %s\n" % words)
                node.stdin.flush()
        rc = node.wait(30)
        self.assertEqual(rc, 0, "the browser script failed:\n" + "".join(out[-30:]))

    def test_dashboard_in_chromium(self):
        """The whole page against three real servers: a burst, kill -9, a broker
        stopped, a spool near its limit, buttons, a phone-sized screen."""
        self.scene()
        os.makedirs(ARTIFACTS, exist_ok=True)
        for f in os.listdir(ARTIFACTS):
            if f.startswith("dashboard-") and f.endswith(".png"):
                os.unlink(os.path.join(ARTIFACTS, f))
        self.run_browser("full")
        self.assertTrue(os.path.exists(os.path.join(ARTIFACTS, "dashboard-desktop.png")))

    def test_key_field_when_auth_is_required(self):
        key = "browser-test-key-0123456789"
        os.environ["UCGW_API_KEY"] = key  # the harness's own ucgwctl
        self.addCleanup(os.environ.pop, "UCGW_API_KEY", None)
        self.port = free_port()
        self.gw = self.gateway({"metrics": {"listen": "127.0.0.1:%d" % self.port, "dashboard_actions": True},
                                "security": {"require_auth": True, "api_keys": [key]}, "testworker": {}})
        self.run_browser("auth", UCGW_TEST_KEY=key)
        self.assertTrue(self.gw.workers()["testworker"]["paused"])
        self.assertIn("dashboard action pause refused: unauthorized: missing credentials", self.gw.log_text())

    def test_read_only_by_default(self):
        self.port = free_port()
        self.gw = self.gateway({"metrics": {"listen": "127.0.0.1:%d" % self.port}, "testworker": {}})
        self.run_browser("readonly")


if __name__ == "__main__":
    why = missing()
    if why:
        print("SKIP: the browser test needs " + "; ".join(why))
        sys.exit(SKIP)
    unittest.main()
