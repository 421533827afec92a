"""Litestar peer for the cluster fan-out benchmark (run under uvicorn, see ../cluster.py).

    BENCH_REDIS_URL=redis://127.0.0.1:RPORT/0 uvicorn litestar_app:app --ws websockets-sansio --workers 2 ...

Litestar's channels plugin with its Redis Pub/Sub backend (RedisChannelsPubSubBackend). Every
worker's plugin holds one Redis subscription per channel it has local subscribers for, and one
publisher task; channels.publish(data, "all") queues the data for that task, which PUBLISHes it
once (a Lua script); each subscribed worker receives it and puts it in the queue of every local
Subscriber, whose background task sends it to its socket.

/echo       receive_data / send_data, keeping the frame type.
/broadcast  each connection is a Subscriber of channel "all" (start_subscription) whose events are
            sent to its socket by Subscriber.run_in_background(socket.send_text); every text frame
            received is handed to channels.publish(text, "all") (the sender is a subscriber too).
"""
import os

from litestar import Litestar, WebSocket, websocket
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from litestar.exceptions import WebSocketDisconnect
from redis.asyncio import Redis

CHANNEL = "all"


@websocket("/echo")
async def echo(socket: WebSocket) -> None:
    await socket.accept()
    try:
        while True:
            msg = await socket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                await socket.send_text(msg["text"])
            else:
                await socket.send_bytes(msg["bytes"])
    except WebSocketDisconnect:
        return


@websocket("/broadcast")
async def broadcast(socket: WebSocket, channels: ChannelsPlugin) -> None:
    await socket.accept()
    async with channels.start_subscription(CHANNEL) as subscriber:
        # join=False: once the client is gone, do not wait to send it what is still queued
        async with subscriber.run_in_background(socket.send_text, join=False):
            async for text in socket.iter_data(mode="text"):  # ends on disconnect
                channels.publish(text, CHANNEL)


plugin = ChannelsPlugin(
    backend=RedisChannelsPubSubBackend(redis=Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))),
    channels=[CHANNEL],
)
app = Litestar(route_handlers=[echo, broadcast], plugins=[plugin], logging_config=None)
