"""tether.encoding: the one JSON rule for `send(data)`, deliveries and HTTP answers."""

from __future__ import annotations

import dataclasses
import datetime
import uuid

import pytest

from tether import App, WebSocket, with_websocket
from tether.datastructures import Headers, QueryParams
from tether.encoding import compact_json, encode_message
from tether.protocol import OP_BINARY, OP_TEXT
from tether.testing import TestClient


@dataclasses.dataclass
class Point:
    x: int
    tags: list[str]


@pytest.mark.parametrize("data, text", [
    ({"a": [1, 2.5, None, True]}, '{"a":[1,2.5,null,true]}'),
    ({"k": "é"}, '{"k":"é"}'),  # non-ASCII kept as it is
    (QueryParams("a=1&b=2&a=3"), '{"a":"3","b":"2"}'),  # each name's value as params[name] gives it
    (Headers([("X-A", "1"), ("x-a", "2"), ("Host", "h")]), '{"x-a":"1","host":"h"}'),
    (Point(1, ["t"]), '{"x":1,"tags":["t"]}'),
    (frozenset({7}), "[7]"),
    (datetime.datetime(2026, 12, 6, 4, 30, tzinfo=datetime.UTC), '"2026-12-06T04:30:00+00:00"'),
    (datetime.date(2026, 12, 6), '"2026-12-06"'),
    (uuid.UUID(int=1), '"00000000-0000-0000-0000-000000000001"'),
    ({"nested": {"params": QueryParams("k=v")}}, '{"nested":{"params":{"k":"v"}}}'),
])
def test_compact_json_takes_the_usual_python_values(data, text):
    assert compact_json(data) == text
    assert encode_message(data) == (OP_TEXT, text.encode())


def test_the_additions_are_made_one_level_at_a_time():
    """A dataclass is not deep-copied (a lock in it failed to pickle), a cycle through one is
    json's own ValueError (it was a RecursionError), and something with a `keys` that is not
    a method is not taken for a mapping."""
    import threading

    @dataclasses.dataclass
    class Node:
        name: str
        parent: object = None

    node = Node("a")
    node.parent = node
    with pytest.raises(ValueError, match="Circular reference"):
        compact_json(node)

    @dataclasses.dataclass
    class Holder:
        lock: object

    with pytest.raises(TypeError, match="Object of type lock is not JSON serializable"):
        compact_json(Holder(threading.Lock()))

    class Keyed:
        keys = ["k"]

        def __getitem__(self, key):
            return key

    with pytest.raises(TypeError, match="Object of type Keyed is not JSON serializable"):
        compact_json(Keyed())
    assert compact_json(Point(1, [Point(2, [])])) == '{"x":1,"tags":[{"x":2,"tags":[]}]}'


def test_what_json_cannot_take_is_a_type_error_naming_the_type():
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        compact_json({"x": object()})
    assert encode_message(b"raw") == (OP_BINARY, b"raw")


def test_every_style_sends_the_requests_own_mappings():
    """`send(query_params)` used to close the connection with 1011 in every style."""
    app = App()

    @app.websocket("/function")
    async def function(websocket: WebSocket):
        await websocket.send(websocket.query_params)

    @app.route("/microdot")
    @with_websocket
    async def microdot(request, ws):
        await ws.send(request.args)

    with TestClient(app) as client:
        for path in ("/function", "/microdot"):
            with client.websocket_connect(f"{path}?a=1&b=2") as ws:
                assert ws.receive_json() == {"a": "1", "b": "2"}
