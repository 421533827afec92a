"""A node of a test cluster, run by tests/test_backplane.py as a real `tether run cluster_app:app
--backplane redis://...` process (copied into a temp dir, which is the process's cwd).

WebSocket routes (every client first receives a JSON hello naming its connection id and pid):

Each route takes a `{tag}` (a test's own paths: broadcasts of one test reach no other's clients).

- `/fn/{tag}`: function style. Commands, as JSON text: `{"op": "join", "room": R, "info": I}`
  (answered `{"joined": R}` once `await websocket.join` returned), `{"op": "broadcast",
  "text": T, "exclude": [ids]}` (`websocket.broadcast`).
- `/robyn/{tag}`: Robyn's event style. `{"op": "sync_send_to" | "async_send_to", "id": ID, "text": T}`
  and `{"op": "sync_broadcast" | "async_broadcast", "text": T}` call `ws.<op>`.
- `/panther/{tag}`: Panther's class style. `{"op": "send", "id": ID, "text": T}` and
  `{"op": "close", "id": ID, "code": C, "reason": R}` call `send_message_to_websocket` and
  `close_websocket_connection`.

HTTP control endpoints act on THIS node (POST, parameters in the query string): `/do/send_to`,
`/do/broadcast`, `/do/publish`, `/do/close`, `/do/sync/{op}` (the `*_sync` twin, called from a
new `threading.Thread`), `/do/burst` (n publishes numbered from `start`, in one go), `/do/stream/start` and
`/do/stream/stop` (a background task broadcasting `{"seq": i}` every `interval` s), `/do/block`
(the event loop held for `seconds` by a blocking call, as a long synchronous handler would,
`times` times with one turn of the loop between);
GET `/count`, `/presence`, `/presence_log` (every `on_presence` diff this node reported),
`/status` (the backplane's state, lost, outages; the node and the pid), `/heard?path=P` (returns
once this node is subscribed to path P).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

from tether import App, WebSocket
from tether.backplane import Topic, TopicKind
from tether.styles.classes import GenericWebsocket, close_websocket_connection, send_message_to_websocket

app = App()
presence_log: list[dict[str, Any]] = []
streams: dict[str, asyncio.Task[None]] = {}


def hello(connection_id: str) -> str:
    return json.dumps({"id": connection_id, "pid": os.getpid()})


# -- WebSocket routes ---------------------------------------------------------------------------
@app.websocket("/fn/{tag}")
async def fn(websocket, tag: str):
    await websocket.send_text(hello(websocket.id))
    async for text in websocket.iter_text():
        command = json.loads(text)
        if command["op"] == "join":
            await websocket.join(command["room"], info=command.get("info"))
            await websocket.send_text(json.dumps({"joined": command["room"]}))
        elif command["op"] == "broadcast":
            await websocket.broadcast(command["text"], exclude=command.get("exclude"))


robyn = WebSocket(app, "/robyn/{tag}")


@robyn.on("connect")
def robyn_connect(ws):
    return hello(ws.id)


@robyn.on("message")
async def robyn_message(ws, msg):
    command = json.loads(msg)
    op = command["op"]
    if op == "sync_send_to":
        ws.sync_send_to(command["id"], command["text"])
    elif op == "async_send_to":
        await ws.async_send_to(command["id"], command["text"])
    elif op == "sync_broadcast":
        ws.sync_broadcast(command["text"])
    elif op == "async_broadcast":
        await ws.async_broadcast(command["text"])
    return ""


class PantherSocket(GenericWebsocket):
    async def connect(self, tag: str):
        await self.accept()
        await self.send(hello(self.connection_id))

    async def receive(self, data):
        command = json.loads(data)
        if command["op"] == "send":
            await send_message_to_websocket(command["id"], command["text"])
        elif command["op"] == "close":
            await close_websocket_connection(command["id"], command["code"], command["reason"])


app.websocket("/panther/{tag}")(PantherSocket)


@app.hub.on_presence
def record(room, joined, left):
    presence_log.append({"room": room, "joined": joined, "left": left})


# -- HTTP control -------------------------------------------------------------------------------
def _exclude(exclude: str) -> list[str] | None:
    return [item for item in exclude.split(",") if item] or None


@app.post("/do/send_to")
async def do_send_to(id: str, text: str):
    return {"result": await app.hub.send_to(id, text)}


@app.post("/do/broadcast")
async def do_broadcast(path: str, text: str, exclude: str = ""):
    return {"result": await app.hub.broadcast(path, text, exclude=_exclude(exclude))}


@app.post("/do/publish")
async def do_publish(room: str, text: str, exclude: str = ""):
    return {"result": await app.hub.publish(room, text, exclude=_exclude(exclude))}


@app.post("/do/close")
async def do_close(id: str, code: int = 1000, reason: str = ""):
    return {"result": await app.hub.close(id, code, reason)}


@app.post("/do/sync/{op}")
async def do_sync(op: str, id: str = "", path: str = "", room: str = "", text: str = "", code: int = 1000,
                  reason: str = ""):
    hub = app.hub
    calls = {"send_to": lambda: hub.send_to_sync(id, text), "broadcast": lambda: hub.broadcast_sync(path, text),
             "publish": lambda: hub.publish_sync(room, text), "close": lambda: hub.close_sync(id, code, reason)}
    done: list[int] = []

    def run() -> None:
        done.append(threading.get_ident())
        calls[op]()

    thread = threading.Thread(target=run)
    thread.start()
    await asyncio.to_thread(thread.join)
    return {"thread": done[0], "loop_thread": threading.get_ident()}


@app.post("/do/burst")
async def do_burst(room: str, n: int, start: int = 0, yield_every: int = 0):
    for i in range(n):
        await app.hub.publish(room, json.dumps({"n": start + i}))
        if yield_every and i % yield_every == yield_every - 1:
            await asyncio.sleep(0)
    return {"sent": n}


@app.post("/do/stream/start")
async def do_stream_start(path: str, interval: float = 0.02):
    async def stream() -> None:
        seq = 0
        while True:
            await app.hub.broadcast(path, json.dumps({"seq": seq}))
            seq += 1
            await asyncio.sleep(interval)

    streams[path] = asyncio.get_running_loop().create_task(stream())
    return {"started": path}


@app.post("/do/stream/stop")
async def do_stream_stop(path: str):
    task = streams.pop(path)
    task.cancel()
    return {"stopped": path}


@app.post("/do/block")
async def do_block(seconds: float, times: int = 1):
    for _ in range(times):
        time.sleep(seconds)  # on the event loop, on purpose: nothing else of this node runs meanwhile
        await asyncio.sleep(0)  # then one turn of the loop for the others, as a storm of joins gives
    return {"blocked": round(seconds * times, 3)}


@app.get("/count")
async def count():
    return {"count": await app.hub.count(), "local": len(app.hub)}


@app.get("/presence")
async def presence(room: str):
    return await app.hub.presence(room)


@app.get("/presence_log")
def get_presence_log():
    return list(presence_log)


@app.get("/heard")
async def heard(path: str):
    """Return once this node hears broadcasts to `path` (its subscription, made when the first
    client connected, is confirmed), at most 5 s: a broadcast from another node right after a
    client connected races that subscription (only `join` waits for one). False: no client here."""
    if not app.hub.ids(path):
        return {"heard": False}
    backplane = app.hub.backplane
    waiting = backplane.subscribe(backplane.channel(Topic(TopicKind.PATH, path)))  # the pending one, or None: in force
    if waiting is not None:
        await asyncio.wait_for(waiting, 5)
    return {"heard": True}


@app.get("/status")
def status():
    backplane = app.hub.backplane
    return {"state": str(backplane.state), "lost": backplane.lost, "outages": backplane.outages,
            "node": app.hub.node.hex(), "pid": os.getpid()}
