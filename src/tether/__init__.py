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
`tether.connection.WebSocket`.
"""

from . import status
from .app import App
from .connection import WebSocketDisconnect, jsonify
from .datastructures import Headers, QueryParams
from .http import (
    EventSourceResponse, FileResponse, HTMLResponse, HTTPException, JSONResponse,
    PlainTextResponse, RedirectResponse, Request, Response, StreamingResponse,
)
from .hub import Hub
from .params import ParamError
from .routing import Router
from .styles.endpoint import GenericWebsocket, close_websocket_connection, send_message_to_websocket
from .styles.events import EventWebSocket as WebSocket
from .styles.generator import websocket, ws_accept, ws_close, ws_send
from .styles.microdot import with_websocket

__version__ = "0.1.0"

__all__ = [
    "App", "Router", "Hub", "WebSocket", "WebSocketDisconnect", "Request", "Response",
    "JSONResponse", "HTMLResponse", "PlainTextResponse", "RedirectResponse", "StreamingResponse",
    "FileResponse", "EventSourceResponse", "HTTPException", "ParamError", "Headers",
    "QueryParams", "jsonify", "status", "GenericWebsocket", "send_message_to_websocket",
    "close_websocket_connection", "websocket", "ws_send", "ws_close", "ws_accept", "with_websocket",
]
