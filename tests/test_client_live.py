"""`tether.client.connect`, the Python client of live channels (tether.live.v1), against real
tether servers on 127.0.0.1: in a thread (`serve_native`), and in a subprocess on a real
redis-server when the server has to die (SIGKILL) and come back on the same port. Every wait
is bounded and waits for a condition; ping intervals are short so that heartbeats are seen."""

from __future__ import annotations

import asyncio
import itertools
import signal
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tether import App
from tether.client import (
    Backoff,
    Joined,
    LiveClient,
    LiveClosed,
    LiveError,
    LiveRefused,
    Lost,
    Message,
    Position,
    Room,
    connect,
)
from tether.client.backoff import Pacer
from tether.client.feed import Feed
from tether.client.live import _stop_for
from tether.live import Authenticated, Refuse

from .netutil import reserve_port
from .processes import AppProcess, app_processes_fixture  # noqa: F401
from .redisutil import RedisServer

# The server's ping interval: long enough that a loaded machine's stalls do not look like dead
# connections, except in the heartbeat tests (BEAT), which check "found within two intervals"
# with SLACK for the scheduler.
PING = 2.0
BEAT, SLACK = 0.75, 0.5
SERVERS = ("native", "uvicorn")  # for the tests that take `serve`: the client through the ASGI face too


def live_app(**settings: Any) -> App:
    """Tokens are names: "bad" is refused; "short:<n>:<s>" expires in s seconds and
    "short:<n>:<s>:refused" is refused on refresh. Rooms: `chat:{name}` (history 100, presence,
    client publish), `small:{name}` (history 3), `plain:{name}` (no history), `secret:{name}`
    (refused: "members only")."""
    settings.setdefault("ping_interval", PING)
    app = App(backplane=settings.pop("backplane", None), max_message_size=settings.pop("max_message_size", 1 << 20))
    live = app.live("/live", **settings)
    refreshed: dict[str, int] = {}

    @live.authenticate
    async def who(token: str | None, request: Any) -> Any:
        if token == "bad":
            raise Refuse("bad token")
        if token and token.startswith("short:"):
            _, name, seconds, *rest = token.split(":")
            refreshed[name] = refreshed.get(name, 0) + 1
            if rest and refreshed[name] > 1:
                raise Refuse("no more refreshes")
            return Authenticated(name, expires_at=time.time() + float(seconds))
        return token

    @live.room("chat:{name}", history=100, presence=True, client_publish=True)
    async def chat(conn: Any, name: str) -> Any:
        return None  # keeps the client's info

    live.room("small:{name}", history=3, client_publish=True)
    live.room("plain:{name}", client_publish=True)

    @live.room("secret:{name}")
    async def secret(conn: Any, name: str) -> Any:
        raise Refuse("members only")

    return app


def run(coro: Awaitable[Any], timeout: float = 20) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate: Callable[[], Any], timeout: float = 10, message: str = "condition") -> Any:
    """Poll `predicate()` until truthy (returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {message}"
        await asyncio.sleep(0.01)
    return value


async def take(room: Room, count: int, timeout: float = 10) -> list[Message]:
    """The next `count` messages of `room`."""
    async with asyncio.timeout(timeout):
        return [await anext(room) for _ in range(count)]


async def take_events(events: AsyncIterator[Any], count: int, timeout: float = 10) -> list[Any]:
    async with asyncio.timeout(timeout):
        return [await anext(events) for _ in range(count)]


# -- the basics ---------------------------------------------------------------------------------------
def test_connect_join_publish_and_messages_with_offsets(serve) -> None:
    server = serve(live_app())

    async def main() -> None:
        async with connect(server.ws_url("/live"), token="ada") as client:
            assert client.id and client.ping == PING and client.expires_in is None
            room = await client.join("chat:lobby", info={"name": "ada"})
            assert (room.recovered, room.joins) == (False, 1)
            start = room.position
            assert start is not None and start.offset == 0
            for n in range(3):
                await room.publish({"n": n})
            messages = await take(room, 3)
            assert [m.data for m in messages] == [{"n": 0}, {"n": 1}, {"n": 2}]
            assert [m.offset for m in messages] == [1, 2, 3]
            assert room.position == Position(messages[-1].epoch or "", 3)
            # server code publishes too
            await asyncio.to_thread(server.call, server.app.hub.publish("chat:lobby", {"from": "server"}))
            (message,) = await take(room, 1)
            assert (message.data, message.offset) == ({"from": "server"}, 4)
            kept = await room.history(since=1, limit=2)
            assert [m.offset for m in kept.messages] == [2, 3] and kept.position == room.position
            # a room without history: no offsets
            plain = await client.join("plain:lobby")
            assert plain.position is None
            await plain.publish("hello")
            (message,) = await take(plain, 1)
            assert (message.data, message.offset, message.epoch) == ("hello", None, None)
            with pytest.raises(ValueError):
                await plain.publish(float("nan"))  # not JSON: refused before it is sent
            with pytest.raises(LiveError) as no_history:
                await plain.history()
            assert (no_history.value.code, no_history.value.name) == (422, "no_history")
            await plain.leave()
            assert "plain:lobby" not in client.rooms
            assert [m async for m in plain] == []  # iteration ends after a leave
        assert [m async for m in room] == []  # and after close
        with pytest.raises(LiveClosed):
            await room.publish("after close")

    run(main())


def test_errors_in_replies_raise_live_error_with_code_name_and_limit(serve_native) -> None:
    server = serve_native(live_app(max_rooms=2))

    async def main() -> None:
        async with connect(server.ws_url("/live")) as client:
            with pytest.raises(LiveError) as refused:
                await client.join("secret:vault")
            assert (refused.value.code, refused.value.name, refused.value.message) == (403, "forbidden",
                                                                                       "members only")
            assert "secret:vault" not in client.rooms
            with pytest.raises(LiveError) as unknown:
                await client.join("nowhere")
            assert (unknown.value.code, unknown.value.name) == (404, "unknown_room")
            await client.join("chat:a")
            await client.join("chat:b")
            with pytest.raises(LiveError) as too_many:
                await client.join("chat:c")
            assert (too_many.value.code, too_many.value.name, too_many.value.limit) == (429, "too_many_rooms",
                                                                                         "max_rooms")
            # raw commands: request() returns the result, send() gets no reply
            assert set(await client.request("presence", room="chat:a")) == {"presence"}
            with pytest.raises(LiveError) as unknown_op:
                await client.request("dance")
            assert (unknown_op.value.code, unknown_op.value.name) == (405, "unknown_op")
            await client.send("dance")
            error = await until(lambda: client.errors and client.errors[-1])
            assert error.code == 405
            assert client.connected and client.connects == 1  # errors do not end the connection

    run(main())


def test_a_refused_connect_raises_with_the_servers_reason(serve_native) -> None:
    server = serve_native(live_app())

    async def main() -> None:
        with pytest.raises(LiveRefused) as refused:
            async with connect(server.ws_url("/live"), token="bad"):
                pass
        assert (refused.value.code, refused.value.reason) == (4001, "bad token")
        # a token function, sync or async
        async def token() -> str:
            return "grace"
        async with connect(server.ws_url("/live"), token=token) as client:
            assert client.connected
        with pytest.raises(LiveRefused):
            await connect(server.ws_url("/live"), token=lambda: "bad")
        # a token that expired already: 4003; a function is asked again, at once
        with pytest.raises(LiveRefused) as expired:
            await connect(server.ws_url("/live"), token="short:old:-1")
        assert (expired.value.code, expired.value.reason) == (4003, "token expired")
        tokens = ["short:old:-1", "short:new:30"]
        async with connect(server.ws_url("/live"), token=lambda: tokens.pop(0)) as client:
            assert client.connected and client.connects == 1 and tokens == []

    run(main())


def test_presence_is_current_across_two_clients(serve) -> None:
    server = serve(live_app())

    async def main() -> None:
        async with connect(server.ws_url("/live"), token="ada", min_delay=0.01, max_delay=0.05) as ada, \
                connect(server.ws_url("/live"), token="bob") as bob:
            a = await ada.join("chat:p", info={"name": "ada"})
            assert a.presence == {ada.id: {"name": "ada"}}  # oneself included
            b = await bob.join("chat:p", info={"name": "bob"})
            assert b.presence == {ada.id: {"name": "ada"}, bob.id: {"name": "bob"}}
            await until(lambda: bob.id in a.presence, message="bob in ada's presence")
            assert a.presence == b.presence
            # ada's connection drops: she comes back with a new id, her info, and both see it
            old_id = ada.id
            assert ada.websocket is not None and ada.websocket.transport is not None
            ada.websocket.transport.abort()
            await until(lambda: ada.connects == 2 and ada.connected, message="ada reconnected")
            both = {ada.id: {"name": "ada"}, bob.id: {"name": "bob"}}
            assert ada.id != old_id and a.presence == both
            await until(lambda: b.presence == both, message="bob sees ada's new connection only")
            await b.leave()
            await until(lambda: bob.id not in a.presence, message="bob gone from ada's presence")
            assert a.presence == {ada.id: {"name": "ada"}}

    run(main())


# -- recovery ------------------------------------------------------------------------------------------
def test_a_join_with_since_recovers_or_says_it_did_not(serve_native) -> None:
    """`since` on a join: recovered with every message after it, replayed after the Joined
    event; or, when the history no longer reaches back (history 3), recovered False and
    no replay."""
    server = serve_native(live_app())

    async def main() -> None:
        async with connect(server.ws_url("/live")) as client, connect(server.ws_url("/live")) as other:
            for name, published, recovered in (("chat:r", 2, True), ("small:r", 5, False)):
                room = await client.join(name)
                publisher = await other.join(name)
                await publisher.publish("before")
                (seen,) = await take(room, 1)
                mark = room.position
                await room.leave()
                for n in range(published):
                    await publisher.publish(n)
                again = await client.join(name, since=mark)
                assert again.recovered is recovered
                await publisher.publish("live")
                events = again.events()
                joined = await anext(events)
                assert isinstance(joined, Joined) and joined.recovered is recovered and not joined.rejoin
                expected = [*range(published), "live"] if recovered else ["live"]
                messages = await take_events(events, len(expected))
                assert [m.data for m in messages] == expected
                offsets = [m.offset for m in messages]
                assert offsets == sorted(offsets) and offsets[-1] == seen.offset + published + 1

    run(main())


def test_a_full_queue_is_caught_up_from_the_position_every_message_once(serve_native) -> None:
    """max_queue 5 and nobody reading while 40 messages arrive: the room falls behind, and
    once it is read again it rejoins from its position: all 40, in order, once."""
    server = serve_native(live_app(commands_per_second=1000, command_burst=1000))

    async def main() -> None:
        async with connect(server.ws_url("/live"), max_queue=5) as client, \
                connect(server.ws_url("/live")) as other:
            room = await client.join("chat:flood")
            publisher = await other.join("chat:flood")
            for n in range(40):
                await publisher.publish(n)
            await take(publisher, 40)  # all were delivered
            events = room.events()
            assert isinstance(await anext(events), Joined)
            seen = []
            async with asyncio.timeout(10):
                while len(seen) < 40:
                    event = await anext(events)
                    if isinstance(event, Message):
                        seen.append(event.data)
                    else:
                        assert isinstance(event, Joined) and event.recovered and event.rejoin
            assert seen == list(range(40))
            assert room.joins >= 2

            # a room without history reports what it dropped, at the gap
            plain = await client.join("plain:flood")
            other_plain = await other.join("plain:flood")
            for n in range(8):
                await other_plain.publish(n)
            await take(other_plain, 8)
            # all 8 at this client before reading (the other client having them says nothing of this one)
            await until(lambda: plain.feed._dropped == 3, message="5 messages queued and 3 dropped")
            joined, *got = await take_events(plain.events(), 1 + 5 + 1)
            assert isinstance(joined, Joined)
            assert [e.data for e in got[:5]] == [0, 1, 2, 3, 4]
            assert got[5] == Lost("plain:flood", "queue_full", 3) and plain.lost == 1
            await other_plain.publish("after")
            (after,) = await take(plain, 1)
            assert after.data == "after"

    run(main())


def test_a_replay_past_the_queue_read_at_once_still_catches_up(serve_native) -> None:
    """A rejoin whose replay is longer than max_queue, read by an application that never
    awaits between messages (it drains the queue before the rejoin is done): the room still
    rejoins from its position once the client is ready, and loses nothing. (It used to stay
    behind on that connection, dropping every live message without a Lost event.)"""
    app = live_app(commands_per_second=1000, command_burst=1000)
    server = serve_native(app)

    async def cut_then_publish(connection_id: str, count: int) -> None:
        await app.hub.close(connection_id, 1001, "going away")  # the client reconnects
        for n in range(count):
            await app.hub.publish("chat:burst", n)

    async def main() -> None:
        async with connect(server.ws_url("/live"), max_queue=10, min_delay=0.05, max_delay=0.1) as client:
            room = await client.join("chat:burst")
            await asyncio.to_thread(server.call, cut_then_publish(client.id, 30))
            got = []
            async with asyncio.timeout(10):
                async for message in room:
                    got.append(message.data)  # no await between messages
                    if got == list(range(30)):
                        break
            await asyncio.to_thread(server.call, app.hub.publish("chat:burst", "live"))
            (after,) = await take(room, 1)
            assert after.data == "live"

    run(main())


def test_a_backplane_outage_is_surfaced_as_lost_in_a_room_without_history(serve_native) -> None:
    """The node's Redis restarts: members of a room without history get a `lost` push, seen
    as room.lost and a Lost event between the messages."""
    with RedisServer() as redis:
        server = serve_native(live_app(backplane=redis.url))

        async def main() -> None:
            async with connect(server.ws_url("/live")) as client:
                room = await client.join("plain:outage")
                events = room.events()
                assert isinstance(await anext(events), Joined)
                await room.publish("before")
                assert await take_events(events, 1) == [Message("plain:outage", "before")]
                await asyncio.to_thread(redis.restart)  # the loop goes on answering pings meanwhile
                (lost,) = await take_events(events, 1, timeout=15)
                assert isinstance(lost, Lost) and lost.reason and lost.dropped == 0 and room.lost == 1
                await room.publish("after")
                assert await take_events(events, 1) == [Message("plain:outage", "after")]
                assert client.connects == 1  # the client's connection was not the one hurt

        run(main(), timeout=30)


def test_offsets_that_go_back_after_a_lost_push_are_delivered(serve_native) -> None:
    """The room's history goes back in the same epoch (restored from an older copy: its two
    Redis keys, dumped at offset 2, restored at offset 5): the server pushes `lost`, then
    offset 3 again; the client reports the loss and delivers what follows instead of taking
    it for duplicates."""
    with RedisServer() as redis:
        server = serve_native(live_app(backplane=redis.url))
        admin = redis.client()  # bytes in, bytes out (DUMP's payload is binary)

        async def main() -> None:
            async with connect(server.ws_url("/live")) as client:
                room = await client.join("chat:back")
                events = room.events()
                assert isinstance(await anext(events), Joined)
                keys = ("tether:history-meta:{chat:back}", "tether:history:{chat:back}")
                for n in range(5):
                    await room.publish(n)
                    if n == 1:
                        assert [m.offset for m in await take_events(events, 2)] == [1, 2]
                        copies = [await asyncio.to_thread(admin.dump, key) for key in keys]
                assert [m.offset for m in await take_events(events, 3)] == [3, 4, 5]
                for key, copy in zip(keys, copies):
                    await asyncio.to_thread(admin.restore, key, 0, copy, replace=True)
                await room.publish("again")
                await room.publish("and on")
                lost, *after = await take_events(events, 3)
                assert isinstance(lost, Lost) and "went back" in lost.reason
                assert [(m.data, m.offset) for m in after] == [("again", 3), ("and on", 4)]
                assert room.position is not None and room.position.offset == 4

        try:
            run(main(), timeout=30)
        finally:
            admin.close()


# -- the connection ------------------------------------------------------------------------------------
class Proxy:
    """A TCP proxy on 127.0.0.1 in the test's loop; `freeze()` stops forwarding on the
    connections open now (bytes are read and dropped, nothing is closed), as a dead network
    path does; new connections are forwarded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen: set[asyncio.StreamWriter] = set()
        self.open: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        pair = {writer, up_writer}
        self.open |= pair

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                if not pair & self.frozen:
                    sink.write(data)
            if not pair & self.frozen:
                sink.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (ConnectionError, OSError):
            pass
        finally:
            for each in pair:
                each.close()
            self.open -= pair

    def freeze(self) -> None:
        self.frozen |= self.open

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.open:
            writer.close()


def test_the_heartbeat_finds_a_dead_connection_within_two_intervals_and_reconnects(serve_native) -> None:
    server = serve_native(live_app(ping_interval=BEAT))

    async def main() -> None:
        proxy = Proxy(server.port)
        port = await proxy.start()
        pings: list[int] = []
        client = connect(f"ws://127.0.0.1:{port}/live", min_delay=0.01, max_delay=0.05,
                         on_push=lambda push: push["push"] == "ping" and pings.append(0))
        async with client:
            room = await client.join("chat:hb")
            first_id = client.id
            await until(lambda: len(pings) >= 4, message="four pings")  # answered: still the same connection
            assert (client.connects, client.id) == (1, first_id)
            proxy.freeze()
            frozen_at = time.monotonic()
            await until(lambda: client.connected and client.connects == 2, timeout=5, message="reconnected")
            assert time.monotonic() - frozen_at <= 2 * BEAT + SLACK  # found dead by 1.5 intervals of silence
            assert client.id != first_id and client.close_code == 1006
            assert room.joins == 2 and room.recovered
            await room.publish("after")
            (message,) = await take(room, 1)
            assert message.data == "after"
        await proxy.close()

    run(main())


def test_token_refresh_keeps_the_connection_past_its_expiry(serve_native) -> None:
    server = serve_native(live_app())

    async def main() -> None:
        tokens: list[str] = []

        def token() -> str:
            tokens.append("short:ada:0.6")
            return tokens[-1]

        async with connect(server.ws_url("/live"), token=token) as client:
            assert client.expires_in is not None and 0 < client.expires_in <= 0.6
            await until(lambda: client.refreshes >= 3, timeout=10, message="three refreshes")
            assert client.connects == 1 and len(tokens) == 4  # one connect, three refreshes

    run(main())


def test_an_expiry_not_refreshed_reconnects_with_a_fresh_token(serve_native) -> None:
    """The refresh is refused, the server closes with 4003 at expiry, the client connects
    again at once with a new token; one that has expired already is refused with 4003 too,
    and the token function is asked again."""
    server = serve_native(live_app())

    async def main() -> None:
        # connect, refresh (refused), connect (expired already), connect
        tokens = ["short:eve:0.5:refused", "short:eve:0.5:refused", "short:gus:-1", "short:fay:30"]

        def token() -> str:
            return tokens.pop(0) if len(tokens) > 1 else tokens[0]

        async with connect(server.ws_url("/live"), token=token, min_delay=5, max_delay=10) as client:
            room = await client.join("chat:x")
            await until(lambda: client.connects == 2 and client.connected, timeout=10, message="reconnected")
            assert client.close_code == 4003 and room.joins == 2 and tokens == ["short:fay:30"]

    run(main())


def test_a_close_4004_stops_the_client_with_a_clear_exception(serve_native) -> None:
    server = serve_native(live_app(max_errors=3))

    async def main() -> None:
        client = await connect(server.ws_url("/live"))
        room = await client.join("chat:abuse")
        for _ in range(6):
            try:
                await client.send("dance")
            except LiveClosed:
                break
        with pytest.raises(LiveClosed) as closed:
            await asyncio.wait_for(client.wait_closed(), 10)
        assert closed.value.code == 4004 and "too many error replies" in str(closed.value)
        with pytest.raises(LiveClosed):
            await anext(room)
        with pytest.raises(LiveClosed):
            await room.publish("x")
        assert client.connects == 1
        await client.close()

    run(main())


def test_a_close_1009_stops_the_client(serve_native) -> None:
    server = serve_native(live_app(max_message_size=4096))

    async def main() -> None:
        async with connect(server.ws_url("/live")) as client:
            room = await client.join("chat:big")
            with pytest.raises(LiveClosed) as closed:
                await room.publish("x" * 10_000)
            assert closed.value.code == 1009 and "max_size" in str(closed.value)
            with pytest.raises(LiveClosed):
                await client.wait_closed()
            assert client.connects == 1

    run(main())


def test_what_each_close_code_means() -> None:
    """docs/live-protocol.md, "Close codes": stop (an exception) or reconnect (None)."""
    assert isinstance(_stop_for(4001, "no", True), LiveRefused)
    for code in (1009, 4002, 4004):
        assert _stop_for(code, "", True).code == code
    assert _stop_for(1000, "bye", True).code == 1000  # the server said goodbye
    for code in (1001, 1006, 1011, 1012, 4003, 4005, 4999):
        assert _stop_for(code, "", True) is None
    assert _stop_for(1000, "", False) is None  # a 1000 the server did not send (never ours: close() stops first)


def test_a_close_4002_stops_the_client(serve_native) -> None:
    server = serve_native(live_app())

    async def main() -> None:
        client = await connect(server.ws_url("/live"))
        assert client.websocket is not None
        await client.websocket.send(b"\x00binary")  # protocol misuse
        with pytest.raises(LiveClosed) as closed:
            await asyncio.wait_for(client.wait_closed(), 10)
        assert closed.value.code == 4002 and client.connects == 1
        await client.close()

    run(main())


def test_many_rooms_are_joined_again_under_the_servers_default_rate(serve_native) -> None:
    """60 rooms, the server's default limits (50 commands at once, then 20 a second): the
    reconnection's joins are paced, and none is refused nor counted as an error."""
    server = serve_native(live_app())

    async def main() -> None:
        async with connect(server.ws_url("/live"), min_delay=0.01, max_delay=0.05) as client:
            pacer = Pacer(burst=40, rate=15)
            rooms = []
            for n in range(60):
                await pacer.take()
                rooms.append(await client.join(f"chat:{n}"))
            assert client.websocket is not None and client.websocket.transport is not None
            client.websocket.transport.abort()
            await until(lambda: client.connects == 2 and client.connected, timeout=15, message="all rejoined")
            assert all(room.joins == 2 and room.recovered for room in rooms)
            assert list(client.errors) == [] and len(client.rooms) == 60

    run(main(), timeout=30)


def test_runs_on_uvloop(serve_native) -> None:
    uvloop = pytest.importorskip("uvloop")
    server = serve_native(live_app())

    async def main() -> None:
        async with connect(server.ws_url("/live"), min_delay=0.01, max_delay=0.05) as client:
            room = await client.join("chat:uv")
            await room.publish("one")
            assert client.websocket is not None and client.websocket.transport is not None
            client.websocket.transport.abort()
            await until(lambda: client.connects == 2 and client.connected, message="reconnected")
            await room.publish("two")
            assert [m.data for m in await take(room, 2)] == ["one", "two"]
            assert room.joins == 2 and room.recovered

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), 20))


# -- across a server crash, on Redis ------------------------------------------------------------------
NODE_APP = textwrap.dedent("""
    import os
    from tether import App

    app = App(backplane=os.environ.get("BACKPLANE") or None)
    live = app.live("/live", ping_interval=float(os.environ["PING"]))
    live.room("chat:{name}", history=1000, client_publish=True)
""")


async def connect_when_up(node: AppProcess, **options: Any) -> LiveClient:
    """A client of `node`, connecting again until the node accepts (15 s at most)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            return await connect(node.ws_url("/live"), **options)
        except OSError:
            assert node.running, node.log()
            assert time.monotonic() < deadline, f"node :{node.port} not up:\n{node.log()}"
            await asyncio.sleep(0.05)


@pytest.fixture
def nodes(app_processes: Callable[..., AppProcess], tmp_path: Path) -> Callable[..., AppProcess]:
    """`nodes(backplane, port, ping=PING)` starts `tether run live_node:app` (tests/processes.py)
    on `port`, with a backplane (Redis) or none, pinging every `ping` s, in a folder of its own;
    it returns at once (`connect_when_up` waits). All are killed after the test."""
    count = itertools.count()

    def start(backplane: str | None, port: int, ping: float = PING) -> AppProcess:
        folder = tmp_path / f"node{next(count)}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "live_node.py").write_text(NODE_APP)
        return app_processes(folder, "live_node:app", port=port, env={"BACKPLANE": backplane or "", "PING": str(ping)},
                             args=["--shutdown-timeout", "1"], log=folder / "tether.log", ready=None)

    return start


def test_a_stopped_server_is_found_dead_by_the_heartbeat_and_reconnected_after_it_resumes(nodes) -> None:
    """SIGSTOP the server process: nothing is heard any more (no ping), the client gives
    the connection up within two ping intervals; its reconnections hang unanswered (the
    kernel accepts, the process does not) until SIGCONT, then it is back."""
    node = nodes(None, reserve_port(), ping=BEAT)

    async def main() -> None:
        pings: list[int] = []
        async with await connect_when_up(node, min_delay=0.05, max_delay=0.2, open_timeout=1.0,
                                         on_push=lambda push: push["push"] == "ping" and pings.append(0)) as client:
            room = await client.join("chat:stop")
            await until(lambda: len(pings) >= 2, message="pings")
            assert node.process is not None
            node.signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            await until(lambda: not client.connected, timeout=5, message="the dead connection found")
            assert time.monotonic() - stopped_at <= 2 * BEAT + SLACK
            node.signal(signal.SIGCONT)
            await until(lambda: client.connected, timeout=10, message="reconnected")
            # (on a loaded machine the resumed node may be slow to ping the new connection: more than one)
            assert client.connects >= 2 and room.joins == client.connects and room.recovered
            await room.publish("back")
            assert [m.data for m in await take(room, 1)] == ["back"]

    run(main(), timeout=30)


def test_a_server_killed_and_restarted_on_the_same_port_every_message_once_in_order(nodes) -> None:
    """The client's node is SIGKILLed while another node (same Redis) goes on publishing;
    the node comes back on the same port; the client reconnects by itself, rejoins from its
    position with recovered True, and has every message once, in order. Then the same with
    a graceful shutdown (SIGTERM: close 1001, which reconnects too)."""
    with RedisServer() as redis:
        port = reserve_port()
        node = nodes(redis.url, port)
        publisher_node = nodes(redis.url, reserve_port())

        async def main() -> None:
            nonlocal node
            client = await connect_when_up(node, min_delay=0.05, max_delay=0.2)
            publisher = await connect_when_up(publisher_node)
            async with client, publisher:
                room = await client.join("chat:crash")
                out = await publisher.join("chat:crash")
                events = room.events()
                assert isinstance(await anext(events), Joined)
                for n in range(5):
                    await out.publish(n)
                first = await take_events(events, 5)
                await asyncio.to_thread(node.kill)
                await until(lambda: not client.connected, message="the client saw the crash")
                for n in range(5, 10):
                    await out.publish(n)
                await take(out, 10)
                node = nodes(redis.url, port)  # the same port again
                rejoined = await take_events(events, 1, timeout=15)
                assert isinstance(rejoined[0], Joined) and rejoined[0].recovered and rejoined[0].rejoin
                for n in range(10, 15):
                    await out.publish(n)
                rest = await take_events(events, 10)
                assert all(isinstance(m, Message) for m in first + rest)
                assert [m.data for m in first + rest] == list(range(15))
                assert [m.offset for m in first + rest] == list(range(1, 16))
                assert client.connects == 2 and room.recovered and room.position.offset == 15
                assert client.close_code == 1006 and room.feed.pending() == 0

                await asyncio.to_thread(node.kill, signal.SIGTERM)  # the loop goes on answering pings
                await until(lambda: not client.connected, message="the client saw the shutdown")
                assert client.close_code == 1001
                for n in range(15, 20):
                    await out.publish(n)
                node = nodes(redis.url, port)
                (rejoined,) = await take_events(events, 1, timeout=15)
                assert isinstance(rejoined, Joined) and rejoined.recovered
                last = await take_events(events, 5)
                assert [(m.data, m.offset) for m in last] == [(n, n + 1) for n in range(15, 20)]
                assert client.connects == 3 and room.joins == 3
                assert publisher.connects == 1  # its node stayed up all along

        run(main(), timeout=60)


# -- pieces --------------------------------------------------------------------------------------------
def test_backoff_is_full_jitter_exponential_capped() -> None:
    top = Backoff(0.25, 10.0, random=lambda: 1.0)
    assert [top.delay(n) for n in range(8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert Backoff(0.25, 10.0, random=lambda: 0.5).delay(3) == 1.0
    assert Backoff(random=lambda: 0.0).delay(100) == 0.0
    assert top.delay(10_000) == 10.0
    with pytest.raises(ValueError):
        Backoff(1.0, 0.5)


def test_pacer_lets_a_burst_through_then_the_rate() -> None:
    async def main() -> float:
        pacer = Pacer(burst=5, rate=50.0)
        started = time.monotonic()
        for _ in range(10):
            await pacer.take()
        return time.monotonic() - started

    assert run(main()) >= 5 / 50.0 * 0.9


def test_feed_drops_duplicates_and_holds_replays_until_the_join_reply() -> None:
    async def main() -> None:
        feed = Feed("r", max_queue=10, since=Position("e", 2))
        assert feed.begin_join() == Position("e", 2)
        feed.push({"push": "lost", "reason": "outage"})  # held, like every push while joining
        feed.push({"push": "message", "data": "three", "offset": 3, "epoch": "e"})  # a replay, before the reply
        # diffs while joining are applied after the snapshot: one it holds changes nothing
        feed.push({"push": "presence", "joined": {"me": {}, "x": 1}, "left": {"gone": {}}})
        assert feed.pending() == 0 and feed.presence == {}
        feed.joined(True, Position("e", 3), {"me": {}, "gone": {}})
        assert feed.presence == {"me": {}, "x": 1} and feed.lost == 1
        feed.push({"push": "message", "data": "three again", "offset": 3, "epoch": "e"})  # a duplicate
        feed.push({"push": "message", "data": "four", "offset": 4, "epoch": "e"})
        feed.push({"push": "message", "data": "new epoch", "offset": 1, "epoch": "f"})
        events = [await feed.next() for _ in range(5)]
        assert isinstance(events[0], Joined) and events[0].recovered and events[0].presence == {"me": {}, "gone": {}}
        assert events[1] == Lost("r", "outage") and events[2] == Message("r", "three", 3, "e")
        assert [(e.data, e.offset) for e in events[3:]] == [("four", 4), ("new epoch", 1)]
        assert feed.position == Position("f", 1) and feed.pending() == 0
        # recovered False: the reply's position is the base
        feed.begin_join()
        feed.push({"push": "message", "data": "old", "offset": 5, "epoch": "f"})
        feed.push({"push": "message", "data": "new", "offset": 8, "epoch": "f"})
        feed.joined(False, Position("f", 7), None)
        assert isinstance(await feed.next(), Joined)
        assert (await feed.next()).data == "new"
        # after a `lost` push, offsets may go back (a history restored from an older copy)
        feed.push({"push": "lost", "reason": "went back"})
        feed.push({"push": "message", "data": "back", "offset": 3, "epoch": "f"})
        feed.push({"push": "message", "data": "back again", "offset": 3, "epoch": "f"})  # a duplicate again
        assert isinstance(await feed.next(), Lost) and (await feed.next()).data == "back"
        assert feed.position == Position("f", 3) and feed.pending() == 0
        feed.end()
        with pytest.raises(StopAsyncIteration):
            await feed.next()

    run(main())
