"""Starlette app for bench/deflate.py, run under uvicorn (websockets-sansio, uvicorn's default
WebSocket implementation, which negotiates permessage-deflate by default: window bits 12,
memLevel 5, context takeover kept).

/echo       receive_text -> send_text
/broadcast  Starlette has no broadcast: a loop over the open connections awaiting send_text,
            the way users write it (each send compresses through that connection's context)
"""
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocketDisconnect

CLIENTS: set = set()


async def echo(ws):
    await ws.accept()
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except WebSocketDisconnect:
        pass


async def bcast(ws):
    await ws.accept()
    CLIENTS.add(ws)
    try:
        while True:
            text = await ws.receive_text()
            for client in list(CLIENTS):
                try:
                    await client.send_text(text)
                except Exception:
                    CLIENTS.discard(client)
    except WebSocketDisconnect:
        pass
    finally:
        CLIENTS.discard(ws)


app = Starlette(routes=[WebSocketRoute("/echo", echo), WebSocketRoute("/broadcast", bcast)])
