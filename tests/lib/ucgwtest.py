"""Test harness: starts the real ucgwd (and real servers) in a temporary
directory on free loopback ports, and cleans up even when a test fails.

Test files import this module and use /usr/bin/python3 (Debian's packages)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("UCGW_BUILD_DIR", os.path.join(SRC, "build"))
BIN = os.path.join(BUILD, "bin")

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "ERROR: UndefinedBehaviorSanitizer")


def unreachable_protocols():
    """A section for every real protocol, each pointed at a closed port (127.0.0.1:9):
    their workers start and initialise their libraries all the same."""
    return {
        "websocket": {"server_url": "ws://127.0.0.1:9/"},
        "rest": {"base_url": "http://127.0.0.1:9"},
        "mqtt": {"broker_url": "127.0.0.1:9", "client_id": "t"},
        "sftp": {"host": "127.0.0.1", "username": "u", "port": 9, "password": "x",
                 "host_key_fingerprint": "SHA256:none"},
        "rsync": {"remote_host": "127.0.0.1", "remote_user": "u", "options": ["-a"]},
    }


def preload(lib, **settings):
    """ucgwd's environment with a tool of tests/tools (e.g. "slowdns.so") preloaded, and its settings."""
    env = {"LD_PRELOAD": os.path.join(BIN, lib),
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    env.update(settings)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_tmpfs(test, path, size="4m"):
    """Mount a tmpfs of size at path (made here) for test, unmounted at its
    end; the test is skipped where it cannot be (not root, no mount)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        test.skipTest("needs root to mount a small tmpfs")
    os.makedirs(path)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", path], capture_output=True)
    if r.returncode != 0:
        test.skipTest("cannot mount tmpfs here: %s" % r.stderr.decode().strip())
    test.addCleanup(subprocess.run, ["umount", "-l", path])
    return path


def wait_for(pred, timeout=10.0, step=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))


def proc_number(pid, name, key):
    """The first number of the line "key:" in /proc/PID/name (sizes are in kB), or 0."""
    with open("/proc/%d/%s" % (pid, name)) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def under_asan(pid):
    """Whether the process runs with AddressSanitizer (whose shadow memory and
    quarantine are not ours to count)."""
    with open("/proc/%d/maps" % pid) as f:
        return "libasan" in f.read()


def writable_by_workers(path):
    """The test worker's record file is its "server": when the tests run as root,
    the workers run as security.worker_user (nobody), so the file must be
    writable by anyone and its directories searchable."""
    if os.geteuid() != 0:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a"):
        pass
    os.chmod(path, 0o666)
    d = os.path.dirname(os.path.abspath(path))
    while d != "/":
        mode = os.stat(d).st_mode
        if not mode & 0o001:
            os.chmod(d, (mode & 0o7777) | 0o011)
        d = os.path.dirname(d)


class Gateway:
    """One ucgwd in its own directory. cfg is a dict written as YAML (JSON is YAML)."""

    def __init__(self, tmp, cfg, name="gw"):
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "control.sock")
        self.log_path = os.path.join(self.dir, "ucgwd.log")
        self.cfg_path = os.path.join(self.dir, "ucgw.yaml")
        gw = cfg.setdefault("gateway", {})
        gw.setdefault("control_socket", self.sock)
        gw.setdefault("state_dir", os.path.join(self.dir, "state"))
        gw.setdefault("crash_dir", os.path.join(self.dir, "crash"))
        gw.setdefault("worker_dir", BIN)
        gw.setdefault("device_id", "test-cam-1")
        cfg.setdefault("metrics", {}).setdefault("listen", "")
        record = (cfg.get("testworker") or {}).get("record")
        if record:
            writable_by_workers(record)
        self.cfg = cfg
        self.write_config(cfg)
        self.proc = None
        self.log = None

    def write_config(self, cfg, text=None):
        with open(self.cfg_path, "w") as f:
            f.write(text if text is not None else json.dumps(cfg, indent=2) + "\n")

    def start(self, wait_ready=True, extra_args=(), env=None, wrapper=()):
        """env: variables added to ucgwd's environment (its workers inherit them), e.g. preload().
        wrapper: a command that runs ucgwd (e.g. strace and its options); self.proc is then that
        command, and daemon_pid() ucgwd."""
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*wrapper, os.path.join(BIN, "ucgwd"), "-c", self.cfg_path, *extra_args],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env=dict(os.environ, **env) if env else None)
        if wait_ready:
            wait_for(lambda: self.ctl("status")[0] == 0, timeout=15, what="ucgwd control socket")
            self.wait_workers(lambda ws: all(w["state"] in ("ready", "failed") for w in ws),
                              what="workers settled")
        return self

    def ctl(self, *args, input=None, timeout=60):
        r = subprocess.run([os.path.join(BIN, "ucgwctl"), "-s", self.sock, *args], input=input,
                           capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    def ctl_json(self, *args):
        rc, out, err = self.ctl("--json", *args)
        if rc != 0:
            raise AssertionError("ucgwctl %s failed (%d): %s" % (" ".join(args), rc, err))
        return json.loads(out)

    def workers(self):
        return {w["name"]: w for w in self.ctl_json("workers")}

    def wait_workers(self, pred, timeout=20, what="workers"):
        def check():
            rc, out, _ = self.ctl("--json", "workers")
            if rc != 0:
                return None
            ws = json.loads(out)
            return ws if pred(ws) else None
        return wait_for(check, timeout=timeout, what=what)

    def wait_worker(self, name, pred, timeout=20, what=None):
        def check():
            w = self.workers().get(name)
            return w if w and pred(w) else None
        return wait_for(check, timeout=timeout, what=what or ("worker %s" % name))

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def daemon_pid(self):
        """ucgwd's pid: the one it gives in `ucgwctl status --json`."""
        return self.ctl_json("status")["pid"]

    def children(self):
        """pids of every process whose parent is ucgwd."""
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        parts = f.read().rsplit(")", 1)[1].split()
                    if int(parts[1]) == self.proc.pid:
                        out.append(int(d))
                except (FileNotFoundError, ProcessLookupError, IndexError):
                    pass
        return out

    def stop(self, timeout=20):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        if self.proc:
            try:  # workers left behind by a killed supervisor die of PDEATHSIG; make sure
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.log:
            self.log.close()
            self.log = None

    def sanitizer_report(self):
        text = self.log_text()
        return [l for l in text.splitlines() if any(m in l for m in SANITIZER_MARKS)]


class GatewayTest(unittest.TestCase):
    """Each test gets a temporary directory; gateways started with gateway()
    are killed at the end, and a sanitizer report in their log fails the test."""

    keep_tmp = bool(os.environ.get("UCGW_KEEP_TMP"))

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ucgw-test-")
        self.gateways = []
        self.cleanups_procs = []

    def tearDown(self):
        for gw in self.gateways:
            gw.kill()
        for p in self.cleanups_procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        reports = []
        for gw in self.gateways:
            reports += gw.sanitizer_report()
        failed = any(e for e in self._outcome.errors if e[1]) if hasattr(self._outcome, "errors") else False
        if (failed or reports) or self.keep_tmp:
            for gw in self.gateways:
                tail = gw.log_text().splitlines()[-40:]
                print("\n--- log of %s (last 40 lines) ---\n%s" % (gw.dir, "\n".join(tail)))
        if not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if reports:
            self.fail("sanitizer reports in the daemon log:\n" + "\n".join(reports[:10]))

    def gateway(self, cfg, start=True, name=None, **kw):
        gw = Gateway(self.tmp, cfg, name or "gw%d" % len(self.gateways))
        self.gateways.append(gw)
        if start:
            gw.start(**kw)
        return gw

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.cleanups_procs.append(p)
        return p


class FaultProxy:
    """tests/tools/faultproxy.py in front of a real server."""

    def __init__(self, test, target_port, target_host="127.0.0.1"):
        import socket as _s
        self.proc = test.spawn(["/usr/bin/python3", os.path.join(SRC, "tests", "tools", "faultproxy.py"), "0",
                                target_host, str(target_port), "0"], stdout=subprocess.PIPE, text=True)
        words = self.proc.stdout.readline().split()
        self.port, self.control_port = int(words[2]), int(words[4])
        self.ctl = _s.create_connection(("127.0.0.1", self.control_port))
        self.ctl_file = self.ctl.makefile("rw")
        test.addCleanup(self.close)  # after tearDown has killed the proxy

    def close(self):
        for f in (self.ctl_file, self.ctl, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def command(self, line):
        self.ctl_file.write(line + "\n")
        self.ctl_file.flush()
        return self.ctl_file.readline().strip()



def testworker_config(tmp, **tw):
    """A gateway with only the test worker, recording its deliveries in tmp/delivered.txt;
    tw: more [testworker] settings."""
    t = {"record": os.path.join(tmp, "delivered.txt")}
    t.update(tw)
    return {"gateway": {"log_level": "info", "max_message_bytes": 4096, "job_timeout_ms": 5000},
            "spool": {"retry_backoff_min_ms": 200, "retry_backoff_max_ms": 1000},
            "testworker": t}


def delivered(tmp):
    """The test worker's record of deliveries, one list of fields per line."""
    try:
        with open(os.path.join(tmp, "delivered.txt")) as f:
            return [l.split() for l in f if l.strip()]
    except FileNotFoundError:
        return []

def wait_port(port, what, timeout=10):
    """Until something accepts TCP connections on 127.0.0.1:port."""
    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    wait_for(up, timeout=timeout, what=what)


class Scene:
    """What the server fixtures need outside a test (the demo, the benchmarks):
    a directory, and a way to start processes that close() stops."""

    def __init__(self, prefix="ucgw-scene-"):
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.procs = []

    def spawn(self, argv, **kw):
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    def close(self, remove=True):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if remove:
            shutil.rmtree(self.tmp, ignore_errors=True)
