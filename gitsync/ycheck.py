"""Check the structure and nesting depth of a Yjs v1 update before pycrdt decodes it.

Why: pycrdt (Rust yrs underneath) decodes and converts nested values by recursion on the
native stack. A 40 KB update holding a 20,000-deep JSON array kills the interpreter with
SIGSEGV when the value is read (pycrdt 0.14: item access or ``to_py``); from about
30,000 levels (60 KB) already inside ``apply_update``. No exception can be caught there,
so such bytes must never reach pycrdt. Nested Y types (a Y.Map in a Y.Map in ...) do not
crash, but ``to_py`` raises ``RecursionError`` beyond ~1,000 levels. :func:`check_update`
finds both on the encoded bytes, without recursion and without pycrdt.

Depth counts containers along one path from a root type: the root type is level 1, each
nested Y type, JSON array or JSON object one more (``filemeta_v0`` -> entry object is 2;
canvas ``nodes`` -> node -> ``styleAttributes`` -> list is 4). :data:`MAX_DEPTH` (64) is
far beyond what the Relay plugin writes and far below where pycrdt breaks.

How: the update is parsed as yrs parses a v1 update: per client a run of structs (GC,
skip, or item: info byte, origins, or parent and parent key, then content ref 1..9);
the delete set that follows holds only ids and lengths and is left to yrs. String and
binary payloads are skipped by their length prefix, so the cost is per struct and per
value token, not per byte: a 1 MB note pasted at once is one struct. ``Any`` values
(content ref 8, and the options of a sub-document, ref 9) are walked with an explicit
stack; JSON texts (legacy refs 2, 5, 6) are measured by their brackets outside string
literals. The depth of a path is at most 1 + the Y types on it + the deepest value, and
at most one of those types hangs off a root by name, so with few nested Y types (the
common case: none, or one Y.Map per folder entry) no parent needs resolving. Only when
that bound exceeds the limit is a second pass made that resolves each item's parent,
named (a root, or the id of a Y type item) or inherited from the item at its left or
right origin, looked up by clock (strings count UTF-16 units, as in yrs); a cycle of
such references is rejected.

A cheaper bound was tried and dropped: every level needs its own byte in the update (an
info byte with low nibble 7 for a Y type, tag 117/118 for an array/object, ``[``/``{``
in JSON), so counting those bytes bounds the depth at C speed. But ``g``, ``w``, ``u``,
``v``, ``7`` are among them, so any note over ~1 KB fails the count, and counting cost
more than the walk it could save.

The walk is strict, so anything that reaches pycrdt is framed here as yrs frames it: a
truncated update, an unknown content, type or value tag, a length or count that
overflows the field yrs reads it into (yrs would wrap it) or exceeds the bytes left is
rejected. Every loop step consumes at least one byte and nothing recurses, so the work
is linear in the input and always ends. Trailing bytes after the structs are ignored,
as yrs ignores what follows the delete set.

Pure: no I/O, no pycrdt.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field

__all__ = ["MAX_DEPTH", "UpdateRejected", "check_update"]

MAX_DEPTH = 64
"""Deepest nesting accepted (root type = 1), far beyond what the Relay plugin writes."""

_U32 = 1 << 32
_U64 = 1 << 64

# Struct and content refs of the v1 encoding as yrs reads them (info byte, low 4 bits).
_GC = 0
_SKIP = 10
_HAS_ORIGIN = 0x80
_HAS_RIGHT_ORIGIN = 0x40
_HAS_PARENT_SUB = 0x20
_DELETED, _JSON, _BINARY, _STRING, _EMBED, _FORMAT, _TYPE, _ANY, _DOC = range(1, 10)
_TYPE_XML_ELEMENT = 3
_TYPE_REFS = frozenset({0, 1, 2, 3, 4, 5, 6, 9, 15})  # 7 (weak link) is not built into pycrdt

# lib0 Any tags, by what follows them: a fixed-size payload (its size), or one of these.
_TAG_STRING, _TAG_VARINT, _TAG_ARRAY, _TAG_OBJECT, _TAG_UNKNOWN = -1, -2, -3, -4, -5
_TAG_KIND = tuple(
    {127: 0, 126: 0, 121: 0, 120: 0, 124: 4, 123: 8, 122: 8, 119: _TAG_STRING, 116: _TAG_STRING,
     125: _TAG_VARINT, 117: _TAG_ARRAY, 118: _TAG_OBJECT}.get(tag, _TAG_UNKNOWN)
    for tag in range(256)
)

# A lib0 varint is at most 11 bytes for yrs (it gives up after 70 bits of continuation).
_VARINT = re.compile(rb"[\x80-\xff]{0,10}[\x00-\x7f]")
_VARINTS = {n: re.compile(rb"(?:[\x80-\xff]{0,10}[\x00-\x7f]){%d}" % n) for n in (1, 2)}
_OVERLONG = re.compile(rb"[\x80-\xff]{11}")
_JSON_TOKENS = re.compile(rb'[\\"\[\]{}]')

_ROOT = -1  # parent is a root type (or unknown: counted as the root, which over-estimates)
_ROOT_SPEC = (0, 0, 0)  # parent spec of an item that names a root as its parent


class UpdateRejected(ValueError):
    """The bytes are not a well-formed Yjs v1 update, or nest deeper than allowed."""


def check_update(data: bytes, *, max_depth: int = MAX_DEPTH) -> None:
    """Reject ``data`` unless it is a well-framed v1 update nested at most ``max_depth`` deep.

    Args:
        data: The encoded update (as served by the Relay Server).
        max_depth: Deepest nesting accepted; the root type counts as level 1.

    Raises:
        UpdateRejected: the structure is broken (truncated, unknown refs, overflowing
            varints) or a value is nested deeper than ``max_depth``. Nothing else is
            raised, whatever the bytes.
    """
    try:
        chain, value_depth = _walk(data, max_depth, None)
        depth = 1 + value_depth
        if chain and depth + chain > max_depth:
            blocks = _Blocks()
            _walk(data, max_depth, blocks)
            depth = blocks.deepest(max_depth)
    except IndexError:
        raise UpdateRejected("truncated update") from None
    except UnicodeDecodeError:
        raise UpdateRejected("string is not valid UTF-8") from None
    if depth > max_depth:
        raise _too_deep(max_depth)


def _too_deep(max_depth: int) -> UpdateRejected:
    return UpdateRejected(f"a value is nested deeper than {max_depth} levels")


def _bad_varint(data: bytes, pos: int) -> UpdateRejected:
    """Why no varint (or not enough of them) could be read at ``pos``."""
    if _OVERLONG.search(data, pos, pos + 32):
        return UpdateRejected("varint too long")
    return UpdateRejected("truncated update")


def _var(data: bytes, pos: int, limit: int = _U32) -> tuple[int, int]:
    """Read a lib0 varint at ``pos``: (value, next position).

    A value at or above ``limit`` (the width of the field yrs reads it into) is
    rejected: yrs would wrap it and frame the rest of the update differently.
    """
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    # Unrolled for the common sizes (clocks: 2-3 bytes, client ids: 5 bytes).
    value = byte & 0x7F
    byte = data[pos + 1]
    if byte < 0x80:
        return value | byte << 7, pos + 2
    value |= (byte & 0x7F) << 7
    byte = data[pos + 2]
    if byte < 0x80:
        return value | byte << 14, pos + 3
    value |= (byte & 0x7F) << 14
    byte = data[pos + 3]
    if byte < 0x80:
        return value | byte << 21, pos + 4
    value |= (byte & 0x7F) << 21
    byte = data[pos + 4]
    if byte < 0x80:
        value |= byte << 28
        if value >= limit:
            raise UpdateRejected("varint out of range")
        return value, pos + 5
    match = _VARINT.match(data, pos)
    if match is None:
        raise _bad_varint(data, pos)
    end = match.end()
    value = 0
    for shift, byte in enumerate(data[pos:end]):
        value |= (byte & 0x7F) << (7 * shift)
    if value >= limit:
        raise UpdateRejected("varint out of range")
    return value, end


def _skip_vars(data: bytes, pos: int, count: int) -> int:
    match = _VARINTS[count].match(data, pos)
    if match is None:
        raise _bad_varint(data, pos)
    return match.end()


def _skip_id(data: bytes, pos: int, client: bytes) -> int:
    """Skip an id (client, clock) unread; ``client`` is the likely client, encoded."""
    if data.startswith(client, pos):  # a varint ends at its only byte below 0x80
        pos += len(client)
        if data[pos] < 0x80:
            return pos + 1
        if data[pos + 1] < 0x80:
            return pos + 2
        if data[pos + 2] < 0x80:
            return pos + 3
        return _skip_vars(data, pos, 1)
    return _skip_vars(data, pos, 2)


def _skip_string(data: bytes, pos: int) -> int:
    size, pos = _var(data, pos)
    pos += size
    if pos > len(data):
        raise UpdateRejected("truncated update")
    return pos


@dataclass
class _Blocks:
    """What the resolving pass records: every block that holds clocks, in order."""

    starts: dict[int, list[int]] = field(default_factory=dict)  # client -> start clocks
    indexes: dict[int, list[int]] = field(default_factory=dict)  # client -> block indexes
    parents: list[tuple[int, int, int] | None] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)  # value depth inside the block
    is_type: list[bool] = field(default_factory=list)

    def add(self, starts: list[int], indexes: list[int], clock: int, length: int,
            parent: tuple[int, int, int] | None, depth: int, is_type: bool) -> None:
        """Record a block of the current client's run (``starts``/``indexes``)."""
        if clock + length >= _U32:
            raise UpdateRejected("clock out of range")
        starts.append(clock)
        indexes.append(len(self.parents))
        self.parents.append(parent)
        self.ends.append(clock + length)
        self.depths.append(depth)
        self.is_type.append(is_type)

    def find(self, client: int, clock: int) -> int | None:
        """Index of the block of ``client`` whose clock range holds ``clock``, if any."""
        starts = self.starts.get(client)
        if not starts:
            return None
        at = bisect_right(starts, clock) - 1
        if at < 0:
            return None
        index = self.indexes[client][at]
        return index if clock < self.ends[index] else None

    def deepest(self, max_depth: int) -> int:
        """Deepest path once every item's parent type is known.

        A parent spec is ``(0, 0, 0)`` for a root, ``(1, client, clock)`` for a parent
        named by id, ``(2, ...)`` / ``(3, ...)`` for one inherited from the item at the
        left / right origin; GC and skip blocks have none.
        """
        parents = self.parents
        is_type = self.is_type
        total = len(parents)
        # parent_of[i]: index of the Y type item that is block i's parent, or _ROOT.
        parent_of: list[int | None] = [None] * total
        depths = self.depths
        for first in range(total):
            if parent_of[first] is not None or not (is_type[first] or depths[first]):
                continue  # only Y types and values can make a path deeper
            chain: list[int] = []
            on_chain: set[int] = set()
            block = first
            while True:
                chain.append(block)
                on_chain.add(block)
                spec = parents[block]
                if spec is None or spec[0] == 0:
                    found = _ROOT
                    break
                target = self.find(spec[1], spec[2])
                if spec[0] == 1:  # named by id: that item must hold a Y type
                    found = target if target is not None and is_type[target] else _ROOT
                    break
                if target is None:
                    found = _ROOT
                    break
                known = parent_of[target]
                if known is not None:
                    found = known
                    break
                if target in on_chain:
                    raise UpdateRejected("items inherit their parent in a cycle")
                block = target  # inherited from an origin: that item's parent
            for index in chain:
                parent_of[index] = found

        # level_of[t]: level of the Y type held by item t (a root type is level 1).
        level_of: dict[int, int] = {}
        deepest = 1
        for block in range(total):
            if not is_type[block] and not depths[block]:
                continue
            path: list[int] = []
            node = parent_of[block]
            while node != _ROOT and node not in level_of:
                if len(path) > total:
                    raise UpdateRejected("Y types nest in a cycle")
                path.append(node)
                node = parent_of[node]
            level = 1 if node == _ROOT else level_of[node]
            for node in reversed(path):
                level += 1
                level_of[node] = level
            level += 1 if is_type[block] else depths[block]
            if is_type[block]:
                level_of[block] = level
            deepest = max(deepest, level)
            if deepest > max_depth:
                break
        return deepest


def _walk(data: bytes, max_depth: int, blocks: _Blocks | None) -> tuple[int, int]:
    """Parse the structs of an update as yrs does: (longest possible Y type chain, deepest value).

    The chain bound: only one Y type on a path hangs directly off a root (the one at
    level 2), so a path holds at most one type whose item names a root as its parent
    plus every type whose item does not.

    With ``blocks``, also record every block's clock range and parent for
    :meth:`_Blocks.deepest`; without, ids are skipped unread (the fast pass).
    The delete set that follows holds only ids and lengths, nothing that nests, and is
    left to yrs.
    """
    end = len(data)
    record = blocks is not None
    types = 0
    nested_types = 0  # Y type items whose parent is not named as a root
    value_depth = 0
    clients, pos = _var(data, 0)
    if clients > end:
        raise UpdateRejected("more clients than bytes")
    for _ in range(clients):
        count, pos = _var(data, pos)
        if count > end - pos:
            raise UpdateRejected("more structs than bytes")
        client = clock = 0
        run_start = pos
        run_client = b""
        run_client_size = 0
        if record:
            client, pos = _var(data, pos, _U64)
            if client in blocks.starts:  # yrs would append to the first run: refuse
                raise UpdateRejected("a client is listed twice")
            clock, pos = _var(data, pos)
        else:
            pos = _skip_vars(data, pos, 1)
            run_client = data[run_start:pos]  # origins mostly name the run's own client
            run_client_size = len(run_client)
            pos = _skip_vars(data, pos, 1)
        starts: list[int] = []
        indexes: list[int] = []
        for _ in range(count):
            info = data[pos]
            pos += 1
            parent: tuple[int, int, int] | None = None
            # ---- header: origins (the parent is inherited), or GC/skip, or the parent
            if info & 0xC0:
                if record:
                    if info & _HAS_ORIGIN:
                        origin_client, pos = _var(data, pos, _U64)
                        origin_clock, pos = _var(data, pos)
                        parent = (2, origin_client, origin_clock)
                    if info & _HAS_RIGHT_ORIGIN:
                        right_client, pos = _var(data, pos, _U64)
                        right_clock, pos = _var(data, pos)
                        if parent is None:
                            parent = (3, right_client, right_clock)
                else:  # _skip_id inlined: this is the path of every typed character run
                    if data.startswith(run_client, pos):
                        pos += run_client_size
                        if data[pos] < 0x80:
                            pos += 1
                        elif data[pos + 1] < 0x80:
                            pos += 2
                        else:
                            pos = _skip_vars(data, pos, 1)
                    else:
                        pos = _skip_vars(data, pos, 2)
                    if info & 0xC0 == 0xC0:
                        pos = _skip_id(data, pos, run_client)
            elif info == _GC or info == _SKIP:
                length, pos = _var(data, pos)
                if record and length:
                    blocks.add(starts, indexes, clock, length, None, 0, False)
                clock += length
                continue
            else:
                kind, pos = _var(data, pos)
                if kind == 1:  # a root, by name
                    size = data[pos]
                    if size < 0x80:
                        pos += size + 1
                    else:
                        pos = _skip_string(data, pos)
                    parent = _ROOT_SPEC
                elif record:
                    parent_client, pos = _var(data, pos, _U64)
                    parent_clock, pos = _var(data, pos)
                    parent = (1, parent_client, parent_clock)
                else:
                    pos = _skip_id(data, pos, run_client)
                if info & _HAS_PARENT_SUB:  # the map key
                    size = data[pos]
                    if size < 0x80:
                        pos += size + 1
                    else:
                        pos = _skip_string(data, pos)
            # ---- content: its clock length, and how deep a value it holds
            ref = info & 0x0F
            depth = 0
            if ref == _STRING:  # the bulk of a text: only its length is read
                size = data[pos]
                if size < 0x80:
                    pos += 1
                else:
                    size, pos = _var(data, pos)
                pos += size
                if pos > end:
                    raise UpdateRejected("truncated update")
                if not record:
                    continue
                length = size  # clocks count UTF-16 units, as in yrs
                if size > 1:
                    length = len(data[pos - size : pos].decode("utf-8").encode("utf-16-le")) // 2
            elif ref == _DELETED:
                length, pos = _var(data, pos)
            elif ref == _ANY:
                length, pos = _var(data, pos)
                if length > end - pos:
                    raise UpdateRejected("more values than bytes")
                for _ in range(length):
                    value, pos = _any_value(data, pos, max_depth)
                    if value > depth:
                        depth = value
            elif ref == _TYPE:
                type_ref = data[pos]
                pos += 1
                if type_ref not in _TYPE_REFS:
                    raise UpdateRejected(f"unknown type ref {type_ref}")
                if type_ref == _TYPE_XML_ELEMENT:
                    pos = _skip_string(data, pos)
                types += 1
                if parent is not _ROOT_SPEC:
                    nested_types += 1
                length = 1
            elif ref == _BINARY:
                pos = _skip_string(data, pos)
                length = 1
            elif ref == _JSON:
                count_json, pos = _var(data, pos)
                if count_json >= min(1 << 31, end - pos):
                    raise UpdateRejected("more JSON values than bytes")
                # yrs 0.28 (pycrdt 0.14) reads count + 1 strings; a test pins this framing.
                length = count_json + 1
                for _ in range(length):
                    value, pos = _json_text(data, pos, max_depth)
                    if value > depth:
                        depth = value
            elif ref == _EMBED:
                depth, pos = _json_text(data, pos, max_depth)
                length = 1
            elif ref == _FORMAT:
                pos = _skip_string(data, pos)
                depth, pos = _json_text(data, pos, max_depth)
                length = 1
            elif ref == _DOC:
                pos = _skip_string(data, pos)
                depth, pos = _any_value(data, pos, max_depth)
                length = 1
            else:
                raise UpdateRejected(f"unknown content ref {ref}")
            if pos > end:
                raise UpdateRejected("truncated update")
            if depth > value_depth:
                value_depth = depth
                if 1 + depth > max_depth:
                    raise _too_deep(max_depth)
            if record and length:  # yrs drops empty items without advancing the clock
                blocks.add(starts, indexes, clock, length, parent, depth, ref == _TYPE)
                clock += length
        if record:
            blocks.starts[client] = starts
            blocks.indexes[client] = indexes
    return min(types, 1 + nested_types), value_depth


def _any_value(data: bytes, pos: int, max_depth: int) -> tuple[int, int]:
    """Skip one lib0 Any value: (container depth, 0 for a scalar; next position)."""
    kinds = _TAG_KIND
    counts: list[int] = []  # entries left in each open container
    objects: list[bool] = []  # whether that container is an object (key before each value)
    in_object = False
    deepest = 0
    while True:
        if in_object:  # the key of the next entry
            size = data[pos]
            if size < 0x80:
                pos += size + 1
            else:
                size, pos = _var(data, pos)
                pos += size
        tag = data[pos]
        pos += 1
        kind = kinds[tag]
        if kind >= 0:  # fixed-size scalar
            pos += kind
        elif kind == _TAG_STRING:
            size = data[pos]
            if size < 0x80:
                pos += size + 1
            else:
                size, pos = _var(data, pos)
                pos += size
        elif kind == _TAG_VARINT:
            match = _VARINT.match(data, pos)
            if match is None:
                raise _bad_varint(data, pos)
            pos = match.end()
        elif kind == _TAG_ARRAY or kind == _TAG_OBJECT:
            count, pos = _var(data, pos, _U64)
            if count > len(data) - pos:
                raise UpdateRejected("more values than bytes")
            if len(counts) >= deepest:
                deepest = len(counts) + 1
                if deepest >= max_depth:
                    raise _too_deep(max_depth)
            if count:
                counts.append(count)
                in_object = kind == _TAG_OBJECT
                objects.append(in_object)
                continue
        else:
            raise UpdateRejected(f"unknown value tag {tag}")
        # One value done: close every container it completed.
        while counts:
            left = counts[-1] - 1
            if left:
                counts[-1] = left
                break
            counts.pop()
            objects.pop()
        if not counts:
            if pos > len(data):
                raise UpdateRejected("truncated update")
            return deepest, pos
        in_object = objects[-1]


def _json_text(data: bytes, pos: int, max_depth: int) -> tuple[int, int]:
    """Skip a JSON string: (how deep its arrays and objects nest, next position)."""
    start = _var(data, pos)[1]
    pos = _skip_string(data, pos)
    raw = data[start:pos]
    if raw.count(b"[") + raw.count(b"{") == 0:
        return 0, pos
    depth = deepest = 0
    in_string = False
    escaped_at = -1
    for match in _JSON_TOKENS.finditer(raw):
        at = match.start()
        if at == escaped_at:
            continue
        token = raw[at]
        if in_string:
            if token == 0x5C:  # backslash: the next character is escaped
                escaped_at = at + 1
            elif token == 0x22:
                in_string = False
        elif token == 0x22:
            in_string = True
        elif token == 0x5B or token == 0x7B:
            depth += 1
            if depth > deepest:
                deepest = depth
                if depth >= max_depth:
                    raise _too_deep(max_depth)
        elif token == 0x5D or token == 0x7D:
            depth = max(depth - 1, 0)
    return deepest, pos
