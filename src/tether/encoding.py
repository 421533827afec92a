"""How application data becomes message bytes: one compact-JSON rule for every road.

`send(data)` and every delivery encode with `encode_message`: `str` -> text, bytes-like ->
binary, anything else -> JSON text. HTTP answers dicts and lists with the same JSON.
"""

from __future__ import annotations

import json
from typing import Any

from .protocol import OP_BINARY, OP_TEXT

__all__ = ["Data", "JSONText", "compact_json", "jsonify", "encode_message", "is_reply"]

#: A received message: str for text, bytes for binary.
Data = str | bytes


def compact_json(obj: Any) -> str:
    """`obj` as compact JSON text (no spaces; non-ASCII characters kept as they are)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class JSONText(str):
    """A str holding JSON: sent as text over WebSocket, as application/json over HTTP."""


def jsonify(obj: Any) -> JSONText:
    """Serialize `obj` to compact JSON text (a `str`)."""
    return JSONText(compact_json(obj))


def encode_message(data: Any) -> tuple[int, bytes]:
    """(opcode, payload) for `send(data)`: str -> text, bytes-like -> binary, other -> JSON text."""
    if isinstance(data, str):
        return OP_TEXT, data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return OP_BINARY, bytes(data)
    return OP_TEXT, compact_json(data).encode("utf-8")


def is_reply(value: Any) -> bool:
    """Whether a callback's return value is something to send (not None, "" or b"")."""
    return value is not None and value != "" and value != b""
