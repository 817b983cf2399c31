"""ucgw: send LPR metadata and files through ucgwd, with the reference design's API.

    from ucgw import UnifiedCommunicationGateway
    gw = UnifiedCommunicationGateway(socket_path="/run/ucgw/control.sock")
    result = gw.send_metadata({"plate": "ABC123"}, protocol="auto", priority="normal")
    if not result.success:
        print(result.error)
    result = gw.send_file("/var/lib/camera/plate-0001.jpg")

A camera application that used the reference code switches by changing its
import. Pure Python: the standard library and Debian's python3-msgpack."""
from .client import (DEFAULT_SOCKET, CommunicationResult, GatewayError, GatewayNotRunning,
                     UnifiedCommunicationGateway)

__all__ = ["UnifiedCommunicationGateway", "CommunicationResult", "GatewayError", "GatewayNotRunning",
           "DEFAULT_SOCKET"]
__version__ = "0.1.0"
