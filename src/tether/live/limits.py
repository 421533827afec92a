"""The live endpoint's settings and the token bucket that bounds a connection's commands.

Every limit is per connection; docs/live-protocol.md "Limits" is their table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields

__all__ = ["LiveSettings", "TokenBucket"]


@dataclass(frozen=True)
class LiveSettings:
    """The settings of one live endpoint (`app.live(path, **settings)`)."""

    #: bytes of one command (its UTF-8 text); over it: error 413
    max_command_size: int = 65536
    #: commands a second, once the burst is spent; over it: error 429 (pongs are not counted)
    commands_per_second: float = 20.0
    #: commands at once before the rate applies (the bucket's size)
    command_burst: int = 50
    #: rooms joined at once; over it: error 429 too_many_rooms
    max_rooms: int = 100
    #: bytes of a member's presence info as JSON; over it: error 413
    max_info_size: int = 1024
    #: characters of a room name; over it: error 413
    max_room_length: int = 256
    #: error replies a connection may get in a burst (refilled at one a second); past it: close 4004
    max_errors: int = 20
    #: seconds from the handshake to the `connect` command; past it: close 4002
    connect_timeout: float = 10.0
    #: seconds between the server's pings; nothing heard for two of them: close 4005
    ping_interval: float = 25.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"app.live(..., {field.name}={value!r}): a positive number is needed")


class TokenBucket:
    """`size` tokens, refilled at `rate` a second; `take()` spends one if there is one."""

    __slots__ = ("_size", "_rate", "_tokens", "_at")

    def __init__(self, size: float, rate: float) -> None:
        self._size = size
        self._rate = rate
        self._tokens = float(size)
        self._at = time.monotonic()

    def take(self) -> bool:
        """Spend a token: True, or False when the bucket is empty (nothing is spent)."""
        now = time.monotonic()
        tokens = min(self._size, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if tokens < 1:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1
        return True
