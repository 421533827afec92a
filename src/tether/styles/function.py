"""Function style (Robyn's `@app.websocket`): `async def handler(websocket, **params)`.

The handler's extra parameters, and those of its `on_connect`/`on_close` callbacks, are
filled from the path and query string (a missing or bad one refuses the handshake with 400,
raised as ParamError for the core to answer). `on_connect`'s return value is sent as the
first message; `on_close` becomes the connection's close callback, whose return value the
core sends before the close frame when the server closes.

The connection is accepted before the handler runs (Robyn's way), with the route's
subprotocol. A handler whose code calls `accept` itself (FastAPI's habit: `await
websocket.accept(subprotocol=..., headers=...)`) accepts it there instead, with what it asks
for; a send, receive, join or broadcast before that accepts with the route's subprotocol,
and a handler that returns without either is refused (403). `on_connect` runs right after the handshake either way.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..params import Resolver
from ..protocol import select_subprotocol
from ..websocket_connection import WebSocket
from ._common import send_reply

__all__ = ["FunctionEndpoint"]

_Callback = TypeVar("_Callback", bound=Callable[..., Any])


class FunctionEndpoint:
    """A function handler registered on a route, with its optional callbacks."""

    is_tether_session = True
    style = "function"  # shown by `tether routes`

    def __init__(self, func: Callable[..., Any], path: str, subprotocols: Iterable[str] = ()) -> None:
        self.path = path
        self.subprotocols = list(subprotocols)
        self.handler = Resolver(func, path, skip=1)
        self.accepts_itself = _calls_accept(func)
        self.connect: Resolver | None = None
        self.close: Resolver | None = None
        functools.update_wrapper(self, func)

    def on_connect(self, func: _Callback) -> _Callback:
        """Decorator: `func(websocket, **params)` runs once accepted; its return value is sent first."""
        self.connect = Resolver(func, self.path, skip=1)
        return func

    def on_close(self, func: _Callback) -> _Callback:
        """Decorator: `func(websocket, **params)` runs exactly once when the connection closes."""
        self.close = Resolver(func, self.path, skip=1)
        return func

    async def __call__(self, websocket: WebSocket) -> None:
        params, query = websocket.path_params, websocket.query_params
        kwargs = self.handler.resolve(params, query)
        connect_kwargs = self.connect.resolve(params, query) if self.connect else {}
        close_kwargs = self.close.resolve(params, query) if self.close else {}
        opened = functools.partial(self._opened, websocket, connect_kwargs, close_kwargs)
        subprotocol = select_subprotocol(websocket.offered_subprotocols, self.subprotocols)
        if self.accepts_itself:
            websocket.accept_on_first_use(subprotocol, opened)
        else:
            await websocket.accept(subprotocol)
            await opened()
        await self.handler.call(websocket, **kwargs)

    async def _opened(self, websocket: WebSocket, connect_kwargs: dict[str, Any],
                      close_kwargs: dict[str, Any]) -> None:
        """Right after the handshake: register on_close, send on_connect's reply."""
        if self.close is not None:
            websocket.on_close(functools.partial(self.close.call, websocket, **close_kwargs))
        if self.connect is not None:
            await send_reply(websocket, await self.connect.call(websocket, **connect_kwargs))


def _calls_accept(func: Callable[..., Any]) -> bool:
    """Whether the handler's own code, its nested functions included, names `accept` (as in
    `await websocket.accept(...)`)."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    return code is not None and _names_accept(code)


def _names_accept(code: types.CodeType) -> bool:
    return "accept" in code.co_names or any(
        _names_accept(const) for const in code.co_consts if isinstance(const, types.CodeType))
