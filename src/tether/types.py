"""Types the roads in are written against: ASGI's callables and the application they serve.

`Application` is what a road needs of an App (the native server, the ASGI face and the
TestClient all take one), so no road has to import `tether.app`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .channel import Channel
    from .config import Settings
    from .datastructures import Headers
    from .http import Request, Response
    from .hub import Hub

__all__ = ["Scope", "Message", "Receive", "Send", "ASGIApp", "Application"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Application(Protocol):
    """The entry points every road calls (implemented by `tether.App`)."""

    settings: Settings
    hub: Hub

    async def startup(self) -> None:
        """Bind the hub to the running loop and run the startup hooks."""

    async def shutdown(self) -> None:
        """Run the shutdown hooks."""

    async def handle_http(self, request: Request) -> Response:
        """Answer one HTTP request."""

    async def serve_websocket(self, channel: Channel, *, path: str, query_string: str = "",
                              headers: Headers, client: tuple[str, int] | None = None,
                              subprotocols: Iterable[str] = (), scheme: str = "ws") -> object:
        """Run one WebSocket connection over `channel` from handshake to close."""

    def mounted(self, path: str) -> tuple[str, ASGIApp] | None:
        """(prefix, app) of the mounted ASGI app that serves `path`, if any."""
