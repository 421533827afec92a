"""Fuzz target: the opening-handshake functions of `tether.protocol.handshake`.

`check(data)` runs one input and raises (AssertionError, or whatever the code under test
raised) when an outcome is not a documented one. The input is

    byte 0   bit 0 set: decode the rest as UTF-8 (with replacement characters), else as
             Latin-1 (what the server hands over: every byte a character)
    rest     lines separated by "\\n": the method, then "name: value" header lines; a line
             starting with "~" lists the server's subprotocols and allowed origins
             (comma-separated) instead

`validate_upgrade` must return the request's own Sec-WebSocket-Key, and only for a GET with
a Host, `Connection: upgrade`, version 13 and a key of 16 bytes in base64; anything else must
raise HandshakeError with 400, or 426 carrying `Sec-WebSocket-Version: 13`. `header_tokens`,
`is_upgrade_request`, `select_subprotocol`, `origin_allowed`, `accept_key` and `accept_headers`
must return values of their documented shapes for every input and raise nothing. When the
tree has permessage-deflate (`tether.protocol.deflate`), `negotiate` must return None,
parameters in range whose response header a client reads back as the same agreement
(`client_params`), or raise HandshakeError(400), for two sets of server options.
"""

from __future__ import annotations

import base64
import binascii
import importlib
from types import ModuleType

from tether.protocol import (
    HandshakeError,
    accept_headers,
    accept_key,
    header_tokens,
    is_upgrade_request,
    origin_allowed,
    select_subprotocol,
    validate_upgrade,
)

MAX_LEN = 2048  # libFuzzer's -max_len for this target

deflate: ModuleType | None
try:
    deflate = importlib.import_module("tether.protocol.deflate")
except ImportError:  # a tree without permessage-deflate
    deflate = None


def parse(text: str) -> tuple[str, dict[str, str], list[str]]:
    """The method, the headers (lower-case names, repeats joined with ", ") and the
    server's list (subprotocols and allowed origins) an input describes."""
    lines = text.split("\n")
    method = lines[0]
    headers: dict[str, str] = {}
    server_list: list[str] = []
    for line in lines[1:]:
        if line.startswith("~"):
            server_list.extend(line[1:].split(","))
            continue
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return method, headers, server_list


def is_16_bytes_in_base64(key: str) -> bool:
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        return False


def check_tokens(value: str | None) -> list[str]:
    tokens = header_tokens(value)
    assert isinstance(tokens, list), f"header_tokens gave {tokens!r}"
    for token in tokens:
        assert isinstance(token, str) and token, f"header_tokens gave an empty token from {value!r}"
        assert token == token.strip(), f"header_tokens gave an unstripped token {token!r}"
        assert "," not in token, f"header_tokens gave a token with a comma: {token!r}"
        assert value is not None and token in value, f"header_tokens made up {token!r}"
    return tokens


def check_validate(method: str, headers: dict[str, str]) -> str | None:
    """validate_upgrade's outcome against RFC 6455 4.2.1; the key when it accepted."""
    try:
        key = validate_upgrade(method, headers)
    except HandshakeError as exc:
        assert exc.status in (400, 426), f"handshake refused with status {exc.status}"
        assert isinstance(exc.message, str) and exc.message, "handshake refused without a message"
        assert all(isinstance(n, str) and isinstance(v, str) for n, v in exc.headers), exc.headers
        if exc.status == 426:
            assert ("Sec-WebSocket-Version", "13") in exc.headers, "426 without Sec-WebSocket-Version: 13"
            assert headers.get("sec-websocket-version") != "13", "426 for version 13"
        return None
    assert key == headers.get("sec-websocket-key"), f"accepted key {key!r} is not the request's"
    assert method == "GET", f"accepted a {method!r} upgrade"
    assert headers.get("host"), "accepted an upgrade without a Host"
    assert "upgrade" in [t.lower() for t in header_tokens(headers.get("connection"))], \
        "accepted an upgrade without Connection: upgrade"
    assert headers.get("sec-websocket-version") == "13", "accepted another version than 13"
    assert is_16_bytes_in_base64(key), f"accepted the key {key!r}"
    return key


def check_negotiation(offers: str | None) -> None:
    """negotiate() against RFC 7692 7.1 for the server's default options and stricter ones."""
    if deflate is None:
        return
    for options in (deflate.DeflateOptions(),
                    deflate.DeflateOptions(server_no_context_takeover=False, client_no_context_takeover=False,
                                           server_max_window_bits=10, client_max_window_bits=12)):
        declined: list[str] = []
        try:
            params = deflate.negotiate(offers, options, declined)
        except HandshakeError as exc:
            assert exc.status == 400, f"extension negotiation refused with {exc.status}"
            assert offers, "a refusal without an offer"
            continue
        assert all(isinstance(reason, str) and reason for reason in declined), declined
        if params is None:
            continue
        assert offers and "permessage-deflate" in offers.lower(), f"deflate agreed to {offers!r}"
        for bits in (params.server_max_window_bits, params.client_max_window_bits):
            assert type(bits) is int and 8 <= bits <= 15, f"window bits {bits} agreed to {offers!r}"
        assert params.server_max_window_bits <= options.server_max_window_bits, params
        assert params.server_no_context_takeover or not options.server_no_context_takeover, params
        header = params.header()
        assert deflate.client_params(header) == params, f"{header!r} reads back as another agreement than {params}"


def check(data: bytes) -> None:
    """One fuzz input (see the module docstring)."""
    if not data:
        return
    text = data[1:].decode("utf-8", "replace") if data[0] & 1 else data[1:].decode("latin-1")
    method, headers, server_list = parse(text)

    upgrade = is_upgrade_request(headers)
    assert type(upgrade) is bool, f"is_upgrade_request gave {upgrade!r}"
    for value in headers.values():
        check_tokens(value)
    check_tokens(None)

    key = check_validate(method, headers)
    if key is not None:
        accept = accept_key(key)
        assert len(base64.b64decode(accept)) == 20, f"accept key {accept!r}"
    offered = check_tokens(headers.get("sec-websocket-protocol"))
    chosen = select_subprotocol(offered, server_list)
    assert chosen is None or (chosen in offered and chosen in server_list), f"chose {chosen!r}"
    if key is not None:
        response = accept_headers(key, chosen)
        assert ("Sec-WebSocket-Accept", accept_key(key)) in response, response
        assert (("Sec-WebSocket-Protocol", chosen) in response) == bool(chosen), response

    check_negotiation(headers.get("sec-websocket-extensions"))

    origin = headers.get("origin")
    host = headers.get("host")
    for allowed in (server_list, [], ["*"]):
        result = origin_allowed(origin, host, allowed)
        assert type(result) is bool, f"origin_allowed gave {result!r}"
        if origin is None or "*" in allowed or origin in allowed:
            assert result, f"origin {origin!r} refused with allowed={allowed!r}"
    if origin is not None and host is not None and origin.lower() in (f"http://{host}".lower(),
                                                                        f"https://{host}".lower()):
        # The same host and port as the Host header, written as a browser writes it.
        plain = host.strip()
        if plain == host and plain.isascii() and all(c.isalnum() or c in ".-" for c in plain):
            assert origin_allowed(origin, host, []), f"same-origin {origin!r} for Host {host!r} refused"
