"""tether: a Python web framework built around the WebSocket.

    from tether import App
    app = App(__file__)

    @app.websocket("/echo")
    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    app.start(host="127.0.0.1", port=8080)
"""

from . import status
from .app import App
from .datastructures import Headers, QueryParams
from .http import (
    EventSourceResponse, FileResponse, HTMLResponse, HTTPException, JSONResponse,
    PlainTextResponse, RedirectResponse, Request, Response, StreamingResponse,
)
from .hub import Hub
from .params import ParamError
from .routing import Router
from .websocket import WebSocket, WebSocketDisconnect, jsonify

__version__ = "0.1.0"

__all__ = [
    "App", "Router", "Hub", "WebSocket", "WebSocketDisconnect", "Request", "Response",
    "JSONResponse", "HTMLResponse", "PlainTextResponse", "RedirectResponse", "StreamingResponse",
    "FileResponse", "EventSourceResponse", "HTTPException", "ParamError", "Headers",
    "QueryParams", "jsonify", "status",
]
