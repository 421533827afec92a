"""tether's asyncio client side: `open_websocket(url)` connects to any WebSocket server over
tether's own protocol stack (the client side of `tether.protocol.connection`)."""

from .websocket import ClientWebSocket, open_websocket

__all__ = ["ClientWebSocket", "open_websocket"]
