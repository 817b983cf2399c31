"""The blocking control-socket client: frames of a 4-byte big-endian length
and one msgpack map (docs/control-protocol.md), on a unix stream socket.

One connection per UnifiedCommunicationGateway, opened on first use and again
after ucgwd restarted. Requests from several threads may be outstanding at once;
replies are matched to them by seq. Whichever waiting thread finds nobody
reading reads for all of them, the others wait on a condition variable.

A request whose connection breaks before its answer (ucgwd killed, restarted,
upgraded) is sent again, unchanged, once ucgwd is back, within the call's
timeout: a send carries the id the client gave it, so ucgwd answers the repeat
with the first one's state rather than taking the message twice."""
import logging
import os
import select
import socket
import struct
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Union

from ._wire import (DEFAULT_TIMEOUT, MAX_OUT_FRAME, RESENDABLE, T_EVENT, T_REPLY, Code, CommunicationResult, ConfigArg,
                    GatewayError, check_common, connect_error, describe_file, encode_payload, file_body,
                    metadata_body, open_file, outcome_wait, pending_result, query_result, request_frame,
                    code_of, resolve_target, send_result, split_frames, trace_budget)
from .ids import new_id

if TYPE_CHECKING:
    from .reference import (CommunicationMonitor, FallbackManager, MQTTClient, NetworkMonitor, ProtocolSelector,
                            RESTClient, RSyncClient, SFTPClient, WebSocketClient, _Attachments)

__all__ = ["UnifiedCommunicationGateway"]

log = logging.getLogger("ucgw")

Progress = Callable[[int, int], None]
_UNSET: Any = object()


class _Failure(Exception):
    """A request that ended without an answer; str() is the text for the result,
    code ucgwd's when it said why it hung up (its reply with seq 0)."""

    def __init__(self, why: str, code: Optional[Code] = None) -> None:
        super().__init__(why)
        self.code = code


class _Timeout(_Failure):
    pass


class _Pending:
    __slots__ = ("seq", "reply", "error", "code", "lost", "done", "progress", "pdone", "psize", "pgen")

    def __init__(self, seq: int, progress: Optional[Progress]) -> None:
        self.seq = seq
        self.reply: Optional[Dict[str, Any]] = None
        self.error: Optional[str] = None
        self.code: Optional[Code] = None
        self.lost = False  # the connection broke before the answer: worth sending again
        self.done = False
        self.progress = progress
        self.pdone = self.psize = self.pgen = 0


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending: Dict[int, _Pending] = {}
        self.reading = False  # a thread is in poll()/recv() on it
        self.lost: Optional[str] = None  # why it ended
        self.close_later = False
        self.buf = bytearray()
        self.send_lock = threading.Lock()  # whole frames, one at a time (a descriptor rides on the first byte)


_instances: "weakref.WeakSet[UnifiedCommunicationGateway]" = weakref.WeakSet()


def _after_fork() -> None:
    for gw in list(_instances):
        gw._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class UnifiedCommunicationGateway:
    """The reference design's gateway, backed by ucgwd.

    UnifiedCommunicationGateway(config=None, socket_path=None, api_key=None, timeout=30.0)

    config, as in the reference code: the path of a YAML configuration (the
    reference's communication_config.yaml or ucgwd's own; its
    gateway.control_socket names the socket), a CommunicationConfig from
    load_communication_config(), a socket path, or a mapping or object with
    socket_path (or control_socket) and api_key. The protocol settings the
    reference kept there are ucgwd's (/etc/ucgw/ucgw.yaml).

    socket_path: wins over config; default $UCGW_SOCKET, else
    /run/ucgw/control.sock. api_key: an API key or a JWT sent with every
    request; None: $UCGW_JWT, then $UCGW_API_KEY. timeout: the most seconds
    a call blocks (None: as long as it takes).

    What ucgw does better than the reference design: a send returns once
    ucgwd has the message on disk (milliseconds), and ucgwd retries, falls
    back and delivers it later, across restarts of either side, where the
    reference blocked the caller through its retries and lost the message
    when they ran out; 'delivered' (wait=True) means the server acknowledged
    it (MQTT PUBACK, HTTP 2xx, a WebSocket ack), not that it was written to a
    socket; each message carries an id the server can de-duplicate by.

    Methods return CommunicationResult and do not raise for a daemon that is
    not running, refusals, timeouts or delivery failures; they raise
    TypeError or ValueError for programming errors (an unknown option, a bad
    argument type). The constructor raises ConfigError for a configuration
    file it cannot read. Thread-safe: one instance may be shared by threads."""

    def __init__(self, config: ConfigArg = None, socket_path: Optional[Union[str, "os.PathLike[str]"]] = None,
                 api_key: Optional[str] = None, timeout: Optional[float] = DEFAULT_TIMEOUT) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive seconds or None")
        self.socket_path, self.api_key, self.config = resolve_target(config, socket_path, api_key)
        self.timeout = timeout
        self._init_state()
        _instances.add(self)
        self._reference: Optional["_Attachments"] = None

    def _init_state(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._conn: Optional[_Connection] = None
        self._seq = 0
        self._pid = os.getpid()

    def _reset_after_fork(self) -> None:
        """A child shares the parent's socket: it must not read the parent's replies."""
        conn = self._conn
        self._init_state()
        if conn:
            try:
                conn.sock.close()
            except OSError:
                pass

    def __del__(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is not None:
            try:
                conn.sock.close()
            except OSError:
                pass

    def __repr__(self) -> str:
        return "UnifiedCommunicationGateway(socket_path=%r)" % self.socket_path

    def __enter__(self) -> "UnifiedCommunicationGateway":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the reference design's API ----

    def send_metadata(self, data: Any, protocol: str = "auto", priority: str = "normal", wait: bool = False, *,
                      topic: Optional[str] = None, endpoint: Optional[str] = None, ttl_s: Optional[int] = None,
                      encrypt: bool = False, format: Optional[str] = None, timeout: Optional[float] = _UNSET,
                      id: Optional[str] = None) -> CommunicationResult:
        """Send a metadata message: a dict or list (sent as JSON), str or bytes.
        A str that parses as JSON is checked as JSON by ucgwd, other str and
        bytes go as they are (format='raw'); format='json' or 'raw' decides.

        By default the result comes once ucgwd has the message in its spool
        (success: accepted; data: {id, status: 'accepted'}); ucgwd delivers it
        whatever happens next. wait=True waits for the delivery, at most
        timeout seconds (default: the gateway's, 30): success means the server
        acknowledged it (data: the outcome). When it is not delivered in time
        the result is success=False with ucgwd's last error for the message
        (data: {id, status: 'pending', last_error}); it stays in the spool and
        is still delivered. id: the message's ULID (default: a new one)."""
        check_common(protocol, priority, ttl_s, None if timeout is _UNSET else timeout, id)
        if format not in (None, "json", "raw"):
            raise ValueError("format must be 'json', 'raw' or None")
        try:
            payload, fmt = encode_payload(data)
        except (TypeError, ValueError) as e:
            return CommunicationResult(False, error="cannot send this data: %s" % e)
        if len(payload) > MAX_OUT_FRAME:
            return CommunicationResult(False, error="a message of %d bytes is larger than this client sends "
                                                    "(64 MiB)" % len(payload))
        msg_id = id or new_id()
        body = metadata_body(payload, format or fmt, protocol, priority, wait, msg_id, topic, endpoint, ttl_s,
                             encrypt)
        return self._send("send", body, None, wait, self._timeout(timeout), None, msg_id)

    def send_file(self, file_path: Any, protocol: str = "auto", priority: str = "normal", wait: bool = False, *,
                  remote_name: Optional[str] = None, ttl_s: Optional[int] = None, encrypt: bool = False,
                  timeout: Optional[float] = _UNSET, progress: Optional[Progress] = None,
                  id: Optional[str] = None) -> CommunicationResult:
        """Send a file. It is opened here, with this process's rights, and the
        descriptor handed to ucgwd, which keeps its own copy: the caller may
        delete the file once the result says accepted. file_path may also be
        an open file (an object with fileno(), or a descriptor number), e.g. a
        memfd: give remote_name. wait, timeout and id as for send_metadata;
        progress(done, size) is called while a waited transfer goes on."""
        check_common(protocol, priority, ttl_s, None if timeout is _UNSET else timeout, id)
        if progress is not None and not callable(progress):
            raise TypeError("progress must be callable")
        try:
            fd, path, own = open_file(file_path)
        except ValueError as e:
            return CommunicationResult(False, error=str(e))
        except OSError as e:
            return CommunicationResult(False, error="cannot open %s: %s" % (describe_file(file_path),
                                                                             e.strerror or e))
        try:
            msg_id = id or new_id()
            body = file_body(path, protocol, priority, wait, msg_id, remote_name, ttl_s, encrypt)
            return self._send("send-file", body, fd, wait, self._timeout(timeout), progress, msg_id)
        finally:
            if own:
                os.close(fd)

    def get_statistics(self) -> Dict[str, Dict[str, Any]]:
        """Per protocol the reference's keys (success_rate, total_attempts,
        average_latency in seconds) and ucgw's (success, failure, retries,
        fallbacks, queued, p50_ms, p99_ms, status, ...), counted by ucgwd for
        every application since it started. {} when ucgwd cannot be asked
        (logged as a warning)."""
        stats = self.get_dashboard_data().get("protocol_stats")
        return stats if isinstance(stats, dict) else {}

    def get_overall_stats(self) -> Dict[str, Dict[str, Any]]:
        """The reference's CommunicationMonitor.get_overall_stats(): get_statistics()."""
        return self.get_statistics()

    def get_dashboard_data(self) -> Dict[str, Any]:
        """The reference's dashboard data (protocol_stats, network_quality,
        active_connections, recent_errors) and ucgw's (workers, spool, gateway),
        as on ucgwd's dashboard page. {} when ucgwd cannot be asked."""
        r = self.dashboard()
        if not r.success:
            log.warning("ucgw: no dashboard data: %s", r.error)
            return {}
        return r.data if isinstance(r.data, dict) else {}

    @property
    def protocol_selector(self) -> "ProtocolSelector":
        """select_metadata_protocol(data, priority), select_file_protocol(path, priority): ucgwd's choice now."""
        return self._ref().protocol_selector

    @property
    def fallback_manager(self) -> "FallbackManager":
        """has_fallback(p), get_fallback(p), get_all_fallbacks(p): ucgwd's fallback chains."""
        return self._ref().fallback_manager

    @property
    def monitor(self) -> "CommunicationMonitor":
        """A CommunicationMonitor on this gateway: get_protocol_stats(p), get_overall_stats()."""
        return self._ref().monitor

    @property
    def network_monitor(self) -> "NetworkMonitor":
        return self._ref().network_monitor

    @property
    def websocket_client(self) -> "WebSocketClient":
        return self._ref().websocket_client

    @property
    def rest_client(self) -> "RESTClient":
        return self._ref().rest_client

    @property
    def mqtt_client(self) -> "MQTTClient":
        return self._ref().mqtt_client

    @property
    def sftp_client(self) -> "SFTPClient":
        return self._ref().sftp_client

    @property
    def rsync_client(self) -> "RSyncClient":
        return self._ref().rsync_client

    def _ref(self) -> "_Attachments":
        if self._reference is None:
            from .reference import _Attachments
            self._reference = _Attachments(self)
        return self._reference

    # ---- more of ucgwd ----

    def status(self, timeout: Optional[float] = _UNSET) -> CommunicationResult:
        """Version, pid, uptime, spool, network quality, workers."""
        return self._query("status", None, timeout)

    def stats(self, timeout: Optional[float] = _UNSET) -> CommunicationResult:
        """Per protocol: success, failure, retries, fallbacks, bytes, queued,
        in flight, success rate, latency percentiles and mean (ms), samples."""
        return self._query("stats", None, timeout)

    def workers(self, timeout: Optional[float] = _UNSET) -> CommunicationResult:
        return self._query("workers", None, timeout)

    def dashboard(self, timeout: Optional[float] = _UNSET) -> CommunicationResult:
        """The dashboard's document (data: a dict); see get_dashboard_data()."""
        r = self._query("dashboard", None, timeout)
        if r.success and isinstance(r.data, str):
            import json
            r.data = json.loads(r.data)
        return r

    def select(self, kind: str = "metadata", size: int = 0, priority: str = "normal", protocol: str = "auto",
               timeout: Optional[float] = _UNSET) -> CommunicationResult:
        """Which protocol ucgwd would pick now for such a message (data:
        {protocol, chain}: the pick and its fallback chain); nothing is sent."""
        return self._query("select", {"kind": kind, "size": int(size), "priority": priority,
                                      "protocol": protocol}, timeout)

    def queue(self, action: str = "list", id: Optional[str] = None, limit: Optional[int] = None,
              timeout: Optional[float] = _UNSET) -> CommunicationResult:
        """The spool: action list, dead, retry (id or 'all'), purge, requeue."""
        body: Dict[str, Any] = {"action": action, "id": id or ""}
        if limit is not None:
            body["limit"] = int(limit)
        return self._query("queue", body, timeout)

    def trace(self, id: str, timeout: Optional[float] = _UNSET) -> CommunicationResult:
        """A message in the spool or recently finished, and its route so far."""
        return self._query("trace", {"id": id}, timeout)

    def connect(self) -> "UnifiedCommunicationGateway":
        """Connect now: raises GatewayNotRunning, GatewayPermissionDenied (or
        GatewayError) instead of returning a result, for an application that
        wants to know at start."""
        with self._cond:
            self._connection()
        return self

    def is_running(self) -> bool:
        try:
            self.connect()
            return True
        except GatewayError:
            return False

    def close(self) -> None:
        with self._cond:
            conn, self._conn = self._conn, None
            if conn:
                self._lose(conn, "the gateway object was closed", lost=False)

    # ---- helpers ----

    def _timeout(self, timeout: Optional[float]) -> Optional[float]:
        return self.timeout if timeout is _UNSET else timeout

    def _send(self, name: str, body: Dict[str, Any], fd: Optional[int], wait: bool, timeout: Optional[float],
              progress: Optional[Progress], msg_id: str) -> CommunicationResult:
        try:
            reply = self._call(name, body, fd, outcome_wait(wait, timeout), progress)
        except _Timeout as e:
            if not wait or timeout is None:
                return CommunicationResult(False, data={"id": msg_id}, error=str(e))
            return pending_result(msg_id, timeout, self.trace(msg_id, timeout=trace_budget(timeout)))
        except _Failure as e:
            return CommunicationResult(False, error=str(e), code=e.code)
        return send_result(reply, wait)

    def _query(self, name: str, body: Optional[Dict[str, Any]], timeout: Optional[float]) -> CommunicationResult:
        try:
            reply = self._call(name, body, None, self._timeout(timeout), None)
        except _Failure as e:
            return CommunicationResult(False, error=str(e), code=e.code)
        return query_result(reply)

    # ---- the connection (self._cond held) ----

    def _closed_by_ucgwd(self, conn: _Connection) -> bool:
        """Did ucgwd hang up since the last call (stopped, restarted, or it
        closed an idle connection)? What arrived meanwhile (a late answer to
        a request that timed out) is read and dispatched first: a peek alone
        would see those bytes and miss the end behind them."""
        try:
            while True:
                chunk = conn.sock.recv(1 << 16, socket.MSG_DONTWAIT)
                if not chunk:
                    return True
                conn.buf += chunk
                for m in split_frames(conn.buf):
                    if not self._dispatch(conn, m):
                        return True
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    def _connection(self) -> _Connection:
        if os.getpid() != self._pid:  # forked without register_at_fork
            self._reset_after_fork()
        if self._conn is not None:
            conn = self._conn
            gone = False if conn.reading else self._closed_by_ucgwd(conn)
            if conn.lost is None and not gone:
                return conn
            if conn.lost is None:
                self._lose(conn, "connection to ucgwd lost: ucgwd closed it (stopped, restarted or idle)")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            s.connect(self.socket_path)
        except OSError as e:
            s.close()
            raise connect_error(self.socket_path, e) from None
        self._conn = _Connection(s)
        return self._conn

    def _lose(self, conn: _Connection, why: str, lost: bool = True, code: Optional[Code] = None) -> None:
        """conn is finished: every request outstanding on it ends with why;
        lost: without an answer from ucgwd, so it may be sent again."""
        if conn.lost is None:
            conn.lost = why
            log.debug("ucgw: %s", why)
        if self._conn is conn:
            self._conn = None
        for p in conn.pending.values():
            if not p.done:
                p.error, p.code, p.lost, p.done = why, code, lost, True
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

    def _call(self, name: str, body: Optional[Dict[str, Any]], fd: Optional[int], timeout: Optional[float],
              progress: Optional[Progress]) -> Dict[str, Any]:
        """The reply (a dict); raises _Failure when there is none. A request
        whose connection broke before its answer goes again, unchanged, over
        a new one, until the deadline."""
        deadline = None if timeout is None else time.monotonic() + timeout
        resent = 0
        while True:
            conn, p = self._start(name, body, fd, progress, resent > 0, deadline)
            p = self._wait(conn, p, deadline, timeout, name)
            if p.error is None and p.reply is not None:
                return p.reply
            if not p.lost or name not in RESENDABLE:
                raise _Failure(p.error or "no answer", p.code)
            resent += 1
            log.info("ucgw: %s; sending '%s' again (%d)", p.error, name, resent)

    def _start(self, name: str, body: Optional[Dict[str, Any]], fd: Optional[int], progress: Optional[Progress],
               again: bool, deadline: Optional[float]) -> "tuple[_Connection, _Pending]":
        """Connect (after a lost connection: until ucgwd is back or the
        deadline) and send the request."""
        pause = 0.02
        while True:
            with self._cond:
                try:
                    conn = self._connection()
                    break
                except GatewayError as e:
                    left = None if deadline is None else deadline - time.monotonic()
                    if not again or (left is not None and left <= 0):
                        raise _Failure(str(e) if not again else
                                       "connection to ucgwd lost, and it did not come back in time: %s" % e) \
                            from None
            time.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, 0.5)
        with self._cond:
            self._seq += 1
            p = _Pending(self._seq, progress)
            conn.pending[p.seq] = p
        data = request_frame(p.seq, name, body, self.api_key)
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
        return conn, p

    def _wait(self, conn: _Connection, p: _Pending, deadline: Optional[float], timeout: Optional[float],
              name: str) -> _Pending:
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
                        raise _Timeout("no answer from ucgwd within %g s to '%s'%s" % (timeout or 0, name, late))
                    if not conn.reading:
                        conn.reading = True
                        break
                    self._cond.wait(left)
            if report is not None and p.progress is not None:
                try:
                    p.progress(*report)
                except Exception:  # an application's callback must not break the gateway
                    log.exception("ucgw: progress callback failed")
                continue
            frames: List[Any] = []
            why = None
            try:
                frames = self._read(conn, left)
            except (OSError, ValueError, Exception) as e:
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

    def _read(self, conn: _Connection, left: Optional[float]) -> List[Any]:
        """Frames that have arrived within left seconds (maybe none); no lock held."""
        po = select.poll()
        po.register(conn.sock.fileno(), select.POLLIN)
        if not po.poll(None if left is None else max(0, int(left * 1000)) + 1):
            return []
        chunk = conn.sock.recv(1 << 20)
        if not chunk:
            raise ValueError("ucgwd closed it (stopped or restarted)")
        conn.buf += chunk
        return split_frames(conn.buf)

    def _dispatch(self, conn: _Connection, m: Any) -> bool:
        """Route one frame (self._cond held); False when it ended the connection."""
        if not isinstance(m, dict) or m.get("t") not in (T_REPLY, T_EVENT):
            self._lose(conn, "unreadable answer from ucgwd: not a reply", lost=False)
            return False
        if m.get("t") == T_REPLY and m.get("seq") == 0:  # ucgwd found a request malformed; it hangs up
            self._lose(conn, m.get("error") or "ucgwd found a request malformed", lost=False,
                       code=code_of(m.get("code")))
            return False
        p = conn.pending.get(m.get("seq", -1))
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
