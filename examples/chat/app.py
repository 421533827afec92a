"""A small chat room on tether: open http://127.0.0.1:8000/ in two browser tabs.

Run from the repository root with `make run`, or here with `tether run app:app --port 8000`.
Each room is a path (`/ws/lobby`, `/ws/gotham`...), so `websocket.broadcast` reaches exactly
the people in that room.
"""

from tether import App, FileResponse

app = App(__file__)
app.static("/static", "static")

MAX_TEXT = 1000


@app.get("/")
def index():
    return FileResponse(f"{app.root}/static/index.html")


@app.websocket("/ws/{room}")
async def chat(websocket, room: str, name: str = "anonymous"):
    name = name[:32]
    await websocket.broadcast({"type": "join", "name": name}, exclude=websocket)
    async for text in websocket:
        if isinstance(text, str) and text.strip():
            await websocket.broadcast({"type": "message", "name": name, "text": text[:MAX_TEXT]})


@chat.on_connect
def welcome(websocket, room: str, name: str = "anonymous"):
    others = len(app.hub.ids(websocket.path)) - 1
    return {"type": "welcome", "room": room, "others": others}


@chat.on_close
async def leave(websocket, name: str = "anonymous"):
    await app.hub.broadcast(websocket.path, {"type": "leave", "name": name[:32]})
