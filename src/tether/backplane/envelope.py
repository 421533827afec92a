"""The backplane's wire format: what one node publishes for the others, sans-I/O.

An envelope carries an already encoded WebSocket message (opcode + payload bytes): the
publisher encodes the application's data once, each receiving node builds the frame once
and writes the same bytes to every local member. The header is fixed-size binary, parsed
with `struct` (no JSON, no base64 for binary messages):

    kind:u8  opcode:u8  origin:6 bytes  rest (by kind)

- BROADCAST / PUBLISH: `count:u16`, `count` excluded connection ids (16 bytes each), payload
- SEND (to one connection): target id (16 bytes), payload
- CLOSE (one connection): target id (16 bytes), `code:u16`, reason (UTF-8)
- PROBE (a node's message to itself, proving its subscription still hears): token bytes

Connection ids are UUID strings whose first 6 bytes name the node that holds them
(`new_connection_id`), so `send_to(id)` and `close(id)` find the node with no directory.
"""

from __future__ import annotations

import enum
import os
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Kind", "Envelope", "encode", "decode", "new_node_id", "new_connection_id", "node_of"]

_HEAD = struct.Struct("!BB6s")
_U16 = struct.Struct("!H")
_ID = 16


class Kind(enum.IntEnum):
    BROADCAST = 1  #: to every connection on a concrete path
    PUBLISH = 2    #: to every member of a room
    SEND = 3       #: to one connection
    CLOSE = 4      #: close one connection
    PROBE = 5      #: a node's liveness probe through its own inbox


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded envelope (`payload` is a memoryview-free bytes copy of the message)."""

    kind: Kind
    opcode: int
    origin: bytes
    payload: bytes = b""
    exclude: frozenset[str] = frozenset()
    target: str = ""
    code: int = 0


def new_node_id() -> bytes:
    """6 random bytes naming this process for as long as it runs (never reused)."""
    return os.urandom(6)


def new_connection_id(node: bytes) -> str:
    """A UUID (version 8, RFC 9562) whose first 6 bytes are `node`."""
    raw = bytearray(node + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(raw)))


def node_of(connection_id: str) -> bytes | None:
    """The node that holds `connection_id`, or None when it is not a UUID."""
    try:
        return uuid.UUID(connection_id).bytes[:6]
    except (ValueError, AttributeError, TypeError):
        return None


def _id_bytes(connection_id: str) -> bytes:
    return uuid.UUID(connection_id).bytes


def encode(kind: Kind, opcode: int, origin: bytes, payload: bytes = b"", *,
           exclude: Iterable[str] = (), target: str = "", code: int = 0) -> bytes:
    """Serialize one envelope (see the module doc)."""
    head = _HEAD.pack(kind, opcode, origin)
    if kind in (Kind.BROADCAST, Kind.PUBLISH):
        ids = [_id_bytes(i) for i in exclude if node_of(i) is not None]
        return b"".join([head, _U16.pack(len(ids)), *ids, payload])
    if kind == Kind.SEND:
        return head + _id_bytes(target) + payload
    if kind == Kind.CLOSE:
        return head + _id_bytes(target) + _U16.pack(code) + payload
    return head + payload


def decode(data: bytes) -> Envelope:
    """Parse one envelope; ValueError for anything malformed (a foreign publisher on our
    channels, a truncated message)."""
    if len(data) < _HEAD.size:
        raise ValueError(f"envelope of {len(data)} bytes is shorter than its header")
    kind_value, opcode, origin = _HEAD.unpack_from(data)
    try:
        kind = Kind(kind_value)
    except ValueError:
        raise ValueError(f"unknown envelope kind {kind_value}") from None
    at = _HEAD.size
    if kind in (Kind.BROADCAST, Kind.PUBLISH):
        if len(data) < at + 2:
            raise ValueError("truncated exclusion count")
        (count,) = _U16.unpack_from(data, at)
        at += 2
        end = at + count * _ID
        if len(data) < end:
            raise ValueError("truncated exclusion list")
        exclude = frozenset(str(uuid.UUID(bytes=data[i:i + _ID])) for i in range(at, end, _ID))
        return Envelope(kind, opcode, origin, data[end:], exclude=exclude)
    if kind in (Kind.SEND, Kind.CLOSE):
        if len(data) < at + _ID:
            raise ValueError("truncated target id")
        target = str(uuid.UUID(bytes=data[at:at + _ID]))
        at += _ID
        if kind == Kind.SEND:
            return Envelope(kind, opcode, origin, data[at:], target=target)
        if len(data) < at + 2:
            raise ValueError("truncated close code")
        (code,) = _U16.unpack_from(data, at)
        return Envelope(kind, opcode, origin, data[at + 2:], target=target, code=code)
    return Envelope(kind, opcode, origin, data[at:])
