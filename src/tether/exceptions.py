"""Every exception tether raises on purpose, in one family rooted at `TetherError`.

    TetherError
    ├── ProtocolError         the peer broke RFC 6455; `.code` is the close code to answer with
    ├── HandshakeError        an upgrade request to refuse; `.status` is the HTTP status
    ├── WebSocketDisconnect   the connection is closed (`.code`, `.reason`): receives and sends
    │                         raise it once the peer or the server closed
    ├── InvalidState          an operation the connection's state forbids (receive or send
    │                         before accept, send after this handler's own close()...);
    │                         also a `RuntimeError`
    ├── HTTPException         raised by a handler: answer with `.status_code` and `.detail`
    ├── ParamError            a handler parameter could not be filled from the request
    │                         (`.name`); answered with HTTP 400; also a `ValueError`
    ├── MissingExtra          a feature is set up whose optional package is not installed
    │                         (`.name`, `.extra`): the message says `pip install 'tether[...]'`;
    │                         also an `ImportError`
    └── WebSocketRejected     (TestClient) the app refused the handshake with `.status_code`

`ProtocolError` and `HandshakeError` are defined in `tether.protocol.errors` (the protocol
layer imports nothing of the framework) and re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

from .datastructures import Headers
from .protocol.codes import WS_1000_NORMAL_CLOSURE
from .protocol.errors import HandshakeError, ProtocolError, TetherError

__all__ = [
    "TetherError", "ProtocolError", "HandshakeError", "WebSocketDisconnect", "InvalidState",
    "HTTPException", "ParamError", "MissingExtra", "WebSocketRejected",
]


class WebSocketDisconnect(TetherError):
    """The connection is closed: raised by receives and sends once the peer or the server closed it."""

    def __init__(self, code: int = WS_1000_NORMAL_CLOSURE, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with code {code}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.reason = reason


class InvalidState(TetherError, RuntimeError):
    """An operation the connection's current state does not allow; the message says which."""


class HTTPException(TetherError):
    """Raise from a handler to answer with `status_code` and `detail` as the body."""

    def __init__(self, status_code: int, detail: str | None = None,
                 headers: Iterable[tuple[str, str]] = ()) -> None:
        self.status_code = status_code
        self.detail = detail if detail is not None else HTTPStatus(status_code).phrase
        self.headers = list(headers)
        super().__init__(f"{status_code}: {self.detail}")


class ParamError(TetherError, ValueError):
    """A handler parameter could not be filled from the request; the message names it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class MissingExtra(TetherError, ImportError):
    """`feature` needs the package `name`, which is not installed: the extra `extra` installs it."""

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(f"{feature} needs the {package} package: pip install 'tether[{extra}]'", name=package)
        self.extra = extra


class WebSocketRejected(TetherError):
    """The app refused the handshake with an HTTP response (`status_code`, `body`, `headers`)."""

    def __init__(self, status_code: int, body: bytes, headers: Iterable[tuple[str, str]]) -> None:
        super().__init__(f"WebSocket handshake rejected with HTTP {status_code}: {body.decode('utf-8', 'replace')}")
        self.status_code = status_code
        self.body = body
        self.headers = Headers(headers)
