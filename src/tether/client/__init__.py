"""tether's asyncio client side: `open_websocket(url)` connects to any WebSocket server over
tether's own protocol stack (the client side of `tether.protocol.connection`); `connect(url)`
is the client of tether's live channels (`tether.live.v1`, `tether.client.live`), built on it."""

from .backoff import Backoff
from .feed import History, Joined, Lost, Message, Position
from .live import LiveClient, LiveClosed, LiveDisconnected, LiveError, LiveRefused, Room, connect
from .websocket import ClientWebSocket, open_websocket

__all__ = ["ClientWebSocket", "open_websocket",
           "connect", "LiveClient", "Room", "Message", "Joined", "Lost", "History", "Position",
           "LiveError", "LiveClosed", "LiveRefused", "LiveDisconnected", "Backoff"]
