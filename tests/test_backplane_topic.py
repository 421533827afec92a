"""Cluster topics and their channel names (`tether.backplane.topic`), sans-I/O: every kind round
trips for any name and prefix; a name that is not one of this cluster's channels (another
prefix, the old one-letter kinds, no kind) is refused, never guessed at; the Redis backplane's
channels and keys are distinct words (a room's presence key no longer reuses the path letter)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.backplane import Topic, TopicKind
from tether.backplane.memory import LocalBackplane
from tether.backplane.topic import channel_name, parse_channel

names = st.text(max_size=40)  # any text: ':' and '{' included, and the empty name
prefixes = st.text(min_size=1, max_size=12)


@given(kind=st.sampled_from(list(TopicKind)), name=names, prefix=prefixes)
def test_every_kind_round_trips_for_any_name_and_prefix(kind, name, prefix):
    topic = Topic(kind, name)
    channel = channel_name(prefix, topic)
    assert channel == f"{prefix}:{kind.value}:{name}"
    assert parse_channel(prefix, channel) == topic
    assert type(parse_channel(prefix, channel).kind) is TopicKind


def test_the_kinds_are_whole_words():
    assert [kind.value for kind in TopicKind] == ["path", "room", "node", "kept"]
    assert channel_name("tether", Topic(TopicKind.PATH, "/chat/1")) == "tether:path:/chat/1"
    assert channel_name("tether", Topic(TopicKind.ROOM, "a:b")) == "tether:room:a:b"
    assert channel_name("app1", Topic(TopicKind.NODE, "0a0b0c0d0e0f")) == "app1:node:0a0b0c0d0e0f"


@pytest.mark.parametrize("channel", [
    "other:room:lobby",        # another cluster's
    "tetherx:room:lobby",      # a prefix that merely starts like ours
    "appsx1:r:lobby",          # cut at len("tether") + 3, it read as our room "lobby"
    "tether:r:lobby",          # the old one-letter kinds
    "tether:p:/chat",
    "tether:n:0a0b0c0d0e0f",
    "tether:p:{lobby}",        # the old presence key
    "tether:ROOM:lobby",       # kinds are lower-case words
    "tether:room",             # no name part
    "tether:",
    "tether",
    "",
    ":room:lobby",
])
def test_a_name_that_is_not_one_of_this_clusters_channels_is_refused(channel):
    assert parse_channel("tether", channel) is None


def test_a_prefix_with_a_colon_reads_its_own_channels():
    assert parse_channel("a:b", "a:b:room:x") == Topic(TopicKind.ROOM, "x")
    assert parse_channel("a", "a:b:room:x") is None  # "b" is no kind


def test_a_backplane_names_and_reads_channels_with_its_own_prefix():
    backplane = LocalBackplane(bytes(6))
    topic = Topic(TopicKind.ROOM, "lobby")
    assert backplane.channel(topic) == "tether:room:lobby"
    assert backplane.topic("tether:room:lobby") == topic
    backplane.prefix = "app1"
    assert backplane.channel(topic) == "app1:room:lobby"
    assert backplane.topic("app1:room:lobby") == topic
    assert backplane.topic("tether:room:lobby") is None


def test_the_redis_backplanes_channels_and_keys_are_distinct_words():
    pytest.importorskip("redis")
    from tether.backplane.redis import RedisBackplane

    node = bytes(range(6))
    backplane = RedisBackplane(node, "redis://127.0.0.1:1/0?prefix=app1")
    assert backplane.inbox == "app1:node:000102030405"
    keys = backplane.keys
    assert (keys.nodes, keys.count) == ("app1:nodes", "app1:count")
    assert keys.presence("/chat") == "app1:presence:{/chat}"
    assert keys.presence_rooms("000102030405") == "app1:presence-rooms:000102030405"
    assert keys.janitor("000102030405") == "app1:janitor:000102030405"
    channels = {backplane.channel(Topic(kind, "/chat")) for kind in TopicKind}
    named = {keys.nodes, keys.count, keys.presence("/chat"), keys.presence_rooms("/chat"), keys.janitor("/chat")}
    assert not channels & named
    # No key reads as a channel: a room's presence hash is not the path channel's name.
    assert all(backplane.topic(key) is None for key in named)
