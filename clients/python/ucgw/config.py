"""The reference design's configuration dataclasses and load_communication_config().

ucgwd reads the same YAML (its keys are accepted as the reference wrote them,
with ucgw's own beside them), so the file an application loads here may be the
daemon's /etc/ucgw/ucgw.yaml or the reference's communication_config.yaml.
Keys a dataclass does not name are kept in its `extra` mapping instead of
raising TypeError as the reference's `WebSocketConfig(**section)` did; a
section the file does not have is None. The protocol settings are ucgwd's
business: the client only reads `gateway.control_socket` from them."""
import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Mapping, Optional, Union

__all__ = ["CommunicationConfig", "WebSocketConfig", "RESTConfig", "MQTTConfig", "SFTPConfig", "RSyncConfig",
           "ProtocolSelectionConfig", "FallbackConfig", "GatewayConfig", "load_communication_config",
           "DEFAULT_SOCKET", "ConfigError"]

DEFAULT_SOCKET = "/run/ucgw/control.sock"


class ConfigError(ValueError):
    """The configuration file cannot be read or is not a YAML mapping."""


@dataclass
class WebSocketConfig:
    server_url: str = ""
    reconnect_attempts: int = 3
    reconnect_delay: int = 5
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RESTConfig:
    base_url: str = ""
    timeout: int = 30
    retry_attempts: int = 3
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class MQTTConfig:
    broker_url: str = ""
    client_id: str = ""
    username: Optional[str] = None
    password: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SFTPConfig:
    host: str = ""
    username: str = ""
    password: Optional[str] = None
    key_file: Optional[str] = None
    remote_path: str = "/data/lpr_images"
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class RSyncConfig:
    remote_host: str = ""
    remote_user: str = ""
    remote_path: str = "/data/lpr_images"
    options: Optional[List[str]] = None
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ProtocolSelectionConfig:
    auto_select: bool = True
    priority_based: bool = True
    network_aware: bool = True
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class FallbackConfig:
    enabled: bool = True
    max_attempts: int = 3
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class GatewayConfig:
    """ucgw's own `gateway` section (not in the reference design): where the
    control socket is, which is all a client needs."""
    control_socket: Optional[str] = None  # None: $UCGW_SOCKET, else DEFAULT_SOCKET
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class CommunicationConfig:
    websocket: Optional[WebSocketConfig] = None
    rest: Optional[RESTConfig] = None
    mqtt: Optional[MQTTConfig] = None
    sftp: Optional[SFTPConfig] = None
    rsync: Optional[RSyncConfig] = None
    protocol_selection: Optional[ProtocolSelectionConfig] = None
    fallback: Optional[FallbackConfig] = None
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    path: Optional[str] = None  # the file it was read from

    @property
    def control_socket(self) -> str:
        return self.gateway.control_socket or os.environ.get("UCGW_SOCKET") or DEFAULT_SOCKET


def _section(cls: Any, data: Any, name: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("section '%s' is not a mapping" % name)
    known = {f.name for f in fields(cls) if f.name != "extra"}
    args = {k: v for k, v in data.items() if k in known}
    extra = {str(k): v for k, v in data.items() if k not in known}
    return cls(extra=extra, **args)


_SECTIONS: Dict[str, type] = {"websocket": WebSocketConfig, "rest": RESTConfig, "mqtt": MQTTConfig,
                              "sftp": SFTPConfig, "rsync": RSyncConfig,
                              "protocol_selection": ProtocolSelectionConfig, "fallback": FallbackConfig}


def config_from_mapping(data: Mapping[str, Any], path: Optional[str] = None) -> CommunicationConfig:
    """The dataclasses from an already parsed configuration."""
    cfg = CommunicationConfig(path=path)
    for name, cls in _SECTIONS.items():
        if name in data:
            setattr(cfg, name, _section(cls, data[name], name))
    cfg.gateway = _section(GatewayConfig, data.get("gateway"), "gateway")
    return cfg


def load_communication_config(config_path: Union[str, "os.PathLike[str]"]) -> CommunicationConfig:
    """Load the configuration from a YAML file, as the reference design did
    (PyYAML, Debian's python3-yaml). Raises ConfigError, with the file's name,
    for a file that cannot be read or parsed."""
    path = os.fspath(config_path)
    try:
        import yaml
    except ImportError:
        raise ConfigError("reading %s needs PyYAML (Debian: apt install python3-yaml)" % path) from None
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError("cannot read %s: %s" % (path, e.strerror or e)) from None
    except yaml.YAMLError as e:
        raise ConfigError("%s is not valid YAML: %s" % (path, e)) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError("%s: the top level is not a mapping of sections" % path)
    return config_from_mapping(data, path)
