"""The root of tether's exception family and the two errors the protocol layer raises.

They live here, at the bottom of the layers, so that `tether.protocol` imports nothing of
the framework; `tether.exceptions` re-exports them beside the rest of the family.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["TetherError", "ProtocolError", "HandshakeError"]


class TetherError(Exception):
    """Base class of every exception tether raises on purpose."""


class ProtocolError(TetherError):
    """The peer broke RFC 6455; `code` is the close code to answer with, `reason` says why."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = int(code)
        self.reason = reason


class HandshakeError(TetherError):
    """An upgrade request the server must refuse: `status` is the HTTP status to answer
    with (h11's "error status hint"), `headers` what that response must carry."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = int(status)
        self.message = message
        self.headers = list(headers)
