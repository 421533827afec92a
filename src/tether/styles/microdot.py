"""Route + decorator style (Microdot).

    @app.route("/echo")
    @with_websocket
    async def echo(request, ws):
        while True:
            await ws.send(await ws.receive())

`request` is the handshake's HTTP request; `ws` has `receive()`, `send(data)` and `close()`.
Returning closes the socket (1000). When the client ends the connection the route function
is cancelled: `asyncio.CancelledError` is raised inside it, as Microdot does.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Concatenate

from ..encoding import Data
from ..http import Request
from ..params import Resolver
from ..websocket_connection import WebSocket

__all__ = ["with_websocket", "MicrodotWebSocket", "MicrodotEndpoint"]


class MicrodotWebSocket:
    """The `ws` a Microdot-style handler receives."""

    def __init__(self, connection: WebSocket) -> None:
        self.connection = connection

    async def receive(self) -> Data:
        """The next message (str or bytes)."""
        return await self.connection.receive()

    async def send(self, data: Any) -> None:
        """Send str as text, bytes as binary, anything else as JSON."""
        await self.connection.send(data)

    async def close(self) -> None:
        """Close the connection (1000)."""
        await self.connection.close()


#: A route function: `(request, ws, **path and query parameters)`, sync or async.
RouteFunction = Callable[Concatenate[Request, MicrodotWebSocket, ...], Any]


class MicrodotEndpoint:
    """The session of a function wrapped by `with_websocket`."""

    is_tether_session = True
    style = "microdot"  # shown by `tether routes`

    def __init__(self, func: RouteFunction) -> None:
        self.params = Resolver(func, getattr(func, "__qualname__", ""), skip=2)
        functools.update_wrapper(self, func)

    async def __call__(self, connection: WebSocket) -> None:
        kwargs = self.params.resolve(connection.path_params, connection.query_params)
        request = Request("GET", connection.path, connection.query_string, connection.headers,
                          client=connection.client, path_params=connection.path_params,
                          scheme="https" if connection.scheme == "wss" else "http")
        await connection.accept()
        task = asyncio.current_task()
        assert task is not None
        forget = connection.on_disconnect(task.cancel)
        try:
            await self.params.call(request, MicrodotWebSocket(connection), **kwargs)
        except asyncio.CancelledError:
            if connection.closed_by != "client":
                raise  # a real cancellation (server shutdown), not the client leaving
            task.uncancel()
        finally:
            forget()


def with_websocket(func: RouteFunction) -> MicrodotEndpoint:
    """Mark a route function `(request, ws, **path params)` as a WebSocket handler."""
    return MicrodotEndpoint(func)
