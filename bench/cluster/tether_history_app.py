"""tether cluster fan-out through a room (bench/cluster.py, issue 18): /echo and /broadcast.

Run: python -m tether run tether_history_app:app --workers 2 --backplane redis://...   (from bench/cluster)

Every connection on /broadcast joins the room "all" (and waits for the cluster subscription,
as `join` does), and every message it sends is published into that room with
`app.hub.publish`: the loadgen's receivers are the room's members and its sender publishes,
so each message reaches every member on both workers through the backplane.

BENCH_ROOM selects the room's kind (cluster.py sets it):
  history  (default, server `tether-history`) the room keeps history,
           `app.hub.keep_history("all", size=BENCH_HISTORY_SIZE)`: every publish is numbered
           and kept by the backplane and every worker (the publisher's too) delivers it as it
           comes back, in offset order
  plain    (server `tether-room`) the same room without history: the publisher's worker
           delivers to its members at once and one PUBLISH carries it to the other worker
The size (default 10000) holds a whole run (the loadgen's ping rounds + its burst, 250 at the
defaults): nothing is trimmed while the run lasts.
"""
import os

from tether import App

ROOM = "all"
KIND = os.environ.get("BENCH_ROOM", "history")
if KIND not in ("history", "plain"):
    raise SystemExit(f"BENCH_ROOM must be history or plain, not {KIND!r}")

app = App(allowed_origins=["*"])
if KIND == "history":
    app.hub.keep_history(ROOM, size=int(os.environ.get("BENCH_HISTORY_SIZE", "10000")))


@app.websocket("/echo")
async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


@app.websocket("/broadcast")
async def broadcast(websocket):
    await websocket.join(ROOM)
    publish = app.hub.publish
    async for message in websocket:
        await publish(ROOM, message)
