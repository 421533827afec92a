"""Generator style (Shallot): a handler is an async generator of messages.

    @websocket(on_connect=accept_or_not, on_disconnect=gone, on_close=closed)   # or bare @websocket
    async def echo(scope, receiver):
        async for message in receiver:                    # str or bytes
            yield ws_send(f"@ECHO: {message}")
            if message == "exit":
                yield ws_close(1001)                     # closes now; nothing after it is sent

`scope` is the handshake as an ASGI-style dict (`connection.scope`). What the generator yields
is sent; when it ends the socket closes with 1000. A handler that only receives may be a
plain `async def` without `yield` (Shallot's fan-in: `async for m in receiver: print(m)`);
what it returns (`ws_send(...)`, `ws_close(...)`), if not None, is sent, then the socket
closes with 1000. The route's path parameters follow `receiver`
as positional arguments, in the order of the path (`/named/{name}` -> `handler(scope,
receiver, name)`), as Shallot passes them; a handler that cannot take them is refused when
the route is registered. `on_connect(scope)` returns `ws_accept()` (optionally with a
subprotocol) or `ws_close()` (HTTP 403). `on_disconnect(scope)` runs only when the client
closed or vanished, `on_close(scope)` on every close, after it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, cast, overload

from ..encoding import Data
from ..params import call_maybe_async
from ..patterns import parameters
from ..protocol.codes import WS_1000_NORMAL_CLOSURE
from ..websocket_connection import WebSocket

__all__ = ["websocket", "ws_send", "ws_close", "ws_accept", "GeneratorEndpoint"]

#: The handler: `async def handler(scope, receiver, *path_params)` yielding `ws_send(...)` /
#: `ws_close(...)` dicts, or a coroutine function that only receives.
Handler = Callable[..., AsyncIterator[dict[str, Any]] | Awaitable[None]]
#: `on_connect(scope)`, `on_disconnect(scope)`, `on_close(scope)`: sync or async.
Callback = Callable[[dict[str, Any]], Any]


def ws_send(data: Data) -> dict[str, Any]:
    """The message dict that sends `data` (text for str, binary for bytes)."""
    if isinstance(data, str):
        return {"type": "websocket.send", "text": data}
    return {"type": "websocket.send", "bytes": data}


def ws_close(code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> dict[str, Any]:
    """The message dict that closes the socket with `code` (refuses it, from on_connect)."""
    return {"type": "websocket.close", "code": code, "reason": reason}


def ws_accept(subprotocol: str | None = None) -> dict[str, Any]:
    """on_connect's answer accepting the connection, with `subprotocol` if the client offered it."""
    return {"type": "websocket.accept", "subprotocol": subprotocol}


class GeneratorEndpoint:
    """The session of an async-generator handler and its optional callbacks."""

    is_tether_session = True
    style = "generator"  # shown by `tether routes`

    def __init__(self, handler: Handler, on_connect: Callback | None = None,
                 on_disconnect: Callback | None = None, on_close: Callback | None = None) -> None:
        if not (inspect.isasyncgenfunction(handler) or inspect.iscoroutinefunction(handler)):
            raise TypeError(f"@websocket needs an async function (async def, with yield to send or without "
                            f"to only receive), got {getattr(handler, '__qualname__', handler)!r}")
        self.handler = handler
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.on_close = on_close
        functools.update_wrapper(self, handler)

    def check_route(self, path: str) -> None:
        """TypeError, naming the route, when the handler cannot take the route's path
        parameters after (scope, receiver); the router calls it for every route made of this
        endpoint (registered, added as a session, included under a prefix)."""
        names = [name for name, _ in parameters(path)]
        try:
            inspect.signature(self.handler).bind(None, None, *names)
        except TypeError as exc:
            raise TypeError(f"WebSocket route {path!r}: {self.handler.__qualname__} must take (scope, receiver"
                            f"{''.join(', ' + name for name in names)}): the path parameters follow receiver, in "
                            f"the order of the path ({exc})") from None

    async def __call__(self, connection: WebSocket) -> None:
        scope = connection.scope
        subprotocol = None
        if self.on_connect is not None:
            decision = await call_maybe_async(self.on_connect, scope)
            kind = decision.get("type") if isinstance(decision, dict) else None
            if kind == "websocket.close":
                await connection.reject(403, "refused by on_connect")
                return
            if kind != "websocket.accept":
                raise TypeError(f"on_connect of {self.handler.__qualname__} must return ws_accept() or "
                                f"ws_close(), not {decision!r}")
            subprotocol = decision.get("subprotocol")
        await connection.accept(subprotocol)
        connection.on_close(functools.partial(self._closed, connection))
        handled = self.handler(scope, aiter(connection), *connection.path_params.values())
        if inspect.isawaitable(handled):  # a handler without yield: what it returns, if anything, is sent
            last = await handled
            if last is not None:
                await self._perform(connection, last, "returned")
            return
        messages = cast("AsyncGenerator[dict[str, Any], None]", handled)
        try:
            async for event in messages:
                if await self._perform(connection, event, "yielded"):
                    return
        finally:
            await messages.aclose()

    async def _perform(self, connection: WebSocket, event: Any, how: str) -> bool:
        """Send or close as the handler's `event` says; True once it closed the connection."""
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "websocket.send" and event.get("bytes") is not None:
            await connection.send_bytes(event["bytes"])
        elif kind == "websocket.send" and event.get("text") is not None:
            await connection.send_text(event["text"])
        elif kind == "websocket.close":
            await connection.close(event.get("code", WS_1000_NORMAL_CLOSURE), event.get("reason", ""))
            return True
        else:
            verb = "yield" if how == "yielded" else "return None,"
            raise TypeError(f"{self.handler.__qualname__} {how} {event!r}; {verb} ws_send(...), ws_close(...) "
                            "or a websocket.send / websocket.close dict")
        return False

    async def _closed(self, connection: WebSocket) -> None:
        """The close callback: on_disconnect (client side only), then on_close; sends nothing."""
        if connection.closed_by == "client" and self.on_disconnect is not None:
            await call_maybe_async(self.on_disconnect, connection.scope)
        if self.on_close is not None:
            await call_maybe_async(self.on_close, connection.scope)


@overload
def websocket(handler: Handler, /) -> GeneratorEndpoint: ...
@overload
def websocket(handler: None = None, *, on_connect: Callback | None = None, on_disconnect: Callback | None = None,
              on_close: Callback | None = None) -> Callable[[Handler], GeneratorEndpoint]: ...


def websocket(handler: Handler | None = None, *, on_connect: Callback | None = None,
              on_disconnect: Callback | None = None,
              on_close: Callback | None = None) -> GeneratorEndpoint | Callable[[Handler], GeneratorEndpoint]:
    """Make an async generator a WebSocket handler; bare (`@websocket`) or with callbacks."""
    if handler is None:
        return lambda h: GeneratorEndpoint(h, on_connect, on_disconnect, on_close)
    return GeneratorEndpoint(handler, on_connect, on_disconnect, on_close)
