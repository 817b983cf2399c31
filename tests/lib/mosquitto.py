"""A real mosquitto broker on a free loopback port, in the test's directory,
with a password file, and optionally a TLS listener on generated certificates
(which may require a client certificate; then a plain listener on plain_port
serves the tests' own subscribers)."""
import os
import subprocess

from ucgwtest import free_port, wait_port



def make_ca(dirpath, cn="127.0.0.1", name="server"):
    """A CA and a server certificate for 127.0.0.1/localhost, with openssl."""
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=dirpath)
    if not os.path.exists(os.path.join(dirpath, "ca.pem")):
        run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=ucgw test CA")
    with open(os.path.join(dirpath, name + ".ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr",
        "-subj", "/CN=" + cn)
    run("openssl", "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")
    return (os.path.join(dirpath, "ca.pem"), os.path.join(dirpath, name + ".pem"),
            os.path.join(dirpath, name + ".key"))


class Mosquitto:
    def __init__(self, test, users=None, tls=False, port=None, persistence=False, require_cert=False,
                 name="mosquitto"):
        self.test = test
        self.dir = os.path.join(test.tmp, name)  # a name of its own for each broker of a test
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.users = users or {}
        self.tls = tls
        self.proc = None
        # As root, mosquitto would drop to its own user, which cannot enter the test's 0700 directory.
        conf = (["user root"] if os.getuid() == 0 else []) + [
                "log_dest stderr", "log_type error", "log_type warning", "set_tcp_nodelay true",
                "listener %d 127.0.0.1" % self.port]
        # Persistence keeps a subscriber's session (and its queued messages) across restarts.
        conf += (["persistence true", "persistence_location " + self.dir + "/", "autosave_interval 1"]
                 if persistence else ["persistence false"])
        # mosquitto keeps at most 1,000 messages for a subscriber that is away, then drops the rest
        # in silence: a backlog drained before a test's subscriber is back must all wait for it.
        conf += ["max_queued_messages 0"]
        if self.users:
            pw = os.path.join(self.dir, "passwd")
            for i, (u, p) in enumerate(self.users.items()):
                subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [pw, u, p], check=True)
            os.chmod(pw, 0o600)
            conf += ["allow_anonymous false", "password_file " + pw]
        else:
            conf += ["allow_anonymous true"]
        self.plain_port = None
        if tls:
            self.ca, cert, key = make_ca(self.dir)
            conf += ["certfile " + cert, "keyfile " + key]
        if tls and require_cert:
            # a client certificate signed by the same CA; the TLS listener wants one
            _, self.client_cert, self.client_key = make_ca(self.dir, cn="edge-client", name="client")
            conf += ["cafile " + self.ca, "require_certificate true"]
            self.plain_port = free_port()
            conf += ["listener %d 127.0.0.1" % self.plain_port]
        self.conf = os.path.join(self.dir, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.start()

    def start(self):
        log = open(os.path.join(self.dir, "mosquitto.log"), "ab")
        self.proc = self.test.spawn(["/usr/sbin/mosquitto", "-c", self.conf], stdout=log, stderr=log)
        log.close()
        wait_port(self.port, "mosquitto on port %d" % self.port)
        if self.plain_port:
            wait_port(self.plain_port, "mosquitto's plain listener on port %d" % self.plain_port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def url(self):
        return ("mqtts://127.0.0.1:%d" if self.tls else "127.0.0.1:%d") % self.port
