"""Event style (Robyn's first API): `WebSocket(app, path)` with `@ws.on(event)`.

    websocket = WebSocket(app, "/web_socket")

    @websocket.on("message")
    def message(ws, msg, global_dependencies):
        return f"echo: {msg}"

A handler for "connect", "message" or "close" takes any of `()`, `(ws)`, `(ws, msg)`,
`(ws, msg, global_dependencies)`: parameters named `ws`, `msg`, `global_dependencies`
or `router_dependencies` are matched by name, others by position in that order. Its return
value, if a non-empty str/bytes (or other data, sent as JSON), is sent to that client.
The "close" handler is the connection's close callback: it runs exactly once, and its
value is sent before the close frame when the server closes.

`global_dependencies` and `router_dependencies` are the values given to
`inject_global(...)` / `inject(...)`, on the app (`app.inject_global`, which forwards to
`dependencies_of(app)`) or on the endpoint.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ..params import call_maybe_async
from ..websocket_connection import WebSocket as Connection
from ._common import ConnectionView, send_reply

__all__ = ["EventWebSocket", "EventConnection", "Dependencies", "dependencies_of"]

_Handler = TypeVar("_Handler", bound=Callable[..., Any])

EVENTS = ("connect", "message", "close")
_SLOTS = ("ws", "msg", "global_dependencies", "router_dependencies")


def _plan(func: Callable[..., Any], path: str, event: str) -> list[tuple[str, int, bool]]:
    """For each parameter: (name, which of _SLOTS fills it, keyword-only?)."""
    plan = []
    for index, param in enumerate(inspect.signature(func).parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        slot = _SLOTS.index(param.name) if param.name in _SLOTS else index
        if slot >= len(_SLOTS):
            if param.default is param.empty:
                raise TypeError(
                    f"WebSocket {path!r} on({event!r}) handler {func.__qualname__}: parameter "
                    f"{param.name!r} cannot be filled (handlers take {', '.join(_SLOTS)})")
            continue
        plan.append((param.name, slot, param.kind == param.KEYWORD_ONLY))
    return plan


class Dependencies:
    """The values event handlers receive as `global_dependencies` and `router_dependencies`."""

    def __init__(self) -> None:
        self.global_dependencies: dict[str, Any] = {}
        self.router_dependencies: dict[str, Any] = {}

    def inject_global(self, **values: Any) -> None:
        """Add values every handler gets as `global_dependencies`."""
        self.global_dependencies.update(values)

    def inject(self, **values: Any) -> None:
        """Add values every handler gets as `router_dependencies`."""
        self.router_dependencies.update(values)


_APP_DEPENDENCIES: weakref.WeakKeyDictionary[object, Dependencies] = weakref.WeakKeyDictionary()


def dependencies_of(app: object) -> Dependencies:
    """The dependencies injected on `app` (an App or Router) for every event-style endpoint."""
    found = _APP_DEPENDENCIES.get(app)
    if found is None:
        found = _APP_DEPENDENCIES[app] = Dependencies()
    return found


class _Registrar(Protocol):
    def add_websocket_route(self, path: str, session: Any, name: str | None = None) -> Any: ...


class EventConnection(ConnectionView):
    """The `ws` an event handler receives: Robyn's connection API over the core WebSocket."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._close_requested = False

    def sync_send_to(self, connection_id: str, message: Any) -> None:
        """Send to one connection; safe from any thread."""
        self.connection.hub.send_to_sync(connection_id, message)

    async def async_send_to(self, connection_id: str, message: Any) -> None:
        await self.connection.hub.send_to(connection_id, message)

    def sync_broadcast(self, message: Any) -> None:
        """Send to every client of this endpoint's path, this one included; safe from any thread."""
        self.connection.hub.broadcast_sync(self.connection.path, message)

    async def async_broadcast(self, message: Any) -> None:
        await self.connection.hub.broadcast(self.connection.path, message)

    def close(self) -> None:
        """Leave the registry now; once the current handler returns, its value is sent, then close 1000."""
        self._close_requested = True
        self.connection.detach()


class EventWebSocket:
    """`WebSocket(app, path)`: registers an event-style endpoint on `app` (or a Router)."""

    is_tether_session = True
    style = "events"  # shown by `tether routes`

    def __init__(self, app: _Registrar, path: str) -> None:
        self.app = app
        self.path = path
        self.handlers: dict[str, tuple[Callable[..., Any], list[tuple[str, int, bool]]]] = {}
        self.dependencies = Dependencies()
        app.add_websocket_route(path, self)

    def on(self, event: str) -> Callable[[_Handler], _Handler]:
        """Decorator: `func` handles "connect", "message" or "close"; it is returned as it is."""
        if event not in EVENTS:
            raise ValueError(f"WebSocket {self.path!r}: unknown event {event!r}; use one of {', '.join(EVENTS)}")

        def decorator(func: _Handler) -> _Handler:
            self.handlers[event] = (func, _plan(func, self.path, event))
            return func
        return decorator

    def inject_global(self, **values: Any) -> None:
        """Values for this endpoint's `global_dependencies` (added to the app's)."""
        self.dependencies.inject_global(**values)

    def inject(self, **values: Any) -> None:
        """Values for this endpoint's `router_dependencies` (added to the app's)."""
        self.dependencies.inject(**values)

    async def _fire(self, event: str, context: tuple[Any, Any, Any], msg: Any = None) -> Any:
        """Call the `event` handler; `context` is (ws, global_dependencies, router_dependencies)."""
        found = self.handlers.get(event)
        if found is None:
            return None
        func, plan = found
        ws, global_dependencies, router_dependencies = context
        values = (ws, msg, global_dependencies, router_dependencies)
        args = [values[slot] for name, slot, keyword in plan if not keyword]
        kwargs = {name: values[slot] for name, slot, keyword in plan if keyword}
        return await call_maybe_async(func, *args, **kwargs)

    async def __call__(self, connection: Connection) -> None:
        await connection.accept()
        ws = EventConnection(connection)
        app, own = dependencies_of(self.app), self.dependencies
        context = (ws, {**app.global_dependencies, **own.global_dependencies},
                   {**app.router_dependencies, **own.router_dependencies})
        connection.on_close(functools.partial(self._fire, "close", context))
        await send_reply(connection, await self._fire("connect", context))
        if ws._close_requested:
            return
        async for message in connection:
            await send_reply(connection, await self._fire("message", context, message))
            if ws._close_requested:
                # mypy keeps the check above (False) across the awaited handler, which may call ws.close().
                break  # type: ignore[unreachable]
