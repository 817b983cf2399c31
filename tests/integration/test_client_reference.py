"""The reference design's own usage of its gateway (docs: seed/
unified-communication-architecture.md), unchanged but for the import line,
against ucgwd run on the reference's communication_config.yaml (its keys as
the reference wrote them; the servers on loopback, ucgw's gateway section
added). Every call it makes works; what it sends reaches the LPR server
stand-in. Also the asyncio client and the package's static checks."""
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
PYCLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python")
sys.path.insert(0, PYCLIENT)
from ucgw.aio import AsyncUnifiedCommunicationGateway  # noqa: E402
from lprpeer import LprPeer  # noqa: E402
from ucgwtest import GatewayTest, free_port, wait_for  # noqa: E402

REFERENCE_CONFIG = """\
# communication_config.yaml
websocket:
  server_url: "{ws}"
  reconnect_attempts: 3
  reconnect_delay: 5

rest:
  base_url: "{http}"
  timeout: 30
  retry_attempts: 3

mqtt:
  broker_url: "127.0.0.1:{closed}"
  client_id: "aicamera-edge-001"
  username: "edge_user"
  password: "secure_password"

sftp:
  host: "127.0.0.1"
  port: {closed}
  username: "edge_user"
  key_file: "{tmp}/id_rsa"
  known_hosts: "{tmp}/known_hosts"
  remote_path: "/data/lpr_images"

rsync:
  remote_host: "127.0.0.1"
  port: {closed}
  remote_user: "edge_user"
  key_file: "{tmp}/id_rsa"
  known_hosts: "{tmp}/known_hosts"
  remote_path: "/data/lpr_images"
  options: ["-azP", "--delete"]

protocol_selection:
  auto_select: true
  priority_based: true
  network_aware: true

fallback:
  enabled: true
  max_attempts: 3

gateway:
  control_socket: "{tmp}/gw/control.sock"
  state_dir: "{tmp}/gw/state"
  crash_dir: "{tmp}/gw/crash"
  worker_dir: "{bin}"
"""

# The reference design's calls as its code makes them; only the import line is ucgw's.
REFERENCE_USAGE = """\
import sys
from ucgw import *  # was: the reference design's module

config_path, image_path = sys.argv[1], sys.argv[2]
config = load_communication_config(config_path)
assert isinstance(config.websocket, WebSocketConfig) and config.websocket.reconnect_attempts == 3
assert isinstance(config.rest, RESTConfig) and config.rest.timeout == 30
assert isinstance(config.mqtt, MQTTConfig) and config.mqtt.client_id == "aicamera-edge-001"
assert isinstance(config.sftp, SFTPConfig) and config.sftp.remote_path == "/data/lpr_images"
assert isinstance(config.rsync, RSyncConfig) and config.rsync.options == ["-azP", "--delete"]
assert isinstance(config.protocol_selection, ProtocolSelectionConfig) and config.protocol_selection.auto_select
assert isinstance(config.fallback, FallbackConfig) and config.fallback.max_attempts == 3

gateway = UnifiedCommunicationGateway(config)
data = {'plate': 'REF001', 'confidence': 0.97}
result = gateway.send_metadata(data, protocol='auto', priority='normal')
assert isinstance(result, CommunicationResult) and result.success, result.error
result = gateway.send_metadata(data, protocol='rest')
assert result.success, result.error
result = gateway.send_file(image_path, protocol='auto', priority='normal')
assert result.success, result.error

protocol = gateway.protocol_selector.select_metadata_protocol(data, 'normal')
assert protocol in ('websocket', 'rest'), protocol
assert gateway.protocol_selector.select_metadata_protocol(data, 'high') in ('websocket', 'mqtt', 'rest')
assert gateway.protocol_selector.select_file_protocol(image_path, 'high') == 'sftp'
assert gateway.fallback_manager.has_fallback('websocket')
assert gateway.fallback_manager.get_fallback('websocket') == 'rest'
assert gateway.fallback_manager.get_all_fallbacks('sftp') == ['rsync']

assert gateway.websocket_client.send(data).success
assert gateway.rest_client.post(data).success
assert gateway.mqtt_client.publish(data).success      # accepted: ucgwd delivers it when the broker is up
assert gateway.sftp_client.upload(image_path).success
assert gateway.rsync_client.sync(image_path).success

monitor = CommunicationMonitor()
monitor.record_communication('rest', True, 0.01)
stats = monitor.get_protocol_stats('rest')
assert set(stats) >= {'success_rate', 'total_attempts', 'average_latency'}, stats
overall = monitor.get_overall_stats()
assert 'websocket' in overall and 'rest' in overall, overall

network_monitor = NetworkMonitor()
assert network_monitor.get_quality() in ('excellent', 'good', 'fair', 'poor', 'unknown')

dashboard = CommunicationDashboard()
d = dashboard.get_dashboard_data()
assert set(d) >= {'protocol_stats', 'network_quality', 'active_connections', 'recent_errors'}, set(d)

selector = ProtocolSelector(config)
assert selector.select_metadata_protocol(data) in ('websocket', 'rest')
fallback_manager = FallbackManager(config)
assert fallback_manager.get_fallback('rest') == 'mqtt'
s = gateway.get_statistics()
print(s['rest']['total_attempts'], s['websocket']['total_attempts'])
"""


class ReferenceUsageTest(GatewayTest):
    def setUp(self):
        super().setUp()
        self.peer = LprPeer(self)
        for name in ("id_rsa", "known_hosts"):
            with open(os.path.join(self.tmp, name), "w") as f:
                f.write("")
        from ucgwtest import BIN
        self.cfg_path = os.path.join(self.tmp, "communication_config.yaml")
        with open(self.cfg_path, "w") as f:
            f.write(REFERENCE_CONFIG.format(ws=self.peer.ws_url(), http=self.peer.http_url(), closed=free_port(),
                                            tmp=self.tmp, bin=BIN))
        os.makedirs(os.path.join(self.tmp, "gw"))
        self.sock = os.path.join(self.tmp, "gw", "control.sock")
        self.log = open(os.path.join(self.tmp, "ucgwd.log"), "wb")
        self.proc = self.spawn([os.path.join(BIN, "ucgwd"), "-c", self.cfg_path], stdout=self.log,
                               stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(self.sock), timeout=15, what="ucgwd's control socket")
        from ucgw import UnifiedCommunicationGateway
        with UnifiedCommunicationGateway(self.cfg_path) as gw:  # the reference's own call: its config path
            wait_for(lambda: any(w["name"] == "websocket" and w["connected"] for w in gw.workers().data or []),
                     what="websocket up")

    def tearDown(self):
        if getattr(self, "proc", None) and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self.log.close()
        super().tearDown()

    def test_reference_usage_runs(self):
        image = os.path.join(self.tmp, "plate-0001.jpg")
        with open(image, "wb") as f:
            f.write(os.urandom(3000))
        env = dict(os.environ, PYTHONPATH=PYCLIENT, UCGW_SOCKET=self.sock)
        r = subprocess.run([sys.executable, "-c", REFERENCE_USAGE, self.cfg_path, image], capture_output=True,
                           text=True, env=env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        wait_for(lambda: len([x for x in self.peer.records() if json.dumps(x).find("REF001") >= 0]) >= 4,
                 what="the reference's sends at the server")

    def test_asyncio_client(self):
        async def main():
            async with AsyncUnifiedCommunicationGateway(self.cfg_path) as gw:
                rs = await asyncio.gather(*(gw.send_metadata({"plate": "AIO%d" % i}, protocol="rest")
                                            for i in range(20)))
                self.assertTrue(all(r.success for r in rs), [r.error for r in rs])
                self.assertEqual(len({r.id for r in rs}), 20)
                w = await gw.send_metadata({"plate": "AIOW"}, protocol="websocket", wait=True)
                self.assertTrue(w.success, w.error)
                self.assertEqual(w.data["status"], "ok")
                self.assertEqual(w.data["protocol"], "websocket")
                self.assertIn("rest", await gw.get_statistics())
                self.assertFalse((await AsyncUnifiedCommunicationGateway(
                    socket_path=os.path.join(self.tmp, "none")).status()).success)
                return [r.id for r in rs] + [w.id]
        ids = asyncio.run(main())
        wait_for(lambda: set(ids) <= {x.get("id") for x in self.peer.records()}, what="the asyncio sends delivered")


class PackageChecksTest(unittest.TestCase):
    @unittest.skipUnless(shutil.which("mypy"), "mypy not installed (Debian: mypy)")
    def test_mypy_strict(self):
        r = subprocess.run(["mypy", "--strict", "--no-incremental", "--cache-dir", "/dev/null", "ucgw"],
                           cwd=PYCLIENT, capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_pip_installs_it(self):
        """pip install --no-build-isolation (Debian's setuptools, no network) into a target directory."""
        if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode != 0:
            self.skipTest("pip not installed (Debian: python3-pip)")
        tmp = tempfile.mkdtemp(prefix="ucgw-pip-")
        src = os.path.join(tmp, "src")
        try:
            shutil.copytree(PYCLIENT, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info",
                                                                        ".mypy_cache"))
            r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-index",
                                "--no-deps", "--target", os.path.join(tmp, "site"), src],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            for f in ("__init__.py", "py.typed", "aio.py", "reference.py"):
                self.assertTrue(os.path.exists(os.path.join(tmp, "site", "ucgw", f)), f)
            r = subprocess.run([sys.executable, "-c", "import ucgw, ucgw.aio; print(ucgw.__file__)"],
                               env=dict(os.environ, PYTHONPATH=os.path.join(tmp, "site")), capture_output=True,
                               text=True, cwd=tmp)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(r.stdout.startswith(os.path.join(tmp, "site")), r.stdout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
