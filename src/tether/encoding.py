"""How application data becomes message bytes: one compact-JSON rule for every road.

`send(data)` and every delivery encode with `encode_message`: `str` -> text, bytes-like ->
binary, anything else -> JSON text. HTTP answers dicts and lists with the same JSON.

Besides what `json` encodes itself, the JSON rule takes: a mapping (anything `dict()` takes as
one: `dict`-likes, the request's `QueryParams` and `Headers`, which give each name's value as
`params[name]` does) as an object; a dataclass instance as the object of its fields; a pydantic
model as its `model_dump(mode="json")`; a set or frozenset as an array; `datetime`, `date` and
`time` as ISO 8601 text; a `UUID` as its text. Anything else is a TypeError naming its type.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import uuid
from typing import Any

from .protocol import OP_BINARY, OP_TEXT

__all__ = ["Data", "JSONText", "compact_json", "jsonify", "encode_message", "is_reply"]

#: A received message: str for text, bytes for binary.
Data = str | bytes


def _jsonable(obj: Any) -> Any:
    """What `json` cannot encode itself, as something it can (the module doc's list), one
    level at a time: json calls this again for what the result holds (and so keeps its own
    check for circular references)."""
    if callable(getattr(obj, "keys", None)) and hasattr(obj, "__getitem__"):
        try:
            return dict(obj)  # what dict() does with a mapping: keys(), then obj[key]
        except Exception as exc:
            raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable: reading it as "
                            f"a mapping failed ({type(exc).__name__}: {exc})") from None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {field.name: getattr(obj, field.name) for field in dataclasses.fields(obj)}
    if callable(getattr(obj, "model_dump", None)):  # a pydantic (v2) model
        return obj.model_dump(mode="json")
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable (send str, bytes, or "
                    "JSON-able data: dict, list, str, int, float, bool, None, a mapping, a dataclass, a set)")


def compact_json(obj: Any) -> str:
    """`obj` as compact JSON text (no spaces; non-ASCII characters kept as they are), with the
    module doc's additions to what `json` encodes."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


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
