"""ucgw: send LPR metadata and files through ucgwd, with the reference design's API.

    from ucgw import UnifiedCommunicationGateway
    gw = UnifiedCommunicationGateway("/etc/ucgw/ucgw.yaml")   # or socket_path=..., or nothing
    result = gw.send_metadata({"plate": "ABC123"}, protocol="auto", priority="normal")
    if not result.success:
        print(result.error)
    result = gw.send_file("/var/lib/camera/plate-0001.jpg")

A send returns once ucgwd has the message on disk (result.id is its id);
wait=True waits for the server's acknowledgement, at most `timeout` seconds.
A camera application that used the reference code switches by changing its
import. Pure Python: the standard library and Debian's python3-msgpack
(python3-yaml to read a configuration file). For asyncio: ucgw.aio."""
from ._wire import (DEFAULT_TIMEOUT, Code, CommunicationResult, GatewayError, GatewayNotRunning,
                    GatewayPermissionDenied)
from .client import UnifiedCommunicationGateway
from .config import (DEFAULT_SOCKET, CommunicationConfig, ConfigError, FallbackConfig, GatewayConfig, MQTTConfig,
                     ProtocolSelectionConfig, RESTConfig, RSyncConfig, SFTPConfig, WebSocketConfig,
                     load_communication_config)
from .ids import is_id, new_id
from .reference import (CommunicationDashboard, CommunicationMonitor, FallbackManager, MQTTClient, NetworkMonitor,
                        ProtocolSelector, RESTClient, RSyncClient, SFTPClient, WebSocketClient)

__all__ = ["UnifiedCommunicationGateway", "CommunicationResult", "Code", "GatewayError", "GatewayNotRunning",
           "GatewayPermissionDenied", "DEFAULT_SOCKET", "DEFAULT_TIMEOUT", "new_id", "is_id",
           "CommunicationConfig", "WebSocketConfig", "RESTConfig", "MQTTConfig", "SFTPConfig", "RSyncConfig",
           "ProtocolSelectionConfig", "FallbackConfig", "GatewayConfig", "ConfigError", "load_communication_config",
           "ProtocolSelector", "FallbackManager", "CommunicationMonitor", "NetworkMonitor", "CommunicationDashboard",
           "WebSocketClient", "RESTClient", "MQTTClient", "SFTPClient", "RSyncClient"]
__version__ = "0.1.0"
