"""README "Live channels" and docs/live.md: their examples run as written and do what the
text says, driven over real sockets."""

from __future__ import annotations

import ast
import json
import pathlib
import re
import urllib.request
from typing import Any

from .test_live_protocol import peer, run

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SECTION = README.read_text().split("## Live channels")[1].split("\n## ")[0]
PYTHON = re.findall(r"```python\n(.*?)```", SECTION, re.S)


def readme_app() -> Any:
    namespace: dict[str, Any] = {"__name__": "readme_live"}
    exec(compile(PYTHON[0], "README.md (Live channels)", "exec"), namespace)
    return namespace["app"]


def test_the_readme_live_example(serve_native: Any) -> None:
    server = serve_native(readme_app())

    async def scenario() -> None:
        anonymous = await peer(server, connect=False)
        assert (await anonymous.error("connect", token=None))["message"] == "log in first"
        assert (await anonymous.closed()) == (4001, "log in first")
        ann = await peer(server, connect=False)
        assert 3590 < (await ann.result("connect", token="ann"))["expires_in"] <= 3600
        joined = await ann.result("join", room="chat:lobby")
        assert list(joined["presence"].values()) == [{"user": "ann"}]
        refused = await ann.error("publish", room="chat:lobby", data={"not": "a text"})
        assert (refused["code"], refused["message"]) == (403, "a message is a text of at most 500 characters")
        await ann.result("publish", room="chat:lobby", data="hello")
        message = await ann.push("message")
        assert message["data"] == {"user": "ann", "text": "hello"} and message["offset"] == 1
    run(scenario())


GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "live.md"
GUIDE_BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.S)


def guide_app(index: int) -> Any:
    namespace: dict[str, Any] = {"__name__": "live_guide"}
    exec(compile(GUIDE_BLOCKS[index], f"docs/live.md block {index}", "exec"), namespace)
    return namespace["app"]


def test_the_guide_endpoint_settings_apply(serve_native: Any) -> None:
    server = serve_native(guide_app(0))

    async def scenario() -> None:
        client = await peer(server, connect=False)
        assert (await client.result("connect", token=None))["ping"] == 25
    run(scenario())


def test_the_guide_jwt_recipe(serve_native: Any) -> None:
    server = serve_native(guide_app(1))
    status, body = http_post(server.url("/login"), {"name": "ann"})
    assert status == 200

    async def scenario() -> None:
        client = await peer(server, connect=False)
        assert 890 < (await client.result("connect", token=json.loads(body)["token"]))["expires_in"] <= 900
        joined = await client.result("join", room="chat:lobby")
        assert list(joined["presence"].values()) == [{"user": "ann"}]
        stranger = await peer(server, connect=False)
        assert (await stranger.error("connect", token="forged"))["code"] == 401
    run(scenario())


def test_the_guide_rooms(serve_native: Any) -> None:
    app = guide_app(2)
    server = serve_native(app)

    async def scenario() -> None:
        anonymous = await peer(server, None)
        assert (await anonymous.error("join", room="doc:1"))["message"] == "log in first"
        assert (await anonymous.result("join", room="news"))["position"]["offset"] == 0
        assert (await anonymous.error("publish", room="news", data="x"))["code"] == 403
        ann = await peer(server, "ann")
        joined = await ann.result("join", room="doc:1", info={"color": "red"})
        assert list(joined["presence"].values()) == [{"user": "ann", "color": "teal"}]
        assert (await ann.error("publish", room="doc:1", data="x"))["message"] == "an edit is an object with an op"
        await ann.result("publish", room="doc:1", data={"op": "insert"})
        assert (await ann.push("message", "doc:1"))["data"] == {"op": "insert", "by": "ann"}
        server.call(app.hub.publish("news", {"title": "t"}))
        assert (await anonymous.push("message", "news"))["data"] == {"title": "t"}
    run(scenario())


def http_post(url: str, data: Any) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return response.status, response.read()


class _Done(Exception):
    """Ends an example's endless `async for` after its first message."""


async def run_client_example(source: str, name: str, url: str, prints_before_loop: int = 0,
                             **names: Any) -> list[tuple[Any, ...]]:
    """Run a client example as written (top-level `async with`), against `url`: its `print`
    calls are recorded, and the first one inside the message loop ends it."""
    printed: list[tuple[Any, ...]] = []

    def record(*values: Any) -> None:
        printed.append(values)
        if len(printed) > prints_before_loop:
            raise _Done

    code = compile(source.replace("ws://127.0.0.1:8000/live", url), name, "exec",
                   flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    try:
        await eval(code, {"__name__": "client_example", "print": record, **names})
    except _Done:
        pass
    return printed


def test_the_readme_and_guide_client_examples(serve_native: Any) -> None:
    guide = guide_app(2)
    readme_server, guide_server = serve_native(readme_app()), serve_native(guide)

    async def scenario() -> None:
        printed = await run_client_example(PYTHON[1], "README.md (Live channels, client)",
                                           readme_server.ws_url("/live"))
        assert printed == [({"user": "ann", "text": "hello"},)]

        async def get_token() -> str:
            return "ada"
        printed = await run_client_example(GUIDE_BLOCKS[3], "docs/live.md (client)", guide_server.ws_url("/live"),
                                           1, get_token=get_token)
        recovered, position, presence = printed[0]
        assert recovered is False and position.offset == 0
        assert list(presence.values()) == [{"user": "ada", "color": "teal"}]
        assert printed[1] == (1, {"op": "insert", "at": 0, "text": "y", "by": "ada"})
    run(scenario())
