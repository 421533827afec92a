"""A backplane's outages: where its state goes when it cannot deliver and when it can again,
the `outages` counter, one WARNING when an outage starts and one with the count of cluster
messages lost when it ends (docs/scaling.md: no gap is hidden), and the hub's `resumed()`."""

from __future__ import annotations

import logging
import time

from .base import Backplane, BackplaneState

__all__ = ["OutageLog"]

logger = logging.getLogger("tether.backplane")


class OutageLog:
    """The outages of one backplane whose server is called `server` in its messages
    ("NATS", "Redis"): `down(backplane, why)`, `lost(count)` for what is lost meanwhile,
    `up(backplane)`."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._since: float | None = None
        self._lost = 0

    def down(self, backplane: Backplane, why: str) -> None:
        """`backplane` cannot deliver (`why`): DOWN (unless stopped). When it was UP, an outage
        starts: counted in `backplane.outages`, and said in a WARNING."""
        was_up = backplane.state is BackplaneState.UP
        if backplane.state is not BackplaneState.STOPPED:
            backplane.state = BackplaneState.DOWN
        if not was_up:
            logger.debug("tether backplane: %s", why)
            return
        backplane.outages += 1
        self._since = time.monotonic()
        logger.warning("tether backplane: %s lost (%s); local delivery goes on, cluster messages are counted "
                       "as lost until it is back", self.server, why)

    def lost(self, count: int) -> None:
        self._lost += count

    def up(self, backplane: Backplane, was_down: bool) -> None:
        """`backplane` delivers again (its state UP, what it writes written again): the outage
        that started, if one did, ends with its count (what was lost before any outage, as
        before the first connection, is not an outage's); after being DOWN (`was_down`) the
        hub's `resumed()` reads back what its history rooms missed."""
        if self._since is not None:
            logger.warning("tether backplane: %s is back after %.1f s; %d cluster message(s) were lost during "
                           "the outage", self.server, time.monotonic() - self._since, self._lost)
            self._since = None
        self._lost = 0
        if was_down and backplane.resumed is not None:
            try:
                backplane.resumed()
            except Exception:
                logger.exception("tether backplane: the hub's resumed() failed")
