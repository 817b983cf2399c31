"""The control-socket client (frames: a 4-byte big-endian length and one
msgpack map; see docs/control-protocol.md)."""
import array
import json
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import msgpack

PROTO_VERSION = 1
T_REQUEST, T_REPLY, T_EVENT = 32, 33, 34


@dataclass
class CommunicationResult:
    """As in the reference design: success, the data (the outcome), the error."""
    success: bool
    data: Any = None
    error: Optional[str] = None
    extra: dict = field(default_factory=dict)


class UnifiedCommunicationGateway:
    """Thread-safe: requests on one connection are matched to replies by seq.
    Methods return CommunicationResult and do not raise for delivery problems or
    a daemon that is not running; they raise ValueError for bad arguments."""

    def __init__(self, socket_path="/run/ucgw/control.sock", api_key=None, timeout=None):
        self.socket_path = socket_path
        self.api_key = api_key or os.environ.get("UCGW_API_KEY") or os.environ.get("UCGW_JWT")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sock = None
        self._seq = 0
        self._buf = b""
        self._replies = {}
        self._cond = threading.Condition(self._lock)
        self._reading = False

    # ---- the reference design's API ----

    def send_metadata(self, data, protocol="auto", priority="normal", wait=True, **opts):
        if isinstance(data, (dict, list)):
            payload, fmt = json.dumps(data).encode(), "json"
        elif isinstance(data, str):
            payload, fmt = data.encode(), opts.pop("format", "json")
        elif isinstance(data, (bytes, bytearray)):
            payload, fmt = bytes(data), opts.pop("format", "raw")
        else:
            raise ValueError("data must be a dict, list, str or bytes")
        body = {"data": payload, "format": fmt, "protocol": protocol, "priority": priority, "wait": wait}
        body.update(self._options(opts))
        return self._outcome(self._call("send", body), wait)

    def send_file(self, file_path, protocol="auto", priority="normal", wait=True, **opts):
        try:
            fd = os.open(file_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            return CommunicationResult(False, error="cannot open %s: %s" % (file_path, e.strerror))
        try:
            body = {"path": os.path.abspath(file_path), "fd": True, "protocol": protocol, "priority": priority,
                    "wait": wait}
            body.update(self._options(opts))
            return self._outcome(self._call("send-file", body, fd), wait)
        finally:
            os.close(fd)

    # ---- more ----

    def status(self):
        return self._plain(self._call("status", None))

    def stats(self):
        return self._plain(self._call("stats", None))

    def queue(self, action="list", id=""):
        return self._plain(self._call("queue", {"action": action, "id": id}))

    def close(self):
        with self._lock:
            if self._sock:
                self._sock.close()
            self._sock = None

    # ---- the wire ----

    @staticmethod
    def _options(opts):
        allowed = {"topic", "endpoint", "remote_name", "ttl_s", "encrypt"}
        bad = set(opts) - allowed
        if bad:
            raise ValueError("unknown option(s): %s (known: %s)" % (", ".join(sorted(bad)), ", ".join(sorted(allowed))))
        return opts

    def _connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.socket_path)
        self._sock = s
        self._buf = b""

    def _call(self, name, body, fd=None):
        """The reply (a dict), or an error string when there is none."""
        try:
            with self._lock:
                if self._sock is None:
                    self._connect()
                self._seq += 1
                seq = self._seq
                req = {"t": T_REQUEST, "v": PROTO_VERSION, "seq": seq, "name": name}
                if body is not None:
                    req["body"] = body
                if self.api_key:
                    req["auth"] = self.api_key
                frame = msgpack.packb(req, use_bin_type=True)
                data = struct.pack(">I", len(frame)) + frame
                if fd is None:
                    self._sock.sendall(data)
                else:
                    self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
            return self._wait(seq)
        except FileNotFoundError:
            return "ucgwd is not running (no socket at %s)" % self.socket_path
        except ConnectionRefusedError:
            return "ucgwd is not running (connection refused at %s)" % self.socket_path
        except OSError as e:
            self.close()
            return "lost the connection to ucgwd: %s" % e

    def _wait(self, seq):
        """One thread reads at a time; the others wait for their seq."""
        with self._cond:
            while True:
                if seq in self._replies:
                    return self._replies.pop(seq)
                if not self._reading:
                    break
                self._cond.wait()
            self._reading = True
        try:
            while True:
                m = self._read_frame()
                if m.get("t") == T_REPLY:
                    with self._cond:
                        self._replies[m.get("seq")] = m
                        self._cond.notify_all()
                        if seq in self._replies:
                            return self._replies.pop(seq)
        finally:
            with self._cond:
                self._reading = False
                self._cond.notify_all()

    def _read_frame(self):
        sock = self._sock
        if sock is None:
            raise OSError("not connected")
        sock.settimeout(self.timeout)
        while True:
            if len(self._buf) >= 4:
                n = struct.unpack(">I", self._buf[:4])[0]
                if len(self._buf) >= 4 + n:
                    m = msgpack.unpackb(self._buf[4:4 + n], raw=False)
                    self._buf = self._buf[4 + n:]
                    return m
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("ucgwd closed the connection")
            self._buf += chunk

    @staticmethod
    def _outcome(reply, wait):
        if isinstance(reply, str):
            return CommunicationResult(False, error=reply)
        if not reply.get("ok"):
            return CommunicationResult(False, error=reply.get("error") or "refused")
        body = reply.get("body") or {}
        if not wait:
            return CommunicationResult(True, data=body)
        ok = body.get("status") == "ok"
        return CommunicationResult(ok, data=body, error=None if ok else body.get("error"))

    @staticmethod
    def _plain(reply):
        if isinstance(reply, str):
            return CommunicationResult(False, error=reply)
        if not reply.get("ok"):
            return CommunicationResult(False, error=reply.get("error"))
        return CommunicationResult(True, data=reply.get("body"))
