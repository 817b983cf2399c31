"""A minimal control-socket client for the tests' load generators: pipelined
`send` and `send-file` requests, replies matched by seq (msgpack frames)."""
import array
import os
import socket
import struct
import threading

import msgpack


class Ctl:
    def __init__(self, path, version=2):
        """version: the control protocol version its requests say (1: as an old client)."""
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.version = version
        self.seq = 0
        self.lock = threading.Lock()
        self.buf = b""

    def request(self, name, body, fd=None):
        with self.lock:
            self.seq += 1
            frame = msgpack.packb({"t": 32, "v": self.version, "seq": self.seq, "name": name, "body": body},
                                  use_bin_type=True)
            data = struct.pack(">I", len(frame)) + frame
            if fd is None:
                self.sock.sendall(data)
            else:
                self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            return self.seq

    def reply(self, timeout=30):
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    m = msgpack.unpackb(self.buf[4:4 + n], raw=False)
                    self.buf = self.buf[4 + n:]
                    if m.get("t") == 33:
                        return m
                    continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("ucgwd closed the connection")
            self.buf += chunk

    def send(self, data, **opts):
        body = {"data": data if isinstance(data, bytes) else data.encode(), "format": "json"}
        body.update(opts)
        self.request("send", body)
        return self.reply()

    def send_file(self, path, **opts):
        fd = os.open(path, os.O_RDONLY)
        try:
            body = {"path": os.path.abspath(path), "fd": True}
            body.update(opts)
            self.request("send-file", body, fd)
        finally:
            os.close(fd)
        return self.reply()

    def close(self):
        self.sock.close()
