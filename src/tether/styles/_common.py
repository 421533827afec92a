"""What several handler styles share: a face that delegates request data to the core
connection, and the rule for sending a callback's return value."""

from __future__ import annotations

from typing import Any

from ..datastructures import Headers, QueryParams
from ..encoding import is_reply
from ..websocket_connection import WebSocket

__all__ = ["ConnectionView", "send_reply"]


class ConnectionView:
    """A style's face on a core connection: delegates the request data to `self.connection`."""

    connection: WebSocket

    @property
    def id(self) -> str:
        """The connection's id (a UUID string)."""
        return self.connection.id

    @property
    def headers(self) -> Headers:
        """The handshake's headers (case-insensitive)."""
        return self.connection.headers

    @property
    def query_params(self) -> QueryParams:
        """The handshake's query parameters (`.get()`, `.getlist()`)."""
        return self.connection.query_params

    @property
    def path_params(self) -> dict[str, Any]:
        """The route's path parameters, converted."""
        return self.connection.path_params


async def send_reply(connection: WebSocket, value: Any) -> None:
    """Send a callback's return value, unless it is None or empty (the styles' rule)."""
    if is_reply(value):
        await connection.send(value)
