"""The backplane's wire format (`tether.backplane.envelope`), sans-I/O: what encode() writes
decode() reads back, for every kind; malformed input is a ValueError and nothing else; connection
ids are UUIDv8 naming their node."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.backplane.envelope import Envelope, Kind, decode, encode, new_connection_id, new_node_id, node_of

origins = st.binary(min_size=6, max_size=6)
opcodes = st.integers(0, 255)
payloads = st.binary(max_size=2048)
connection_ids = st.builds(new_connection_id, origins)
any_uuids = st.uuids().map(str)  # any version: an envelope carries 16 bytes, whatever they are
codes = st.integers(0, 65535)


# -- round trips -------------------------------------------------------------------------------------
@given(kind=st.sampled_from([Kind.BROADCAST, Kind.PUBLISH]), opcode=opcodes, origin=origins, payload=payloads,
       exclude=st.lists(st.one_of(connection_ids, any_uuids), max_size=40))
def test_broadcast_and_publish_round_trip_with_their_exclusions(kind, opcode, origin, payload, exclude):
    envelope = decode(encode(kind, opcode, origin, payload, exclude=exclude))
    assert envelope == Envelope(kind, opcode, origin, payload, exclude=frozenset(exclude))
    assert isinstance(envelope.payload, bytes)


@given(opcode=opcodes, origin=origins, payload=payloads, target=st.one_of(connection_ids, any_uuids))
def test_send_round_trips(opcode, origin, payload, target):
    assert decode(encode(Kind.SEND, opcode, origin, payload, target=target)) == \
        Envelope(Kind.SEND, opcode, origin, payload, target=target)


@given(origin=origins, reason=st.text(max_size=123), target=connection_ids, code=codes)
def test_close_round_trips_with_its_code_and_reason(origin, reason, target, code):
    envelope = decode(encode(Kind.CLOSE, 0, origin, reason.encode("utf-8"), target=target, code=code))
    assert envelope == Envelope(Kind.CLOSE, 0, origin, reason.encode("utf-8"), target=target, code=code)
    assert envelope.payload.decode("utf-8") == reason


@given(origin=origins, token=st.binary(max_size=64))
def test_probe_round_trips(origin, token):
    assert decode(encode(Kind.PROBE, 0, origin, token)) == Envelope(Kind.PROBE, 0, origin, token)


@given(exclude=st.lists(connection_ids, min_size=1, max_size=10))
def test_exclusions_are_a_set_of_canonical_ids(exclude):
    """Repeats collapse; an id written in upper case comes back as the hub writes ids (lower case)."""
    shouted = [exclude[0].upper(), *exclude, *exclude]
    envelope = decode(encode(Kind.PUBLISH, 1, b"\0" * 6, b"x", exclude=shouted))
    assert envelope.exclude == frozenset(exclude)


def test_a_large_exclusion_list_round_trips():
    exclude = [new_connection_id(b"abcdef") for _ in range(5000)]
    data = encode(Kind.BROADCAST, 2, b"ABCDEF", b"\x00\xff", exclude=exclude)
    assert len(data) == 8 + 2 + 16 * 5000 + 2
    assert decode(data).exclude == frozenset(exclude)


def test_the_layout_is_the_documented_binary_header():
    """kind:u8 opcode:u8 origin:6 bytes, then by kind (docs/scaling.md, envelope.py)."""
    origin = bytes(range(1, 7))
    target = new_connection_id(origin)
    raw = uuid.UUID(target).bytes
    assert encode(Kind.SEND, 1, origin, b"hi", target=target) == b"\x03\x01" + origin + raw + b"hi"
    assert encode(Kind.CLOSE, 0, origin, b"bye", target=target, code=4001) == \
        b"\x04\x00" + origin + raw + struct.pack("!H", 4001) + b"bye"
    assert encode(Kind.PUBLISH, 2, origin, b"\x00", exclude=[target]) == \
        b"\x02\x02" + origin + b"\x00\x01" + raw + b"\x00"
    assert encode(Kind.BROADCAST, 1, origin, b"{}") == b"\x01\x01" + origin + b"\x00\x00{}"
    assert encode(Kind.PROBE, 0, origin, b"tok") == b"\x05\x00" + origin + b"tok"
    assert [int(kind) for kind in Kind] == [1, 2, 3, 4, 5]


def test_the_payload_is_not_copied_through_any_text_encoding():
    every_byte = bytes(range(256)) * 4
    assert decode(encode(Kind.BROADCAST, 2, b"\x00" * 6, every_byte)).payload == every_byte


# -- malformed input ---------------------------------------------------------------------------------
ORIGIN = b"origin"
TARGET = new_connection_id(ORIGIN)


@pytest.mark.parametrize(("data", "why"), [
    (b"", "shorter than its header"),
    (b"\x01\x01short", "shorter than its header"),  # 7 bytes
    (b"\x00\x01" + ORIGIN, "unknown envelope kind 0"),
    (b"\x06\x01" + ORIGIN + b"payload", "unknown envelope kind 6"),
    (b"\xff\x01" + ORIGIN, "unknown envelope kind 255"),
    (b"\x01\x01" + ORIGIN, "truncated exclusion count"),
    (b"\x02\x01" + ORIGIN + b"\x00", "truncated exclusion count"),
    (b"\x01\x01" + ORIGIN + b"\x00\x02" + uuid.UUID(TARGET).bytes, "truncated exclusion list"),
    (b"\x02\x01" + ORIGIN + b"\x00\x01" + uuid.UUID(TARGET).bytes[:15], "truncated exclusion list"),
    (b"\x03\x01" + ORIGIN, "truncated target id"),
    (b"\x03\x01" + ORIGIN + uuid.UUID(TARGET).bytes[:15], "truncated target id"),
    (b"\x04\x00" + ORIGIN + uuid.UUID(TARGET).bytes[:8], "truncated target id"),
    (b"\x04\x00" + ORIGIN + uuid.UUID(TARGET).bytes, "truncated close code"),
    (b"\x04\x00" + ORIGIN + uuid.UUID(TARGET).bytes + b"\x0f", "truncated close code"),
])
def test_malformed_envelopes_raise_value_error_saying_what_is_wrong(data, why):
    with pytest.raises(ValueError, match=why):
        decode(data)


@given(kind=st.sampled_from(list(Kind)), exclude=st.lists(connection_ids, max_size=5), payload=payloads,
       cut=st.integers(0, 200))
def test_a_truncated_envelope_decodes_or_raises_value_error_never_anything_else(kind, exclude, payload, cut):
    data = encode(kind, 1, ORIGIN, payload, exclude=exclude, target=TARGET, code=1000)
    fixed = {Kind.BROADCAST: 10 + 16 * len(exclude), Kind.PUBLISH: 10 + 16 * len(exclude), Kind.SEND: 24,
             Kind.CLOSE: 26, Kind.PROBE: 8}[kind]  # the bytes before the payload
    truncated = data[:min(cut, len(data))]
    if len(truncated) < fixed:
        with pytest.raises(ValueError):
            decode(truncated)
    else:
        assert decode(truncated).payload == payload[:len(truncated) - fixed]


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_value_error(data):
    try:
        envelope = decode(data)
    except ValueError:
        return
    assert envelope.kind in set(Kind) and len(envelope.origin) == 6


# -- ids -----------------------------------------------------------------------------------------------
@given(node=origins)
def test_a_connection_id_is_a_uuid_version_8_naming_its_node(node):
    connection_id = new_connection_id(node)
    parsed = uuid.UUID(connection_id)
    assert parsed.version == 8 and parsed.variant == uuid.RFC_4122
    assert str(parsed) == connection_id  # canonical: lower case, 36 characters with hyphens
    assert node_of(connection_id) == node
    assert node_of(connection_id.upper()) == node


def test_connection_ids_and_node_ids_are_fresh():
    node = new_node_id()
    assert isinstance(node, bytes) and len(node) == 6
    assert len({new_node_id() for _ in range(1000)}) == 1000
    ids = {new_connection_id(node) for _ in range(10000)}
    assert len(ids) == 10000 and {node_of(i) for i in ids} == {node}


@pytest.mark.parametrize("value", ["", "not-a-uuid", "1234", "g" * 32, "0" * 31, "{" + "0" * 31, None, 42, b"x" * 16])
def test_node_of_something_that_is_not_a_uuid_is_none(value):
    assert node_of(value) is None


def test_node_of_any_uuid_is_its_first_six_bytes():
    other = uuid.uuid4()
    assert node_of(str(other)) == other.bytes[:6]
    assert node_of(other.hex) == other.bytes[:6]
