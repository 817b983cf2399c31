"""A TCP server on a free loopback port for the tests of the test tools
(faultproxy, linkem): counts the connections and the bytes it receives, echoes
them while echo is set, and stops reading while paused is set."""
import socket
import threading
import time


class EchoServer:
    def __init__(self, echo=True):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.echo = echo
        self.paused = threading.Event()
        self.received = 0
        self.accepted = 0
        self.open = 0
        self.lock = threading.Lock()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.open += 1
                self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            while True:
                while self.paused.is_set():
                    time.sleep(0.01)
                data = c.recv(1 << 20)
                if not data:
                    break
                with self.lock:
                    self.received += len(data)
                if self.echo:
                    c.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1
            c.close()

    def close(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
