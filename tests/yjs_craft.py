"""Hand-built Yjs v1 updates (lib0 encoding) for tests: what no well-behaved client writes.

pycrdt cannot build a 20,000-deep value (it recurses too), so hostile documents are
encoded here byte by byte: a v1 update is, per client, a run of structs (info byte,
parent, parent key, content) followed by a delete set.
"""

from __future__ import annotations

import struct

ROOT = 1  # parent info: the parent is a root type named by a string
BY_ID = 0  # parent info: the parent is the Y type item with this id

CONTENT_JSON, CONTENT_STRING, CONTENT_EMBED, CONTENT_TYPE, CONTENT_ANY = 2, 4, 5, 7, 8
HAS_PARENT_SUB = 0x20
TYPE_MAP = 1


def varuint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def varstring(text: str | bytes) -> bytes:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return varuint(len(raw)) + raw


def any_value(value: object) -> bytes:
    """lib0 ``writeAny`` for plain values (numbers as float64, like a JS double)."""
    if value is None:
        return b"\x7e"
    if value is True:
        return b"\x78"
    if value is False:
        return b"\x79"
    if isinstance(value, int | float):
        return b"\x7b" + struct.pack(">d", float(value))
    if isinstance(value, str):
        return b"\x77" + varstring(value)
    if isinstance(value, list):
        return b"\x75" + varuint(len(value)) + b"".join(any_value(v) for v in value)
    if isinstance(value, dict):
        return b"\x76" + varuint(len(value)) + b"".join(
            varstring(k) + any_value(v) for k, v in value.items()
        )
    raise TypeError(type(value).__name__)


def deep_array(depth: int, leaf: bytes = b"\x7e") -> bytes:
    """``[[[...null...]]]``: ``depth`` nested one-element arrays as lib0 Any."""
    return b"\x75\x01" * depth + leaf


def deep_object(depth: int, leaf: bytes = b"\x7e") -> bytes:
    """``{"a":{"a":...null}}``: ``depth`` nested one-key objects as lib0 Any."""
    return b"\x76\x01\x01a" * depth + leaf


def object_with(fields: dict[str, object], key: str, raw_value: bytes) -> bytes:
    """An Any object holding ``fields`` plus ``key`` whose value is already encoded."""
    body = b"".join(varstring(k) + any_value(v) for k, v in fields.items())
    return b"\x76" + varuint(len(fields) + 1) + body + varstring(key) + raw_value


def map_entry(root: str, key: str, ref: int, content: bytes) -> bytes:
    """One item setting ``root[key]`` (a root Y.Map); ``content`` follows the ref."""
    return bytes([ref | HAS_PARENT_SUB]) + varuint(ROOT) + varstring(root) + varstring(key) + content


def any_entry(root: str, key: str, raw_value: bytes) -> bytes:
    return map_entry(root, key, CONTENT_ANY, varuint(1) + raw_value)


def json_entry(root: str, key: str, text: str) -> bytes:
    # yrs 0.28 reads one more JSON string than the count says: 0 means one string.
    return map_entry(root, key, CONTENT_JSON, varuint(0) + varstring(text))


def nested_maps(root: str, key: str, depth: int, client: int, clock: int = 0) -> list[bytes]:
    """``root[key]`` = Y.Map holding Y.Map at "a" ... ``depth`` Y.Maps, one item each."""
    structs = [map_entry(root, key, CONTENT_TYPE, bytes([TYPE_MAP]))]
    for i in range(1, depth):
        parent = varuint(BY_ID) + varuint(client) + varuint(clock + i - 1)
        structs.append(bytes([CONTENT_TYPE | HAS_PARENT_SUB]) + parent + varstring("a") + bytes([TYPE_MAP]))
    return structs


def update(runs: list[tuple[int, int, list[bytes]]], delete_set: bytes = b"\x00") -> bytes:
    """A v1 update from ``(client, first clock, structs)`` runs and an encoded delete set."""
    out = bytearray(varuint(len(runs)))
    for client, clock, structs in runs:
        out += varuint(len(structs)) + varuint(client) + varuint(clock) + b"".join(structs)
    return bytes(out + delete_set)


def read_varuint(data: bytes, pos: int = 0) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def add_run(base: bytes, client: int, structs: list[bytes]) -> bytes:
    """``base`` (a full v1 update, e.g. from pycrdt) plus a run of structs of a new client.

    Spliced at the byte level (pycrdt's ``merge_updates`` would re-encode, and cannot
    even round-trip legacy JSON content), so ``base``'s own structs stay untouched.
    """
    clients, pos = read_varuint(base)
    run = varuint(len(structs)) + varuint(client) + varuint(0) + b"".join(structs)
    return varuint(clients + 1) + run + base[pos:]


def replace_value(base: bytes, placeholder: str, raw_value: bytes) -> bytes:
    """Swap the Any string ``placeholder`` in ``base`` for an encoded value.

    Lets pycrdt build a genuine document with one marked field, then puts a value
    there that pycrdt could not have encoded (a lib0 Any has no outer length, so any
    value fits in place of another).
    """
    marker = b"\x77" + varstring(placeholder)
    assert base.count(marker) == 1, "placeholder must occur exactly once"
    return base.replace(marker, raw_value)
