"""tests/tools/linkem.c (build/bin/ucgw-linkem) in front of a server, for tests and benchmarks.

    with Link(target_port, profile="lte") as link:
        connect to ("127.0.0.1", link.port) instead of the server
        link.down(); link.up(); link.stats()["up_bytes"]

In a unittest, Link.for_test(test, port, ...) stops it at the test's end.
"""
import os
import socket
import subprocess
import tempfile
import time

SRC = os.environ.get("UCGW_SRC_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("UCGW_BUILD_DIR", os.path.join(SRC, "build"))
BINARY = os.path.join(BUILD, "bin", "ucgw-linkem")

# name: (one-way delay in ms, rate in kbit/s each way); the same as linkem.c's.
PROFILES = {"lan": (1, 100000), "lte": (50, 20000), "poor": (150, 5000)}


def payload_capacity(profile):
    """Bytes per second that profile's link carries each way. The emulator charges the
    bytes a TCP connection carries (no IP/TCP headers), so this is all the
    application's: its protocol's framing and headers count against its payload."""
    return PROFILES[profile][1] * 1000 / 8


def rtt(profile):
    return 2 * PROFILES[profile][0] / 1000.0


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Link:
    """One ucgw-linkem: port is where clients connect, control_port its control line protocol.
    more_targets: ports of more servers on target_host behind the same link (its rate and
    buffers shared); port_for(target) says where to connect for each."""

    def __init__(self, target_port, profile="lte", target_host="127.0.0.1", delay_ms=None, rate_kbit=None,
                 buffer_bytes=None, jitter_ms=None, more_targets=(), binary=BINARY):
        self.profile = profile
        self.proc = None
        self.log = None
        self._ctl = None
        args = ["--profile", profile]
        for flag, value in (("--delay-ms", delay_ms), ("--rate-kbit", rate_kbit),
                            ("--buffer-bytes", buffer_bytes), ("--jitter-ms", jitter_ms)):
            if value is not None:
                args += [flag, str(value)]
        # Its stderr (and a sanitizer's report) goes to a file that stop() checks.
        self.log = tempfile.NamedTemporaryFile(prefix="ucgw-linkem-", suffix=".log", mode="w+")
        for attempt in range(5):  # a free port may be taken by someone else before we bind it
            self.port, self.control_port = _free_port(), _free_port()
            self.ports = {target_port: self.port}
            routes = []
            for t in more_targets:
                self.ports[t] = _free_port()
                routes += ["--route", "%d:%s:%d" % (self.ports[t], target_host, t)]
            self.log.truncate(0)
            self.proc = subprocess.Popen([binary, str(self.port), target_host, str(target_port), *args,
                                          "--control", str(self.control_port), *routes],
                                         stdout=subprocess.PIPE, stderr=self.log, text=True)
            if self.proc.stdout.readline().strip() == "ready":
                break
            self.proc.wait()
            err = self.log_text()
            if "cannot listen" not in err or attempt == 4:
                raise RuntimeError("ucgw-linkem did not start: " + err.strip())
        self._ctl = socket.create_connection(("127.0.0.1", self.control_port))
        self._ctl_file = self._ctl.makefile("rw")

    @classmethod
    def for_test(cls, test, target_port, **kw):
        link = cls(target_port, **kw)
        test.addCleanup(link.stop)
        return link

    def port_for(self, target_port):
        return self.ports[target_port]

    def command(self, line):
        """Send one control line, return its one-line answer; raise on an error answer."""
        self._ctl_file.write(line + "\n")
        self._ctl_file.flush()
        answer = self._ctl_file.readline().strip()
        if answer.startswith("error"):
            raise RuntimeError("ucgw-linkem: %s: %s" % (line, answer))
        return answer

    def down(self):
        self.command("down")

    def up(self):
        self.command("up")

    def set_profile(self, name):
        self.command("profile " + name)
        self.profile = name

    def stats(self):
        """The stats line as a dict: numbers as ints (state and profile as text)."""
        words = self.command("stats").split()
        out = {}
        for key, value in zip(words[::2], words[1::2]):
            out[key] = int(value) if value.isdigit() else value
        return out

    def capacity(self):
        """Payload bytes per second the link carries each way now."""
        return self.stats()["rate_kbit"] * 1000 / 8

    def log_text(self):
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        """Stop it; raise if it crashed or a sanitizer reported something."""
        if self._ctl:
            try:
                self._ctl_file.close()
                self._ctl.close()
            except OSError:
                pass
            self._ctl = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        if self.proc and self.log:
            text, code = self.log_text(), self.proc.returncode
            self.log.close()
            self.log = None
            if code not in (0, -15) or "Sanitizer" in text or "runtime error" in text:
                raise AssertionError("ucgw-linkem exited %s:\n%s" % (code, text[-4000:]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def wait_drained(link, timeout=60.0):
    """Until nothing is queued in the link either way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = link.stats()
        if s["up_queued"] == 0 and s["down_queued"] == 0:
            return
        time.sleep(0.02)
    raise AssertionError("the link still holds bytes after %.0fs" % timeout)
