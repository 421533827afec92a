"""Typed parameter resolution shared by HTTP and WebSocket handlers (`tether.params`), with
no socket: coercion, precedence, errors, and the check, when a route is registered, that
its path parameters reach the handler (one test connects through the in-process TestClient)."""

from __future__ import annotations

import enum
import uuid
from typing import Literal, Optional

import pytest

from tether import App
from tether.datastructures import Headers, QueryParams, parse_cookies
from tether.params import ParamError, Resolver, coerce
from tether.routing import compile_path
from tether.testing import TestClient


class Color(enum.Enum):
    RED = "red"


@pytest.mark.parametrize("raw, annotation, expected", [
    ("5", int, 5), ("-5", int, -5), ("2.5", float, 2.5), ("x", str, "x"),
    ("true", bool, True), ("0", bool, False), ("ON", bool, True),
    ("7", Optional[int], 7), ("7", int | None, 7),  # noqa: UP045 - the old spelling is what is tested ("a", Literal["a", "b"], "a"),
    ("red", Color, Color.RED), ("12345678-1234-5678-1234-567812345678", uuid.UUID,
                                uuid.UUID("12345678-1234-5678-1234-567812345678")),
])
def test_coercion(raw, annotation, expected):
    assert coerce(raw, annotation) == expected


@pytest.mark.parametrize("raw, annotation", [
    ("x", int), ("1.5", int), ("maybe", bool), ("c", Literal["a", "b"]), ("blue", Color),
])
def test_coercion_failures_raise_value_error(raw, annotation):
    with pytest.raises(ValueError):
        coerce(raw, annotation)


def test_resolver_precedence_context_then_path_then_query_then_default():
    def handler(ws, request, room: str, page: int = 1, tags: list[int] = []):  # noqa: B006
        pass

    resolver = Resolver(handler, "/r/{room}", skip=1, context=("request",))
    kwargs = resolver.resolve({"room": "lobby"}, QueryParams("room=ignored&tags=1&tags=2"), {"request": "REQ"})
    assert kwargs == {"request": "REQ", "room": "lobby", "page": 1, "tags": [1, 2]}


def test_resolver_errors_name_the_parameter():
    def handler(ws, page: int, token: str):
        pass

    resolver = Resolver(handler, "/x", skip=1)
    with pytest.raises(ParamError, match="query parameter 'page' must be int, got 'abc'"):
        resolver.resolve({}, QueryParams("page=abc&token=t"))
    with pytest.raises(ParamError, match="missing required query parameter 'token'"):
        resolver.resolve({}, QueryParams("page=1"))


@pytest.mark.parametrize("register", ["websocket", "get"])
def test_a_path_parameter_no_handler_parameter_receives_is_refused_at_registration(register):
    app = App()
    with pytest.raises(TypeError, match=r"route '/typo/\{rom\}': path parameter 'rom' .* requires 'room'"):
        if register == "websocket":
            @app.websocket("/typo/{rom}")
            async def ws_handler(websocket, room: str): ...
        else:
            @app.get("/typo/{rom}")
            def http_handler(room: str): ...


def test_handlers_that_read_path_params_themselves_still_register():
    app = App()

    @app.websocket("/rooms/{room}")
    async def room(websocket, page: int = 1):
        await websocket.accept()
        await websocket.send_text(websocket.path_params["room"])

    with TestClient(app) as client, client.websocket_connect("/rooms/blue") as ws:
        assert ws.receive_text() == "blue"


def test_path_compilation_syntaxes_and_trailing_slash():
    for pattern in ("/u/{id:int}", "/u/<int:id>", "u/{id:int}/"):
        regex, converters = compile_path(pattern)
        assert regex.match("/u/5") and regex.match("/u/5/") and not regex.match("/u/x")
        assert converters["id"]("5") == 5
    regex, _ = compile_path("/files/{rest:path}")
    assert regex.match("/files/a/b/c").group("rest") == "a/b/c"
    regex, _ = compile_path("/p/:slug")
    assert regex.match("/p/hello").group("slug") == "hello"


def test_headers_and_query_params_multidicts():
    headers = Headers([("X-A", "1"), ("x-a", "2"), ("Host", "h")])
    assert headers["x-A"] == "1" and headers.getlist("X-a") == ["1", "2"] and "HOST" in headers
    assert headers.joined()["x-a"] == "1, 2"
    query = QueryParams("a=1&a=2&b=")
    assert query.get("a") == "2" and query.getlist("a") == ["1", "2"] and query["b"] == ""
    assert query.get("missing", "d") == "d" and len(query) == 2
    assert parse_cookies('a=1; b="two"; junk; =x') == {"a": "1", "b": "two"}
