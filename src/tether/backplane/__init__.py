"""Backplanes: how the hub reaches the other nodes of a cluster (see `base.Backplane`).

`from_url(url, node)` picks one: None or "" is the single-process default; `memory://NAME`
joins an in-process cluster named NAME (several Apps in one process, for tests);
`redis://`, `rediss://` (TLS) and `unix://` URLs use a Redis server.
"""

from __future__ import annotations

from .base import Backplane, BackplaneState, NodeState
from .memory import LocalBackplane, MemoryBackplane, MemoryBus

__all__ = ["Backplane", "BackplaneState", "NodeState", "from_url"]


def from_url(url: str | None, node: bytes) -> Backplane:
    """The backplane for `url` (see the module doc); ValueError for an unknown scheme."""
    if not url:
        return LocalBackplane(node)
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        name = url.partition("://")[2]
        return MemoryBackplane(node, MemoryBus.named(name)) if name else LocalBackplane(node)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBackplane

        return RedisBackplane(node, url)
    raise ValueError(f"backplane {url!r}: unknown scheme {scheme!r} (use redis://, rediss://, unix:// or memory://)")
