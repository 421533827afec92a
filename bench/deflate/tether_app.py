"""tether servers for bench/deflate.py: /echo echoes each message, /broadcast relays each message
to every connection on the path with the framework's own broadcast (the hub hands one payload
to every receiver, so under server_no_context_takeover it is compressed once).

Run (from this folder): python -m tether run tether_app:app --host 127.0.0.1 --port PORT
--permessage-deflate   (tether's defaults; without the flag for the plain idle-memory row)
or tether_app:takeover (no flag): server context takeover kept, so every connection has its
own compressor and a broadcast is compressed once per receiver (the trade-off row).
"""
from typing import Any

from tether import App


def make_app(permessage_deflate: bool | dict[str, Any]) -> App:
    app = App(allowed_origins=["*"], permessage_deflate=permessage_deflate)

    @app.websocket("/echo")
    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    @app.websocket("/broadcast")
    async def broadcast(websocket):
        async for message in websocket:
            await websocket.broadcast(message)

    return app


app = make_app(False)
takeover = make_app({"server_no_context_takeover": False})
