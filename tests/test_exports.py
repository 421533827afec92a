"""The public names of SPEC.md, pinned: each is importable from where the spec says, and the
top-level package exports exactly what `__all__` lists."""

from __future__ import annotations

import importlib

import pytest

import tether

TOP_LEVEL = [
    # SPEC 1: the app and the styles
    "App", "WebSocketDisconnect", "WebSocket", "jsonify", "GenericWebsocket",
    "send_message_to_websocket", "close_websocket_connection", "status", "websocket", "ws_send",
    "ws_close", "ws_accept", "with_websocket",
    # SPEC 2-3: hub and HTTP
    "Hub", "Router", "Request", "Response", "JSONResponse", "HTMLResponse", "html", "PlainTextResponse",
    "RedirectResponse", "StreamingResponse", "FileResponse", "EventSourceResponse", "HTTPException",
    "Headers", "QueryParams", "ParamError",
    # the core connection type and the exception family
    "WebSocketConnection", "ConnectionState", "TetherError", "ProtocolError", "HandshakeError",
    "InvalidState",
]


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_each_public_name_is_importable_from_tether(name: str) -> None:
    assert getattr(tether, name) is not None
    assert name in tether.__all__


def test_all_lists_nothing_that_does_not_exist() -> None:
    for name in tether.__all__:
        assert hasattr(tether, name), name
    assert set(tether.__all__) == set(TOP_LEVEL)
    assert len(tether.__all__) == len(set(tether.__all__))


def test_robyns_websocket_registrar_and_the_core_connection_are_different_names() -> None:
    from tether.styles.events import EventWebSocket
    from tether.websocket_connection import WebSocket

    assert tether.WebSocket is EventWebSocket
    assert tether.WebSocketConnection is WebSocket
    assert tether.websocket.__module__ == "tether.styles.generator"  # Shallot's decorator


def test_status_names_close_codes_and_http_statuses() -> None:
    from tether import status

    assert status.WS_1000_NORMAL_CLOSURE == 1000
    assert status.WS_1014_BAD_GATEWAY == 1014
    assert status.HTTP_200_OK == 200
    assert status.HTTP_404_NOT_FOUND == 404
    assert all(name.startswith(("WS_", "HTTP_")) for name in status.__all__)


@pytest.mark.parametrize(("module", "names"), [
    ("tether.testing", ["TestClient", "WebSocketRejected"]),
    ("tether.exceptions", ["TetherError", "ProtocolError", "HandshakeError", "WebSocketDisconnect",
                           "InvalidState", "HTTPException", "ParamError", "WebSocketRejected"]),
    ("tether.protocol", ["FrameParser", "encode_frame", "encode_close", "parse_close_payload",
                         "validate_upgrade", "accept_key", "ProtocolError", "HandshakeError"]),
    ("tether.server", ["Server", "run"]),
    ("tether.http", ["HTTPException", "Request", "Response"]),
    ("tether.params", ["ParamError", "Resolver"]),
])
def test_names_stay_importable_from_their_modules(module: str, names: list[str]) -> None:
    loaded = importlib.import_module(module)
    for name in names:
        assert hasattr(loaded, name), f"{module}.{name}"


def test_every_exception_is_one_family() -> None:
    from tether.exceptions import TetherError
    from tether.testing import WebSocketRejected

    for exc in (tether.ProtocolError, tether.HandshakeError, tether.WebSocketDisconnect,
                tether.InvalidState, tether.HTTPException, tether.ParamError, WebSocketRejected):
        assert issubclass(exc, TetherError), exc
    assert issubclass(tether.InvalidState, RuntimeError)  # code catching RuntimeError keeps working
    assert issubclass(tether.ParamError, ValueError)
    assert tether.ProtocolError(1002, "bad").code == 1002
    assert tether.HandshakeError(426, "version").status == 426
