"""Panther peer for the cluster fan-out benchmark (run under uvicorn, see ../cluster.py).

    BENCH_REDIS_URL=redis://127.0.0.1:RPORT/0 uvicorn panther_app:app --ws websockets-sansio --workers 2 ...

With REDIS in its configs Panther connects to Redis and runs, in every worker, a listener on the
Redis pub/sub channel 'websocket_connections'; send_message_to_websocket(connection_id, data)
PUBLISHes {connection_id, action, data} there, and the worker that holds that connection sends it.
That is Panther's way to reach a connection on another worker (its docs recommend Redis when
running several workers). Panther has no groups, so the group "all" is kept where its docs say to
keep connection ids ("db, cache, or etc."): a Redis set, through Panther's own Redis connection.

/echo       GenericWebsocket: accept() in connect(), self.send(data) in receive().
/broadcast  connect(): accept(), then SADD the connection id to the set. receive(data): SMEMBERS,
            then send_message_to_websocket(id, data) for every member (the sender included), in
            turn: one PUBLISH per receiver per message, each read and JSON-decoded by every worker.
            Panther 5.5 calls no hook when the client closes, so ids of closed connections stay in
            the set; a message published to them is dropped by every worker (a fresh Redis per run
            keeps the set to the run's own connections).
"""
import logging
import os
from urllib.parse import urlparse

from panther import Panther
from panther.db.connections import redis
from panther.websocket import GenericWebsocket, send_message_to_websocket

_url = urlparse(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
REDIS = {
    "class": "panther.db.connections.RedisConnection",
    "host": _url.hostname or "127.0.0.1",
    "port": _url.port or 6379,
    "db": int((_url.path or "/0").lstrip("/") or 0),
}
MEMBERS = "bench:group:all"


class Echo(GenericWebsocket):
    async def connect(self, **kwargs):
        await self.accept()

    async def receive(self, data: str | bytes):
        await self.send(data)


class Broadcast(GenericWebsocket):
    async def connect(self, **kwargs):
        await self.accept()
        await redis.sadd(MEMBERS, self.connection_id)

    async def receive(self, data: str | bytes):
        for member in await redis.smembers(MEMBERS):
            await send_message_to_websocket(connection_id=member.decode(), data=data)


URLS = {"echo": Echo, "broadcast": Broadcast}
app = Panther(__name__, configs=__name__, urls=URLS)
# Panther's default LOGGING puts its 'panther' logger at DEBUG on stderr and logs/main.log (two
# lines per connection); every other server here runs at WARNING.
logging.getLogger("panther").setLevel(logging.WARNING)
