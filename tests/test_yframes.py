"""Frames of the Relay Server websocket: lib0 primitives, messages, CBOR bodies, snapshots.

Cross-checked against pycrdt's own y-sync encoder (an independent implementation) and
against the byte layouts of the Relay Server's tests.
"""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Snapshot, Text, create_sync_message, create_update_message, write_var_uint

from gitsync import yframes
from gitsync.yframes import (
    Auth,
    Awareness,
    Event,
    EventSubscribe,
    FrameError,
    Head,
    QueryAwareness,
    QuerySubdocs,
    Subdocs,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
    Tag,
    Unknown,
    decode_frame,
    decode_snapshot,
    encode,
    encode_varuint,
    read_varuint,
    same_head,
)

RELAY = "5a0e6a52-0a8c-4b6e-8a43-3c1cf1b1d5a1"
DOC = "d6f2b0a4-7d0e-4d5b-9d55-2f1f8b3c9e10"
FOLDER = "0b8a5c1e-3f2d-4e6a-9b7c-1d2e3f4a5b6c"


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32, 2**53 + 1, 2**64 - 1])
def test_varuint_round_trip_and_matches_pycrdt(value):
    data = encode_varuint(value)
    assert read_varuint(data) == (value, len(data))
    if value < 2**53:
        assert data == write_var_uint(value)


def test_varuint_limits():
    with pytest.raises(FrameError, match="truncated"):
        read_varuint(b"\x80")
    with pytest.raises(FrameError, match="64 bits"):
        read_varuint(b"\xff" * 10 + b"\x01")
    with pytest.raises(ValueError):
        encode_varuint(-1)


def test_sync_step1_from_pycrdt_decodes_and_step2_round_trips():
    doc = Doc()
    doc.get("contents", type=Text).insert(0, "hello")
    (message,) = decode_frame(create_sync_message(doc))
    assert message == SyncStep1(doc.get_state())
    update = doc.get_update()
    assert encode(SyncStep2(update))[:2] == bytes([Tag.SYNC, 1])
    assert decode_frame(encode(SyncStep2(update))) == [SyncStep2(update)]
    assert decode_frame(create_update_message(b"\x01\x02")) == [SyncUpdate(b"\x01\x02")]


def test_silent_reader_answer_is_an_empty_step2():
    # The server treats a zero-length step 2 as a no-op, even for read-only tokens.
    assert encode(SyncStep2()) == b"\x00\x01\x00"


def test_subscribe_and_query_layouts():
    assert encode(EventSubscribe(("document.updated",))) == (
        b"\x05\x01\x10document.updated")
    guid = f"{RELAY}-{DOC}"
    frame = encode(QuerySubdocs((guid,)))
    assert frame == b"\x07\x01" + bytes([len(guid)]) + guid.encode()
    assert decode_frame(frame) == [QuerySubdocs((guid,))]
    with pytest.raises(ValueError):
        encode(QuerySubdocs(()))
    with pytest.raises(ValueError):
        encode(QuerySubdocs(tuple(str(i) for i in range(101))))


def test_batches_of_at_most_100():
    guids = [str(i) for i in range(250)]
    parts = list(yframes.batches(guids))
    assert [len(p) for p in parts] == [100, 100, 50]
    assert [g for p in parts for g in p] == guids
    assert list(yframes.batches([])) == []


def test_event_as_the_server_encodes_it():
    # The server's serializer writes the update byte vector as an array of integers.
    body = cbor2.dumps({
        "event_id": "evt_abc", "event_type": "document.updated", "doc_id": f"{RELAY}-{DOC}",
        "timestamp": 1640995200000, "user": "alice",
        "metadata": {"channel": f"{RELAY}-{FOLDER}"}, "update": [0, 0],
    })
    (event,) = decode_frame(b"\x04" + encode_varuint(len(body)) + body)
    assert event == Event(event_type="document.updated", doc_id=f"{RELAY}-{DOC}",
                          event_id="evt_abc", timestamp=1640995200000, user="alice",
                          metadata={"channel": f"{RELAY}-{FOLDER}"}, update=b"\x00\x00")
    assert event.channel == f"{RELAY}-{FOLDER}"
    assert decode_frame(encode(event)) == [event]


def test_minimal_event_and_bytes_update():
    body = cbor2.dumps({"event_type": "document.updated", "doc_id": "x", "update": b"\x01"})
    (event,) = decode_frame(b"\x04" + encode_varuint(len(body)) + body)
    assert (event.event_id, event.timestamp, event.user, event.metadata, event.update) == (
        "", 0, None, None, b"\x01")
    assert event.channel is None


@pytest.mark.parametrize("body", [
    [1, 2],
    {"doc_id": "x"},
    {"event_type": "document.updated", "doc_id": 5},
    {"event_type": "document.updated", "doc_id": "x", "timestamp": -1},
    {"event_type": "document.updated", "doc_id": "x", "timestamp": True},
    {"event_type": "document.updated", "doc_id": "x", "update": [256]},
    {"event_type": "document.updated", "doc_id": "x", "metadata": "channel"},
    {"event_type": "document.updated", "doc_id": "x", "user": 3},
])
def test_malformed_events_raise_frame_error(body):
    raw = cbor2.dumps(body)
    with pytest.raises(FrameError):
        decode_frame(b"\x04" + encode_varuint(len(raw)) + raw)


def test_heads_answer_from_the_server_layout():
    # The server's test vector for an empty answer: CBOR {"data": {}}.
    assert decode_frame(b"\x08\x07" + bytes([0xA1, 0x64]) + b"data" + b"\xa0") == [Subdocs({})]
    body = cbor2.dumps({"data": {"g1": {"snapshot": b"\x01\x02", "last_seen": 123},
                                 "g2": {"snapshot": [5, 6], "last_seen": 456}}})
    (answer,) = decode_frame(b"\x08" + encode_varuint(len(body)) + body)
    assert answer.heads == {"g1": Head(b"\x01\x02", 123), "g2": Head(b"\x05\x06", 456)}
    assert decode_frame(encode(answer)) == [answer]


@pytest.mark.parametrize("body", [
    {"nodata": {}},
    {"data": []},
    {"data": {"g": {"last_seen": 1}}},
    {"data": {"g": {"snapshot": b"", "last_seen": "x"}}},
    {"data": {1: {"snapshot": b""}}},
])
def test_malformed_heads_answers(body):
    raw = cbor2.dumps(body)
    with pytest.raises(FrameError):
        decode_frame(b"\x08" + encode_varuint(len(raw)) + raw)


def test_unknown_tags_and_sync_types_are_kept_opaque():
    assert decode_frame(b"\x66\x03abc") == [Unknown(0x66, b"\x03abc")]
    assert decode_frame(b"\x00\x07\x01") == [Unknown(0, b"\x07\x01")]
    assert decode_frame(encode(Unknown(200, b"xyz"))) == [Unknown(200, b"xyz")]


def test_other_messages_round_trip():
    for message in [Awareness(b"\x00"), Auth(None), Auth("no"), QueryAwareness(),
                    yframes.EventUnsubscribe(("a", "b"))]:
        assert decode_frame(encode(message)) == [message]
    # Two messages in one frame (allowed by the framing; the server sends one per frame).
    assert decode_frame(encode(SyncStep1(b"\x00")) + encode(Awareness(b"\x00"))) == [
        SyncStep1(b"\x00"), Awareness(b"\x00")]


@pytest.mark.parametrize("data", [b"", b"\x04", b"\x04\x05ab", b"\x07\x00", b"\x07\x65",
                                  b"\x02\x00\x02\xff\xfe", b"\x04\x01\xff"])
def test_truncated_or_malformed_frames(data):
    with pytest.raises(FrameError):
        decode_frame(data)


def test_snapshot_decoding_matches_pycrdt_and_ignores_client_order():
    doc = Doc()
    text = doc.get("contents", type=Text)
    text.insert(0, "hello world")
    before = Snapshot.from_doc(doc).encode()
    del text[0:6]
    after = Snapshot.from_doc(doc).encode()
    snap = decode_snapshot(after)
    assert snap.state_vector == {doc.client_id: 11}
    assert snap.delete_set == {doc.client_id: ((0, 6),)}
    assert not same_head(before, after)  # a pure deletion leaves the state vector alone
    assert same_head(after, Snapshot.from_doc(doc).encode())
    # Same state, clients listed in another order, ranges split: still the same head.
    a = b"\x02" + b"\x01\x01\x00\x02" + b"\x02\x01\x00\x01" + b"\x02" + b"\x01\x05\x02\x07"
    b = b"\x02" + b"\x02\x01\x00\x01" + b"\x01\x02\x00\x01\x01\x01" + b"\x02" + b"\x02\x07\x01\x05"
    assert same_head(a, b)
    assert not same_head(a, b"\xff")
    with pytest.raises(FrameError):
        decode_snapshot(b"\x00\x00\x00")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_frame_error(data):
    try:
        decode_frame(data)
    except FrameError:
        pass


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=12) | st.sampled_from(
        ["data", "snapshot", "last_seen", "doc_id", "event_type", "update", "metadata",
         "timestamp", "user", "event_id"]), inner, max_size=6),
    max_leaves=20,
)


byte_lists = st.lists(st.integers(min_value=-3, max_value=300), max_size=6)
event_bodies = st.fixed_dictionaries(
    {"event_type": st.text(max_size=8), "doc_id": st.text(max_size=8)},
    optional={"event_id": st.text(max_size=4) | cbor_values,
              "timestamp": st.integers(min_value=-2, max_value=2**65) | cbor_values,
              "user": st.none() | st.text(max_size=4) | cbor_values,
              "metadata": st.dictionaries(st.text(max_size=4), cbor_values) | cbor_values,
              "update": byte_lists | cbor_values},
)
subdocs_bodies = st.fixed_dictionaries({"data": st.dictionaries(
    st.text(max_size=8) | st.integers(),
    st.fixed_dictionaries({}, optional={
        "snapshot": byte_lists | st.binary(max_size=8) | cbor_values,
        "last_seen": st.integers(min_value=-2, max_value=2**65) | cbor_values,
    }) | cbor_values,
    max_size=4,
) | cbor_values})


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from([Tag.EVENT, Tag.SUBDOCS]),
       event_bodies | subdocs_bodies | cbor_values | st.binary(max_size=60))
def test_arbitrary_cbor_bodies_raise_only_frame_error(tag, body):
    raw = body if isinstance(body, bytes) else cbor2.dumps(body)
    try:
        decode_frame(encode_varuint(tag) + encode_varuint(len(raw)) + raw)
    except FrameError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=200))
def test_same_head_never_raises(a, b):
    assert same_head(a, b) in (True, False)
    if a == b:
        assert same_head(a, b)
