"""What every connection of one native server shares, as its protocols see it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..config import Settings
    from ..types import Application
    from .batcher import WriteBatcher

__all__ = ["ServerContext"]


class ServerContext(Protocol):
    """The server a connection belongs to (`tether.server.serve.ServerState`)."""

    app: Application
    settings: Settings
    loop: asyncio.AbstractEventLoop
    batcher: WriteBatcher
    connections: set[Any]

    def track(self, task: asyncio.Task[Any]) -> None:
        """Keep `task` until it is done; shutdown waits for it."""
