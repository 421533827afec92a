"""Redis Cluster hash slots for the cluster backplane (`tether.backplane.cluster`).

A key (or shard channel) lives on the slot of its hash tag, the text between its first `{`
and the next `}` (the whole key when there is none, or when it is `{}`). `tag(name)` is the
tag tether gives whatever belongs to one name (a room: its channel, stream, history meta and
presence): a digest of the name, so that it never holds a brace and never depends on what the
name holds (a name with `{`, `}` or starting with `}` would otherwise cut the tag short, or
leave it empty, and scatter one room over several slots). `Topology` is one reading of
`CLUSTER SHARDS`: who serves each slot.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from typing import Any

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

__all__ = ["Topology", "slot_of", "tag"]


@functools.lru_cache(maxsize=65536)
def tag(name: str) -> str:
    """The hash tag of `name`: 12 hex digits, the same on every node (the last 65536 remembered)."""
    return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def slot_of(key: str) -> int:
    """The slot of a key or shard channel, as Redis computes it."""
    return key_slot(key.encode("utf-8", "surrogatepass"))


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _fields(entry: Any) -> dict[str, Any]:
    """A CLUSTER SHARDS map (a dict, or RESP2's flat [key, value, ...]) with str keys."""
    pairs = entry.items() if isinstance(entry, dict) else zip(entry[::2], entry[1::2], strict=True)
    return {_text(key): value for key, value in pairs}


class Topology:
    """Who serves every slot: `owner(slot)` is a master's "host:port"; `masters` lists them,
    and `tags[master]` is a hash tag on a slot that master serves (the first of "0", "1", ...
    that is: the same on every node reading the same map)."""

    def __init__(self, shards: Any) -> None:
        """From a `CLUSTER SHARDS` reply; ConnectionError when a slot has no master online."""
        owners: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        for raw in shards:
            shard = _fields(raw)
            slots = [int(bound) for bound in shard["slots"]]
            if not slots:
                continue
            masters = [_fields(node) for node in shard["nodes"]]
            master = next((node for node in masters if _text(node["role"]) == "master"
                           and _text(node["health"]) == "online"), None)
            if master is None:
                raise ConnectionError(f"the Redis Cluster shard of slots {slots[0]}-{slots[-1]} has no master online")
            host = _text(master.get("endpoint") or "?")
            host = _text(master["ip"]) if host in ("?", "") else host
            address = f"{f'[{host}]' if ':' in host else host}:{int(master['port'])}"  # IPv6 in brackets
            for first, last in zip(slots[::2], slots[1::2], strict=True):
                owners[first:last + 1] = [address] * (last - first + 1)
        if None in owners:
            raise ConnectionError(f"Redis Cluster slot {owners.index(None)} is served by no master")
        self.owners: list[str] = owners  # type: ignore[assignment]  # no None left
        self.masters = sorted(set(self.owners))
        self.tags: dict[str, str] = {}
        for number in itertools.count():
            owner = self.owners[slot_of(str(number))]
            self.tags.setdefault(owner, str(number))
            if len(self.tags) == len(self.masters):
                break

    def owner(self, key: str) -> str:
        """The master serving the slot of `key` (a key or a shard channel)."""
        return self.owners[slot_of(key)]
