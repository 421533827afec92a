"""What every connection of one native server shares, as its protocols see it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..config import Settings
    from ..protocol.deflate import CompressorPool
    from ..types import Application
    from .batcher import WriteBatcher

__all__ = ["ServerContext", "Traffic"]


class Traffic:
    """WebSocket traffic counters: each native channel keeps its own (`messages_in`,
    `bytes_in`, `messages_out`, `bytes_out`; messages include control frames) and adds them
    here when its connection ends, so a server's total is this plus its open channels'."""

    __slots__ = ("messages_in", "bytes_in", "messages_out", "bytes_out")

    def __init__(self) -> None:
        self.messages_in = self.bytes_in = self.messages_out = self.bytes_out = 0

    def add(self, counters: Any) -> None:
        """Add the counters of `counters` (a channel, or another Traffic)."""
        self.messages_in += counters.messages_in
        self.bytes_in += counters.bytes_in
        self.messages_out += counters.messages_out
        self.bytes_out += counters.bytes_out


class ServerContext(Protocol):
    """The server a connection belongs to (`tether.server.serve.ServerState`)."""

    app: Application
    settings: Settings
    loop: asyncio.AbstractEventLoop
    batcher: WriteBatcher
    connections: set[Any]
    traffic: Traffic  #: the counters of connections that ended
    compressors: CompressorPool | None  #: None when permessage-deflate is off

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep `task` until it is done; shutdown waits for it."""
