"""Backplanes: how the hub reaches the other nodes of a cluster (see `base.Backplane`).

`from_url(url, node)` picks one: None or "" is the single-process default; `memory://NAME`
joins an in-process cluster named NAME (several Apps in one process, for tests);
`redis://`, `rediss://` (TLS) and `unix://` URLs use a Redis server, which needs the redis
package (`pip install 'tether[redis]'`). `configured_url(setting)` is the URL an App uses,
and `check(url)` raises what `from_url` would refuse it for, without making a backplane.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..exceptions import MissingExtra
from .base import Backplane, BackplaneState, NodeState
from .memory import LocalBackplane, MemoryBackplane, MemoryBus
from .topic import Topic, TopicKind

if TYPE_CHECKING:
    from .redis import RedisBackplane

__all__ = ["Backplane", "BackplaneState", "NodeState", "Topic", "TopicKind", "check", "configured_url", "from_url"]

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def configured_url(setting: str | None) -> str | None:
    """The backplane URL of an App whose `backplane` setting is `setting`: the setting, else
    $TETHER_BACKPLANE, else None (no backplane)."""
    return setting or os.environ.get("TETHER_BACKPLANE") or None


def _scheme(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    if scheme not in ("memory", *_REDIS_SCHEMES):
        raise ValueError(f"backplane {url!r}: unknown scheme {scheme!r} (use redis://, rediss://, unix:// or memory://)")
    return scheme


def _redis_backplane() -> type[RedisBackplane]:
    try:
        from .redis import RedisBackplane
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "redis":
            raise  # another module is missing (one redis needs, say): not the extra's absence
        raise MissingExtra("the Redis backplane", "redis", "redis") from None
    return RedisBackplane


def check(url: str | None) -> None:
    """Raise what `from_url(url, ...)` would, before anything is set up: ValueError for an
    unknown scheme, MissingExtra for a Redis URL when the redis package is not installed."""
    if url and _scheme(url) in _REDIS_SCHEMES:
        _redis_backplane()


def from_url(url: str | None, node: bytes) -> Backplane:
    """The backplane for `url` (see the module doc), not connected yet; ValueError for an
    unknown scheme, MissingExtra for a Redis URL without the redis package."""
    if not url:
        return LocalBackplane(node)
    if _scheme(url) == "memory":
        name = url.partition("://")[2]
        return MemoryBackplane(node, MemoryBus.named(name)) if name else LocalBackplane(node)
    return _redis_backplane()(node, url)
