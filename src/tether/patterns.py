"""The route pattern syntax every framework's users bring, in one regex.

`{id}`, `{id:int}` (Starlette/Robyn), `<id>`, `<int:id>` (Flask/Microdot/Panther) and
`:id` (Robyn/Express) name a path parameter. `parameters(path)` lists them and refuses a
pattern with an unbalanced `{`/`}` or `<`/`>`, naming the route.

Room names use `{name}` only: `RoomPatterns` maps patterns such as `chat:{name}` to what a
room named like them has (a history policy, a live room's declaration).
"""

from __future__ import annotations

import re
from typing import Generic, TypeVar

__all__ = ["PARAMETER", "parameters", "RoomPatterns"]

_T = TypeVar("_T")
# Remembered answers of `RoomPatterns.get` (room name -> value or None), past which the memo
# starts over: room names are unbounded, the patterns few.
_MEMO_SIZE = 4096

#: One path parameter: groups (brace name, brace converter, angle converter, angle name, colon name).
PARAMETER = re.compile(r"\{(\w+)(?::(\w+))?\}|<(?:(\w+):)?(\w+)>|(?<=/):(\w+)")


def parameters(path: str) -> list[tuple[str, str]]:
    """(name, converter) of each parameter in `path`, in order; ValueError for a pattern
    with a stray or unbalanced bracket (`/rooms/{room`)."""
    found = []
    literal = []
    last = 0
    for match in PARAMETER.finditer(path):
        brace_name, brace_conv, angle_conv, angle_name, colon_name = match.groups()
        found.append((brace_name or angle_name or colon_name, brace_conv or angle_conv or "str"))
        literal.append(path[last:match.start()])
        last = match.end()
    literal.append(path[last:])
    stray = sorted({char for part in literal for char in part if char in "{}<>"})
    if stray:
        raise ValueError(f"route {path!r}: unbalanced {' '.join(stray)} (a parameter is written "
                         "{name}, {name:int}, <name>, <int:name> or :name)")
    return found


class RoomPatterns(Generic[_T]):
    """Room name patterns, each with a value: `chat:{name}` (`{name}` matches any text, at
    least one character) or an exact name. A name matching several patterns has the first
    declared one's value."""

    def __init__(self) -> None:
        self._patterns: list[tuple[re.Pattern[str], _T]] = []
        self._memo: dict[str, _T | None] = {}

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def declare(self, pattern: str, value: _T) -> None:
        """Rooms named like `pattern` have `value` (unless an earlier pattern matches them)."""
        parts, last = [], 0
        for match in PARAMETER.finditer(pattern):
            name = match.group(1)
            if name is None:  # <name> or :name: room names use only {name}
                continue
            parts += [re.escape(pattern[last:match.start()]), f"(?P<{name}>.+)"]
            last = match.end()
        parts.append(re.escape(pattern[last:]))
        self._patterns.append((re.compile("".join(parts), re.DOTALL), value))
        self._memo.clear()

    def get(self, room: str) -> _T | None:
        """The value of the first pattern `room` matches, else None (remembered per name)."""
        memo = self._memo
        try:
            return memo[room]
        except KeyError:
            pass
        found = next((value for regex, value in self._patterns if regex.fullmatch(room)), None)
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[room] = found
        return found

    def match(self, room: str) -> tuple[_T, dict[str, str]] | None:
        """(value, {parameter: text}) of the first pattern `room` matches, else None."""
        for regex, value in self._patterns:
            found = regex.fullmatch(room)
            if found is not None:
                return value, found.groupdict()
        return None
