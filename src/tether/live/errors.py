"""The live protocol's refusals, error codes and close codes (docs/live-protocol.md).

`Refuse(reason)` is what an app's hook raises to say no: to a connection (`authenticate`), a
join (a room's hook) or a publish (`on_publish`); the client gets the reason. `CommandError`
is a command the live layer answers with an error reply instead of running it.
"""

from __future__ import annotations

import enum

__all__ = ["Refuse", "ErrorCode", "CloseCode", "CommandError", "SUBPROTOCOL"]

#: The subprotocol a client offers to speak this version of the protocol.
SUBPROTOCOL = "tether.live.v1"


class Refuse(Exception):
    """Raised by an app's hook to refuse a connection, a join or a publish; `reason` reaches
    the client (in the error reply, and as the close reason of a refused connection)."""

    def __init__(self, reason: str = "refused") -> None:
        super().__init__(reason)
        self.reason = reason


class ErrorCode(enum.Enum):
    """An error reply's (code, name); docs/live-protocol.md "Error codes" says when each is sent."""

    BAD_REQUEST = (400, "bad_request")
    UNAUTHORIZED = (401, "unauthorized")
    FORBIDDEN = (403, "forbidden")
    UNKNOWN_ROOM = (404, "unknown_room")
    UNKNOWN_OP = (405, "unknown_op")
    ALREADY_JOINED = (409, "already_joined")
    ALREADY_CONNECTED = (409, "already_connected")
    NOT_JOINED = (410, "not_joined")
    TOO_LARGE = (413, "too_large")
    NO_HISTORY = (422, "no_history")
    NO_PRESENCE = (422, "no_presence")
    RATE_LIMITED = (429, "rate_limited")
    TOO_MANY_ROOMS = (429, "too_many_rooms")
    INTERNAL = (500, "internal")
    UNAVAILABLE = (503, "unavailable")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def wire_name(self) -> str:
        return self.value[1]


class CloseCode(enum.IntEnum):
    """The live layer's own close codes (docs/live-protocol.md "Close codes")."""

    UNAUTHORIZED = 4001
    PROTOCOL_MISUSE = 4002
    TOKEN_EXPIRED = 4003
    ABUSE = 4004
    HEARTBEAT = 4005


class CommandError(Exception):
    """A command answered with an error reply: `error`, `message`, the setting it broke
    (`limit`) and the command's id (None: it had none, or it could not be read)."""

    def __init__(self, error: ErrorCode, message: str, limit: str | None = None,
                 command_id: int | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.limit = limit
        self.command_id = command_id
