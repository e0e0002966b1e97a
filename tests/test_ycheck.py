"""Tests for gitsync.ycheck: the depth and structure check run before pycrdt decodes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from gitsync.ycheck import MAX_DEPTH, UpdateRejected, check_update
from tests.yjs_craft import (
    any_entry,
    any_value,
    deep_array,
    deep_object,
    json_entry,
    map_entry,
    nested_maps,
    replace_value,
    update,
    varstring,
    varuint,
)

FIXTURES = Path(__file__).parent / "fixtures" / "yjs"
# Updates only: ``*_before.bin`` holds a state vector (see the fixtures' README).
JS_FIXTURES = {p.stem: p.read_bytes() for p in sorted(FIXTURES.glob("*.bin")) if not p.stem.endswith("_before")}


def accepts(data: bytes, max_depth: int = MAX_DEPTH) -> bool:
    try:
        check_update(data, max_depth=max_depth)
    except UpdateRejected:
        return False
    return True


def folder_with_value(raw_value: bytes) -> bytes:
    """A genuine pycrdt folder document whose entry ``/evil.md`` has field ``x`` = raw_value."""
    doc = Doc()
    meta = doc.get("filemeta_v0", type=Map)
    meta["/a.md"] = {"id": "0b1f3c9e-8f43-4d6b-9a57-1f0d4c2b7a11", "type": "markdown"}
    meta["/evil.md"] = {"id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "type": "markdown", "x": "@"}
    return replace_value(doc.get_update(), "@", raw_value)


# --------------------------------------------------------------------------- real documents


@pytest.mark.parametrize("name", JS_FIXTURES)
def test_js_fixtures_are_walked_to_their_exact_depth(name):
    # max_depth 1 or 2 forces the full walk (the byte census alone cannot decide):
    # the walk must frame yjs output exactly as yrs does to get these right.
    data = JS_FIXTURES[name]
    # folder/canvas: root map -> object; with a `users` map: users -> user (Y.Map) -> ids
    depth = 2 if name in ("folder", "canvas") else 3 if "users" in name else 1
    assert accepts(data, depth)
    if depth > 1:
        with pytest.raises(UpdateRejected, match=f"nested deeper than {depth - 1} levels"):
            check_update(data, max_depth=depth - 1)


def test_edited_text_documents_pass():
    rnd = random.Random(7)
    doc = Doc()
    text = doc.get("contents", type=Text)
    for _ in range(300):
        text += "typing [{ quietly gw 7 "  # level bytes inside strings
    length = len(text)
    for _ in range(200):
        at = rnd.randrange(0, length - 8)
        del text[at : at + 3]
        length -= 3
        text.insert(rnd.randrange(0, length), "uv")
        length += 2
    text += "👨‍👩‍👧 中文 e\u0301"  # clocks of multi-byte strings count UTF-16 units
    data = doc.get_update()
    assert accepts(data, 1)  # a text is one level whatever its strings hold
    assert accepts(data)


def test_empty_update_and_trailing_bytes():
    assert accepts(b"\x00\x00", 1)
    assert accepts(b"\x00\x00" + b"\x75" * 100, 1)  # yrs ignores what follows the delete set


# --------------------------------------------------------------------------- exact depth of pycrdt documents

# A recipe is a tree of ("map"|"array"|"value", children-or-json) nodes; value nodes hold
# JSON (lists, dicts, scalars) stored as one Any; map/array nodes become nested Y types.
# Strings stay ASCII: pycrdt 0.14 can loop forever iterating an array that (after a
# mutation) holds text with multi-byte characters, and the mutation test reads arrays.
ascii_text = st.text(st.characters(max_codepoint=127), max_size=5)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.floats(allow_nan=False) | ascii_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ascii_text, inner, max_size=3),
    max_leaves=12,
)
recipes = st.recursive(
    st.tuples(st.just("value"), json_values),
    lambda inner: st.tuples(st.just("map"), st.lists(inner, max_size=3))
    | st.tuples(st.just("array"), st.lists(inner, max_size=3)),
    max_leaves=10,
)


def json_depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((json_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((json_depth(v) for v in value.values()), default=0)
    return 0


def recipe_depth(recipe) -> int:
    kind, body = recipe
    if kind == "value":
        return json_depth(body)
    return 1 + max((recipe_depth(child) for child in body), default=0)


def prelim(recipe):
    kind, body = recipe
    if kind == "value":
        return body
    if kind == "map":
        return Map({f"k{i}": prelim(child) for i, child in enumerate(body)})
    return Array([prelim(child) for child in body])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=recipes, overwrite=st.booleans())
def test_depth_of_pycrdt_documents_is_exact(recipe, overwrite):
    doc = Doc()
    root = doc.get("root", type=Map)
    if overwrite:
        root["entry"] = Map({"old": Map()})  # the later set has an origin: parent inherited
    root["entry"] = prelim(recipe)
    array = doc.get("list", type=Array)
    array.append("first")
    array.append(prelim(recipe))  # array items inherit their parent from origins
    data = doc.get_update()
    depth = 1 + recipe_depth(recipe)  # the root map is level 1
    assert accepts(data, depth)
    if depth > 1:
        assert not accepts(data, depth - 1)


def test_limit_is_inclusive_for_values_and_types():
    # root map (1) -> entry object (2) -> 62 arrays: 64 levels
    assert accepts(folder_with_value(deep_array(MAX_DEPTH - 2)))
    assert not accepts(folder_with_value(deep_array(MAX_DEPTH - 1)))
    assert accepts(folder_with_value(deep_object(MAX_DEPTH - 2)))
    assert not accepts(folder_with_value(deep_object(MAX_DEPTH - 1)))
    # root map (1) -> 63 nested Y.Maps: 64 levels
    assert accepts(update([(5, 0, nested_maps("filemeta_v0", "/t", MAX_DEPTH - 1, 5))]))
    assert not accepts(update([(5, 0, nested_maps("filemeta_v0", "/t", MAX_DEPTH, 5))]))
    # a value inside the deepest Y.Map adds its own levels
    chain = nested_maps("nodes", "n1", MAX_DEPTH - 3, 5)
    leaf = bytes([0x28]) + varuint(0) + varuint(5) + varuint(MAX_DEPTH - 4) + varstring("v")
    assert accepts(update([(5, 0, [*chain, leaf + varuint(1) + deep_array(2)])]))
    assert not accepts(update([(5, 0, [*chain, leaf + varuint(1) + deep_array(3)])]))


def test_many_flat_y_maps_are_not_mistaken_for_a_deep_chain():
    doc = Doc()
    meta = doc.get("filemeta_v0", type=Map)
    for i in range(3 * MAX_DEPTH):
        meta[f"/n{i}.md"] = Map({"id": f"{i:08d}-0000-4000-8000-000000000000", "type": "markdown"})
    for i in range(0, 3 * MAX_DEPTH, 2):
        meta[f"/n{i}.md"] = Map({"id": "x", "type": "markdown"})  # overwrite: inherits via origin
    assert accepts(doc.get_update(), 2)


def test_json_content_framing_matches_pycrdt():
    # yrs 0.28 reads count + 1 JSON strings; the check must frame legacy JSON content
    # the same way, or bytes it skipped as a string would be decoded as structs.
    data = update([(9, 0, [json_entry("m", "k", '{"a": [1, "]]]"]}'), any_entry("m", "z", b"\x7e")])])
    doc = Doc()
    doc.apply_update(data)
    assert doc.get("m", type=Map).to_py() == {"k": '{"a": [1, "]]]"]}', "z": None}
    assert accepts(data, 3)  # m (1) -> {"a" (2) -> [ (3); brackets in strings do not count
    assert not accepts(data, 2)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("json", update([(9, 0, [json_entry("m", "k", "[" * 70 + "]" * 70)])])),
        ("json-escapes", update([(9, 0, [json_entry("m", "k", '["\\"[[[", ' + "[" * 70 + "]" * 71)])])),
        ("embed", update([(9, 0, [map_entry("m", "k", 5, varstring("{" * 80))])])),
        ("subdoc-options", update([(9, 0, [map_entry("m", "k", 9, varstring("guid") + deep_object(70))])])),
        ("any-in-array", update([(9, 0, [any_entry("m", "k", any_value([1, "x", {"a": [[]]}]))])])),
    ],
)
def test_every_content_kind_is_measured(name, data):
    if name == "any-in-array":
        assert accepts(data, 5) and not accepts(data, 4)
    else:
        with pytest.raises(UpdateRejected, match=f"nested deeper than {MAX_DEPTH} levels"):
            check_update(data)


# --------------------------------------------------------------------------- hostile bytes


def origin_cycle() -> bytes:
    # a string item and a Y.Map item whose left origins point at each other
    first = bytes([0x84]) + varuint(3) + varuint(1) + varstring("a")
    second = bytes([0x87]) + varuint(3) + varuint(0) + b"\x01"
    return update([(3, 0, [first, second, *nested_maps("r", "k", MAX_DEPTH + 1, 3, clock=2)])])


BROKEN = {
    "truncated": (JS_FIXTURES["folder"][:-40], "truncated"),
    "truncated string": (update([(1, 0, [map_entry("m", "k", 4, varuint(50) + b"abc{{")])]), "truncated"),
    "varint too long": (b"\x01" + b"\xff" * 20 + b"{{", "varint too long"),
    "length overflows u32": (update([(1, 0, [map_entry("m", "k", 4, b"\x80\x80\x80\x80\x10")])]), "out of range"),
    "unknown content ref": (update([(1, 0, [map_entry("m", "k", 11, b"")])]) + b"{{", "unknown content ref 11"),
    "weak link type": (update([(1, 0, [map_entry("m", "k", 7, b"\x07")])]) + b"{{", "unknown type ref 7"),
    "unknown value tag": (update([(1, 0, [any_entry("m", "k", b"\x75\x01\x10")])]) + b"{{", "unknown value tag 16"),
    "client listed twice": (
        update([(1, 0, nested_maps("r", "k", 3, 1)), (1, 3, nested_maps("r", "j", 3, 1, clock=3))]),
        "listed twice",
    ),
    "more structs than bytes": (b"\x01\xff\xff\x03\x01\x00" + b"{{", "more structs than bytes"),
    "more values than bytes": (update([(1, 0, [any_entry("m", "k", b"\x75\xff\xff\x03")])]) + b"{{", "more values than bytes"),
    "origin cycle": (origin_cycle(), "cycle"),
}


@pytest.mark.parametrize("data,reason", BROKEN.values(), ids=BROKEN.keys())
def test_broken_structure_is_rejected_with_a_reason(data, reason):
    with pytest.raises(UpdateRejected, match=reason):
        check_update(data, max_depth=2)


def test_id_cycle_between_y_types_is_rejected():
    # a Y.Map item whose parent is itself
    own = bytes([0x27]) + varuint(0) + varuint(4) + varuint(0) + varstring("a") + b"\x01"
    chain = nested_maps("r", "k", MAX_DEPTH + 5, 4, clock=1)
    with pytest.raises(UpdateRejected, match="cycle"):
        check_update(update([(4, 0, [own, *chain])]))


LEVEL_BYTES = [0x07, 0x27, 0x47, 0x87, 0xC7, 0x75, 0x76, 0x5B, 0x7B]
SMALL_BYTES = [0x00, 0x01, 0x02, 0x03, 0x04, 0x08, 0x0A, 0x28, 0x77, 0x7E, 0x7F, 0x80, 0x81, 0x84, 0xFF]


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=300)
    | st.lists(st.sampled_from(LEVEL_BYTES + SMALL_BYTES), max_size=400).map(bytes)
)
def test_arbitrary_bytes_raise_only_update_rejected(data):
    for max_depth in (1, 3, MAX_DEPTH):
        try:
            check_update(data, max_depth=max_depth)
        except UpdateRejected as exc:
            assert str(exc) and "\n" not in str(exc)


def measured_depth(data: bytes) -> int | None:
    """Depth pycrdt builds from ``data`` (small inputs only), or None if it refuses it.

    Roots are read as maps, and ``list`` as an array: pycrdt 0.14 loops forever when
    a text holding multi-byte characters is read as an array.
    """
    doc = Doc()
    try:
        doc.apply_update(data)
        deepest = 0
        for name in list(doc.keys()):
            root = doc.get(name, type=Array) if name == "list" else doc.get(name, type=Map)
            deepest = max(deepest, json_depth(root.to_py()))  # the root itself is level 1
        return deepest
    except (ValueError, RuntimeError, RecursionError):  # RuntimeError: an item's parent is no type
        return None


def mutations() -> st.SearchStrategy[bytes]:
    def build(recipe) -> bytes:
        doc = Doc()
        doc.get("root", type=Map)["e"] = prelim(recipe)
        doc.get("list", type=Array).append(prelim(recipe))
        return doc.get_update()

    seeds = st.sampled_from(list(JS_FIXTURES.values())) | recipes.map(build)
    edits = st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(LEVEL_BYTES + SMALL_BYTES)), max_size=4)

    def mutate(args):
        data, changes = args
        out = bytearray(data)
        for at, byte in changes:
            if out:
                out[at % len(out)] = byte
        return bytes(out)

    return st.tuples(seeds, edits).map(mutate)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutations(), max_depth=st.integers(1, 6))
def test_what_is_accepted_is_never_deeper_than_the_limit(data, max_depth):
    try:
        check_update(data, max_depth=max_depth)
    except UpdateRejected:
        return
    depth = measured_depth(data)
    assert depth is None or depth <= max_depth
