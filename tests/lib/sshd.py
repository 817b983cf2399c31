"""A real OpenSSH sshd on a free loopback port, in the test's directory, with a
host key and a user key generated for the test, and a known_hosts for clients."""
import getpass
import os
import resource
import signal
import subprocess

from ucgwtest import free_port, wait_port


class Sshd:
    def __init__(self, test, port=None, file_size_limit=None, name=None, commands_in_root=False):
        """file_size_limit: the server's processes may write no file beyond that
        many bytes (RLIMIT_FSIZE, SIGXFSZ ignored): a write past it fails with an
        SFTP status, as on a full disk. name: one of several servers in a test,
        each with a directory of its own; its SFTP logins start in its own root
        (internal-sftp -d), so the relative remote_path remote_rel lands in that
        server's remote directory. commands_in_root (with name): commands (rsync's)
        start in that root too, so that each server's remote_rel is its own."""
        self.test = test
        self.file_size_limit = file_size_limit
        self.dir = os.path.join(test.tmp, name or "sshd")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.host_key = os.path.join(self.dir, "host_ed25519")
        # libssh2 1.10 signs RSA with SHA-1 only, which OpenSSH 9 refuses: an ECDSA user key.
        self.user_key = os.path.join(self.dir, "user_ecdsa")
        self.root = os.path.join(test.tmp, name + "-root") if name else None
        self.remote_rel = "lpr_images"
        self.remote = os.path.join(self.root or os.path.join(test.tmp, "remote"), self.remote_rel)
        for args in (["-t", "ed25519", "-f", self.host_key], ["-t", "ecdsa", "-b", "256", "-m", "PEM", "-f", self.user_key]):
            subprocess.run(["ssh-keygen", "-q", "-N", "", *args], check=True)
        self.authorized = os.path.join(self.dir, "authorized_keys")
        with open(self.user_key + ".pub") as src, open(self.authorized, "w") as dst:
            dst.write(src.read())
        os.chmod(self.authorized, 0o600)
        self.known_hosts = self.known_hosts_as("127.0.0.1", self.port, "known_hosts")
        self.fingerprint = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", self.host_key + ".pub"],
                                          capture_output=True, text=True, check=True).stdout.split()[1]
        self.config = os.path.join(self.dir, "sshd_config")
        with open(self.config, "w") as f:
            f.write("\n".join([
                "Port %d" % self.port, "ListenAddress 127.0.0.1", "HostKey " + self.host_key,
                "AuthorizedKeysFile " + self.authorized, "PidFile " + os.path.join(self.dir, "sshd.pid"),
                "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "UsePAM no", "StrictModes no",
                "Subsystem sftp internal-sftp" + (" -d " + self.root if self.root else ""), "LogLevel ERROR",
                "MaxStartups 100:30:200", "MaxSessions 50"] +
                (['ForceCommand cd %s && eval "$SSH_ORIGINAL_COMMAND"' % self.root] if commands_in_root else []) +
                [""]))
        os.makedirs("/run/sshd", exist_ok=True)
        os.makedirs(self.remote, exist_ok=True)
        self.start()

    def known_hosts_as(self, host, port, name):
        """A known_hosts file (in the sshd directory) that gives this server's
        host key for [host]:port: the server reached through a proxy or a name."""
        with open(self.host_key + ".pub") as f:
            pub = " ".join(f.read().split()[:2])
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write("[%s]:%d %s\n" % (host, port, pub))
        return path

    def start(self):
        log = open(os.path.join(self.dir, "sshd.log"), "ab")
        limit = self.file_size_limit

        def limited():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        self.proc = self.test.spawn(["/usr/sbin/sshd", "-D", "-e", "-f", self.config], stdout=log, stderr=log,
                                    preexec_fn=limited if limit else None, restore_signals=not limit)
        log.close()
        wait_port(self.port, "sshd on %d" % self.port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def lift_file_size_limit(self):
        """No file size limit from now on, for sshd and every process under it."""
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:  # the soft limit: raising the hard one takes CAP_SYS_RESOURCE
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            except (PermissionError, ProcessLookupError):
                pass  # privilege separation's child (another user), or gone
            todo += [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                    text=True).stdout.split()]
        self.file_size_limit = None

    def session_processes(self):
        """pids of sshd's per-connection children."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
