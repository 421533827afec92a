"""A small chat room on tether: open http://127.0.0.1:8000/ in two browser tabs.

Run from the repository root with `make run`, or here with `tether run app:app --port 8000`.
Each room is a path (`/ws/lobby`, `/ws/gotham`...), so `websocket.broadcast` reaches exactly
the people in that room.

A room name is 1 to 32 letters, digits, `-` or `_`. The route takes the whole rest of the
path (`{room:path}`), so that a bad name such as `a/b` still reaches `welcome`, which
refuses it in words: the close frame's reason is what the page shows. (A refused handshake
would reach a browser as a bare code 1006, with no reason it could read.)
"""

import re

from tether import App, FileResponse

app = App(__file__)
app.static("/static", "static")

MAX_TEXT = 1000
ROOM = re.compile(r"[A-Za-z0-9_-]{1,32}")  # the page checks the same rule before connecting
ROOM_RULE = "a room name is 1 to 32 letters, digits, - or _"
POLICY_VIOLATION = 1008  # the page does not reconnect after this code


@app.get("/")
def index():
    return FileResponse(f"{app.root}/static/index.html")


@app.websocket("/ws/{room:path}")
async def chat(websocket, room: str, name: str = "anonymous"):
    if websocket.closed:  # refused by welcome()
        return
    name = name[:32]
    await websocket.broadcast({"type": "join", "name": name}, exclude=websocket)
    async for text in websocket:
        if isinstance(text, str) and text.strip():
            await websocket.broadcast({"type": "message", "name": name, "text": text[:MAX_TEXT]})


@chat.on_connect
async def welcome(websocket, room: str, name: str = "anonymous"):
    if not ROOM.fullmatch(room):
        await websocket.close(POLICY_VIOLATION, ROOM_RULE)
        return None
    others = len(app.hub.ids(websocket.path)) - 1
    return {"type": "welcome", "room": room, "others": others}


@chat.on_close
async def leave(websocket, room: str, name: str = "anonymous"):
    if ROOM.fullmatch(room):  # a refused connection never joined
        await app.hub.broadcast(websocket.path, {"type": "leave", "name": name[:32]})
