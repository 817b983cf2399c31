"""The control-socket client: frames of a 4-byte big-endian length and one
msgpack map (docs/control-protocol.md), on a unix stream socket.

One connection per UnifiedCommunicationGateway, opened on first use and again
after ucgwd restarted. Requests from several threads may be outstanding at once;
replies are matched to them by seq. Whichever waiting thread finds nobody
reading reads for all of them, the others wait on a condition variable."""
import datetime
import decimal
import errno
import json
import logging
import os
import select
import socket
import stat
import struct
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import msgpack

__all__ = ["UnifiedCommunicationGateway", "CommunicationResult", "GatewayError", "GatewayNotRunning",
           "DEFAULT_SOCKET"]

log = logging.getLogger("ucgw")

DEFAULT_SOCKET = "/run/ucgw/control.sock"
PROTO_VERSION = 1
T_REQUEST, T_REPLY, T_EVENT = 32, 33, 34
# The most this client puts in one request. ucgwd's own limit is gateway.max_frame_bytes
# (16 MiB by default); a larger frame gets its error reply, read even while writing.
MAX_OUT_FRAME = (64 << 20) - 4096
MAX_IN_FRAME = 256 << 20


@dataclass
class CommunicationResult:
    """As in the reference design. success: delivered (with wait) or accepted
    into ucgwd's spool (without); data: the daemon's answer (for a send, the
    outcome: id, status, protocol, attempts, error, latency_ms, route); error:
    why not, in ucgwd's words where it refused."""
    success: bool
    data: Any = None
    error: Optional[str] = None

    @property
    def id(self):
        """The message id (the idempotency key at the server), when there is one."""
        return self.data.get("id") if isinstance(self.data, dict) else None


class GatewayError(Exception):
    """Raised by connect() only; the send and query methods return a
    CommunicationResult with success False instead."""


class GatewayNotRunning(GatewayError, ConnectionError):
    """ucgwd is not running: no socket, or nobody listening on it."""


class _Failure(Exception):
    """A request that ended without an answer; str() is the text for the result."""


class _Pending:
    __slots__ = ("seq", "reply", "error", "done", "progress", "pdone", "psize", "pgen")

    def __init__(self, seq, progress):
        self.seq = seq
        self.reply = None
        self.error = None
        self.done = False
        self.progress = progress
        self.pdone = self.psize = self.pgen = 0


class _Connection:
    def __init__(self, sock):
        self.sock = sock
        self.pending = {}
        self.reading = False  # a thread is in poll()/recv() on it
        self.lost = None      # why it ended
        self.close_later = False
        self.buf = bytearray()
        self.send_lock = threading.Lock()  # whole frames, one at a time (a descriptor rides on the first byte)


def _json_default(o):
    if isinstance(o, (datetime.datetime, datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, (uuid.UUID, decimal.Decimal)):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, (bytes, bytearray)):
        return o.decode("utf-8", "replace")
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


_instances = weakref.WeakSet()


def _after_fork():
    for gw in list(_instances):
        gw._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class UnifiedCommunicationGateway:
    """The reference design's gateway, backed by ucgwd.

    UnifiedCommunicationGateway(socket_path="/run/ucgw/control.sock", api_key=None)
    or, as in the reference code, UnifiedCommunicationGateway(config): config may
    be the socket path, or a mapping or object with socket_path (or
    control_socket) and api_key; the protocol settings the reference kept there
    now live in ucgwd's /etc/ucgw/ucgw.yaml and are ignored here.

    socket_path None: $UCGW_SOCKET, else /run/ucgw/control.sock. api_key: an API
    key or a JWT sent with every request; None: $UCGW_JWT, then $UCGW_API_KEY.
    timeout: seconds a call waits for ucgwd's answer (None: as long as it takes;
    with wait=True that is until the message is delivered or given up).

    Methods return CommunicationResult and do not raise for a daemon that is not
    running, refusals or delivery failures; they raise TypeError or ValueError
    for programming errors (an unknown option, a bad argument type).
    Thread-safe: one instance may be shared by threads."""

    def __init__(self, config=None, socket_path=None, api_key=None, timeout=None):
        if isinstance(config, (str, bytes, os.PathLike)):
            socket_path = socket_path or os.fsdecode(config)
        elif isinstance(config, Mapping):
            socket_path = socket_path or config.get("socket_path") or config.get("control_socket")
            api_key = api_key or config.get("api_key")
        elif config is not None:
            socket_path = socket_path or getattr(config, "socket_path", None) or getattr(config, "control_socket", None)
            api_key = api_key or getattr(config, "api_key", None)
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive seconds or None")
        self.socket_path = os.fspath(socket_path or os.environ.get("UCGW_SOCKET") or DEFAULT_SOCKET)
        self.api_key = api_key if api_key is not None else (os.environ.get("UCGW_JWT") or
                                                            os.environ.get("UCGW_API_KEY") or None)
        self.timeout = timeout
        self._init_state()
        _instances.add(self)

    def _init_state(self):
        self._cond = threading.Condition(threading.Lock())
        self._conn = None
        self._seq = 0
        self._pid = os.getpid()

    def _reset_after_fork(self):
        """A child shares the parent's socket: it must not read the parent's replies."""
        conn = self._conn
        self._init_state()
        if conn:
            try:
                conn.sock.close()
            except OSError:
                pass

    def __del__(self):
        conn = getattr(self, "_conn", None)
        if conn is not None:
            try:
                conn.sock.close()
            except OSError:
                pass

    def __repr__(self):
        return "UnifiedCommunicationGateway(socket_path=%r)" % self.socket_path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- the reference design's API ----

    def send_metadata(self, data, protocol="auto", priority="normal", wait=True, *, topic=None, endpoint=None,
                      ttl_s=None, encrypt=False, format=None, timeout=None):
        """Send a metadata message: a dict or list (sent as JSON), str or bytes.
        A str that parses as JSON is checked as JSON by ucgwd, other str and
        bytes go as they are (format='raw'); format='json' or 'raw' decides.
        wait=True: the result says whether it was delivered (data: the outcome);
        wait=False: whether ucgwd has it in its spool (data: id, status)."""
        self._check_common(protocol, priority, ttl_s, timeout)
        if format not in (None, "json", "raw"):
            raise ValueError("format must be 'json', 'raw' or None")
        try:
            payload, fmt = self._payload(data)
        except (TypeError, ValueError) as e:
            return CommunicationResult(False, error="cannot send this data: %s" % e)
        body = {"data": payload, "format": format or fmt, "protocol": protocol, "priority": priority,
                "wait": bool(wait), "encrypt": bool(encrypt)}
        if topic is not None:
            body["topic"] = topic
        if endpoint is not None:
            body["endpoint"] = endpoint
        if ttl_s is not None:
            body["ttl_s"] = int(ttl_s)
        if len(payload) > MAX_OUT_FRAME:
            return CommunicationResult(False, error="a message of %d bytes is larger than this client sends "
                                                    "(64 MiB)" % len(payload))
        return self._send("send", body, None, wait, timeout, None)

    def send_file(self, file_path, protocol="auto", priority="normal", wait=True, *, remote_name=None, ttl_s=None,
                  encrypt=False, timeout=None, progress=None):
        """Send a file. It is opened here, with this process's rights, and the
        descriptor handed to ucgwd. file_path may also be an open file (an object
        with fileno(), or a descriptor number), e.g. a memfd: give remote_name.
        progress(done, size) is called while a waited transfer goes on."""
        self._check_common(protocol, priority, ttl_s, timeout)
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable")
        own = False
        path = None
        try:
            if isinstance(file_path, int) or hasattr(file_path, "fileno"):
                fd = file_path if isinstance(file_path, int) else file_path.fileno()
            elif isinstance(file_path, (str, bytes, os.PathLike)):
                path = os.path.abspath(os.fsdecode(file_path))
                fd = os.open(file_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
                own = True
            else:
                raise TypeError("file_path must be a path, an open file or a descriptor")
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return CommunicationResult(False, error="%s is not a regular file" % (path or "the descriptor"))
        except OSError as e:
            what = os.fsdecode(file_path) if isinstance(file_path, (str, bytes, os.PathLike)) else "the file"
            return CommunicationResult(False, error="cannot open %s: %s" % (what, e.strerror or e))
        try:
            body = {"fd": True, "protocol": protocol, "priority": priority, "wait": bool(wait),
                    "encrypt": bool(encrypt)}
            if path:
                body["path"] = path
            if remote_name is not None:
                body["remote_name"] = remote_name
            if ttl_s is not None:
                body["ttl_s"] = int(ttl_s)
            return self._send("send-file", body, fd, wait, timeout, progress)
        finally:
            if own:
                os.close(fd)

    # ---- more of ucgwd ----

    def status(self, timeout=None):
        """Version, pid, uptime, spool, network quality, workers."""
        return self._query("status", None, timeout)

    def stats(self, timeout=None):
        """Per protocol: success, failure, retries, fallbacks, bytes, queued,
        in flight, success rate, latency percentiles (ms)."""
        return self._query("stats", None, timeout)

    def workers(self, timeout=None):
        return self._query("workers", None, timeout)

    def queue(self, action="list", id=None, limit=None, timeout=None):
        """The spool: action list, dead, retry (id or 'all'), purge, requeue."""
        body = {"action": action, "id": id or ""}
        if limit is not None:
            body["limit"] = int(limit)
        return self._query("queue", body, timeout)

    def trace(self, id, timeout=None):
        """A message still in the spool and its route so far."""
        return self._query("trace", {"id": id}, timeout)

    def connect(self):
        """Connect now: raises GatewayNotRunning (or GatewayError) instead of
        returning a result, for an application that wants to know at start."""
        with self._cond:
            self._connection()
        return self

    def is_running(self):
        try:
            self.connect()
            return True
        except GatewayError:
            return False

    def close(self):
        with self._cond:
            conn, self._conn = self._conn, None
            if conn:
                self._lose(conn, "the gateway object was closed")

    # ---- helpers ----

    @staticmethod
    def _check_common(protocol, priority, ttl_s, timeout):
        if not isinstance(protocol, str) or not isinstance(priority, str):
            raise TypeError("protocol and priority are strings")
        if ttl_s is not None and (not isinstance(ttl_s, int) or ttl_s < 0):
            raise ValueError("ttl_s must be a whole number of seconds >= 0 (0: never expires)")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive seconds or None")

    @staticmethod
    def _payload(data):
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data), "raw"
        if isinstance(data, str):
            try:
                json.loads(data)
                return data.encode("utf-8"), "json"
            except ValueError:
                return data.encode("utf-8"), "raw"
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=_json_default)
        return text.encode("utf-8"), "json"

    def _send(self, name, body, fd, wait, timeout, progress):
        try:
            reply = self._call(name, body, fd, timeout, progress)
        except _Failure as e:
            return CommunicationResult(False, error=str(e))
        if not reply.get("ok"):
            return CommunicationResult(False, error=reply.get("error") or "refused by ucgwd")
        out = reply.get("body") or {}
        if not wait:
            return CommunicationResult(True, data=out)
        ok = out.get("status") == "ok"
        return CommunicationResult(ok, data=out, error=None if ok else (out.get("error") or "not delivered"))

    def _query(self, name, body, timeout):
        try:
            reply = self._call(name, body, None, timeout, None)
        except _Failure as e:
            return CommunicationResult(False, error=str(e))
        if not reply.get("ok"):
            return CommunicationResult(False, error=reply.get("error") or "refused by ucgwd")
        return CommunicationResult(True, data=reply.get("body"))

    # ---- the connection (self._cond held) ----

    def _connection(self):
        if os.getpid() != self._pid:  # forked without register_at_fork
            self._reset_after_fork()
        if self._conn is not None:
            conn = self._conn
            try:  # did ucgwd hang up since the last call (stopped, restarted)? then connect afresh
                gone = conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                gone = False
            except OSError:
                gone = True
            if not gone:
                return conn
            self._lose(conn, "connection to ucgwd lost: ucgwd closed it (stopped or restarted)")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(self.socket_path)
        except OSError as e:
            s.close()
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                raise GatewayNotRunning("ucgwd is not running (no socket at %s)" % self.socket_path) from None
            if e.errno == errno.ECONNREFUSED:
                raise GatewayNotRunning("ucgwd is not running (nobody listening on %s)" % self.socket_path) from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise GatewayError("cannot connect to ucgwd at %s: %s (gateway.control_socket_mode decides "
                                   "who may)" % (self.socket_path, e.strerror)) from None
            raise GatewayError("cannot connect to ucgwd at %s: %s" % (self.socket_path, e.strerror or e)) from None
        self._conn = _Connection(s)
        return self._conn

    def _lose(self, conn, why):
        """conn is finished: every request outstanding on it ends with why."""
        if conn.lost is None:
            conn.lost = why
            log.debug("ucgw: %s", why)
        if self._conn is conn:
            self._conn = None
        for p in conn.pending.values():
            if not p.done:
                p.error, p.done = why, True
        conn.pending.clear()
        if conn.reading:  # a thread is in poll() on it: wake it, and it closes the socket
            conn.close_later = True
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            conn.sock.close()
        self._cond.notify_all()

    # ---- a request ----

    def _call(self, name, body, fd, timeout, progress):
        """The reply (a dict); raises _Failure when there is none."""
        timeout = timeout if timeout is not None else self.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            try:
                conn = self._connection()
            except GatewayError as e:
                raise _Failure(str(e)) from None
            self._seq += 1
            p = _Pending(self._seq, progress)
            conn.pending[p.seq] = p
        req = {"t": T_REQUEST, "v": PROTO_VERSION, "seq": p.seq, "name": name}
        if body is not None:
            req["body"] = body
        if self.api_key:
            req["auth"] = self.api_key
        frame = msgpack.packb(req, use_bin_type=True)
        data = struct.pack(">I", len(frame)) + frame
        try:
            with conn.send_lock:
                if conn.lost is None:
                    if fd is None:
                        conn.sock.sendall(data)
                    else:
                        n = conn.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                        struct.pack("i", fd))])
                        if n < len(data):
                            conn.sock.sendall(data[n:])
        except (BrokenPipeError, ConnectionResetError):
            pass  # ucgwd hung up: _wait reads why (its error reply to a frame it refused), then the end
        except OSError as e:
            with self._cond:
                self._lose(conn, "connection to ucgwd lost: %s" % (e.strerror or e))
        p = self._wait(conn, p, deadline, timeout, name)
        if p.error is not None:
            raise _Failure(p.error)
        return p.reply

    def _wait(self, conn, p, deadline, timeout, name):
        seen = 0
        while True:
            report = None
            with self._cond:
                while True:
                    if p.done:
                        return p
                    if p.progress and p.pgen != seen:
                        seen, report = p.pgen, (p.pdone, p.psize)
                        break
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        conn.pending.pop(p.seq, None)  # its late answer is dropped
                        late = " (if ucgwd accepted the message, it still delivers it)" \
                            if name in ("send", "send-file") else ""
                        raise _Failure("no answer from ucgwd within %g s to '%s'%s" % (timeout, name, late))
                    if not conn.reading:
                        conn.reading = True
                        break
                    self._cond.wait(left)
            if report is not None:
                try:
                    p.progress(*report)
                except Exception:  # an application's callback must not break the gateway
                    log.exception("ucgw: progress callback failed")
                continue
            frames, why = [], None
            try:
                frames = self._read(conn, left)
            except (OSError, ValueError, msgpack.UnpackException) as e:
                why = "connection to ucgwd lost: %s" % (getattr(e, "strerror", None) or e)
            with self._cond:
                conn.reading = False
                if conn.close_later:
                    conn.sock.close()
                elif why:
                    self._lose(conn, why)
                else:
                    for m in frames:
                        if not self._dispatch(conn, m):
                            break
                self._cond.notify_all()

    def _read(self, conn, left):
        """Frames that have arrived within left seconds (maybe none); no lock held."""
        po = select.poll()
        po.register(conn.sock.fileno(), select.POLLIN)
        if not po.poll(None if left is None else max(0, int(left * 1000)) + 1):
            return []
        chunk = conn.sock.recv(1 << 20)
        if not chunk:
            raise ValueError("ucgwd closed it (stopped or restarted)")
        conn.buf += chunk
        frames = []
        while len(conn.buf) >= 4:
            n = struct.unpack(">I", conn.buf[:4])[0]
            if n == 0 or n > MAX_IN_FRAME:
                raise ValueError("unreadable answer from ucgwd: bad frame length %d" % n)
            if len(conn.buf) < 4 + n:
                break
            frames.append(msgpack.unpackb(bytes(conn.buf[4:4 + n]), raw=False, strict_map_key=False))
            del conn.buf[:4 + n]
        return frames

    def _dispatch(self, conn, m):
        """Route one frame (self._cond held); False when it ended the connection."""
        if not isinstance(m, dict) or m.get("t") not in (T_REPLY, T_EVENT):
            self._lose(conn, "unreadable answer from ucgwd: not a reply")
            return False
        if m.get("t") == T_REPLY and m.get("seq") == 0:  # ucgwd found a request malformed; it hangs up
            self._lose(conn, m.get("error") or "ucgwd found a request malformed")
            return False
        p = conn.pending.get(m.get("seq"))
        if p is None:
            return True  # its caller gave up waiting
        if m["t"] == T_EVENT:
            b = m.get("body") or {}
            if m.get("name") == "progress" and p.progress:
                p.pdone, p.psize, p.pgen = b.get("done", 0), b.get("size", 0), p.pgen + 1
            return True
        del conn.pending[p.seq]
        p.reply, p.done = m, True
        return True
