"""Outbound credentials (MQTT password, REST and WebSocket API keys, the JWT
secret, the SFTP password) reach their servers and nothing else: not the daemon
log, not a crash log written after kill -9 of each worker, not `status`,
`workers`, `stats`, `queue` or `trace` in text or --json, not a worker's
command line or environment, not another protocol's worker."""
import glob
import json
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from lprpeer import LprPeer  # noqa: E402
from mosquitto import Mosquitto  # noqa: E402
from ucgwtest import GatewayTest, free_port, wait_for  # noqa: E402

MQTT_PW = "mq-pw-7d1e9f2b"
REST_KEY = "rest-key-b82c41aa"
WS_KEY = "ws-key-93fa0e17"
JWT_SECRET = "jwt-secret-4a7c55d0e1f3"
SFTP_PW = "sftp-pw-31c7e2d9"
SECRETS = [MQTT_PW, REST_KEY, WS_KEY, JWT_SECRET, SFTP_PW]


class SecretsTest(GatewayTest):
    def test_outbound_secrets_are_never_shown(self):
        mq = Mosquitto(self, users={"edge": MQTT_PW})
        peer = LprPeer(self)
        secret = os.path.join(self.tmp, "jwt.secret")
        with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(JWT_SECRET + "\n")
        known = os.path.join(self.tmp, "known_hosts")
        open(known, "w").close()
        gw = self.gateway({
            "mqtt": {"broker_url": mq.url(), "username": "edge", "password": MQTT_PW},
            "rest": {"base_url": peer.http_url(), "api_key": REST_KEY, "jwt_secret_file": secret},
            "websocket": {"server_url": peer.ws_url(), "api_key": WS_KEY},
            "sftp": {"host": "127.0.0.1", "port": free_port(), "username": "cam", "password": SFTP_PW,
                     "remote_path": "/upload", "known_hosts": known},
        })
        for p in ("mqtt", "rest", "websocket"):
            wait_for(lambda: gw.workers()[p]["connected"], what="%s connected" % p)
        ids = []
        for p in ("mqtt", "rest", "websocket"):
            o = gw.ctl_json("send", "--protocol", p, "--wait", '{"plate":"SEC%s"}' % p[:3].upper())
            self.assertEqual(o["status"], "ok", o)
            ids.append(o["id"])
        # the credentials did reach their servers
        heads = json.dumps(peer.records())
        self.assertIn(REST_KEY, heads)
        self.assertIn(WS_KEY, heads)

        # each worker's own command line and environment, and its neighbours' config
        workers = gw.workers()
        for name, w in workers.items():
            if not w.get("pid"):
                continue
            for part in ("cmdline", "environ"):
                with open("/proc/%d/%s" % (w["pid"], part), "rb") as f:
                    data = f.read().decode(errors="replace")
                for s in SECRETS:
                    self.assertNotIn(s, data, "%s in the %s of %s" % (s, part, name))

        # crash logs: kill -9 each worker, wait for the restart
        for name in ("mqtt", "rest", "websocket", "sftp"):
            old = gw.workers()[name]
            if old.get("pid"):
                os.kill(old["pid"], signal.SIGKILL)
                gw.wait_worker(name, lambda w, o=old: w["restarts"] > o["restarts"] and w["state"] != "starting",
                               timeout=30, what="%s restarted" % name)
        crash_logs = glob.glob(os.path.join(gw.dir, "crash", "**", "*"), recursive=True)
        crash_files = [c for c in crash_logs if os.path.isfile(c)]
        self.assertEqual(len(crash_files), 4, crash_logs)

        texts = {"daemon log": gw.log_text()}
        for c in crash_files:
            with open(c, errors="replace") as f:
                texts[c] = f.read()
        for args in (["status"], ["workers"], ["stats"], ["queue"], ["queue", "dead"]) + tuple(
                ["trace", i] for i in ids):
            for fmt in ([], ["--json"]):
                rc, out, err = gw.ctl(*fmt, *args)
                self.assertEqual(rc, 0, (args, err))
                texts["ucgwctl %s" % " ".join(fmt + args)] = out + err
        for where, text in texts.items():
            for s in SECRETS:
                self.assertNotIn(s, text, "a credential in %s" % where)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to read as another user")
    def test_secret_file_owned_by_the_daemons_user(self):
        """What docs/operations.md says works: a KEY_file owned by the user ucgwd
        runs as, mode 0600. Owned by root it cannot be read (and the error says
        by whom it is read); mode 0640 for a group is refused."""
        import subprocess
        from ucgwtest import BIN
        os.chmod(self.tmp, 0o711)
        pw = os.path.join(self.tmp, "mqtt.password")
        with open(pw, "w") as f:
            f.write(MQTT_PW + "\n")
        os.chmod(pw, 0o600)
        gw = self.gateway({"mqtt": {"broker_url": "127.0.0.1:9", "client_id": "c", "username": "edge",
                                    "password_file": pw}}, start=False)
        os.chmod(gw.dir, 0o755)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

        def check():
            r = subprocess.run(nobody + [os.path.join(BIN, "ucgwd"), "-n", "-c", gw.cfg_path],
                               capture_output=True, text=True)
            return r.returncode, r.stderr
        rc, err = check()
        self.assertEqual(rc, 1)
        self.assertIn("cannot read password_file %s: Permission denied; it is read as user nobody (uid 65534): "
                      "make the user ucgwd runs as its owner, mode 0600" % pw, err)
        os.chown(pw, 0, 65534)
        os.chmod(pw, 0o640)
        rc, err = check()
        self.assertEqual(rc, 1)
        self.assertIn("is readable by its group (mode 0640); chmod 600 it", err)
        os.chown(pw, 65534, 65534)
        os.chmod(pw, 0o600)
        rc, err = check()
        self.assertEqual(rc, 0, err)
        self.assertNotIn(MQTT_PW, err)


if __name__ == "__main__":
    unittest.main()
