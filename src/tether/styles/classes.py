"""Class style (Panther's `GenericWebsocket`).

    class BookWebsocket(GenericWebsocket):
        async def connect(self, book_id: int):     # path variables, coerced
            await self.accept()                    # not accepted => HTTP 403
        async def receive(self, data: str | bytes):
            await self.send(data=data)

`connect(**path variables)` decides: it must call `accept()`, else the handshake is refused
(403); a path variable that does not fit its annotation refuses it with 400. Then each
message goes to `receive(data)`, and `disconnect(code, reason)` runs once the connection has
closed. `send_message_to_websocket` and `close_websocket_connection` reach a connection by id
from anywhere in the process.

Panther's `auth` and `permissions` class attributes need Panther's authentication backend
(its settings, user model and token parsing), which tether does not have. A security
attribute must never be ignored quietly, so a class that sets either (`auth = True`, a
non-empty `permissions`) is refused when it is registered, with a TypeError saying what to do
instead: check the credentials in `connect()` and return without `accept()` (HTTP 403).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from ..encoding import Data
from ..exceptions import WebSocketDisconnect
from ..hub import Hub
from ..params import Resolver
from ..protocol.codes import WS_1000_NORMAL_CLOSURE, WS_1011_INTERNAL_ERROR
from ..websocket_connection import WebSocket
from ._common import ConnectionView

__all__ = ["GenericWebsocket", "ClassEndpoint", "send_message_to_websocket", "close_websocket_connection",
           "register_urls"]


class GenericWebsocket(ConnectionView):
    """Subclass it and override `connect`, `receive` and (optionally) `disconnect`."""

    #: Panther's authenticated user: always None, as tether runs no Panther authentication
    #: (a class asking for it is refused; see the module doc).
    user: Any = None

    def __init__(self, connection: WebSocket) -> None:
        self.connection = connection

    @property
    def connection_id(self) -> str:
        """The connection's id, for `send_message_to_websocket` / `close_websocket_connection`."""
        return self.connection.id

    # `*args: Any, **path_variables: Any` lets a subclass declare its own parameters
    # (`connect(self, book_id: int)`) without a type checker calling it an incompatible override.
    async def connect(self, *args: Any, **path_variables: Any) -> None:
        """Validate the connection and `accept()` it; the default accepts everyone."""
        await self.accept()

    async def receive(self, data: Data) -> None:
        """Called with each message (str for text, bytes for binary)."""

    async def disconnect(self, code: int, reason: str) -> None:
        """Called once the connection has closed, from either side."""

    async def accept(self, subprotocol: str | None = None) -> None:
        """Accept the connection (with `subprotocol` if the client offered it)."""
        await self.connection.accept(subprotocol)

    async def send(self, data: Any = None) -> None:
        """Send str as text, bytes as binary, anything else as JSON."""
        await self.connection.send(data)

    async def close(self, code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        """Close the connection with `code` and `reason`."""
        await self.connection.close(code, reason)


class ClassEndpoint:
    """The session of a `GenericWebsocket` subclass registered on a route."""

    is_tether_session = True
    style = "class"  # shown by `tether routes`

    def __init__(self, cls: type[GenericWebsocket], path: str) -> None:
        _refuse_panther_security(cls, path)
        self.cls = cls
        self.connect = Resolver(cls.connect, path, skip=1)  # `self` is not a request parameter

    async def __call__(self, connection: WebSocket) -> None:
        handler = self.cls(connection)
        await handler.connect(**self.connect.resolve(connection.path_params, connection.query_params))
        if not connection.accepted:
            return  # the App refuses the handshake with 403
        failed = False
        try:
            async for message in connection:
                await handler.receive(message)
        except WebSocketDisconnect:
            raise
        except Exception:
            failed = True  # the App logs it and closes with 1011
            raise
        finally:
            if failed:
                await handler.disconnect(WS_1011_INTERNAL_ERROR, "")
            else:
                await handler.disconnect(connection.close_code or WS_1000_NORMAL_CLOSURE, connection.close_reason)


def _refuse_panther_security(cls: type[GenericWebsocket], path: str) -> None:
    """TypeError for a class whose `auth` or `permissions` would otherwise be ignored."""
    unsupported = [f"{name} = {getattr(cls, name)!r}" for name in ("auth", "permissions")
                   if getattr(cls, name, None)]
    if unsupported:
        raise TypeError(
            f"WebSocket route {path!r}: {cls.__qualname__} sets {' and '.join(unsupported)}, Panther's "
            "authentication, which tether does not implement (it would be ignored and let everyone in). "
            "Remove it and check the credentials in connect(): return without self.accept() to refuse "
            "the connection (HTTP 403). See docs/styles.md.")


async def send_message_to_websocket(connection_id: str, data: Any) -> bool:
    """Send `data` to the connection with this id, whichever App in this process holds it
    (with a backplane: whichever node of the cluster).

    Returns False when no open connection has that id. Safe from any thread's event loop.
    """
    hub = Hub.routing(connection_id)
    if hub is None:
        return False
    hub.send_to_sync(connection_id, data)
    return True


async def close_websocket_connection(connection_id: str, code: int = WS_1000_NORMAL_CLOSURE,
                                     reason: str = "") -> bool:
    """Close the connection with this id, whichever App in this process holds it (with a
    backplane: whichever node of the cluster)."""
    hub = Hub.routing(connection_id)
    if hub is None:
        return False
    hub.close_sync(connection_id, code, reason)
    return True


class _Registrar(Protocol):
    def websocket(self, path: str) -> Any: ...


def register_urls(router: _Registrar, urls: Mapping[str, Any]) -> None:
    """Panther's `urls={"path": HandlerClass, ...}`: register each handler on `router`."""
    for path, handler in urls.items():
        router.websocket(path)(handler)
