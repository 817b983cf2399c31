#!/usr/bin/python3
"""What accepting a file costs: N files of 100 KiB sent with send-file
(pipelined, the open descriptor passed, as the client libraries do) into a
gateway whose file protocol is paused, so nothing is delivered meanwhile.
Prints files/s accepted and ucgwd's CPU per file (user + system, from
/proc), for the camera's files on the spool's own file system and, where
/dev/shm is another one, on a tmpfs. Asserts nothing.

UCGW_BUILD_DIR picks the build (to compare two); UCGW_BENCH_FSYNC sets
spool.fsync (default batch); UCGW_BENCH_N the number of files (default 2000)."""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from ctlclient import Ctl  # noqa: E402
from ucgwtest import Gateway, Scene, unreachable_protocols, wait_for  # noqa: E402

N = int(os.environ.get("UCGW_BENCH_N", "2000"))
FSYNC = os.environ.get("UCGW_BENCH_FSYNC", "batch")
SIZE = 100 * 1024
WINDOW = 64


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(s, srcdir, name):
    paths = []
    for i in range(N):
        p = os.path.join(srcdir, "cam%05d.jpg" % i)
        with open(p, "wb") as f:
            f.write(os.urandom(SIZE))
        paths.append(p)
    gw = Gateway(s.tmp, {"gateway": {"log_level": "warning"}, "spool": {"fsync": FSYNC},
                         "sftp": unreachable_protocols()["sftp"]}, "gw-" + name)
    gw.start()
    assert gw.ctl("pause", "sftp")[0] == 0
    pid = gw.daemon_pid()
    ctl = Ctl(gw.sock)
    c0, t0 = cpu_s(pid), time.monotonic()
    sent = answered = 0
    while answered < N:
        while sent < N and sent - answered < WINDOW:
            fd = os.open(paths[sent], os.O_RDONLY)
            ctl.request("send-file", {"path": paths[sent], "fd": True, "protocol": "sftp"}, fd)
            os.close(fd)
            sent += 1
        r = ctl.reply(timeout=120)
        assert r["ok"], r
        answered += 1
    dt, dc = time.monotonic() - t0, cpu_s(pid) - c0
    ctl.close()
    wait_for(lambda: gw.ctl_json("status")["spool"]["depth"] == N, what="all in the spool")
    gw.stop()
    print("%-28s %6d files  %8.0f files/s accepted  %7.1f us of ucgwd CPU per file" %
          (name, N, N / dt, dc / N * 1e6))
    for p in paths:
        os.remove(p)


def main():
    s = Scene()
    try:
        print("build %s, spool.fsync %s, %d KiB files, window %d, loopback" %
              (os.environ.get("UCGW_BUILD_DIR", "build"), FSYNC, SIZE // 1024, WINDOW))
        same = os.path.join(s.tmp, "src")
        os.makedirs(same)
        run(s, same, "same file system")
        shm = "/dev/shm"
        if os.path.isdir(shm) and os.stat(shm).st_dev != os.stat(s.tmp).st_dev:
            other = tempfile.mkdtemp(prefix="ucgw-bench-", dir=shm)
            try:
                run(s, other, "tmpfs (another fs)")
            finally:
                shutil.rmtree(other, ignore_errors=True)
    finally:
        s.close()


if __name__ == "__main__":
    main()
