"""Backplanes: how the hub reaches the other nodes of a cluster (see `base.Backplane`).

`from_url(url, node)` picks one by the URL's scheme (SPEC §7, docs/scaling.md): None or ""
is the single-process default; `memory://NAME` joins an in-process cluster named NAME
(several Apps in one process, for tests); `redis://`, `rediss://` (TLS) and `unix://` use one
Redis server, `redis+sentinel://` the master a Sentinel group names, `redis+cluster://` a
Redis Cluster (all three need the redis package: `pip install 'tether[redis]'`), and
`nats://` a NATS server with JetStream (`pip install 'tether[nats]'`). `configured_url(setting)`
is the URL an App uses, and `check(url)` raises what `from_url` would refuse it for, without
making a backplane.
"""

from __future__ import annotations

import importlib
import os

from ..exceptions import MissingExtra
from .base import Backplane, BackplaneState, NodeState
from .memory import LocalBackplane, MemoryBackplane, MemoryBus
from .topic import Topic, TopicKind

__all__ = ["Backplane", "BackplaneState", "NodeState", "Topic", "TopicKind", "check", "configured_url", "from_url"]

#: scheme -> (module, class, the package it needs, the extra that installs it)
_ENGINES = {
    "redis": ("redis", "RedisBackplane", "redis", "redis"),
    "rediss": ("redis", "RedisBackplane", "redis", "redis"),
    "unix": ("redis", "RedisBackplane", "redis", "redis"),
    "redis+sentinel": ("sentinel", "SentinelBackplane", "redis", "redis"),
    "redis+cluster": ("cluster", "RedisClusterBackplane", "redis", "redis"),
    "nats": ("nats", "NatsBackplane", "nats", "nats"),
}
_FEATURES = {"redis": "the Redis backplane", "sentinel": "the Redis Sentinel backplane",
             "cluster": "the Redis Cluster backplane", "nats": "the NATS backplane"}


def configured_url(setting: str | None) -> str | None:
    """The backplane URL of an App whose `backplane` setting is `setting`: the setting, else
    $TETHER_BACKPLANE, else None (no backplane)."""
    return setting or os.environ.get("TETHER_BACKPLANE") or None


def _scheme(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    if scheme != "memory" and scheme not in _ENGINES:
        raise ValueError(f"backplane {url!r}: unknown scheme {scheme!r} (use redis://, rediss://, unix://, "
                         "redis+sentinel://, redis+cluster://, nats:// or memory://)")
    return scheme


def _engine(scheme: str) -> type[Backplane]:
    """The backplane class of `scheme`, imported; MissingExtra when its package is missing."""
    module, name, package, extra = _ENGINES[scheme]
    try:
        engine: type[Backplane] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != package:
            raise  # another module is missing (one the package needs, say): not the extra's absence
        raise MissingExtra(_FEATURES[module], package, extra) from None
    return engine


def check(url: str | None) -> None:
    """Raise what `from_url(url, ...)` would, before anything is set up: ValueError for an
    unknown scheme, MissingExtra when the engine's package is not installed."""
    if url and (scheme := _scheme(url)) != "memory":
        _engine(scheme)


def from_url(url: str | None, node: bytes) -> Backplane:
    """The backplane for `url` (see the module doc), not connected yet; ValueError for an
    unknown scheme or a malformed URL, MissingExtra when the engine's package is missing."""
    if not url:
        return LocalBackplane(node)
    scheme = _scheme(url)
    if scheme == "memory":
        name = url.partition("://")[2]
        return MemoryBackplane(node, MemoryBus.named(name)) if name else LocalBackplane(node)
    return _engine(scheme)(node, url)  # type: ignore[call-arg]  # every engine takes (node, url)
