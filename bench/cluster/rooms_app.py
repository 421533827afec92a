"""tether many-rooms app (bench/cluster.py --rooms, issue 20): members in many small rooms,
publishes from the server side spread over the rooms.

Run: python -m tether run rooms_app:app --workers 2 --backplane URL   (from bench/cluster)

/echo      echoes (bench/cluster.py's readiness probe)
/m/{room}  a member: joins the room "r{room}" (returning once the node hears the room, so
           nothing published afterwards is missed), then sends the text "j"; then it only reads.
/ctl       the control connection: sends this worker's pid first, then takes one command,
           "go INDEX COUNT ROOMS ROUNDS", and publishes ROUNDS rounds: in round s, the message
           "{room}:{s}" into every room r{room} with room % COUNT == INDEX (its share of the
           ROOMS rooms), through app.hub.publish; it yields to the event loop after every
           YIELD_EVERY (100) publishes and after each round, so that the worker's loop also
           delivers what the other worker publishes and its backplane's probes are answered (a
           whole round without a yield blocked the loop for 0.3-1.5 s, long enough for the
           engine's 1 s deafness check to declare the backplane lost). Every room's
           messages come from one worker in order, so each member must get {room}:0 .. :ROUNDS-1
           in order. It answers "done SECONDS PUBLISHES" when its last publish is handed on.
"""
import asyncio
import os
import time

from tether import App

YIELD_EVERY = 100
app = App(allowed_origins=["*"])


@app.websocket("/echo")
async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


@app.websocket("/m/{room}")
async def member(websocket, room: str):
    await websocket.join(f"r{room}")
    await websocket.send_text("j")
    async for _ in websocket:
        pass


@app.websocket("/ctl")
async def control(websocket):
    await websocket.send_text(str(os.getpid()))
    command = (await websocket.receive_text()).split()
    if len(command) != 5 or command[0] != "go":
        await websocket.close(1008, "expected: go INDEX COUNT ROOMS ROUNDS")
        return
    index, count, rooms, rounds = (int(x) for x in command[1:])
    mine = [str(r) for r in range(rooms) if r % count == index]
    names = [f"r{r}" for r in mine]
    publish = app.hub.publish
    t0 = time.perf_counter()
    for s in range(rounds):
        for i, (room, name) in enumerate(zip(mine, names, strict=True), 1):
            await publish(name, f"{room}:{s}")
            if i % YIELD_EVERY == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0)
    await websocket.send_text(f"done {time.perf_counter() - t0:.6f} {len(mine) * rounds}")
    async for _ in websocket:
        pass
