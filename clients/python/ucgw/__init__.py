"""ucgw: a client for the ucgw gateway daemon, with the reference design's API.

    from ucgw import UnifiedCommunicationGateway
    gw = UnifiedCommunicationGateway(socket_path="/run/ucgw/control.sock")
    result = gw.send_metadata({"plate": "ABC123"}, protocol="auto", priority="normal")
    if result.success: ...

A camera application that used the reference code switches by changing its
import. Pure Python: the standard library and Debian's python3-msgpack."""
from .client import CommunicationResult, UnifiedCommunicationGateway

__all__ = ["UnifiedCommunicationGateway", "CommunicationResult"]
