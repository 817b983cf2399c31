#!/usr/bin/python3
"""Files through the gateway by SFTP and rsync beside OpenSSH's sftp and plain
rsync -e ssh doing the same, against one local sshd, in one run: one large file
and many small ones. Prints MB/s, files/s and ratios; asserts nothing.
UCGW_BENCH_FSYNC sets the gateway's spool.fsync (default batch)."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from ctlclient import Ctl  # noqa: E402
from sshd import Sshd  # noqa: E402
from ucgwtest import Gateway, Scene, wait_for  # noqa: E402

LARGE_MB = int(os.environ.get("UCGW_BENCH_LARGE_MB", "200"))
SMALL_N = int(os.environ.get("UCGW_BENCH_SMALL_N", "500"))
FSYNC = os.environ.get("UCGW_BENCH_FSYNC", "batch")  # spool.fsync: always, batch or never


def clear(d):
    for f in os.listdir(d):
        p = os.path.join(d, f)
        if os.path.isfile(p):
            os.remove(p)


def count(d, suffix):
    return len([f for f in os.listdir(d) if f.endswith(suffix)])


def main():
    s = Scene()
    try:
        sshd = Sshd(s)
        src = os.path.join(s.tmp, "src")
        os.makedirs(src)
        large = os.path.join(src, "large.bin")
        with open(large, "wb") as f:
            for _ in range(LARGE_MB):
                f.write(os.urandom(1 << 20))
        small = []
        for i in range(SMALL_N):
            p = os.path.join(src, "s%04d.jpg" % i)
            with open(p, "wb") as f:
                f.write(os.urandom(100 * 1024))
            small.append(p)
        ssh = ["-o", "UserKnownHostsFile=" + sshd.known_hosts, "-o", "StrictHostKeyChecking=yes", "-i", sshd.user_key,
               "-o", "BatchMode=yes"]
        dest = "%s@127.0.0.1:%s/" % (sshd.user, sshd.remote)
        res = {}

        def timed(fn):
            t0 = time.monotonic()
            fn()
            return time.monotonic() - t0

        # direct tools
        clear(sshd.remote)
        batch = os.path.join(s.tmp, "batch")
        with open(batch, "w") as f:
            f.write("put %s %s/\n" % (large, sshd.remote))
        res[("sftp", "direct", "large")] = timed(lambda: subprocess.run(
            ["sftp", "-q", "-P", str(sshd.port), *ssh, "-b", batch, "%s@127.0.0.1" % sshd.user], check=True,
            capture_output=True))
        clear(sshd.remote)
        res[("rsync", "direct", "large")] = timed(lambda: subprocess.run(
            ["rsync", "-a", "-e", "ssh -p %d %s" % (sshd.port, " ".join(ssh)), large, dest], check=True))
        clear(sshd.remote)
        # the reference design's way: one connection per file (sftp per file)
        per_file = min(50, SMALL_N)
        t = timed(lambda: [subprocess.run(["sftp", "-q", "-P", str(sshd.port), *ssh, "-b", "-",
                                           "%s@127.0.0.1" % sshd.user], input="put %s %s/\n" % (p, sshd.remote),
                                          text=True, check=True, capture_output=True) for p in small[:per_file]])
        res[("sftp", "per-file connection", "small")] = t * SMALL_N / per_file
        clear(sshd.remote)
        res[("rsync", "direct", "small")] = timed(lambda: subprocess.run(
            ["rsync", "-a", "-e", "ssh -p %d %s" % (sshd.port, " ".join(ssh)), *small, dest], check=True))
        # through the gateway
        cfg = {"gateway": {"log_level": "warning", "job_timeout_ms": 600000}, "spool": {"fsync": FSYNC},
               "sftp": {"host": "127.0.0.1", "port": sshd.port, "username": sshd.user, "key_file": sshd.user_key,
                        "known_hosts": sshd.known_hosts, "remote_path": sshd.remote},
               "rsync": {"remote_host": "127.0.0.1", "port": sshd.port, "remote_user": sshd.user,
                         "key_file": sshd.user_key, "known_hosts": sshd.known_hosts, "remote_path": sshd.remote,
                         "options": ["-a"], "timeout": 600}}
        gw = Gateway(s.tmp, cfg, "gw")
        gw.start()
        wait_for(lambda: all(w["connected"] for w in gw.workers().values()), what="servers")
        for proto in ("sftp", "rsync"):
            clear(sshd.remote)
            res[(proto, "gateway", "large")] = timed(
                lambda: gw.ctl("send-file", "--protocol", proto, "--wait", large, timeout=600))
            clear(sshd.remote)
            ctl = Ctl(gw.sock)

            def many():
                for p in small:
                    ctl.request("send-file", {"path": p, "protocol": proto})
                for _ in small:
                    ctl.reply()
                wait_for(lambda: count(sshd.remote, ".jpg") == SMALL_N, timeout=600, step=0.02, what="small files")
            res[(proto, "gateway", "small")] = timed(many)
            ctl.close()
        gw.stop()
        mb = LARGE_MB * 1.048576
        print("\none %d MiB file (MB/s) and %d files of 100 KiB (files/s), same sshd, same run, spool.fsync %s:"
              % (LARGE_MB, SMALL_N, FSYNC))
        for proto in ("sftp", "rsync"):
            g, d = res[(proto, "gateway", "large")], res[(proto, "direct", "large")]
            print("  %-5s large: gateway %7.1f MB/s   direct %7.1f MB/s   ratio %.2f" % (proto, mb / g, mb / d, d / g))
        gs = res[("sftp", "gateway", "small")]
        ps = res[("sftp", "per-file connection", "small")]
        print("  sftp  small: gateway %7.1f files/s   one connection per file %6.1f files/s   ratio %.1fx"
              % (SMALL_N / gs, SMALL_N / ps, ps / gs))
        gr, dr = res[("rsync", "gateway", "small")], res[("rsync", "direct", "small")]
        print("  rsync small: gateway %7.1f files/s   one rsync for all     %6.1f files/s   ratio %.2f"
              % (SMALL_N / gr, SMALL_N / dr, dr / gr))
    finally:
        s.close()


if __name__ == "__main__":
    main()
