"""websockets' own asyncio server on uvloop, for bench/deflate.py.
Usage: python websockets_server.py PORT [deflate|none]

Compression is the library's default ("deflate": server_max_window_bits=12,
client_max_window_bits=12, memLevel 5, context takeover kept), or off with "none".
/echo       `async for msg in ws: await ws.send(msg)`
/broadcast  websockets.asyncio.server.broadcast(CLIENTS, msg): the library's helper, which
            sends through each connection's own compressor (one compression per receiver)
"""
import resource
import sys

import uvloop
from websockets.asyncio.server import broadcast, serve

CLIENTS: set = set()


async def handler(ws):
    path = ws.request.path
    if path == "/echo":
        async for msg in ws:
            await ws.send(msg)
    elif path == "/broadcast":
        CLIENTS.add(ws)
        try:
            async for msg in ws:
                broadcast(CLIENTS, msg)
        finally:
            CLIENTS.discard(ws)


async def main(port, compression):
    async with serve(handler, "127.0.0.1", port, compression=compression, backlog=4096) as server:
        await server.serve_forever()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mode = sys.argv[2] if len(sys.argv) > 2 else "deflate"
    uvloop.run(main(int(sys.argv[1]), None if mode == "none" else "deflate"))
