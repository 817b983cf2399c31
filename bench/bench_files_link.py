#!/usr/bin/python3
"""Files through the gateway by SFTP and rsync over an emulated link
(tests/tools/linkem.c in front of a local sshd), beside OpenSSH's sftp (one
session, a batch of puts) and rsync -e ssh of the whole directory on the same
link in the same run: N images of 100 KiB (files/s) and one large file (MB/s),
with the share of the link's payload capacity. Asserts nothing.

UCGW_LINK: lan, lte (default) or poor; UCGW_BENCH_SMALL_N (default 200);
UCGW_BENCH_LARGE_MB (default 200, 0 skips it); UCGW_BENCH_ONLY: a comma list of
sftp,rsync,direct to run only those; UCGW_BENCH_DRAIN=N: also a drain, N images
sent while the link is down, then the time from the link's return until the
last is acknowledged, against the time the link's bandwidth needs for them."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
from ctlclient import Ctl  # noqa: E402
from linkem import Link, payload_capacity  # noqa: E402
from sshd import Sshd  # noqa: E402
from ucgwtest import Gateway, Scene, wait_for  # noqa: E402

PROFILE = os.environ.get("UCGW_LINK", "lte")
SMALL_N = int(os.environ.get("UCGW_BENCH_SMALL_N", "200"))
LARGE_MB = int(os.environ.get("UCGW_BENCH_LARGE_MB", "200"))
LINKEM = os.environ.get("UCGW_LINKEM", os.path.join(os.path.dirname(__file__), "..", "build", "bin", "ucgw-linkem"))
DRAIN = int(os.environ.get("UCGW_BENCH_DRAIN", "0"))
ONLY = set(os.environ.get("UCGW_BENCH_ONLY", "sftp,rsync,direct").split(","))
IMAGE = 100 * 1024


def clear(d):
    for f in os.listdir(d):
        p = os.path.join(d, f)
        if os.path.isfile(p):
            os.remove(p)


def count(d, suffix):
    return len([f for f in os.listdir(d) if f.endswith(suffix)])


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def drain(gw, link, sshd, proto, src):
    """DRAIN images sent while the link is down; seconds from its return until
    the gateway counts the last one delivered."""
    d = os.path.join(src, "drain")
    os.makedirs(d, exist_ok=True)
    paths = []
    for i in range(DRAIN):
        p = os.path.join(d, "d%04d.jpg" % i)
        with open(p, "wb") as f:
            f.write(os.urandom(IMAGE))
        paths.append(p)
    clear(sshd.remote)
    before = gw.ctl_json("stats")[proto]["success"]
    link.down()
    ctl = Ctl(gw.sock)
    for p in paths:
        ctl.request("send-file", {"path": p, "protocol": proto})
    for _ in paths:
        ctl.reply()
    ctl.close()
    time.sleep(5)
    link.up()
    t0 = time.monotonic()
    wait_for(lambda: gw.ctl_json("stats")[proto]["success"] - before >= DRAIN, timeout=3600, step=0.05,
             what="the backlog drained")
    return time.monotonic() - t0


def main():
    s = Scene()
    link = None
    try:
        sshd = Sshd(s)
        link = Link(sshd.port, profile=PROFILE, binary=LINKEM)
        kh = sshd.known_hosts_as("127.0.0.1", link.port, "link_known_hosts")
        src = os.path.join(s.tmp, "src")
        smalldir = os.path.join(src, "small")
        os.makedirs(smalldir)
        large = os.path.join(src, "large.bin")
        if LARGE_MB:
            with open(large, "wb") as f:
                for _ in range(LARGE_MB):
                    f.write(os.urandom(1 << 20))
        small = []
        for i in range(SMALL_N):
            p = os.path.join(smalldir, "s%04d.jpg" % i)
            with open(p, "wb") as f:
                f.write(os.urandom(IMAGE))
            small.append(p)
        ssh = ["-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes", "-i", sshd.user_key,
               "-o", "BatchMode=yes"]
        dest = "%s@127.0.0.1:%s/" % (sshd.user, sshd.remote)
        res = {}
        if "direct" in ONLY:
            batch = os.path.join(s.tmp, "batch")
            with open(batch, "w") as f:
                f.write("".join("put %s %s/\n" % (p, sshd.remote) for p in small))
            clear(sshd.remote)
            res[("sftp", "direct", "small")] = timed(lambda: subprocess.run(
                ["sftp", "-q", "-P", str(link.port), *ssh, "-b", batch, "%s@127.0.0.1" % sshd.user], check=True,
                capture_output=True))
            clear(sshd.remote)
            res[("rsync", "direct", "small")] = timed(lambda: subprocess.run(
                ["rsync", "-a", "-e", "ssh -p %d %s" % (link.port, " ".join(ssh)), smalldir + "/", dest],
                check=True))
            if LARGE_MB:
                with open(batch, "w") as f:
                    f.write("put %s %s/\n" % (large, sshd.remote))
                clear(sshd.remote)
                res[("sftp", "direct", "large")] = timed(lambda: subprocess.run(
                    ["sftp", "-q", "-P", str(link.port), *ssh, "-b", batch, "%s@127.0.0.1" % sshd.user],
                    check=True, capture_output=True))
                clear(sshd.remote)
                res[("rsync", "direct", "large")] = timed(lambda: subprocess.run(
                    ["rsync", "-a", "-e", "ssh -p %d %s" % (link.port, " ".join(ssh)), large, dest], check=True))
        protos = [p for p in ("sftp", "rsync") if p in ONLY]
        if protos:
            cfg = {"gateway": {"log_level": os.environ.get("UCGW_BENCH_LOG", "warning"), "job_timeout_ms": 3600000},
                   "sftp": {"host": "127.0.0.1", "port": link.port, "username": sshd.user, "key_file": sshd.user_key,
                            "known_hosts": kh, "remote_path": sshd.remote, "timeout": 60},
                   "rsync": {"remote_host": "127.0.0.1", "port": link.port, "remote_user": sshd.user,
                             "key_file": sshd.user_key, "known_hosts": kh, "remote_path": sshd.remote,
                             "options": ["-a"], "timeout": 3600}}
            gw = Gateway(s.tmp, cfg, "gw")
            gw.start()
            wait_for(lambda: all(w["connected"] for w in gw.workers().values()), timeout=60, what="servers")
            for proto in protos:
                # twice: the first batch opens what the protocol keeps open (SFTP
                # channels, an ssh master), the second finds them open
                for who in ("gateway", "gw-warm"):
                    clear(sshd.remote)
                    ctl = Ctl(gw.sock)

                    def many():
                        for p in small:
                            ctl.request("send-file", {"path": p, "protocol": proto})
                        for _ in small:
                            ctl.reply()
                        wait_for(lambda: count(sshd.remote, ".jpg") == SMALL_N, timeout=3600, step=0.02,
                                 what="small files")
                    res[(proto, who, "small")] = timed(many)
                    ctl.close()
                if DRAIN:
                    res[(proto, "drain", "drain")] = drain(gw, link, sshd, proto, src)
                if LARGE_MB:
                    clear(sshd.remote)
                    res[(proto, "gateway", "large")] = timed(
                        lambda: gw.ctl("send-file", "--protocol", proto, "--wait", large, timeout=3600))
            gw.stop()
            if os.environ.get("UCGW_BENCH_LOG"):
                with open(gw.log_path, errors="replace") as f:
                    sys.stdout.write(f.read())
        cap = payload_capacity(PROFILE)
        print("\nlink %s (capacity %.2f MB/s, %.1f images of 100 KiB/s); %d images, one %d MiB file:"
              % (PROFILE, cap / 1e6, cap / IMAGE, SMALL_N, LARGE_MB))
        for (proto, who, what), t in sorted(res.items()):
            if what == "drain":
                need = DRAIN * IMAGE / cap
                print("  %-5s drain of %d images: %.1f s after the link came back; the bandwidth needs %.1f s: "
                      "%.2fx" % (proto, DRAIN, t, need, t / need))
            elif what == "small":
                rate = SMALL_N / t
                print("  %-5s %-8s %-5s %7.2f files/s  %5.1f %% of the link" % (proto, who, what, rate,
                                                                                 100 * rate * IMAGE / cap))
            else:
                rate = LARGE_MB * 1048576 / t
                print("  %-5s %-8s %-5s %7.2f MB/s     %5.1f %% of the link" % (proto, who, what, rate / 1e6,
                                                                                 100 * rate / cap))
    finally:
        if link:
            link.stop()
        s.close()


if __name__ == "__main__":
    main()
