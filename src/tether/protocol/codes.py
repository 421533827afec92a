"""WebSocket close codes (RFC 6455 section 7.4.1 and the IANA registry), as plain ints.

`tether.status` re-exports them for applications; the protocol layer uses them from here.
"""

from __future__ import annotations

from typing import Final

WS_1000_NORMAL_CLOSURE: Final = 1000
WS_1001_GOING_AWAY: Final = 1001
WS_1002_PROTOCOL_ERROR: Final = 1002
WS_1003_UNSUPPORTED_DATA: Final = 1003
WS_1005_NO_STATUS_RCVD: Final = 1005
WS_1006_ABNORMAL_CLOSURE: Final = 1006
WS_1007_INVALID_FRAME_PAYLOAD_DATA: Final = 1007
WS_1008_POLICY_VIOLATION: Final = 1008
WS_1009_MESSAGE_TOO_BIG: Final = 1009
WS_1010_MANDATORY_EXT: Final = 1010
WS_1011_INTERNAL_ERROR: Final = 1011
WS_1012_SERVICE_RESTART: Final = 1012
WS_1013_TRY_AGAIN_LATER: Final = 1013
WS_1014_BAD_GATEWAY: Final = 1014

__all__ = [name for name in dir() if name.startswith("WS_")]
