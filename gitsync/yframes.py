"""Frames of the Relay Server's document websocket, encoded and decoded (pure).

The Relay Server speaks y-sync framing on ``/d/{id}/ws/{id}``: every websocket binary
message starts with a lib0 varuint message tag, followed by that tag's payload
(docs/relay-protocol.md lists them). This module turns bytes into typed messages and
back, and nothing else: no sockets, no clocks, no logging.

Decoding is defensive because the bytes come from the network. :func:`decode_frame`
raises :class:`FrameError` and only that, whatever the input; a tag it does not know
becomes an :class:`Unknown` message the caller may ignore (newer servers may add tags).

lib0 encodings used here:

- varuint: 7 bits per byte, least significant group first, high bit = "more follows";
- varbytes: varuint length, then that many bytes;
- varstring: varbytes holding UTF-8.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import cbor2

__all__ = [
    "MAX_GUIDS_PER_QUERY",
    "Auth",
    "Awareness",
    "Event",
    "EventSubscribe",
    "EventUnsubscribe",
    "FrameError",
    "Head",
    "Message",
    "QueryAwareness",
    "QuerySubdocs",
    "Snapshot",
    "Subdocs",
    "SyncStep1",
    "SyncStep2",
    "SyncUpdate",
    "Tag",
    "Unknown",
    "batches",
    "decode_frame",
    "decode_snapshot",
    "encode",
    "encode_varuint",
    "read_varuint",
    "same_head",
]

MAX_GUIDS_PER_QUERY = 100  # the server refuses a heads query naming more (or none)
_MAX_VARUINT_BITS = 64
DOCUMENT_UPDATED = "document.updated"


class FrameError(ValueError):
    """The bytes are not a well-formed frame (truncated, overlong, wrong types)."""


class Tag(IntEnum):
    """Message tags of the Relay Server's websocket."""

    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    EVENT = 4
    EVENT_SUBSCRIBE = 5
    EVENT_UNSUBSCRIBE = 6
    QUERY_SUBDOCS = 7
    SUBDOCS = 8


class _SyncStep(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


# -- messages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncStep1:
    """The sender's state vector (lib0 v1 encoding); answer it with :class:`SyncStep2`."""

    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    """A Yjs v1 update with what the other side lacks (empty bytes: nothing)."""

    update: bytes = b""


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """A live Yjs v1 update of the socket's own document."""

    update: bytes


@dataclass(frozen=True, slots=True)
class Awareness:
    """An awareness update (presence of editors); kept opaque."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Auth:
    """Permission answer: ``denied`` holds the reason, or None when granted."""

    denied: str | None


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """A request for the current awareness state."""


@dataclass(frozen=True, slots=True)
class Event:
    """One ``EVENT`` message: a document changed.

    Attributes:
        event_type: e.g. ``document.updated``.
        doc_id: the compound id ``<relay>-<doc>`` of the document that changed.
        event_id: ``evt_...`` (empty when the server sent none).
        timestamp: milliseconds since the epoch (0 when absent).
        user: identity of whoever first loaded the document (a hint, not the editor).
        metadata: the document's metadata, e.g. ``{"channel": "<relay>-<folder>"}``.
        update: the Yjs v1 update bytes of the change, when the server sent them.
    """

    event_type: str
    doc_id: str
    event_id: str = ""
    timestamp: int = 0
    user: str | None = None
    metadata: Mapping[str, Any] | None = None
    update: bytes | None = None

    @property
    def channel(self) -> str | None:
        """The routing channel named in the metadata, if any."""
        value = (self.metadata or {}).get("channel")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class EventSubscribe:
    event_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventUnsubscribe:
    event_types: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QuerySubdocs:
    """Ask for the heads of 1 to 100 documents (``<relay>-<doc>`` ids)."""

    guids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Head:
    """A document's head as the server reports it.

    Attributes:
        snapshot: Yjs encoded snapshot (delete set, then state vector).
        last_seen: milliseconds since the epoch of the document's last change.
    """

    snapshot: bytes
    last_seen: int = 0


@dataclass(frozen=True, slots=True)
class Subdocs:
    """Answer to :class:`QuerySubdocs`: guid -> head, for the guids the server knows."""

    heads: Mapping[str, Head] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message whose tag (or sync sub-type) this client does not know; ignore it."""

    tag: int
    payload: bytes


Message = (SyncStep1 | SyncStep2 | SyncUpdate | Awareness | Auth | QueryAwareness | Event
           | EventSubscribe | EventUnsubscribe | QuerySubdocs | Subdocs | Unknown)


# -- lib0 primitives ------------------------------------------------------------------


def encode_varuint(value: int) -> bytes:
    """lib0 varuint of a non-negative integer."""
    if value < 0:
        raise ValueError("varuint must be >= 0")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varuint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """Read a varuint at ``pos``; returns ``(value, next position)``.

    Raises:
        FrameError: truncated, or wider than 64 bits.
    """
    value = shift = 0
    while True:
        if pos >= len(data):
            raise FrameError("truncated varuint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= _MAX_VARUINT_BITS:
            raise FrameError("varuint wider than 64 bits")
    if value >> _MAX_VARUINT_BITS:
        raise FrameError("varuint wider than 64 bits")
    return value, pos


def _varbytes(data: bytes) -> bytes:
    return encode_varuint(len(data)) + bytes(data)


def _varstring(text: str) -> bytes:
    return _varbytes(text.encode("utf-8"))


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)

    def varuint(self) -> int:
        value, self.pos = read_varuint(self.data, self.pos)
        return value

    def varbytes(self) -> bytes:
        length = self.varuint()
        end = self.pos + length
        if end > len(self.data):
            raise FrameError(f"length {length} runs past the end of the frame")
        chunk = self.data[self.pos:end]
        self.pos = end
        return bytes(chunk)

    def varstring(self) -> str:
        raw = self.varbytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("string is not valid UTF-8") from None

    def rest(self) -> bytes:
        chunk = bytes(self.data[self.pos:])
        self.pos = len(self.data)
        return chunk


# -- encoding -------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """The frame bytes of one message.

    Raises:
        ValueError: a :class:`QuerySubdocs` with no guid or more than 100.
    """
    tag = encode_varuint
    if isinstance(message, SyncStep1):
        return tag(Tag.SYNC) + tag(_SyncStep.STEP1) + _varbytes(message.state_vector)
    if isinstance(message, SyncStep2):
        return tag(Tag.SYNC) + tag(_SyncStep.STEP2) + _varbytes(message.update)
    if isinstance(message, SyncUpdate):
        return tag(Tag.SYNC) + tag(_SyncStep.UPDATE) + _varbytes(message.update)
    if isinstance(message, Awareness):
        return tag(Tag.AWARENESS) + _varbytes(message.payload)
    if isinstance(message, Auth):
        if message.denied is None:
            return tag(Tag.AUTH) + tag(1)
        return tag(Tag.AUTH) + tag(0) + _varstring(message.denied)
    if isinstance(message, QueryAwareness):
        return tag(Tag.QUERY_AWARENESS)
    if isinstance(message, Event):
        return tag(Tag.EVENT) + _varbytes(_event_cbor(message))
    if isinstance(message, (EventSubscribe, EventUnsubscribe)):
        kind = Tag.EVENT_SUBSCRIBE if isinstance(message, EventSubscribe) else Tag.EVENT_UNSUBSCRIBE
        return tag(kind) + tag(len(message.event_types)) + b"".join(
            _varstring(t) for t in message.event_types)
    if isinstance(message, QuerySubdocs):
        if not 1 <= len(message.guids) <= MAX_GUIDS_PER_QUERY:
            raise ValueError(f"a heads query names 1 to {MAX_GUIDS_PER_QUERY} guids "
                             f"(got {len(message.guids)})")
        return tag(Tag.QUERY_SUBDOCS) + tag(len(message.guids)) + b"".join(
            _varstring(g) for g in message.guids)
    if isinstance(message, Subdocs):
        body = {"data": {guid: {"snapshot": head.snapshot, "last_seen": head.last_seen}
                         for guid, head in message.heads.items()}}
        return tag(Tag.SUBDOCS) + _varbytes(cbor2.dumps(body))
    if isinstance(message, Unknown):
        return tag(message.tag) + message.payload
    raise TypeError(f"not a message: {type(message).__name__}")


def _event_cbor(event: Event) -> bytes:
    """The CBOR map the server sends; ``update`` as an array of integers like it does."""
    body: dict[str, Any] = {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "doc_id": event.doc_id,
        "timestamp": event.timestamp,
    }
    if event.user is not None:
        body["user"] = event.user
    if event.metadata is not None:
        body["metadata"] = dict(event.metadata)
    if event.update is not None:
        body["update"] = list(event.update)
    return cbor2.dumps(body)


def batches(guids: Sequence[str], size: int = MAX_GUIDS_PER_QUERY) -> Iterator[tuple[str, ...]]:
    """Split ``guids`` into query-sized tuples (never an empty one)."""
    if not 1 <= size <= MAX_GUIDS_PER_QUERY:
        raise ValueError(f"batch size must be 1 to {MAX_GUIDS_PER_QUERY}")
    for start in range(0, len(guids), size):
        yield tuple(guids[start:start + size])


# -- decoding -------------------------------------------------------------------------


def decode_frame(data: bytes) -> list[Message]:
    """Decode every message of one websocket binary frame (usually exactly one).

    A message with an unknown tag takes the rest of the frame: its length is unknown.

    Raises:
        FrameError: empty, truncated or malformed; never anything else.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FrameError("a frame must be bytes")
    reader = _Reader(bytes(data))
    if reader.done:
        raise FrameError("empty frame")
    messages: list[Message] = []
    while not reader.done:
        messages.append(_decode_one(reader))
    return messages


def _decode_one(reader: _Reader) -> Message:
    tag = reader.varuint()
    if tag == Tag.SYNC:
        step = reader.varuint()
        if step == _SyncStep.STEP1:
            return SyncStep1(reader.varbytes())
        if step == _SyncStep.STEP2:
            return SyncStep2(reader.varbytes())
        if step == _SyncStep.UPDATE:
            return SyncUpdate(reader.varbytes())
        return Unknown(tag, encode_varuint(step) + reader.rest())
    if tag == Tag.AWARENESS:
        return Awareness(reader.varbytes())
    if tag == Tag.AUTH:
        granted = reader.varuint()
        return Auth(reader.varstring() if granted == 0 else None)
    if tag == Tag.QUERY_AWARENESS:
        return QueryAwareness()
    if tag == Tag.EVENT:
        return _decode_event(_cbor(reader.varbytes(), "event"))
    if tag in (Tag.EVENT_SUBSCRIBE, Tag.EVENT_UNSUBSCRIBE):
        types = tuple(_strings(reader, limit=1000))
        return EventSubscribe(types) if tag == Tag.EVENT_SUBSCRIBE else EventUnsubscribe(types)
    if tag == Tag.QUERY_SUBDOCS:
        count = reader.varuint()
        if not 1 <= count <= MAX_GUIDS_PER_QUERY:
            raise FrameError(f"heads query names {count} guids (1 to {MAX_GUIDS_PER_QUERY})")
        return QuerySubdocs(tuple(reader.varstring() for _ in range(count)))
    if tag == Tag.SUBDOCS:
        return _decode_subdocs(_cbor(reader.varbytes(), "heads answer"))
    return Unknown(tag, reader.rest())


def _strings(reader: _Reader, *, limit: int) -> Iterator[str]:
    count = reader.varuint()
    if count > limit:
        raise FrameError(f"list of {count} strings is longer than {limit}")
    for _ in range(count):
        yield reader.varstring()


def _cbor(raw: bytes, what: str) -> Any:
    try:
        return cbor2.loads(raw)
    except Exception as exc:  # noqa: BLE001 - third-party decoder, many failure types
        raise FrameError(f"{what} is not valid CBOR ({type(exc).__name__})") from None


def _decode_event(body: Any) -> Event:
    if not isinstance(body, dict):
        raise FrameError("event is not a CBOR map")
    event_type, doc_id = body.get("event_type"), body.get("doc_id")
    if not isinstance(event_type, str) or not isinstance(doc_id, str):
        raise FrameError("event lacks a string event_type and doc_id")
    event_id = body.get("event_id", "")
    timestamp = body.get("timestamp", 0)
    user = body.get("user")
    metadata = body.get("metadata")
    if not isinstance(event_id, str):
        raise FrameError("event_id is not a string")
    if not _is_int(timestamp) or timestamp < 0:
        raise FrameError("timestamp is not a non-negative integer")
    if user is not None and not isinstance(user, str):
        raise FrameError("user is not a string")
    if metadata is not None and not isinstance(metadata, dict):
        raise FrameError("metadata is not a map")
    return Event(event_type=event_type, doc_id=doc_id, event_id=event_id, timestamp=timestamp,
                 user=user, metadata=metadata, update=_bytes_field(body.get("update"), "update"))


def _decode_subdocs(body: Any) -> Subdocs:
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise FrameError("heads answer is not a map with a 'data' map")
    heads: dict[str, Head] = {}
    for guid, entry in body["data"].items():
        if not isinstance(guid, str) or not isinstance(entry, dict):
            raise FrameError("heads answer entry is not guid -> map")
        snapshot = _bytes_field(entry.get("snapshot"), "snapshot")
        last_seen = entry.get("last_seen", 0)
        if snapshot is None:
            raise FrameError(f"heads answer for {guid!r} has no snapshot")
        if not _is_int(last_seen) or last_seen < 0:
            raise FrameError(f"heads answer for {guid!r} has a bad last_seen")
        heads[guid] = Head(snapshot=snapshot, last_seen=last_seen)
    return Subdocs(heads)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bytes_field(value: Any, name: str) -> bytes | None:
    """Bytes given as a CBOR byte string or as an array of integers 0..255 (how the
    server's serializer writes a byte vector)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, list) and all(_is_int(b) and 0 <= b <= 255 for b in value):
        return bytes(value)
    raise FrameError(f"{name} is neither bytes nor a list of byte values")


# -- snapshots ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A decoded Yjs snapshot, in a canonical form that compares by content.

    Attributes:
        state_vector: client id -> next clock, clients with clock 0 dropped.
        delete_set: client id -> sorted, merged ``(clock, length)`` ranges.
    """

    state_vector: Mapping[int, int]
    delete_set: Mapping[int, tuple[tuple[int, int], ...]]


def decode_snapshot(data: bytes) -> Snapshot:
    """Decode a Yjs v1 snapshot (delete set, then state vector).

    The encoder iterates hash maps, so two encodings of one state may order clients
    differently; compare the decoded form, never the bytes.

    Raises:
        FrameError: malformed, or bytes left over.
    """
    reader = _Reader(bytes(data))
    delete_set: dict[int, list[tuple[int, int]]] = {}
    for _ in range(_bounded(reader.varuint(), reader)):
        client = reader.varuint()
        ranges = delete_set.setdefault(client, [])
        for _ in range(_bounded(reader.varuint(), reader)):
            clock, length = reader.varuint(), reader.varuint()
            if length:
                ranges.append((clock, length))
    state_vector: dict[int, int] = {}
    for _ in range(_bounded(reader.varuint(), reader)):
        client, clock = reader.varuint(), reader.varuint()
        if clock:
            state_vector[client] = clock
    if not reader.done:
        raise FrameError("bytes left after the snapshot's state vector")
    merged = {client: _merge(ranges) for client, ranges in delete_set.items() if ranges}
    return Snapshot(state_vector=state_vector, delete_set=merged)


def _bounded(count: int, reader: _Reader) -> int:
    # every counted item takes at least one byte: a larger count is a lie
    if count > len(reader.data) - reader.pos:
        raise FrameError(f"count {count} exceeds the bytes left")
    return count


def _merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for clock, length in sorted(ranges):
        if out and clock <= out[-1][0] + out[-1][1]:
            start, prev = out[-1]
            out[-1] = (start, max(prev, clock + length - start))
        else:
            out.append((clock, length))
    return tuple(out)


def same_head(a: bytes, b: bytes) -> bool:
    """True when two snapshots describe the same document state.

    Falls back to comparing bytes when either does not decode (an unknown encoding
    that is byte-identical is still the same head; anything else counts as changed).
    """
    if a == b:
        return True
    try:
        return decode_snapshot(a) == decode_snapshot(b)
    except FrameError:
        return False
