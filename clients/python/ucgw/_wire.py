"""What the blocking and the asyncio clients share: the frame format, the
request bodies, the results, and how a constructor argument names the socket."""
import datetime
import decimal
import json
import os
import stat
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Dict, List, Optional, Tuple, Union

import msgpack

from .config import DEFAULT_SOCKET, CommunicationConfig, load_communication_config
from .ids import is_id

PROTO_VERSION = 2  # the control protocol (proto/ctl.h UCGW_CTL_VERSION)
T_REQUEST, T_REPLY, T_EVENT = 32, 33, 34
# The most this client puts in one request. ucgwd's own limit is gateway.max_frame_bytes
# (16 MiB by default); a larger frame gets its error reply, read even while writing.
MAX_OUT_FRAME = (64 << 20) - 4096
MAX_IN_FRAME = 256 << 20
# Seconds a call blocks at most unless the caller says otherwise: an accepted
# message is answered in milliseconds; waiting for delivery is bounded too.
DEFAULT_TIMEOUT = 30.0
# Requests sent again, unchanged, over a new connection when the old one broke
# before their answer: sends carry their id, so ucgwd answers a repeat with the
# first one's state; the others only read.
RESENDABLE = frozenset({"send", "send-file", "status", "stats", "workers", "trace", "dashboard", "select"})

Data = Union[Dict[str, Any], List[Any], str, bytes, bytearray, memoryview]
ConfigArg = Union[None, str, bytes, "os.PathLike[str]", Mapping[str, Any], CommunicationConfig, object]


class Code(IntEnum):
    """Why ucgwd refused a request: an error reply's `code` (proto/ctl.h,
    docs/control-protocol.md "Error codes"). Act on these, not on the words
    of `error`, which may change. Numbers as HTTP's statuses of the same
    meaning."""
    BAD_REQUEST = 400   # unknown key, wrong type, value out of range, not JSON, ...
    UNAUTHORIZED = 401  # the credential or this user was refused
    FORBIDDEN = 403     # not allowed to do this (a path without its descriptor)
    NOT_FOUND = 404     # no such protocol, worker, message or file
    CONFLICT = 409      # the message is not in a state that allows it
    TOO_LARGE = 413     # over gateway.max_message_bytes, max_frame_bytes or spool.max_bytes
    CONFIG = 422        # reload: the new configuration was refused
    BUSY = 429          # every connection ucgwd allows is taken: try again later
    INTERNAL = 500      # ucgwd could not keep it (not accepted: send it again)
    UNAVAILABLE = 503   # nothing enabled can carry it, or ucgwd is stopping
    VERSION = 505       # ucgwd does not speak this client's protocol version
    SPOOL_FULL = 507    # the spool is full: try again later


def code_of(value: Any) -> Optional[Code]:
    """An error reply's code as a Code (None: none given, or one this client does not know)."""
    try:
        return Code(value) if isinstance(value, int) and not isinstance(value, bool) else None
    except ValueError:
        return None


@dataclass
class CommunicationResult:
    """As in the reference design: success, data, error.

    success: for a send, the message is in ucgwd's spool (the default) or,
    with wait=True, delivered; for a query, ucgwd answered. data: ucgwd's
    answer; for a send {id, status: accepted} or, waited, the outcome {id,
    status, protocol, attempts, error, latency_ms, route}; ucgw does not hand
    back the server's reply, which the reference's REST client returned (the
    server's 2xx is what makes it 'ok'). error: why not, in ucgwd's words.
    code: when ucgwd refused the request, why, as a Code (None otherwise:
    accepted, not delivered, or no answer)."""
    success: bool
    data: Any = None
    error: Optional[str] = None
    code: Optional[Code] = None

    @property
    def id(self) -> Optional[str]:
        """The message id (the idempotency key at the server), when there is one."""
        if isinstance(self.data, dict):
            value = self.data.get("id")
            return value if isinstance(value, str) else None
        return None


class GatewayError(Exception):
    """Raised by connect() only; the send and query methods return a
    CommunicationResult with success False instead."""


class GatewayNotRunning(GatewayError, ConnectionError):
    """ucgwd is not running: no socket, or nobody listening on it."""


class GatewayPermissionDenied(GatewayError, PermissionError):
    """This process may not connect to ucgwd's control socket."""


def _json_default(o: Any) -> Any:
    if isinstance(o, (datetime.datetime, datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, (uuid.UUID, decimal.Decimal)):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, (bytes, bytearray)):
        return o.decode("utf-8", "replace")
    raise TypeError("Object of type %s is not JSON serializable" % type(o).__name__)


def encode_payload(data: Any) -> Tuple[bytes, str]:
    """The bytes to send and their format: a dict or list as JSON, a str
    that parses as JSON as JSON, other text and bytes as they are."""
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


def check_common(protocol: Any, priority: Any, ttl_s: Any, timeout: Any, msg_id: Any) -> None:
    if not isinstance(protocol, str) or not isinstance(priority, str):
        raise TypeError("protocol and priority are strings")
    if ttl_s is not None and (not isinstance(ttl_s, int) or ttl_s < 0):
        raise ValueError("ttl_s must be a whole number of seconds >= 0 (0: never expires)")
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be positive seconds or None")
    if msg_id is not None and (not isinstance(msg_id, str) or not is_id(msg_id)):
        raise ValueError("id must be a ULID: 26 characters of Crockford base32 (ucgw.new_id() makes one)")


def metadata_body(payload: bytes, fmt: str, protocol: str, priority: str, wait: bool, msg_id: str,
                  topic: Optional[str], endpoint: Optional[str], ttl_s: Optional[int],
                  encrypt: bool) -> Dict[str, Any]:
    body: Dict[str, Any] = {"data": payload, "format": fmt, "protocol": protocol, "priority": priority,
                            "wait": bool(wait), "encrypt": bool(encrypt), "id": msg_id}
    if topic is not None:
        body["topic"] = topic
    if endpoint is not None:
        body["endpoint"] = endpoint
    if ttl_s is not None:
        body["ttl_s"] = int(ttl_s)
    return body


def file_body(path: Optional[str], protocol: str, priority: str, wait: bool, msg_id: str,
              remote_name: Optional[str], ttl_s: Optional[int], encrypt: bool) -> Dict[str, Any]:
    body: Dict[str, Any] = {"fd": True, "protocol": protocol, "priority": priority, "wait": bool(wait),
                            "encrypt": bool(encrypt), "id": msg_id}
    if path:
        body["path"] = path
    if remote_name is not None:
        body["remote_name"] = remote_name
    if ttl_s is not None:
        body["ttl_s"] = int(ttl_s)
    return body


def open_file(file_path: Any) -> Tuple[int, Optional[str], bool]:
    """(descriptor, absolute path or None, whether the caller must close it);
    raises TypeError for what is not a file, OSError as os.open does, and
    ValueError for what is not a regular file."""
    if isinstance(file_path, int) or hasattr(file_path, "fileno"):
        fd = file_path if isinstance(file_path, int) else int(file_path.fileno())
        path, own = None, False
    elif isinstance(file_path, (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(file_path))
        fd = os.open(file_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        own = True
    else:
        raise TypeError("file_path must be a path, an open file or a descriptor")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("%s is not a regular file" % (path or "the descriptor"))
    except BaseException:
        if own:
            os.close(fd)
        raise
    return fd, path, own


def describe_file(file_path: Any) -> str:
    return os.fsdecode(file_path) if isinstance(file_path, (str, bytes, os.PathLike)) else "the file"


def request_frame(seq: int, name: str, body: Optional[Dict[str, Any]], auth: Optional[str]) -> bytes:
    req: Dict[str, Any] = {"t": T_REQUEST, "v": PROTO_VERSION, "seq": seq, "name": name}
    if body is not None:
        req["body"] = body
    if auth:
        req["auth"] = auth
    frame: bytes = msgpack.packb(req, use_bin_type=True)
    return struct.pack(">I", len(frame)) + frame


def split_frames(buf: bytearray) -> List[Any]:
    """Take the whole frames off the front of buf; ValueError for a bad length."""
    frames = []
    while len(buf) >= 4:
        n = struct.unpack(">I", buf[:4])[0]
        if n == 0 or n > MAX_IN_FRAME:
            raise ValueError("unreadable answer from ucgwd: bad frame length %d" % n)
        if len(buf) < 4 + n:
            break
        frames.append(msgpack.unpackb(bytes(buf[4:4 + n]), raw=False, strict_map_key=False))
        del buf[:4 + n]
    return frames


def send_result(reply: Dict[str, Any], wait: bool) -> CommunicationResult:
    if not reply.get("ok"):
        return CommunicationResult(False, error=reply.get("error") or "refused by ucgwd",
                                   code=code_of(reply.get("code")))
    out = reply.get("body") or {}
    if not wait or out.get("status") == "accepted":
        return CommunicationResult(True, data=out)
    ok = out.get("status") == "ok"
    return CommunicationResult(ok, data=out, error=None if ok else (out.get("error") or "not delivered"))


def query_result(reply: Dict[str, Any]) -> CommunicationResult:
    if not reply.get("ok"):
        return CommunicationResult(False, error=reply.get("error") or "refused by ucgwd",
                                   code=code_of(reply.get("code")))
    return CommunicationResult(True, data=reply.get("body"))


def trace_budget(timeout: float) -> float:
    """Of a waited send's timeout, what is kept to ask ucgwd for the message's
    last error when the outcome does not come: the call never blocks longer
    than the caller allows."""
    return min(1.0, timeout / 10)


def outcome_wait(wait: bool, timeout: Optional[float]) -> Optional[float]:
    """How long a send waits for ucgwd's answer: all of its timeout, less the
    trace's share when it waits for the delivery."""
    return timeout - trace_budget(timeout) if wait and timeout is not None else timeout


def pending_result(msg_id: str, timeout: float, trace: CommunicationResult) -> CommunicationResult:
    """A waited send whose outcome did not come in time: not delivered yet,
    with the last error ucgwd recorded for it (from `trace`)."""
    last_error = None
    state = "pending"
    if trace.success and isinstance(trace.data, dict):
        m = trace.data.get("message") or {}
        last_error = m.get("last_error") or None
        state = m.get("state") or state
        for hop in reversed(trace.data.get("route") or []):
            if not last_error and hop.get("error"):
                last_error = hop["error"]
    why = "not delivered within %g s; ucgwd keeps it in its spool and still delivers it" % timeout
    if last_error:
        why += " (last error: %s)" % last_error
    return CommunicationResult(False, data={"id": msg_id, "status": "pending", "state": state,
                                            "last_error": last_error}, error=why)


def resolve_target(config: ConfigArg, socket_path: Optional[Union[str, "os.PathLike[str]"]],
                   api_key: Optional[str]) -> Tuple[str, Optional[str], Any]:
    """(socket path, credential, the config as the application gave it or loaded).

    config may be: a socket path; a YAML file (ucgwd's or the reference's
    communication_config.yaml), whose gateway.control_socket names the socket;
    a CommunicationConfig; a mapping or object with socket_path or
    control_socket (or a gateway section) and api_key."""
    loaded: Any = config
    found: Optional[str] = None
    if isinstance(config, (str, bytes, os.PathLike)):
        path = os.fsdecode(config)
        if is_config_file(path):
            loaded = load_communication_config(path)
            found = loaded.gateway.control_socket
        else:
            found = path
    elif isinstance(config, CommunicationConfig):
        found = config.gateway.control_socket
    elif isinstance(config, Mapping):
        gw = config.get("gateway")
        found = config.get("socket_path") or config.get("control_socket") or \
            (gw.get("control_socket") if isinstance(gw, Mapping) else None)
        api_key = api_key or config.get("api_key")
    elif config is not None:
        found = getattr(config, "socket_path", None) or getattr(config, "control_socket", None)
        api_key = api_key or getattr(config, "api_key", None)
    sock = os.fspath(socket_path) if socket_path else (found or os.environ.get("UCGW_SOCKET") or DEFAULT_SOCKET)
    if api_key is None:
        api_key = os.environ.get("UCGW_JWT") or os.environ.get("UCGW_API_KEY") or None
    return sock, api_key, loaded


def is_config_file(path: str) -> bool:
    """A YAML file rather than a socket: a regular file, or a name ending in .yaml/.yml."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return path.endswith((".yaml", ".yml"))


def connect_error(path: str, e: OSError) -> GatewayError:
    """The error for a failed connect(), in words an operator can act on."""
    import errno
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return GatewayNotRunning("ucgwd is not running (no socket at %s)" % path)
    if e.errno == errno.ECONNREFUSED:
        return GatewayNotRunning("ucgwd is not running (nobody listening on %s)" % path)
    if e.errno in (errno.EACCES, errno.EPERM):
        import pwd
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = "USER"
        return GatewayPermissionDenied(
            "permission denied connecting to ucgwd at %s: add this user to the socket's group (the package's "
            "'ucgw': adduser %s ucgw, then start the application again) or widen gateway.control_socket_mode"
            % (path, user))
    return GatewayError("cannot connect to ucgwd at %s: %s" % (path, e.strerror or e))
