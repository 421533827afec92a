"""tether: a Python web framework built around the WebSocket.

    from tether import App
    app = App(__file__)

    @app.websocket("/echo")
    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    app.start(host="127.0.0.1", port=8080)

Five ways of writing handlers share one core: functions (`@app.websocket`), events
(`WebSocket(app, path)`), classes (`GenericWebsocket`), async generators (`@websocket`)
and Microdot-style routes (`@with_websocket`). The connection object handlers receive is
`tether.WebSocketConnection` (`tether.WebSocket` is Robyn's event-style registrar).

Names are imported lazily (PEP 562): `import tether.protocol` loads only the protocol.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "App": "app",
    "Router": "routing",
    "Hub": "hub",
    "WebSocketConnection": "websocket_connection",
    "ConnectionState": "channel",
    "jsonify": "encoding",
    "Headers": "datastructures",
    "QueryParams": "datastructures",
    "Request": "http",
    "Response": "http",
    "JSONResponse": "http",
    "HTMLResponse": "http",
    "html": "http",
    "PlainTextResponse": "http",
    "RedirectResponse": "http",
    "StreamingResponse": "http",
    "FileResponse": "http",
    "EventSourceResponse": "http",
    "TetherError": "exceptions",
    "ProtocolError": "exceptions",
    "HandshakeError": "exceptions",
    "WebSocketDisconnect": "exceptions",
    "InvalidState": "exceptions",
    "HTTPException": "exceptions",
    "ParamError": "exceptions",
    "WebSocket": "styles.events",
    "GenericWebsocket": "styles.classes",
    "send_message_to_websocket": "styles.classes",
    "close_websocket_connection": "styles.classes",
    "websocket": "styles.generator",
    "ws_send": "styles.generator",
    "ws_close": "styles.generator",
    "ws_accept": "styles.generator",
    "with_websocket": "styles.microdot",
}
# names whose attribute in the defining module differs
_ALIASES = {"WebSocketConnection": "WebSocket", "WebSocket": "EventWebSocket"}

__all__ = [
    "status",
    "App",
    "Router",
    "Hub",
    "WebSocketConnection",
    "ConnectionState",
    "jsonify",
    "Headers",
    "QueryParams",
    "Request",
    "Response",
    "JSONResponse",
    "HTMLResponse",
    "html",
    "PlainTextResponse",
    "RedirectResponse",
    "StreamingResponse",
    "FileResponse",
    "EventSourceResponse",
    "TetherError",
    "ProtocolError",
    "HandshakeError",
    "WebSocketDisconnect",
    "InvalidState",
    "HTTPException",
    "ParamError",
    "WebSocket",
    "GenericWebsocket",
    "send_message_to_websocket",
    "close_websocket_connection",
    "websocket",
    "ws_send",
    "ws_close",
    "ws_accept",
    "with_websocket",
]

if TYPE_CHECKING:
    from . import status
    from .app import App
    from .channel import ConnectionState
    from .datastructures import Headers, QueryParams
    from .encoding import jsonify
    from .exceptions import (
        HandshakeError,
        HTTPException,
        InvalidState,
        ParamError,
        ProtocolError,
        TetherError,
        WebSocketDisconnect,
    )
    from .http import (
        EventSourceResponse,
        FileResponse,
        HTMLResponse,
        JSONResponse,
        PlainTextResponse,
        RedirectResponse,
        Request,
        Response,
        StreamingResponse,
        html,
    )
    from .hub import Hub
    from .routing import Router
    from .styles.classes import GenericWebsocket, close_websocket_connection, send_message_to_websocket
    from .styles.events import EventWebSocket as WebSocket
    from .styles.generator import websocket, ws_accept, ws_close, ws_send
    from .styles.microdot import with_websocket
    from .websocket_connection import WebSocket as WebSocketConnection


def __getattr__(name: str) -> Any:
    if name == "status":
        return importlib.import_module(".status", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), _ALIASES.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "status"])
