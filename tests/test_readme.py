"""The README's examples, executed as written and driven by real clients."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def block_with(text: str) -> int:
    """The index of the one README block that holds `text`."""
    [index] = [i for i, block in enumerate(BLOCKS) if text in block]
    return index


def run_block(index: int) -> dict:
    namespace = {"__name__": "readme_example", "__file__": str(README)}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    return namespace


def http(url: str, data: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_readme_has_the_examples_this_test_expects():
    assert len(BLOCKS) == 9  # the two of "Live channels" are run by test_docs_live.py


def test_quick_start(serve):
    app = run_block(0)["app"]
    server = serve(app)
    with connect(server.ws_url("/echo")) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
    with connect(server.ws_url("/rooms/gotham")) as one, connect(server.ws_url("/rooms/gotham?page=2")) as two:
        assert one.recv() == "welcome to gotham" and two.recv() == "welcome to gotham"
        one.send("signal")
        assert one.recv() == "[gotham] signal" and two.recv() == "[gotham] signal"
        server.call(app.hub.close(app.hub.ids("/rooms/gotham")[0]))  # the first to connect: `one`
        assert one.recv(timeout=10) == "bye"
    with pytest.raises(InvalidStatus) as info:
        connect(server.ws_url("/rooms/x?page=abc"))
    assert info.value.response.status_code == 400 and b"'page'" in info.value.response.body


def test_hub_example(serve):
    server = serve(run_block(1)["app"])
    with connect(server.ws_url("/notifications?user=bob")) as ws:
        assert len(ws.recv()) == 36
        assert http(server.url("/notify/bob"), {"text": "you have mail"}) == (200, b'{"delivered":1}')
        assert json.loads(ws.recv()) == {"text": "you have mail"}
    assert http(server.url("/notify/nobody"), {"x": 1}) == (200, b'{"delivered":0}')


def test_http_example(serve):
    server = serve(run_block(block_with('@api.get("/items/'))["app"])
    assert http(server.url("/api/items/5?detail=true")) == (200, b'{"id":5,"detail":true}')
    assert http(server.url("/api/items/500")) == (404, b"no item 500")
    assert http(server.url("/api/echo"), {"a": 1}) == (200, b'{"a":1}')
    status, body = http(server.url("/ticks"))
    assert body.count(b"event: tick") == 3 and b'data: {"n":2}' in body


def test_testing_example():
    run_block(block_with("def test_echo"))["test_echo"]()


def test_permessage_deflate_settings(serve_native):
    block = next(i for i, text in enumerate(BLOCKS) if "permessage_deflate" in text)
    namespace = run_block(block)
    expected = {"app": "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                "tuned": "permessage-deflate; client_no_context_takeover"}
    for name, header in expected.items():
        app = namespace[name]

        @app.websocket("/echo")
        async def echo(websocket):
            async for message in websocket:
                await websocket.send(message)

        server = serve_native(app)
        with connect(server.ws_url("/echo"), compression="deflate") as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"] == header
            ws.send("compress me " * 100)
            assert ws.recv(timeout=10) == "compress me " * 100


def test_the_client_example_talks_to_a_server(serve_native):
    from tether import App

    app = App()

    @app.websocket("/echo", subprotocols=["chat.v1"])
    async def echo(websocket):
        async for message in websocket:
            await websocket.send(f"{websocket.subprotocol}: {message}")

    server = serve_native(app)
    main = run_block(block_with("open_websocket"))["main"]
    assert asyncio.run(asyncio.wait_for(main(server.ws_url("/echo")), 10)) == "chat.v1: hi"


def test_the_history_room_example_resumes_whole_or_not_at_all(serve_native):
    namespace = run_block(block_with("keep_history"))
    server = serve_native(namespace["app"])
    with connect(server.ws_url("/chat/lobby")) as first:
        assert json.loads(first.recv(timeout=10)) == {"recovered": True, "epoch": "", "offset": 0}
        for n in range(3):
            first.send(f"m{n}")
            assert first.recv(timeout=10) == f"m{n}"
    with connect(server.ws_url("/chat/lobby")) as other:  # saw nothing: gets everything kept, then the answer
        assert [other.recv(timeout=10) for _ in range(3)] == ["m0", "m1", "m2"]
        joined = json.loads(other.recv(timeout=10))
        assert joined["recovered"] and joined["offset"] == 3
        epoch = joined["epoch"]
        other.send("m3")
        assert other.recv(timeout=10) == "m3"
    with connect(server.ws_url(f"/chat/lobby?epoch={epoch}&offset=2")) as back:
        assert [back.recv(timeout=10), back.recv(timeout=10)] == ["m2", "m3"]
        assert json.loads(back.recv(timeout=10)) == {"recovered": True, "epoch": epoch, "offset": 4}
    with connect(server.ws_url("/chat/lobby?epoch=another&offset=2")) as lost:
        assert json.loads(lost.recv(timeout=10)) == {"recovered": False, "epoch": epoch, "offset": 4}
        with pytest.raises(TimeoutError):
            lost.recv(timeout=0.2)  # nothing replayed
