"""A real nginx on free loopback ports, in the test's directory, speaking
HTTP/2: over TLS (ALPN, certificates from mosquitto.make_ca) and cleartext
with prior knowledge (h2c), each passing every request on to a backend (an
lpr-peer, which records the bodies and ids) over HTTP/1.1 keep-alive, or
answering 200 itself when there is none (a fast sink for benchmarks).
nginx's access log records the protocol of each request."""
import os
import subprocess

from mosquitto import make_ca
from ucgwtest import free_port, wait_port

NGINX = "/usr/sbin/nginx"


class Nginx:
    def __init__(self, test, backend_port=None, tls=True):
        self.test = test
        self.dir = os.path.join(test.tmp, "nginx")
        os.makedirs(self.dir, exist_ok=True)
        self.h2c_port = free_port()
        self.tls_port = free_port() if tls else None
        self.ca = None
        self.access_log = os.path.join(self.dir, "access.log")
        if backend_port:
            upstream = "upstream peer { server 127.0.0.1:%d; keepalive 64; }" % backend_port
            handler = ("proxy_pass http://peer; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
                       "proxy_request_buffering on;")
        else:
            upstream, handler = "", "return 200 '{\"ok\":true}';"
        listeners = "listen 127.0.0.1:%d http2;" % self.h2c_port
        if tls:
            self.ca, cert, key = make_ca(self.dir, name="nginx")
            listeners += " listen 127.0.0.1:%d ssl http2; ssl_certificate %s; ssl_certificate_key %s;" % (
                self.tls_port, cert, key)
        user = "user root;" if os.getuid() == 0 else ""
        conf = """%s
daemon off; master_process off; worker_processes 1; pid %s/nginx.pid; error_log %s/error.log warn;
events { worker_connections 1024; }
http {
  log_format ucgw '$server_protocol $connection $status';
  access_log %s ucgw;
  client_body_temp_path %s/body; proxy_temp_path %s/proxy; fastcgi_temp_path %s/fcgi;
  uwsgi_temp_path %s/uwsgi; scgi_temp_path %s/scgi;
  keepalive_requests 1000000; http2_max_concurrent_streams 128;
  %s
  server { %s location / { %s } }
}
""" % (user, self.dir, self.dir, self.access_log, *([self.dir] * 5), upstream, listeners, handler)
        self.conf = os.path.join(self.dir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.start()

    def start(self):
        log = open(os.path.join(self.dir, "stderr.log"), "ab")
        self.proc = self.test.spawn([NGINX, "-c", self.conf, "-p", self.dir, "-e", self.dir + "/error.log"],
                                    stdout=log, stderr=log)
        log.close()
        wait_port(self.h2c_port, "nginx on port %d" % self.h2c_port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def h2c_url(self):
        return "http://127.0.0.1:%d" % self.h2c_port

    def tls_url(self):
        return "https://127.0.0.1:%d" % self.tls_port

    def protocols(self):
        """(protocol, connection number) of each request nginx logged, e.g. [('HTTP/2.0', '3'), ...]."""
        try:
            with open(self.access_log) as f:
                return [tuple(l.split()[:2]) for l in f if l.strip()]
        except FileNotFoundError:
            return []
