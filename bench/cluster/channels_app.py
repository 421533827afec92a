"""Django Channels peer for the cluster fan-out benchmark (run under uvicorn, see ../cluster.py).

    BENCH_REDIS_URL=redis://127.0.0.1:RPORT/0 [BENCH_CHANNELS_LAYER=core|pubsub] \
        uvicorn channels_app:app --ws websockets-sansio --workers 2 --lifespan off ...

/echo       AsyncWebsocketConsumer that sends every frame back with its type.
/broadcast  Every consumer joins the group "all" when it connects (the consumer's `groups`
            attribute: Channels calls channel_layer.group_add on connect and group_discard on
            disconnect). Every frame a client sends goes to channel_layer.group_send("all", event);
            the layer delivers the event to each member's channel, on whichever worker process it
            lives, and the member's handler sends it to its client. The sender is a member too.

Channel layer (BENCH_CHANNELS_LAYER):
  core    channels_redis.core.RedisChannelLayer (the default documented layer). group_send reads
          the group's members from a Redis sorted set and runs one Lua script that adds the event
          (with the list of that process's member channels) to each worker process's inbox key.
          `capacity` (default 100 pending events per inbox, beyond which group_send silently drops
          them, and also the size of each channel's local buffer, which drops the oldest) is raised
          so that a burst of -M messages is not thrown away: the benchmark measures delivery, and
          the loadgen fails a run with any message missing.
  pubsub  channels_redis.pubsub.RedisPubSubChannelLayer: group_send is one Redis PUBLISH on the
          group's channel; every worker that has a member subscribes to it and queues the event
          for its local members.
"""
import os

import django
from django.conf import settings

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
LAYER = os.environ.get("BENCH_CHANNELS_LAYER", "core")
CAPACITY = int(os.environ.get("BENCH_CHANNELS_CAPACITY", "100000"))

if LAYER == "core":
    _layer = {"BACKEND": "channels_redis.core.RedisChannelLayer",
              "CONFIG": {"hosts": [REDIS_URL], "capacity": CAPACITY}}
elif LAYER == "pubsub":
    _layer = {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
              "CONFIG": {"hosts": [REDIS_URL]}}
else:
    raise SystemExit(f"BENCH_CHANNELS_LAYER must be core or pubsub, not {LAYER!r}")

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only-not-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        INSTALLED_APPS=["channels"],
        DATABASES={},
        USE_TZ=True,
        CHANNEL_LAYERS={"default": _layer},
        LOGGING_CONFIG=None,
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402  (after settings)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

GROUP = "all"


class EchoConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)


class BroadcastConsumer(AsyncWebsocketConsumer):
    groups = [GROUP]  # joined on connect, left on disconnect, by Channels itself

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send(
            GROUP, {"type": "relay", "text": text_data, "bytes": bytes_data})

    async def relay(self, event):  # handler for events of type "relay"
        await self.send(text_data=event["text"], bytes_data=event["bytes"])


app = ProtocolTypeRouter({
    "websocket": URLRouter([
        path("echo", EchoConsumer.as_asgi()),
        path("broadcast", BroadcastConsumer.as_asgi()),
    ]),
})
