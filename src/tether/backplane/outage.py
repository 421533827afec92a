"""What a backplane says about its outages: one WARNING when one starts, one with the count
of cluster messages lost when it ends (docs/scaling.md: no gap is hidden)."""

from __future__ import annotations

import logging
import time

__all__ = ["OutageLog"]

logger = logging.getLogger("tether.backplane")


class OutageLog:
    """The outages of one backplane whose server is called `server` in its messages
    ("NATS", "Redis"): `started(why)`, `lost(count)` for what is lost meanwhile, `ended()`."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._since: float | None = None
        self._lost = 0

    def started(self, why: str) -> None:
        self._since = time.monotonic()
        logger.warning("tether backplane: %s lost (%s); local delivery goes on, cluster messages are counted "
                       "as lost until it is back", self.server, why)

    def lost(self, count: int) -> None:
        self._lost += count

    def ended(self) -> None:
        """The backplane is up: the outage that started, if one did, ends with its count (what
        was lost before any outage, as before the first connection, is not an outage's)."""
        if self._since is not None:
            logger.warning("tether backplane: %s is back after %.1f s; %d cluster message(s) were lost during "
                           "the outage", self.server, time.monotonic() - self._since, self._lost)
            self._since = None
        self._lost = 0
