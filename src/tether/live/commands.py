"""The live protocol without I/O: a client's text message read into a `Command` (or a
`CommandError` naming what is wrong), and the replies and pushes the server sends, as text.
docs/live-protocol.md is the contract this module implements.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..backplane.history import Position
from ..encoding import compact_json
from .errors import CommandError, ErrorCode
from .limits import LiveSettings

__all__ = ["Command", "read_command", "reply", "error_reply", "push", "position_json", "PING"]

#: The heartbeat push, sent every `ping_interval`.
PING = '{"push":"ping"}'
#: How deep a command's JSON may nest (objects and arrays), whatever the settings.
MAX_DEPTH = 32


class _NotJSON(ValueError):
    """A value JSON cannot carry back out: NaN, an infinity, a lone surrogate."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(f"the number {text[:40]} is too large to be sent back")
    return value


def _constant(name: str) -> float:
    raise _NotJSON(f"{name} is not JSON")


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests objects and arrays more than `limit` deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _size(text: str) -> int:
    """Bytes of `text` as UTF-8 (without encoding it when it is ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


@dataclass(slots=True)
class Command:
    """One client command: its `op`, its `id` (None: no reply wanted) and its fields."""

    op: str
    id: int | None
    fields: dict[str, Any]

    def fail(self, error: ErrorCode, message: str, limit: str | None = None) -> CommandError:
        """The error reply to this command (raise it)."""
        return CommandError(error, message, limit, self.id)

    def room(self, settings: LiveSettings) -> str:
        """The `room` field: a non-empty string within `max_room_length`."""
        room = self.fields.get("room")
        if not isinstance(room, str) or not room:
            raise self.fail(ErrorCode.BAD_REQUEST, f"{self.op}: 'room' must be a non-empty string")
        if len(room) > settings.max_room_length:
            raise self.fail(ErrorCode.TOO_LARGE, f"{self.op}: the room name is over {settings.max_room_length} "
                            "characters", "max_room_length")
        return room

    def token(self) -> str | None:
        """The `token` field: a string, or null / absent."""
        token = self.fields.get("token")
        if token is not None and not isinstance(token, str):
            raise self.fail(ErrorCode.BAD_REQUEST, f"{self.op}: 'token' must be a string or null")
        return token

    def offset(self, name: str) -> int | None:
        """An optional field holding a whole number >= 0."""
        value = self.fields.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise self.fail(ErrorCode.BAD_REQUEST, f"{self.op}: '{name}' must be a whole number >= 0")
        return value

    def since(self) -> Position | None:
        """The `since` field of a join: {"epoch": string, "offset": int >= 0}, or absent."""
        since = self.fields.get("since")
        if since is None:
            return None
        if not isinstance(since, dict) or not isinstance(since.get("epoch"), str):
            raise self.fail(ErrorCode.BAD_REQUEST, "join: 'since' must be {\"epoch\": string, \"offset\": int}")
        offset = since.get("offset")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise self.fail(ErrorCode.BAD_REQUEST, "join: 'since.offset' must be a whole number >= 0")
        return Position(since["epoch"], offset)

    def info(self, settings: LiveSettings) -> Any:
        """The `info` field of a join (any JSON, None when absent), within `max_info_size`."""
        info = self.fields.get("info")
        if info is not None and _size(compact_json(info)) > settings.max_info_size:
            raise self.fail(ErrorCode.TOO_LARGE, f"join: the presence info is over {settings.max_info_size} bytes "
                            "of JSON", "max_info_size")
        return info


def read_command(text: str, settings: LiveSettings) -> Command:
    """The command `text` holds; CommandError (with the command's id when it could be read)
    when it is over `max_command_size`, not JSON (NaN, infinities and numbers too large for a
    float are not), holds a string that is not Unicode (a lone surrogate: it could not be
    sent on), nests deeper than `MAX_DEPTH`, is not an object, or its `id` or `op` is not of
    the right type."""
    if _size(text) > settings.max_command_size:
        raise CommandError(ErrorCode.TOO_LARGE, f"the command is over {settings.max_command_size} bytes",
                           "max_command_size")
    try:
        message = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except _NotJSON as exc:
        raise CommandError(ErrorCode.BAD_REQUEST, f"not JSON: {exc}") from None
    except RecursionError:
        raise CommandError(ErrorCode.BAD_REQUEST, f"not taken: JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise CommandError(ErrorCode.BAD_REQUEST, f"not JSON: {exc}") from None
    if (text.count("[") + text.count("{") > MAX_DEPTH) and _deeper_than(message, MAX_DEPTH):
        raise CommandError(ErrorCode.BAD_REQUEST, f"not taken: JSON nested deeper than {MAX_DEPTH} levels")
    if "\\u" in text:  # an escape may make a lone surrogate, which cannot be sent on as UTF-8
        try:
            json.dumps(message, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise CommandError(ErrorCode.BAD_REQUEST, "not taken: a string holds a lone surrogate "
                               "(not Unicode text)") from None
    if not isinstance(message, dict):
        raise CommandError(ErrorCode.BAD_REQUEST, f"a command is a JSON object, not {type(message).__name__}")
    command_id = message.get("id")
    if command_id is not None and (not isinstance(command_id, int) or isinstance(command_id, bool)):
        raise CommandError(ErrorCode.BAD_REQUEST, "'id' must be an integer")
    op = message.get("op")
    if not isinstance(op, str):
        raise CommandError(ErrorCode.BAD_REQUEST, "'op' must be a string", None, command_id)
    return Command(op, command_id, message)


def reply(command_id: int, result: dict[str, Any]) -> str:
    """A command's result."""
    return compact_json({"id": command_id, "result": result})


def error_reply(error: CommandError) -> str:
    """A command's error (with `"id": null` when the command had none or could not be read)."""
    body: dict[str, Any] = {"code": error.error.code, "name": error.error.wire_name, "message": error.message}
    if error.limit is not None:
        body["limit"] = error.limit
    return compact_json({"id": error.command_id, "error": body})


def push(kind: str, **fields: Any) -> str:
    """A push of `kind` (message, presence, lost, ping) with its fields."""
    return compact_json({"push": kind, **fields})


def position_json(position: Position | None) -> dict[str, Any] | None:
    """A position as the protocol writes it: {"epoch", "offset"}, or None."""
    return None if position is None else {"epoch": position.epoch, "offset": position.offset}
