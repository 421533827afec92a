"""The live protocol (docs/live-protocol.md), reply by reply and code by code, over real
sockets: tether's native server and uvicorn, tether's own client side (`tether.client`);
across two nodes on a `memory://` backplane; and in the TestClient."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest

from tether import App
from tether.client import ClientWebSocket, open_websocket
from tether.live import Authenticated, Refuse
from tether.testing import TestClient

from .conftest import RunningServer
from .engines import ENGINES, engine_pool_fixture  # noqa: F401
from .redisutil import redis_server_fixture  # noqa: F401

SERVERS = ("native", "uvicorn")
SUBPROTOCOL = ["tether.live.v1"]
_clusters = itertools.count()


def live_app(**settings: Any) -> App:
    """The app of these tests: tokens are names ("bad" is refused, "short:<s>" expires in s
    seconds); rooms `chat:{name}` (history 5, presence, client publish: texts only, "x" refused),
    `plain` (no history, client publish), `quiet` (no presence), `secret:{n}` (refused),
    `boom` (its hook fails)."""
    app = App(backplane=settings.pop("backplane", None))
    live = app.live("/live", **settings)

    @live.authenticate
    async def who(token: str | None, websocket: Any) -> Any:
        if token == "bad":
            raise Refuse("bad token")
        if token and token.startswith("short:"):
            return Authenticated(token, expires_at=time.time() + float(token.split(":")[1]))
        return token

    @live.room("chat:{name}", history=5, client_publish=True)
    async def chat(conn: Any, name: str) -> Any:
        return {"user": conn.identity} if conn.identity else None

    @live.on_publish("chat:{name}")
    def check(conn: Any, name: str, data: Any) -> Any:
        if not isinstance(data, str):
            raise Refuse("texts only")
        return {"user": conn.identity, "room": name, "text": data}

    live.room("plain", client_publish=True)
    live.room("quiet", presence=False)

    @live.room("secret:{n}")
    def secret(conn: Any, n: str) -> None:
        raise Refuse(f"secret {n} is closed")

    @live.room("boom")
    def boom(conn: Any) -> None:
        raise RuntimeError("the hook failed")

    return app


class Peer:
    """A live client speaking raw commands over `tether.client.open_websocket`: replies are
    matched by id, pushes collected in order."""

    def __init__(self, ws: ClientWebSocket) -> None:
        self.ws = ws
        self.pushes: list[dict[str, Any]] = []
        self.replies: dict[Any, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    async def send(self, **command: Any) -> None:
        await self.ws.send(json.dumps(command))

    async def _read(self) -> None:
        message = json.loads(await asyncio.wait_for(self.ws.receive(), 5))
        if "push" in message:
            self.pushes.append(message)
        else:
            self.replies[message["id"]] = message

    async def reply(self, command_id: Any) -> dict[str, Any]:
        while command_id not in self.replies:
            await self._read()
        return self.replies.pop(command_id)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a command with a new id; its reply (`result` or `error`)."""
        command_id = next(self._ids)
        await self.send(op=op, id=command_id, **fields)
        return await self.reply(command_id)

    async def result(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(op, **fields)
        assert "result" in reply, reply
        return reply["result"]

    async def error(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(op, **fields)
        assert "error" in reply, reply
        return reply["error"]

    async def push(self, kind: str, room: str | None = None) -> dict[str, Any]:
        """The next push of `kind` (of `room`, if given); the others stay."""
        seen = 0
        while True:
            for index in range(seen, len(self.pushes)):
                push = self.pushes[index]
                if push["push"] == kind and room in (None, push.get("room")):
                    return self.pushes.pop(index)
            seen = len(self.pushes)
            await self._read()

    async def closed(self) -> tuple[int | None, str]:
        """Read (and keep) what comes until the server closes: (code, reason)."""
        while True:
            try:
                await self._read()
            except TimeoutError:
                raise
            except Exception:  # closed: every message before the close was read
                break
        return self.ws.close_code, self.ws.close_reason


_opened: list[Peer] = []


async def peer(server: Any, token: str | None = "ann", *, connect: bool = True) -> Peer:
    ws = await open_websocket(server.ws_url("/live"), subprotocols=SUBPROTOCOL)
    client = Peer(ws)
    _opened.append(client)
    if connect:
        await client.result("connect", token=token)
    return client


def run(coro: Any) -> Any:
    """Run a scenario (bounded), then close the peers it opened."""
    async def scenario() -> Any:
        try:
            return await asyncio.wait_for(coro, 20)
        finally:
            while _opened:
                await _opened.pop().ws.close()
    return asyncio.run(scenario())


# -- the connection -------------------------------------------------------------------------------
def test_connect_answers_the_connection_id_the_ping_interval_and_no_expiry(serve: Any) -> None:
    server = serve(live_app(ping_interval=7))

    async def scenario() -> None:
        client = await peer(server, connect=False)
        result = await client.result("connect", token="ann")
        assert result["ping"] == 7 and result["expires_in"] is None and len(result["client"]) == 36
        assert (await client.error("connect", token="ann"))["name"] == "already_connected"
    run(scenario())


def test_a_client_without_the_subprotocol_is_closed_with_4002(serve: Any) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        ws = await open_websocket(server.ws_url("/live"))
        assert await Peer(ws).closed() == (4002, "offer the subprotocol tether.live.v1")
    run(scenario())


@pytest.mark.parametrize("first, reason", [
    ({"op": "join", "id": 1, "room": "plain"}, "the first command must be connect, not 'join'"),
    (b"\x01", "the live protocol uses text frames only"),
])
def test_a_first_message_that_is_not_connect_closes_with_4002(serve: Any, first: Any, reason: str) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        client = await peer(server, connect=False)
        await client.ws.send(first if isinstance(first, bytes) else json.dumps(first))
        assert await client.closed() == (4002, reason)
    run(scenario())


def test_no_connect_within_the_timeout_closes_with_4002(serve: Any) -> None:
    server = serve(live_app(connect_timeout=0.2))

    async def scenario() -> None:
        client = await peer(server, connect=False)
        assert await client.closed() == (4002, "no connect command within 0.2 s")
    run(scenario())


def test_a_refused_connect_gets_401_with_the_reason_then_4001(serve: Any) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        client = await peer(server, connect=False)
        error = await client.error("connect", token="bad")
        assert error == {"code": 401, "name": "unauthorized", "message": "bad token"}
        assert await client.closed() == (4001, "bad token")
    run(scenario())


def test_an_expired_identity_is_refused_with_4003(serve: Any) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        client = await peer(server, connect=False)
        assert (await client.error("connect", token="short:-1"))["message"] == "token expired"
        assert await client.closed() == (4003, "token expired")
    run(scenario())


def test_an_identity_that_is_not_refreshed_is_closed_with_4003_and_a_refreshed_one_lives_on(serve: Any) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        lapsing = await peer(server, connect=False)
        assert 0 < (await lapsing.result("connect", token="short:0.3"))["expires_in"] <= 0.3
        refreshing = await peer(server, "short:0.3")
        assert (await refreshing.error("refresh", token="bad"))["code"] == 401  # the old expiry stands
        assert (await refreshing.result("refresh", token="short:30"))["expires_in"] > 29
        assert await lapsing.closed() == (4003, "token expired")
        await asyncio.sleep(0.3)  # past the first expiry: the refreshed connection still answers
        assert await refreshing.result("join", room="plain")
    run(scenario())


# -- rooms --------------------------------------------------------------------------------------------
def test_join_answers_the_position_and_presence_and_publish_reaches_every_member(serve: Any) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        ann, bob = await peer(server, "ann"), await peer(server, "bob")
        joined = await ann.result("join", room="chat:lobby", info={"ignored": True})
        assert joined["recovered"] is False and joined["position"]["offset"] == 0
        assert list(joined["presence"].values()) == [{"user": "ann"}]  # the hook's info wins
        result = await bob.result("join", room="chat:lobby")
        assert sorted(info["user"] for info in result["presence"].values()) == ["ann", "bob"]
        own = await ann.push("presence")  # its own join first: diffs are idempotent
        assert list(own["joined"].values()) == [{"user": "ann"}]
        diff = await ann.push("presence")
        assert list(diff["joined"].values()) == [{"user": "bob"}] and diff["left"] == {}
        assert await bob.result("publish", room="chat:lobby", data="hello") == {}
        for member in (ann, bob):  # the publisher too, with the offset and the epoch
            message = await member.push("message")
            assert message["data"] == {"user": "bob", "room": "lobby", "text": "hello"}
            assert message["offset"] == 1 and message["epoch"] and message["room"] == "chat:lobby"
        assert await bob.result("leave", room="chat:lobby") == {}
        assert list((await ann.push("presence"))["left"].values()) == [{"user": "bob"}]
        assert (await bob.error("leave", room="chat:lobby"))["code"] == 410
    run(scenario())


def test_server_code_publishes_into_live_rooms_as_json(serve: Any) -> None:
    app = live_app()
    server = serve(app)

    async def scenario() -> None:
        client = await peer(server)
        await client.result("join", room="plain")
        await client.result("join", room="chat:news")
        server.call(app.hub.publish("plain", "a text"))
        server.call(app.hub.publish("chat:news", {"n": 1}))
        assert (await client.push("message")) == {"push": "message", "room": "plain", "data": "a text"}
        news = await client.push("message")
        assert news["data"] == {"n": 1} and news["offset"] == 1
    run(scenario())


@pytest.mark.parametrize("fields, code, name, limit", [
    ({"room": "nowhere"}, 404, "unknown_room", None),
    ({"room": "secret:7"}, 403, "forbidden", None),
    ({"room": 5}, 400, "bad_request", None),
    ({"room": "plain", "since": {"epoch": "e", "offset": -1}}, 400, "bad_request", None),
    ({"room": "plain", "since": "yesterday"}, 400, "bad_request", None),
    ({"room": "x" * 257}, 413, "too_large", "max_room_length"),
    ({"room": "plain", "info": "i" * 1100}, 413, "too_large", "max_info_size"),
    ({"room": "boom"}, 500, "internal", None),
])
def test_a_join_that_cannot_be_done_gets_its_error(serve: Any, fields: dict[str, Any], code: int, name: str,
                                                    limit: str | None) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        client = await peer(server)
        error = await client.error("join", **fields)
        assert (error["code"], error["name"], error.get("limit")) == (code, name, limit)
        if name == "forbidden":
            assert error["message"] == "secret 7 is closed"
        assert await client.result("join", room="plain")  # the connection goes on
    run(scenario())


def test_joining_twice_and_past_max_rooms_is_refused(serve: Any) -> None:
    server = serve(live_app(max_rooms=2))

    async def scenario() -> None:
        client = await peer(server)
        await client.result("join", room="plain")
        assert (await client.error("join", room="plain"))["name"] == "already_joined"
        await client.result("join", room="chat:1")
        error = await client.error("join", room="chat:2")
        assert (error["code"], error["name"], error["limit"]) == (429, "too_many_rooms", "max_rooms")
    run(scenario())


def test_publish_needs_a_joined_room_that_takes_client_publishes_and_data(serve: Any) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        client = await peer(server)
        assert (await client.error("publish", room="plain", data=1))["code"] == 410
        await client.result("join", room="quiet")
        assert (await client.error("publish", room="quiet", data=1))["code"] == 403
        await client.result("join", room="plain")
        assert (await client.error("publish", room="plain"))["message"] == "publish: 'data' is missing"
        await client.result("join", room="chat:a")
        assert (await client.error("publish", room="chat:a", data=[1]))["message"] == "texts only"
    run(scenario())


def test_presence_and_history_commands(serve: Any) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        client = await peer(server)
        await client.result("join", room="chat:h")
        for text in "abcdefg":  # history 5 keeps e..g and c, d
            await client.result("publish", room="chat:h", data=text)
        history = await client.result("history", room="chat:h", since=3, limit=2)
        assert history["position"]["offset"] == 7
        assert [(m["offset"], m["data"]["text"]) for m in history["messages"]] == [(4, "d"), (5, "e")]
        assert list((await client.result("presence", room="chat:h"))["presence"].values()) == [{"user": "ann"}]
        await client.result("join", room="plain")
        assert (await client.error("history", room="plain"))["name"] == "no_history"
        assert (await client.error("history", room="chat:h", limit="all"))["code"] == 400
        joined = await client.result("join", room="quiet", info={"x": 1})
        assert "presence" not in joined
        assert (await client.error("presence", room="quiet"))["name"] == "no_presence"
        assert (await client.error("presence", room="chat:other"))["name"] == "not_joined"
    run(scenario())


def test_a_join_from_a_position_replays_before_its_reply_or_says_it_cannot(serve: Any) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        writer = await peer(server, "w")
        first = await writer.result("join", room="chat:r")
        for text in "abc":
            await writer.result("publish", room="chat:r", data=text)
        epoch = (await writer.result("history", room="chat:r"))["position"]["epoch"]
        assert first["position"]["offset"] == 0
        reader = await peer(server, "r")
        command_id = 99
        await reader.send(op="join", id=command_id, room="chat:r", since={"epoch": epoch, "offset": 1})
        reply = await reader.reply(command_id)
        replayed = [push for push in reader.pushes if push["push"] == "message"]
        assert [(m["offset"], m["data"]["text"]) for m in replayed] == [(2, "b"), (3, "c")]
        assert reply["result"]["recovered"] is True and reply["result"]["position"] == {"epoch": epoch, "offset": 3}
        for text in "defgh":  # history 5: offsets 4..8 kept, 2 and 3 gone
            await writer.result("publish", room="chat:r", data=text)
        late = await peer(server, "l")
        result = await late.result("join", room="chat:r", since={"epoch": epoch, "offset": 1})
        assert result["recovered"] is False and result["position"]["offset"] == 8
        assert not [push for push in late.pushes if push["push"] == "message"]
        other = await late.result("join", room="chat:s", since={"epoch": "gone", "offset": 3})
        assert other["recovered"] is False
    run(scenario())


# -- limits and abuse ----------------------------------------------------------------------------------
def test_malformed_unknown_and_oversized_commands_get_their_errors(serve: Any) -> None:
    server = serve(live_app(max_command_size=200))

    async def scenario() -> None:
        client = await peer(server)
        for raw, code, name in [("{not json", 400, "bad_request"), ("[1]", 400, "bad_request"),
                                ('{"op": 1, "id": 5}', 400, "bad_request"), ('{"op": "x", "id": true}', 400,
                                                                              "bad_request")]:
            await client.ws.send(raw)
            error = (await client.reply(5 if '"id": 5' in raw else None))["error"]
            assert (error["code"], error["name"]) == (code, name), raw
        assert (await client.error("fly"))["code"] == 405
        await client.ws.send(json.dumps({"op": "publish", "id": 1, "room": "plain", "data": "d" * 300}))
        error = (await client.reply(None))["error"]
        assert (error["code"], error["limit"]) == (413, "max_command_size")
        await client.send(op="join", room="plain")  # no id: no result, and nothing else either
        assert (await client.result("presence", room="plain"))["presence"]
    run(scenario())


def test_commands_over_the_rate_get_429_and_persistent_abuse_is_closed_with_4004(serve: Any) -> None:
    server = serve(live_app(commands_per_second=1, command_burst=3, max_errors=5))

    async def scenario() -> None:
        client = await peer(server)
        for _ in range(3):  # the connect took one of the 3
            await client.send(op="presence", id=1, room="nowhere")  # errors spend the error budget too
        replies = []
        for command_id in range(10, 20):
            await client.send(op="pong")  # not counted
            await client.send(op="leave", id=command_id, room="plain")
        code, reason = await client.closed()
        replies = [reply["error"] for reply in client.replies.values()]
        assert {"code": 429, "name": "rate_limited", "message": "over 1 commands per second",
                "limit": "commands_per_second"} in replies
        assert (code, reason.split(" (")[0]) == (4004, "too many errors")
    run(scenario())


def test_pings_come_every_interval_and_a_silent_client_is_closed_with_4005(serve: Any) -> None:
    server = serve(live_app(ping_interval=0.2))

    async def scenario() -> None:
        talking, silent = await peer(server), await peer(server)
        started = time.monotonic()
        for _ in range(5):
            await talking.push("ping")
            await talking.send(op="pong")
        assert time.monotonic() - started >= 0.8
        code, reason = await silent.closed()
        assert (code, reason) == (4005, "nothing heard for 0.4 s")
        assert await talking.result("join", room="plain")
    run(scenario())


def test_a_hook_that_fails_is_answered_500_and_the_connection_goes_on(serve: Any) -> None:
    server = serve(live_app())

    async def scenario() -> None:
        client = await peer(server)
        assert (await client.error("join", room="boom"))["code"] == 500
        assert await client.result("join", room="plain")
    run(scenario())


def test_a_room_without_history_tells_its_members_of_a_loss(serve: Any) -> None:
    app = live_app()
    server = serve(app)

    async def scenario() -> None:
        client = await peer(server)
        await client.result("join", room="plain")

        async def outage_over() -> None:
            resumed = app.hub.backplane.resumed
            assert resumed is not None
            resumed()  # what a backplane calls when it is back after an outage
        server.call(outage_over())
        lost = await client.push("lost")
        assert lost["room"] == "plain" and "unreachable" in lost["reason"]
    run(scenario())


# -- two nodes, the TestClient, the browser client's file --------------------------------------------------
@pytest.mark.parametrize("engine", ["memory", *ENGINES])
def test_messages_and_presence_cross_nodes(engine: str, request: pytest.FixtureRequest) -> None:
    if engine in ENGINES:  # an engine's shared servers: this cluster's own prefix
        backplane = f"{request.getfixturevalue('engine_pool').servers(engine).url}?prefix=live{next(_clusters)}"
    else:
        backplane = f"memory://live-{next(_clusters)}"
    one, two = (RunningServer(live_app(backplane=backplane)).start() for _ in range(2))
    try:
        async def scenario() -> None:
            ann, bob = await peer(one, "ann"), await peer(two, "bob")
            await ann.result("join", room="chat:x")
            await ann.result("join", room="plain")
            presence = (await bob.result("join", room="chat:x"))["presence"]
            assert sorted(info["user"] for info in presence.values()) == ["ann", "bob"]
            await ann.push("presence", "chat:x")  # its own join
            assert list((await ann.push("presence", "chat:x"))["joined"].values()) == [{"user": "bob"}]
            await bob.result("join", room="plain")
            await bob.result("publish", room="chat:x", data="from two")
            await ann.result("publish", room="plain", data="from one")
            # (two rooms: no order between them)
            assert (await ann.push("message", "chat:x"))["data"]["text"] == "from two"
            message = await bob.push("message", "chat:x")
            assert message["data"]["text"] == "from two" and message["offset"] == 1
            assert (await bob.push("message", "plain"))["data"] == "from one"
        run(scenario())
    finally:
        one.stop()
        two.stop()


def test_the_test_client_speaks_the_live_protocol() -> None:
    with TestClient(live_app()) as client, client.websocket_connect("/live", subprotocols=SUBPROTOCOL) as ws:
        assert ws.subprotocol == "tether.live.v1"
        ws.send_text(json.dumps({"op": "connect", "id": 1, "token": "ann"}))
        assert ws.receive_json()["result"]["client"]
        ws.send_text(json.dumps({"op": "join", "id": 2, "room": "plain"}))
        assert ws.receive_json()["push"] == "presence"
        assert ws.receive_json()["id"] == 2


def test_the_browser_client_and_its_declarations_are_served() -> None:
    with TestClient(live_app()) as client:
        script = client.get("/tether.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert "export class Client" in script.text
        assert "declare" in client.get("/tether.d.ts").text or "export" in client.get("/tether.d.ts").text


def test_declarations_are_checked() -> None:
    app = App()
    live = app.live("/live")
    live.room("a:{x}")
    with pytest.raises(ValueError, match="declared already"):
        live.room("a:{x}")
    with pytest.raises(ValueError, match="declare the room first"):
        live.on_publish("b")
    with pytest.raises(ValueError, match="ping_interval=0"):
        app.live("/other", ping_interval=0)
    with pytest.raises(TypeError):
        app.live("/other", max_rom=3)


def test_a_command_that_needs_an_unreachable_backplane_gets_503_and_the_connection_goes_on(
        redis_server: Any) -> None:
    app = live_app(backplane=redis_server.url)
    server = RunningServer(app).start()
    try:
        async def scenario() -> None:
            client = await peer(server)
            await client.result("join", room="chat:u")
            redis_server.kill()
            error = await client.error("history", room="chat:u")
            assert (error["code"], error["name"]) == (503, "unavailable")
            assert error["message"].startswith("the backplane is unreachable (")
            assert await client.result("leave", room="chat:u") == {}
        run(scenario())
    finally:
        server.stop()
