"""lpr-peer (tests/peers/) started for a test: the LPR server stand-in."""
import json
import os
import subprocess
import urllib.request

from ucgwtest import BIN


class LprPeer:
    def __init__(self, test, port=0, tls=None, mode=None, ws_ack=None, name="peer", extra=()):
        self.test = test
        self.record = os.path.join(test.tmp, name + ".jsonl")
        self.tls = tls
        self.args = [os.path.join(BIN, "lpr-peer"), "--record", self.record]
        if tls:
            self.args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        if mode:
            self.args += ["--mode", mode]
        if ws_ack:
            self.args += ["--ws-ack", ws_ack]
        self.args += list(extra)
        self.port = port
        self.start()

    def start(self):
        self.proc = self.test.spawn(self.args + ["--port", str(self.port)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            raise RuntimeError("lpr-peer did not start: %r" % line)
        self.port = int(line.split()[2])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()

    def http_url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def ws_url(self, path="/lpr"):
        return "%s://127.0.0.1:%d%s" % ("wss" if self.tls else "ws", self.port, path)

    def control(self, what, body=""):
        """POST to one of lpr-peer's /_control/ endpoints; its JSON answer."""
        req = urllib.request.Request("http://127.0.0.1:%d/_control/%s" % (self.port, what), data=body.encode(),
                                     method="POST")
        return json.loads(urllib.request.urlopen(req, timeout=5).read())

    def mode(self, m):
        return self.control("mode", m)

    def delay(self, ms):
        """Answer each HTTP record ms milliseconds after it arrived."""
        return self.control("delay", str(ms))

    def reset(self):
        """Forget the records and the counts."""
        return self.control("reset")

    def records(self, proto=None):
        try:
            with open(self.record) as f:
                recs = [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []
        return [r for r in recs if proto is None or r["proto"] == proto]
