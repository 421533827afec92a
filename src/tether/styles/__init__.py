"""Handler styles: each module adapts one way of writing handlers to the core WebSocket.

Every style produces a *session*: an async callable taking the core connection
(`tether.websocket_connection.WebSocket`) that accepts or rejects it and then serves it. `adapt`
picks the style from what the user registered, so `@app.websocket(path)` takes any kind.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from ..websocket_connection import WebSocket

__all__ = ["Session", "adapt"]


class Session(Protocol):
    """What every style produces: serves one core connection, from accepting (or refusing)
    it to its end. `is_tether_session` marks one, so `adapt` and `Router.add_route` pass it
    through as it is."""

    is_tether_session: bool

    def __call__(self, connection: WebSocket, /) -> Awaitable[None]: ...


def adapt(handler: Any, path: str, subprotocols: Iterable[str] = ()) -> Session:
    """The session for `handler`, whichever style it is written in."""
    from .classes import ClassEndpoint, GenericWebsocket
    from .function import FunctionEndpoint
    from .generator import GeneratorEndpoint

    if getattr(handler, "is_tether_session", False):  # already adapted (@websocket, @with_websocket...)
        return cast("Session", handler)  # the mark is what makes a session: it is one
    if isinstance(handler, type):
        if issubclass(handler, GenericWebsocket):
            return ClassEndpoint(handler, path)
        name = handler.__name__
        raise TypeError(f"WebSocket route {path!r}: class {handler.__qualname__} is not a GenericWebsocket "
                        f"subclass; write `class {name}(GenericWebsocket)` or register a function")
    if inspect.isasyncgenfunction(handler):
        return GeneratorEndpoint(handler)
    if not callable(handler):
        raise TypeError(f"WebSocket route {path!r}: expected a handler function or class, got {handler!r}")
    return FunctionEndpoint(handler, path, subprotocols)
