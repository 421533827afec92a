"""The opening handshake rules (RFC 6455 section 4), without sockets."""

import pytest

from tether.protocol import (
    HandshakeError,
    accept_headers,
    accept_key,
    is_upgrade_request,
    origin_allowed,
    select_subprotocol,
    validate_upgrade,
)

GOOD = {"host": "example.com", "upgrade": "websocket", "connection": "keep-alive, Upgrade",
        "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}


def test_accept_key_matches_the_rfc_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_upgrade_returns_the_key():
    assert validate_upgrade("GET", GOOD) == "dGhlIHNhbXBsZSBub25jZQ=="


@pytest.mark.parametrize("change, status, words", [
    ({"method": "POST"}, 400, "GET"),
    ({"host": None}, 400, "Host"),
    ({"connection": "keep-alive"}, 400, "Connection"),
    ({"sec-websocket-key": None}, 400, "Sec-WebSocket-Key"),
    ({"sec-websocket-key": "not base64!"}, 400, "16 bytes"),
    ({"sec-websocket-key": "c2hvcnQ="}, 400, "16 bytes"),
    ({"sec-websocket-version": "8"}, 426, "13"),
    ({"sec-websocket-version": None}, 400, "Sec-WebSocket-Version"),
    ({"sec-websocket-version": None, "sec-websocket-key": None}, 400, "Sec-WebSocket-Version"),
])
def test_malformed_upgrades_are_refused_with_a_status_naming_the_rule(change, status, words):
    headers = dict(GOOD)
    method = change.pop("method", "GET")
    for name, value in change.items():
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value
    with pytest.raises(HandshakeError) as info:
        validate_upgrade(method, headers)
    assert info.value.status == status and words in info.value.message
    if status == 426:
        assert ("Sec-WebSocket-Version", "13") in info.value.headers


def test_upgrade_detection_is_case_insensitive_and_token_based():
    assert is_upgrade_request({"upgrade": "WebSocket"})
    assert is_upgrade_request({"upgrade": "foo, websocket"})
    assert not is_upgrade_request({"upgrade": "h2c"})
    assert not is_upgrade_request({})


def test_subprotocol_selection_follows_the_server_preference_order():
    assert select_subprotocol(["chat.v1", "chat.v2"], ["chat.v2", "chat.v1"]) == "chat.v2"
    assert select_subprotocol(["chat.v1"], ["chat.v2", "chat.v1"]) == "chat.v1"
    assert select_subprotocol(["other"], ["chat.v2"]) is None
    assert select_subprotocol([], ["chat.v2"]) is None


def test_accept_headers_carry_the_subprotocol_only_when_chosen():
    assert ("Sec-WebSocket-Protocol", "p") in accept_headers("dGhlIHNhbXBsZSBub25jZQ==", "p")
    assert all(name != "Sec-WebSocket-Protocol" for name, _ in accept_headers("dGhlIHNhbXBsZSBub25jZQ=="))


@pytest.mark.parametrize("origin, host, allowed, expected", [
    (None, "example.com", [], True),                                  # not a browser
    ("http://example.com", "example.com", [], True),                  # same host
    ("http://example.com:80", "example.com", [], True),               # default port
    ("https://example.com", "example.com:443", [], True),
    ("http://127.0.0.1:8080", "127.0.0.1:8080", [], True),
    ("http://evil.com", "example.com", [], False),
    ("http://example.com:8081", "example.com:8080", [], False),      # other port
    ("null", "example.com", [], False),
    ("http://evil.com", "example.com", ["http://evil.com"], True),
    ("http://evil.com", "example.com", ["*"], True),
])
def test_origin_policy(origin, host, allowed, expected):
    assert origin_allowed(origin, host, allowed) is expected
