"""The asyncio client: the same calls as UnifiedCommunicationGateway, as
coroutines, for applications built on asyncio.

    from ucgw.aio import AsyncUnifiedCommunicationGateway
    async with AsyncUnifiedCommunicationGateway() as gw:
        r = await gw.send_metadata({"plate": "ABC123"})

One connection per object, on the running loop; any number of requests are
outstanding at once and answered in any order. A request whose connection
breaks before its answer is sent again, unchanged (a send with its id), once
ucgwd is back, within the call's timeout. Use an object from one loop only."""
import asyncio
import json
import logging
import os
import socket
import struct
from typing import Any, Callable, Dict, Optional, Union

from ._wire import (DEFAULT_TIMEOUT, MAX_OUT_FRAME, RESENDABLE, T_EVENT, T_REPLY, Code, CommunicationResult, ConfigArg,
                    GatewayError, check_common, connect_error, describe_file, encode_payload, file_body,
                    metadata_body, open_file, outcome_wait, pending_result, query_result, request_frame,
                    code_of, resolve_target, send_result, split_frames, trace_budget)
from .ids import new_id

__all__ = ["AsyncUnifiedCommunicationGateway"]

log = logging.getLogger("ucgw")
Progress = Callable[[int, int], None]
_UNSET: Any = object()


class _Lost(Exception):
    """The connection ended before the answer; resend: it may go again."""

    def __init__(self, why: str, resend: bool, code: Optional[Code] = None) -> None:
        super().__init__(why)
        self.resend = resend
        self.code = code  # ucgwd's, when it said why it hung up


class _Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending: Dict[int, "tuple[asyncio.Future[Dict[str, Any]], Optional[Progress]]"] = {}
        self.write_lock = asyncio.Lock()
        self.reader: Optional["asyncio.Task[None]"] = None
        self.closed = False


class AsyncUnifiedCommunicationGateway:
    """UnifiedCommunicationGateway for asyncio: the constructor takes the same
    arguments; send_metadata, send_file, status, stats, workers, dashboard,
    select, queue, trace, get_statistics, get_dashboard_data are coroutines
    with the same arguments and results. No call blocks the loop: files are
    opened with O_NONBLOCK and handed over as descriptors."""

    def __init__(self, config: ConfigArg = None, socket_path: Optional[Union[str, "os.PathLike[str]"]] = None,
                 api_key: Optional[str] = None, timeout: Optional[float] = DEFAULT_TIMEOUT) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive seconds or None")
        self.socket_path, self.api_key, self.config = resolve_target(config, socket_path, api_key)
        self.timeout = timeout
        self._conn: Optional[_Conn] = None
        self._seq = 0

    async def __aenter__(self) -> "AsyncUnifiedCommunicationGateway":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return "AsyncUnifiedCommunicationGateway(socket_path=%r)" % self.socket_path

    # ---- sends ----

    async def send_metadata(self, data: Any, protocol: str = "auto", priority: str = "normal", wait: bool = False,
                            *, topic: Optional[str] = None, endpoint: Optional[str] = None,
                            ttl_s: Optional[int] = None, encrypt: bool = False, format: Optional[str] = None,
                            timeout: Optional[float] = _UNSET, id: Optional[str] = None) -> CommunicationResult:
        """As UnifiedCommunicationGateway.send_metadata."""
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
        return await self._send("send", body, None, wait, self._timeout(timeout), None, msg_id)

    async def send_file(self, file_path: Any, protocol: str = "auto", priority: str = "normal", wait: bool = False,
                        *, remote_name: Optional[str] = None, ttl_s: Optional[int] = None, encrypt: bool = False,
                        timeout: Optional[float] = _UNSET, progress: Optional[Progress] = None,
                        id: Optional[str] = None) -> CommunicationResult:
        """As UnifiedCommunicationGateway.send_file."""
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
            return await self._send("send-file", body, fd, wait, self._timeout(timeout), progress, msg_id)
        finally:
            if own:
                os.close(fd)

    # ---- queries ----

    async def status(self, timeout: Optional[float] = _UNSET) -> CommunicationResult:
        return await self._query("status", None, timeout)

    async def stats(self, timeout: Optional[float] = _UNSET) -> CommunicationResult:
        return await self._query("stats", None, timeout)

    async def workers(self, timeout: Optional[float] = _UNSET) -> CommunicationResult:
        return await self._query("workers", None, timeout)

    async def dashboard(self, timeout: Optional[float] = _UNSET) -> CommunicationResult:
        r = await self._query("dashboard", None, timeout)
        if r.success and isinstance(r.data, str):
            r.data = json.loads(r.data)
        return r

    async def select(self, kind: str = "metadata", size: int = 0, priority: str = "normal", protocol: str = "auto",
                     timeout: Optional[float] = _UNSET) -> CommunicationResult:
        return await self._query("select", {"kind": kind, "size": int(size), "priority": priority,
                                            "protocol": protocol}, timeout)

    async def queue(self, action: str = "list", id: Optional[str] = None, limit: Optional[int] = None,
                    timeout: Optional[float] = _UNSET) -> CommunicationResult:
        body: Dict[str, Any] = {"action": action, "id": id or ""}
        if limit is not None:
            body["limit"] = int(limit)
        return await self._query("queue", body, timeout)

    async def trace(self, id: str, timeout: Optional[float] = _UNSET) -> CommunicationResult:
        return await self._query("trace", {"id": id}, timeout)

    async def get_dashboard_data(self) -> Dict[str, Any]:
        r = await self.dashboard()
        if not r.success:
            log.warning("ucgw: no dashboard data: %s", r.error)
            return {}
        return r.data if isinstance(r.data, dict) else {}

    async def get_statistics(self) -> Dict[str, Dict[str, Any]]:
        stats = (await self.get_dashboard_data()).get("protocol_stats")
        return stats if isinstance(stats, dict) else {}

    async def get_overall_stats(self) -> Dict[str, Dict[str, Any]]:
        return await self.get_statistics()

    async def connect(self) -> "AsyncUnifiedCommunicationGateway":
        """Raises GatewayNotRunning, GatewayPermissionDenied or GatewayError."""
        await self._connection()
        return self

    async def is_running(self) -> bool:
        try:
            await self.connect()
            return True
        except GatewayError:
            return False

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._lose(conn, "the gateway object was closed", resend=False)
            if conn.reader is not None:
                conn.reader.cancel()
                try:
                    await conn.reader
                except (asyncio.CancelledError, Exception):
                    pass

    # ---- internals ----

    def _timeout(self, timeout: Optional[float]) -> Optional[float]:
        return self.timeout if timeout is _UNSET else timeout

    async def _send(self, name: str, body: Dict[str, Any], fd: Optional[int], wait: bool,
                    timeout: Optional[float], progress: Optional[Progress], msg_id: str) -> CommunicationResult:
        try:
            reply = await self._call(name, body, fd, outcome_wait(wait, timeout), progress)
        except asyncio.TimeoutError:
            if not wait or timeout is None:
                return CommunicationResult(False, data={"id": msg_id}, error="no answer from ucgwd within %g s to "
                                           "'%s' (if ucgwd accepted the message, it still delivers it)"
                                           % (timeout or 0, name))
            return pending_result(msg_id, timeout, await self.trace(msg_id, timeout=trace_budget(timeout)))
        except _Lost as e:
            return CommunicationResult(False, error=str(e), code=e.code)
        return send_result(reply, wait)

    async def _query(self, name: str, body: Optional[Dict[str, Any]],
                     timeout: Optional[float]) -> CommunicationResult:
        t = self._timeout(timeout)
        try:
            reply = await self._call(name, body, None, t, None)
        except asyncio.TimeoutError:
            return CommunicationResult(False, error="no answer from ucgwd within %g s to '%s'" % (t or 0, name))
        except _Lost as e:
            return CommunicationResult(False, error=str(e), code=e.code)
        return query_result(reply)

    async def _call(self, name: str, body: Optional[Dict[str, Any]], fd: Optional[int], timeout: Optional[float],
                    progress: Optional[Progress]) -> Dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        again = False
        while True:
            conn = await self._reconnect(deadline) if again else await self._connect_or_lost()
            self._seq += 1
            seq = self._seq
            fut: "asyncio.Future[Dict[str, Any]]" = loop.create_future()
            conn.pending[seq] = (fut, progress)
            await self._write(conn, request_frame(seq, name, body, self.api_key), fd)
            left = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                return await asyncio.wait_for(asyncio.shield(fut), left)
            except asyncio.TimeoutError:
                conn.pending.pop(seq, None)  # its late answer is dropped
                raise
            except _Lost as e:
                if not e.resend or name not in RESENDABLE:
                    raise
                log.info("ucgw: %s; sending '%s' again", e, name)
                again = True

    async def _connect_or_lost(self) -> _Conn:
        try:
            return await self._connection()
        except GatewayError as e:
            raise _Lost(str(e), resend=False) from None

    async def _reconnect(self, deadline: Optional[float]) -> _Conn:
        loop = asyncio.get_running_loop()
        pause = 0.02
        while True:
            try:
                return await self._connection()
            except GatewayError as e:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise _Lost("connection to ucgwd lost, and it did not come back in time: %s" % e,
                                resend=False) from None
                await asyncio.sleep(pause if left is None else min(pause, left))
                pause = min(pause * 2, 0.5)

    async def _connection(self) -> _Conn:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.setblocking(False)
        try:
            await loop.sock_connect(s, self.socket_path)
        except OSError as e:
            s.close()
            raise connect_error(self.socket_path, e) from None
        conn = _Conn(s)
        conn.reader = loop.create_task(self._read_loop(conn))
        self._conn = conn
        return conn

    async def _write(self, conn: _Conn, data: bytes, fd: Optional[int]) -> None:
        loop = asyncio.get_running_loop()
        async with conn.write_lock:
            if conn.closed:
                return  # the request's future already says why
            try:
                if fd is not None:
                    n = await self._sendmsg_fd(conn.sock, data, fd)
                    data = data[n:]
                if data:
                    await loop.sock_sendall(conn.sock, data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the reader sees the end, after ucgwd's reply to a refused frame
            except OSError as e:
                self._lose(conn, "connection to ucgwd lost: %s" % (e.strerror or e))

    @staticmethod
    async def _sendmsg_fd(sock: socket.socket, data: bytes, fd: int) -> int:
        """The first bytes with the descriptor (SCM_RIGHTS); asyncio's sock_* cannot pass one."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                return sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
            except BlockingIOError:
                ready: "asyncio.Future[None]" = loop.create_future()

                def writable() -> None:
                    if not ready.done():
                        ready.set_result(None)
                loop.add_writer(sock.fileno(), writable)
                try:
                    await ready
                finally:
                    loop.remove_writer(sock.fileno())

    async def _read_loop(self, conn: _Conn) -> None:
        loop = asyncio.get_running_loop()
        buf = bytearray()
        try:
            while True:
                chunk = await loop.sock_recv(conn.sock, 1 << 20)
                if not chunk:
                    self._lose(conn, "connection to ucgwd lost: ucgwd closed it (stopped or restarted)")
                    return
                buf += chunk
                for m in split_frames(buf):
                    if not self._dispatch(conn, m):
                        return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._lose(conn, "connection to ucgwd lost: %s" % (getattr(e, "strerror", None) or e))

    def _dispatch(self, conn: _Conn, m: Any) -> bool:
        if not isinstance(m, dict) or m.get("t") not in (T_REPLY, T_EVENT):
            self._lose(conn, "unreadable answer from ucgwd: not a reply", resend=False)
            return False
        if m.get("t") == T_REPLY and m.get("seq") == 0:  # ucgwd found a request malformed; it hangs up
            self._lose(conn, m.get("error") or "ucgwd found a request malformed", resend=False,
                       code=code_of(m.get("code")))
            return False
        entry = conn.pending.get(m.get("seq", -1))
        if entry is None:
            return True  # its caller gave up waiting
        fut, progress = entry
        if m["t"] == T_EVENT:
            b = m.get("body") or {}
            if m.get("name") == "progress" and progress is not None:
                try:
                    progress(b.get("done", 0), b.get("size", 0))
                except Exception:  # an application's callback must not break the gateway
                    log.exception("ucgw: progress callback failed")
            return True
        del conn.pending[m["seq"]]
        if not fut.done():
            fut.set_result(m)
        return True

    def _lose(self, conn: _Conn, why: str, resend: bool = True, code: Optional[Code] = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        log.debug("ucgw: %s", why)
        if self._conn is conn:
            self._conn = None
        for fut, _ in conn.pending.values():
            if not fut.done():
                fut.set_exception(_Lost(why, resend, code))
        conn.pending.clear()
        conn.sock.close()
