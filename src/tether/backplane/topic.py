"""What a cluster message is addressed to, typed, and the one place it becomes a channel name.

A `Topic` is (kind, name): the connections on a concrete path, the members of a room (of
a history room: its numbered messages), or a node's inbox (`send_to`/`close` of its
connections). The hub speaks topics only; a backplane names each topic's pub/sub channel
`<prefix>:<kind>:<name>` (`channel_name`) and reads a channel name back (`parse_channel`),
refusing (None) one that is not of its prefix or not of a known kind instead of guessing.
Kinds are whole words, so a name never depends on a letter count; a name may hold any
character, `:` included (the kind is the text between the prefix's `:` and the next one).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

__all__ = ["TopicKind", "Topic", "channel_name", "parse_channel"]


class TopicKind(enum.StrEnum):
    """What a topic's name names; the value is the word in the channel name."""

    PATH = "path"  #: every connection on one concrete path (broadcast)
    ROOM = "room"  #: every member of one room (publish)
    NODE = "node"  #: one node's inbox: its connections addressed by id; the name is the node id in hex
    KEPT = "kept"  #: every member of one history room: numbered messages (`tether.backplane.history`)


class Topic(NamedTuple):
    """A cluster address: `Topic(TopicKind.ROOM, "lobby")`."""

    kind: TopicKind
    name: str


_KINDS = {kind.value: kind for kind in TopicKind}


def channel_name(prefix: str, topic: Topic) -> str:
    """The pub/sub channel of `topic` in the cluster named `prefix`: `<prefix>:<kind>:<name>`."""
    return f"{prefix}:{topic.kind}:{topic.name}"  # a StrEnum formats as its value


def parse_channel(prefix: str, channel: str) -> Topic | None:
    """The topic whose channel is `channel` (`channel_name` read back), or None when it is
    not one: another prefix, no kind, or a kind that is not a `TopicKind` word."""
    head = prefix + ":"
    if not channel.startswith(head):
        return None
    word, colon, name = channel[len(head):].partition(":")
    kind = _KINDS.get(word)
    if kind is None or not colon:
        return None
    return Topic(kind, name)
