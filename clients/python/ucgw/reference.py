"""The rest of the reference design's classes, answered by ucgwd.

The reference computed protocol choice, fallbacks, statistics and network
quality inside each application; ucgwd does all of it once for every
application on the camera, so these classes ask it. Each may be built as the
reference built it (no argument: the gateway on $UCGW_SOCKET or
/run/ucgw/control.sock) or on a UnifiedCommunicationGateway."""
import logging
import os
from typing import Any, Dict, List, Optional

from ._wire import CommunicationResult, encode_payload
from .client import UnifiedCommunicationGateway

__all__ = ["ProtocolSelector", "FallbackManager", "CommunicationMonitor", "NetworkMonitor",
           "CommunicationDashboard", "WebSocketClient", "RESTClient", "MQTTClient", "SFTPClient", "RSyncClient"]

log = logging.getLogger("ucgw")

METADATA_PROTOCOLS = ("websocket", "rest", "mqtt")
FILE_PROTOCOLS = ("sftp", "rsync")
PROTOCOLS = METADATA_PROTOCOLS + FILE_PROTOCOLS
_QUALITY_RANK = {"unknown": 0, "poor": 1, "fair": 2, "good": 3, "excellent": 4}


def _gateway(gateway: Any) -> UnifiedCommunicationGateway:
    """The reference passed its config; a gateway, or anything the gateway takes, works."""
    if isinstance(gateway, UnifiedCommunicationGateway):
        return gateway
    return UnifiedCommunicationGateway(gateway)


class ProtocolSelector:
    """Which protocol `auto` picks, asked of ucgwd: the reference's rules
    (priority, size, network quality; the thresholds and choices are in
    ucgwd's protocol_selection section) over the protocols enabled and up
    now, where the reference picked a protocol that might be down."""

    def __init__(self, config: Any = None) -> None:
        self.gateway = _gateway(config)

    def select_metadata_protocol(self, data: Any, priority: str = "normal") -> str:
        """The protocol ucgwd would use for this metadata now; 'auto' when it
        cannot say (not running: ucgwd decides when the message is sent)."""
        try:
            size = len(encode_payload(data)[0])
        except (TypeError, ValueError):
            size = len(str(data))
        return self._pick("metadata", size, priority)

    def select_file_protocol(self, file_path: Any, priority: str = "normal") -> str:
        return self._pick("file", os.path.getsize(file_path), priority)

    def _pick(self, kind: str, size: int, priority: str) -> str:
        r = self.gateway.select(kind, size, priority)
        if not r.success or not isinstance(r.data, dict) or not r.data.get("protocol"):
            log.warning("ucgw: no protocol selected: %s", r.error or "none can carry it")
            return "auto"
        return str(r.data["protocol"])


class FallbackManager:
    """ucgwd's fallback chains (fallback.chains, the reference's fallback_map
    by default), limited to the protocols enabled. ucgwd walks a chain itself
    when a protocol fails, with a backoff, until the message is delivered."""

    def __init__(self, config: Any = None) -> None:
        self.gateway = _gateway(config)

    def get_all_fallbacks(self, protocol: str) -> List[str]:
        r = self.gateway.select("file" if protocol in FILE_PROTOCOLS else "metadata", 0, "normal", protocol)
        if not r.success or not isinstance(r.data, dict):
            return []
        return [str(p) for p in (r.data.get("chain") or [])[1:]]

    def has_fallback(self, protocol: str) -> bool:
        return bool(self.get_all_fallbacks(protocol))

    def get_fallback(self, protocol: str) -> Optional[str]:
        chain = self.get_all_fallbacks(protocol)
        return chain[0] if chain else None

    @property
    def fallback_map(self) -> Dict[str, List[str]]:
        return {p: self.get_all_fallbacks(p) for p in PROTOCOLS}


class CommunicationMonitor:
    """The statistics ucgwd keeps for every protocol since it started, with
    the reference's keys: success_rate, total_attempts, average_latency
    (seconds), and ucgw's beside them."""

    def __init__(self, gateway: Any = None) -> None:
        self.gateway = _gateway(gateway)

    def record_communication(self, protocol: str, success: bool, latency: float) -> None:
        """Kept for the reference's callers; ucgwd records every attempt itself."""

    def get_protocol_stats(self, protocol: str) -> Dict[str, Any]:
        """{} for a protocol that is not enabled, as the reference for an unknown one."""
        stats = self.gateway.get_statistics().get(protocol)
        return stats if isinstance(stats, dict) else {}

    def get_overall_stats(self) -> Dict[str, Dict[str, Any]]:
        return self.gateway.get_statistics()

    @property
    def metrics(self) -> Dict[str, Dict[str, Any]]:
        return {p: {"success": s.get("success", 0), "failure": s.get("failure", 0)}
                for p, s in self.get_overall_stats().items()}


class NetworkMonitor:
    """The network quality ucgwd measures continuously (round trip and loss
    to each server, from the protocols' own traffic and probes), in the
    reference's words: excellent, good, fair, poor, unknown."""

    def __init__(self, gateway: Any = None) -> None:
        self.gateway = _gateway(gateway)

    def get_quality(self, protocol: Optional[str] = None) -> str:
        """The quality to one protocol's server, or (None) the best among the
        servers that are up; 'unknown' when nothing is measured yet."""
        r = self.gateway.status()
        if not r.success or not isinstance(r.data, dict):
            log.warning("ucgw: no network quality: %s", r.error)
            return "unknown"
        net = r.data.get("network") or {}
        if protocol is not None:
            return str((net.get(protocol) or {}).get("quality") or "unknown")
        up = {w.get("name") for w in r.data.get("workers") or [] if w.get("connected")}
        best = "unknown"
        for name, q in net.items():
            quality = str((q or {}).get("quality") or "unknown")
            if name in up and _QUALITY_RANK.get(quality, 0) > _QUALITY_RANK[best]:
                best = quality
        return best

    def measure_quality(self) -> None:
        """Kept for the reference's callers; ucgwd measures all the time."""

    @property
    def quality_history(self) -> List[Dict[str, Any]]:
        """The latest measurement per server: {protocol, quality, latency (ms), packet_loss}."""
        r = self.gateway.status()
        net = r.data.get("network") if r.success and isinstance(r.data, dict) else None
        return [{"protocol": n, "quality": q.get("quality"), "latency": q.get("rtt_ms"),
                 "packet_loss": q.get("loss")} for n, q in (net or {}).items()]


class CommunicationDashboard:
    """get_dashboard_data(): protocol_stats, network_quality,
    active_connections, recent_errors (and ucgw's workers, spool, gateway)."""

    def __init__(self, gateway: Any = None) -> None:
        self.gateway = _gateway(gateway)
        self.monitor = CommunicationMonitor(self.gateway)
        self.network_monitor = NetworkMonitor(self.gateway)

    def get_dashboard_data(self) -> Dict[str, Any]:
        return self.gateway.get_dashboard_data()


class _ProtocolClient:
    protocol = ""

    def __init__(self, gateway: Any = None) -> None:
        self.gateway = _gateway(gateway)

    def connect(self) -> bool:
        """Whether ucgwd's worker for this protocol is connected to its server
        (ucgwd holds the connection; this opens none)."""
        r = self.gateway.workers()
        if not r.success or not isinstance(r.data, list):
            return False
        return any(w.get("name") == self.protocol and w.get("connected") for w in r.data)

    def is_connected(self) -> bool:
        return self.connect()


class WebSocketClient(_ProtocolClient):
    """send(data) through ucgwd's WebSocket worker. Accepted means in the
    spool; wait=True waits for the server's ack, which the reference never got."""
    protocol = "websocket"

    def send(self, data: Any, **kw: Any) -> CommunicationResult:
        return self.gateway.send_metadata(data, protocol=self.protocol, **kw)


class RESTClient(_ProtocolClient):
    """post(data, endpoint) through ucgwd's REST worker; endpoint None: the
    rest.endpoint configured in ucgwd (the reference's '/api/lpr/data' by default).
    ucgwd retries with backoff in the background instead of blocking the caller."""
    protocol = "rest"

    def post(self, data: Any, endpoint: Optional[str] = None, **kw: Any) -> CommunicationResult:
        return self.gateway.send_metadata(data, protocol=self.protocol, endpoint=endpoint, **kw)


class MQTTClient(_ProtocolClient):
    """publish(data, topic, qos) through ucgwd's MQTT worker; topic None: the
    mqtt.topic configured in ucgwd. The QoS is ucgwd's mqtt.qos (the qos
    argument is accepted for the reference's callers); ok means PUBACK."""
    protocol = "mqtt"

    def publish(self, data: Any, topic: Optional[str] = None, qos: int = 1, **kw: Any) -> CommunicationResult:
        return self.gateway.send_metadata(data, protocol=self.protocol, topic=topic, **kw)


class SFTPClient(_ProtocolClient):
    """upload(local_path, remote_path) through ucgwd's SFTP worker, over one
    SSH connection that stays open, to sftp.remote_path; a remote_path names
    the file there (its last part), written under a temporary name and renamed."""
    protocol = "sftp"

    def upload(self, local_path: Any, remote_path: Optional[str] = None, **kw: Any) -> CommunicationResult:
        name = os.path.basename(remote_path) if remote_path else None
        return self.gateway.send_file(local_path, protocol=self.protocol, remote_name=name, **kw)


class RSyncClient(_ProtocolClient):
    """sync(local_path) through ucgwd's rsync worker, which sends the files
    that queue meanwhile in one rsync run."""
    protocol = "rsync"

    def sync(self, local_path: Any, **kw: Any) -> CommunicationResult:
        return self.gateway.send_file(local_path, protocol=self.protocol, **kw)


class _Attachments:
    """The attributes the reference's gateway carried, made on first use."""

    def __init__(self, gateway: UnifiedCommunicationGateway) -> None:
        self.protocol_selector = ProtocolSelector(gateway)
        self.fallback_manager = FallbackManager(gateway)
        self.monitor = CommunicationMonitor(gateway)
        self.network_monitor = NetworkMonitor(gateway)
        self.websocket_client = WebSocketClient(gateway)
        self.rest_client = RESTClient(gateway)
        self.mqtt_client = MQTTClient(gateway)
        self.sftp_client = SFTPClient(gateway)
        self.rsync_client = RSyncClient(gateway)
