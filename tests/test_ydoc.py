"""Tests for gitsync.ydoc: JS-encoded fixtures, pycrdt-built documents, corrupt input."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from gitsync import ydoc
from gitsync.ycheck import MAX_DEPTH
from gitsync.ydoc import (
    CorruptUpdate,
    Entry,
    is_never_written,
    read_canvas,
    read_folder,
    read_text,
    render_canvas,
)
from tests.yjs_craft import (
    add_run,
    deep_array,
    deep_object,
    json_entry,
    map_entry,
    nested_maps,
    replace_value,
    varstring,
)

FIXTURES = Path(__file__).parent / "fixtures" / "yjs"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))

ID_A = "0b1f3c9e-8f43-4d6b-9a57-1f0d4c2b7a11"
ID_B = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
ID_C = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
ID_D = "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a"
SHA = "a3f5c0d9e2b14c7f8a6e5d4c3b2a19080f7e6d5c4b3a29180f7e6d5c4b3a2918"


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.bin").read_bytes()


def expected_entries(section: dict) -> dict[str, Entry]:
    """What read_folder must return, derived independently from expected.json."""
    out: dict[str, Entry] = {}
    for key, meta in section["filemeta_v0"].items():
        kind = "markdown" if meta["type"] == "document" else meta["type"]
        out[key.lstrip("/")] = Entry(
            path=key.lstrip("/"),
            id=meta["id"],
            type=kind,
            hash=meta.get("hash"),
            mimetype=meta.get("mimetype"),
            synctime=meta.get("synctime"),
        )
    for key, doc_id in section["docs"].items():
        out.setdefault(key.lstrip("/"), Entry(path=key.lstrip("/"), id=doc_id, type="markdown"))
    return out


def build(fill) -> bytes:
    """Run ``fill(doc)`` on a fresh pycrdt Doc and return the full v1 update."""
    doc = Doc()
    fill(doc)
    return doc.get_update()


# --------------------------------------------------------------------------- JS fixtures


class TestReadDocument:
    """One decoding gives what the three separate reads give."""

    @pytest.mark.parametrize("name", ["note_unicode", "note_never_written", "note_emptied"])
    def test_text_fixtures(self, name):
        data = fixture(name)
        document = ydoc.read_document(data, "text")
        assert document.never_written is is_never_written(data)
        assert document.content == read_text(data).encode("utf-8")
        assert document.authorship == ydoc.read_authorship(data)

    def test_canvas_fixture(self):
        data = fixture("canvas")
        document = ydoc.read_document(data, "canvas")
        assert document.content == render_canvas(read_canvas(data))
        assert document.never_written is False
        assert document.authorship == ydoc.read_authorship(data)

    def test_users_are_read(self):
        def fill(doc):
            doc.get("contents", type=Text).insert(0, "hi")
            users = doc.get("users", type=Map)
            users["ada"] = Map({"ids": [doc.client_id]})

        data = build(fill)
        document = ydoc.read_document(data, "text")
        assert document.content == b"hi"
        assert document.authorship.users == ydoc.read_users(data) != {}

    def test_corrupt_and_unknown_kind(self):
        with pytest.raises(CorruptUpdate):
            ydoc.read_document(b"\xff\xff\xff", "text")
        with pytest.raises(ValueError, match="not 'folder'"):
            ydoc.read_document(fixture("note_unicode"), "folder")


class TestJsFixtures:
    def test_folder(self):
        entries = read_folder(fixture("folder"))
        assert entries == expected_entries(EXPECTED["folder"])
        assert list(entries) == sorted(entries)
        logo = entries["attachments/logo.png"]
        assert type(logo.synctime) is int and logo.synctime == 1732400000123
        assert logo.kind == "attachment"
        assert entries["notes"].kind == "folder"
        assert entries["board.canvas"].kind == "canvas"
        assert entries["nested-value.md"].kind == "text"  # nested Y.Map value
        assert entries["legacy-only.md"] == Entry(
            "legacy-only.md", "7c8d9e0f-1a2b-4c3d-4e5f-6a7b8c9d0e1f", "markdown"
        )

    def test_unicode_note(self):
        data = fixture("note_unicode")
        assert read_text(data) == EXPECTED["note_unicode"]["text"]
        assert is_never_written(data) is False

    def test_never_written(self):
        data = fixture("note_never_written")
        assert data == b"\x00\x00"
        assert read_text(data) == ""
        assert is_never_written(data) is EXPECTED["note_never_written"]["state_vector_empty"]

    def test_emptied(self):
        data = fixture("note_emptied")
        assert read_text(data) == ""
        assert is_never_written(data) is EXPECTED["note_emptied"]["state_vector_empty"]

    def test_canvas_exact_including_number_types(self):
        canvas = read_canvas(fixture("canvas"))
        want = {"nodes": EXPECTED["canvas"]["nodes"], "edges": EXPECTED["canvas"]["edges"]}
        assert canvas == want
        # == treats -50 and -50.0 alike; the JSON text does not.
        assert json.dumps(canvas) == json.dumps(want)
        by_id = {n["id"]: n for n in canvas["nodes"]}
        assert type(by_id["b2"]["x"]) is int and by_id["b2"]["x"] == -50
        assert type(by_id["d4"]["x"]) is float and by_id["d4"]["x"] == 10.5
        assert by_id["b2"]["text"] == "Live text ✏️ of b2"  # live Y.Text, not the stale field

    def test_canvas_render(self):
        rendered = render_canvas(read_canvas(fixture("canvas")))
        text = rendered.decode("utf-8")
        assert text == (
            "{\n"
            '\t"nodes":[\n'
            '\t\t{"id":"a1","type":"file","file":"notes/idea.md","x":300,"y":-120,"width":400,"height":400},\n'
            '\t\t{"id":"b2","type":"text","text":"Live text ✏️ of b2","x":-50,"y":20,"width":250,"height":60,"color":"1"},\n'
            '\t\t{"id":"c3","type":"group","label":"Group","x":-100,"y":-200,"width":900,"height":700},\n'
            '\t\t{"id":"d4","type":"link","url":"https://example.com","x":10.5,"y":0,"width":200,"height":100}\n'
            "\t],\n"
            '\t"edges":[\n'
            '\t\t{"id":"e1","fromNode":"b2","fromSide":"right","toNode":"a1","toSide":"left","toEnd":"arrow"}\n'
            "\t]\n"
            "}"
        )
        assert json.loads(text) == read_canvas(fixture("canvas"))

    def test_canvas_render_is_stable_across_processes(self):
        # pycrdt returns object keys in a random order per process; the file must not care.
        code = (
            "import sys; from pathlib import Path; from gitsync.ydoc import read_canvas, render_canvas;"
            f"sys.stdout.buffer.write(render_canvas(read_canvas(Path({str(FIXTURES / 'canvas.bin')!r}).read_bytes())))"
        )
        runs = {
            subprocess.run(
                [sys.executable, "-c", code],
                check=True,
                capture_output=True,
                cwd=Path(__file__).parent.parent,
            ).stdout
            for _ in range(3)
        }
        assert runs == {render_canvas(read_canvas(fixture("canvas")))}


# --------------------------------------------------------------------------- folder documents


class TestFolder:
    def test_plain_and_nested_values_renames_and_deletes(self):
        def fill(doc: Doc) -> None:
            meta = doc.get("filemeta_v0", type=Map)
            meta["/a.md"] = {"id": ID_A, "type": "markdown", "version": 0}
            meta["/old.md"] = {"id": ID_B, "type": "markdown", "version": 0}
            meta["/gone.md"] = {"id": ID_C, "type": "markdown", "version": 0}
            meta["/dir"] = Map({"id": ID_D, "type": "folder", "version": 0})
            # rename /old.md -> /dir/new.md, delete /gone.md
            value = meta["/old.md"]
            del meta["/old.md"]
            meta["/dir/new.md"] = value
            del meta["/gone.md"]

        entries = read_folder(build(fill))
        assert entries == {
            "a.md": Entry("a.md", ID_A, "markdown"),
            "dir": Entry("dir", ID_D, "folder"),
            "dir/new.md": Entry("dir/new.md", ID_B, "markdown"),
        }

    def test_attachment_fields_and_nested_map_attachment(self):
        def fill(doc: Doc) -> None:
            meta = doc.get("filemeta_v0", type=Map)
            meta["/img.png"] = Map(
                {
                    "id": ID_A,
                    "type": "image",
                    "hash": SHA.upper(),
                    "mimetype": "image/png",
                    "synctime": 1732400000123,
                }
            )
            meta["/doc.pdf"] = {"id": ID_B, "type": "pdf", "version": 0}  # no hash yet
            meta["/page.html"] = {"id": ID_C, "type": "file", "version": 0}  # text file
            meta["/data.bin"] = {"id": ID_D, "type": "file", "hash": SHA}

        entries = read_folder(build(fill))
        img = entries["img.png"]
        assert img == Entry("img.png", ID_A, "image", SHA, "image/png", 1732400000123)
        assert type(img.synctime) is int
        assert img.kind == "attachment"
        assert entries["doc.pdf"].hash is None and entries["doc.pdf"].kind == "attachment"
        assert entries["page.html"].kind == "text"
        assert entries["data.bin"].kind == "attachment"

    def test_ids_lowercased_document_type_and_missing_slash(self):
        def fill(doc: Doc) -> None:
            meta = doc.get("filemeta_v0", type=Map)
            meta["old.md"] = {"id": ID_A.upper(), "type": "document"}
            meta["/x/y.md"] = {"id": ID_B, "type": "markdown"}

        entries = read_folder(build(fill))
        assert entries == {
            "old.md": Entry("old.md", ID_A, "markdown"),
            "x/y.md": Entry("x/y.md", ID_B, "markdown"),
        }
        assert entries["old.md"].kind == "text"

    def test_same_path_with_and_without_slash_keeps_slashed(self, caplog):
        def fill(doc: Doc) -> None:
            meta = doc.get("filemeta_v0", type=Map)
            meta["a.md"] = {"id": ID_B, "type": "markdown"}
            meta["/a.md"] = {"id": ID_A, "type": "markdown"}

        with caplog.at_level(logging.WARNING, logger="gitsync.ydoc"):
            assert read_folder(build(fill)) == {"a.md": Entry("a.md", ID_A, "markdown")}
        assert "duplicate" in caplog.text

    def test_legacy_docs_add_missing_paths_only(self):
        def fill(doc: Doc) -> None:
            doc.get("filemeta_v0", type=Map)["/a.md"] = {"id": ID_A, "type": "markdown"}
            docs = doc.get("docs", type=Map)
            docs["/a.md"] = ID_C  # filemeta_v0 wins
            docs["b.md"] = ID_B.upper()
            docs["/bad.md"] = "not-a-uuid"

        assert read_folder(build(fill)) == {
            "a.md": Entry("a.md", ID_A, "markdown"),
            "b.md": Entry("b.md", ID_B, "markdown"),
        }

    def test_bad_entries_are_skipped_with_a_log(self, caplog):
        def fill(doc: Doc) -> None:
            meta = doc.get("filemeta_v0", type=Map)
            meta["/ok.md"] = {"id": ID_A, "type": "markdown"}
            meta["/no-id.md"] = {"type": "markdown"}
            meta["/num-id.md"] = {"id": 7, "type": "markdown"}
            meta["/bad-id.md"] = {"id": "1234", "type": "markdown"}
            meta["/odd.xyz"] = {"id": ID_B, "type": "hologram"}
            meta["/no-type.md"] = {"id": ID_C}
            meta["/scalar.md"] = "just a string"
            meta["/"] = {"id": ID_D, "type": "folder"}

        with caplog.at_level(logging.WARNING, logger="gitsync.ydoc"):
            entries = read_folder(build(fill))
        assert entries == {"ok.md": Entry("ok.md", ID_A, "markdown")}
        messages = [r.getMessage() for r in caplog.records]
        assert any("path=odd.xyz" in m and "type=hologram" in m for m in messages)
        assert any("bad id path=num-id.md" in m for m in messages)
        assert len(messages) == 7

    def test_empty_documents(self):
        assert read_folder(b"\x00\x00") == {}
        assert read_folder(build(lambda doc: doc.get("filemeta_v0", type=Map))) == {}


class TestEntry:
    @pytest.mark.parametrize(
        ("type_", "hash_", "kind"),
        [
            ("folder", None, "folder"),
            ("markdown", None, "text"),
            ("document", None, "text"),
            ("canvas", None, "canvas"),
            ("file", None, "text"),
            ("file", SHA, "attachment"),
            ("image", SHA, "attachment"),
            ("image", None, "attachment"),
            ("pdf", SHA, "attachment"),
            ("audio", SHA, "attachment"),
            ("video", SHA, "attachment"),
            ("base", SHA, "attachment"),
        ],
    )
    def test_kind(self, type_, hash_, kind):
        assert Entry("p", ID_A, type_, hash_).kind == kind

    def test_unknown_type_rejected(self):
        with pytest.raises(ValueError, match="unknown entry type"):
            Entry("p", ID_A, "hologram")


# --------------------------------------------------------------------------- text documents

UNICODE_SAMPLES = [
    "👨‍👩‍👧‍👦 family (ZWJ)",
    "🏳️‍🌈 and 🇯🇵 flags",
    "中文 日本語 한국어",
    "e\u0301 combining, a\u0308\u0323 stacked",
    "שלום RTL\r\nCRLF line",
    "no trailing newline",
    "",
    "\n",
]


class TestText:
    @pytest.mark.parametrize("text", UNICODE_SAMPLES)
    def test_round_trip(self, text):
        data = build(lambda doc: doc.get("contents", type=Text).insert(0, text))
        assert read_text(data) == text

    def test_edits_and_deletions(self):
        def fill(doc: Doc) -> None:
            contents = doc.get("contents", type=Text)
            contents += "Hello 👨‍👩‍👧‍👦 world\n"
            contents += "中文 e\u0301\n"
            del contents[0:6]  # "Hello " (ASCII, so bytes and code points agree)
            contents.insert(0, "Hi ")

        assert read_text(build(fill)) == "Hi 👨‍👩‍👧‍👦 world\n中文 e\u0301\n"

    def test_never_written_vs_emptied(self):
        never = Doc().get_update()
        assert is_never_written(never) is True

        def emptied(doc: Doc) -> None:
            contents = doc.get("contents", type=Text)
            contents += "draft"
            del contents[0:5]

        data = build(emptied)
        assert read_text(data) == ""
        assert is_never_written(data) is False

    def test_other_roots_do_not_count_as_text(self):
        data = build(lambda doc: doc.get("users", type=Map).update({"u": "x"}))
        assert read_text(data) == ""
        assert is_never_written(data) is False


# --------------------------------------------------------------------------- canvas documents


class TestCanvas:
    def fill(self, doc: Doc) -> None:
        nodes = doc.get("nodes", type=Map)
        nodes["t2"] = {
            "id": "t2",
            "type": "text",
            "text": "stale",
            "x": 0,
            "y": 1.25,
            "width": 10,
            "height": 10,
        }
        nodes["t1"] = Map(
            {"id": "t1", "type": "text", "text": "kept", "x": -5, "y": 0, "width": 1, "height": 2}
        )
        nodes["g"] = {
            "type": "group",
            "x": 0,
            "y": 0,
            "width": 1,
            "height": 1,
            "styleAttributes": {"a": [1, 2.5]},
        }
        nodes["f"] = {
            "id": "f",
            "type": "file",
            "file": "📁/ノート.md",
            "x": 1,
            "y": 2,
            "width": 3,
            "height": 4,
        }
        doc.get("t2", type=Text).insert(0, 'live 👨‍👩‍👧 中文 e\u0301\n"quoted"\t')
        doc.get("t1", type=Text)  # empty live text: the node's own text stays
        doc.get("f", type=Text).insert(0, "ignored: not a text node")
        edges = doc.get("edges", type=Map)
        edges["z"] = {"id": "z", "fromNode": "t1", "toNode": "t2", "label": "ラベル"}
        edges["a"] = {"id": "a", "toNode": "f", "fromNode": "g", "fromSide": "top", "color": "4"}

    def test_read(self):
        canvas = read_canvas(build(self.fill))
        assert [n["id"] for n in canvas["nodes"]] == ["f", "g", "t1", "t2"]
        assert [e["id"] for e in canvas["edges"]] == ["a", "z"]
        nodes = {n["id"]: n for n in canvas["nodes"]}
        assert nodes["t2"]["text"] == 'live 👨‍👩‍👧 中文 e\u0301\n"quoted"\t'
        assert nodes["t1"]["text"] == "kept"
        assert "text" not in nodes["f"]
        assert nodes["g"]["styleAttributes"] == {"a": [1, 2.5]}
        assert type(nodes["g"]["styleAttributes"]["a"][0]) is int
        assert type(nodes["t2"]["y"]) is float
        assert list(nodes["t2"]) == ["id", "type", "text", "x", "y", "width", "height"]
        assert list(canvas["edges"][0]) == ["id", "fromNode", "fromSide", "toNode", "color"]

    def test_render(self):
        text = render_canvas(read_canvas(build(self.fill))).decode("utf-8")
        assert text == (
            "{\n"
            '\t"nodes":[\n'
            '\t\t{"id":"f","type":"file","file":"📁/ノート.md","x":1,"y":2,"width":3,"height":4},\n'
            '\t\t{"id":"g","type":"group","x":0,"y":0,"width":1,"height":1,"styleAttributes":{"a":[1,2.5]}},\n'
            '\t\t{"id":"t1","type":"text","text":"kept","x":-5,"y":0,"width":1,"height":2},\n'
            '\t\t{"id":"t2","type":"text","text":"live 👨‍👩‍👧 中文 e\u0301\\n\\"quoted\\"\\t","x":0,"y":1.25,"width":10,"height":10}\n'
            "\t],\n"
            '\t"edges":[\n'
            '\t\t{"id":"a","fromNode":"g","fromSide":"top","toNode":"f","color":"4"},\n'
            '\t\t{"id":"z","fromNode":"t1","toNode":"t2","label":"ラベル"}\n'
            "\t]\n"
            "}"
        )

    def test_empty_canvas(self):
        assert read_canvas(b"\x00\x00") == {"nodes": [], "edges": []}
        assert render_canvas({"nodes": [], "edges": []}) == b'{\n\t"nodes":[],\n\t"edges":[]\n}'
        assert render_canvas({}) == b'{\n\t"nodes":[],\n\t"edges":[]\n}'

    def test_render_orders_input_and_keeps_extra_keys(self):
        canvas = {
            "metadata": {"version": "1.0-1.0"},
            "edges": [],
            "nodes": [
                {"x": 1, "id": "b", "type": "text"},
                {"type": "text", "id": "a", "zeta": True, "alpha": None},
            ],
        }
        assert render_canvas(canvas).decode() == (
            "{\n"
            '\t"nodes":[\n'
            '\t\t{"id":"a","type":"text","alpha":null,"zeta":true},\n'
            '\t\t{"id":"b","type":"text","x":1}\n'
            "\t],\n"
            '\t"edges":[],\n'
            '\t"metadata":{"version":"1.0-1.0"}\n'
            "}"
        )

    @pytest.mark.parametrize(
        ("value", "js"),
        [
            (-50.0, "-50"),
            (10.5, "10.5"),
            (0.1, "0.1"),
            (1e-7, "1e-7"),
            (0.000001, "0.000001"),
            (1.5e-6, "0.0000015"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.2345678901234568e20, "123456789012345680000"),
            (0.30000000000000004, "0.30000000000000004"),
            (-0.0, "0"),
            (float("nan"), "null"),
            (float("inf"), "null"),
        ],
    )
    def test_numbers_written_as_js_does(self, value, js):
        # Values checked against node's JSON.stringify.
        out = render_canvas({"nodes": [{"id": "n", "x": value}], "edges": []}).decode()
        assert f'"x":{js}}}' in out

    def test_lone_surrogate_escaped_like_js(self):
        out = render_canvas({"nodes": [{"id": "n", "text": "a\ud800b"}], "edges": []})
        assert b'"text":"a\\ud800b"' in out
        out.decode("utf-8")


# --------------------------------------------------------------------------- corrupt input


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


_NOTE = fixture("note_unicode")
_FOLDER = fixture("folder")

CORRUPT = {
    "empty": b"",
    "truncated-half": _NOTE[: len(_NOTE) // 2],
    "truncated-minus-one": _FOLDER[:-1],
    "single-zero": b"\x00",
    "ff-garbage": b"\xff" * 64,
    "json-error-body": json.dumps({"error": "not found"}).encode(),
    "flipped-byte": _flip(_NOTE, 5),
    "flipped-first-byte": _flip(_FOLDER, 0),
}


@pytest.mark.parametrize("reader", [read_folder, read_text, is_never_written, read_canvas])
@pytest.mark.parametrize("data", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_input_raises_corrupt_update(reader, data):
    with pytest.raises(CorruptUpdate, match="cannot decode Yjs update") as info:
        reader(data)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "\n" not in message and len(message) < 250
    if data:
        assert repr(data[:8])[2:-1] not in message


def test_non_bytes_is_a_type_error():
    with pytest.raises(TypeError):
        read_text("not bytes")  # type: ignore[arg-type]


def test_bytearray_and_memoryview_accepted():
    data = fixture("note_unicode")
    assert (
        read_text(bytearray(data))
        == read_text(memoryview(data))
        == EXPECTED["note_unicode"]["text"]
    )


class PanicException(BaseException):
    """Stand-in for pyo3_runtime.PanicException (old pycrdt), recognised by name."""


class _PanickingDoc:
    def __init__(self, exc: BaseException):
        self.exc = exc

    def apply_update(self, data: bytes) -> None:
        raise self.exc


def test_pyo3_panic_becomes_corrupt_update(monkeypatch):
    monkeypatch.setattr(ydoc, "Doc", lambda: _PanickingDoc(PanicException("bad input")))
    with pytest.raises(CorruptUpdate, match="bad input"):
        read_text(b"\x00\x00")


def test_keyboard_interrupt_passes_through(monkeypatch):
    monkeypatch.setattr(ydoc, "Doc", lambda: _PanickingDoc(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        read_text(b"\x00\x00")


# --------------------------------------------------------------------------- purity


def test_imports_no_io_libraries():
    code = (
        "import sys, gitsync.ydoc; "
        "print(sorted(m for m in ('flask', 'requests', 'dulwich', 'paramiko', 'urllib3') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- hostile documents

EVIL_ID = "3e4f5a6b-7c8d-4e9f-8a1b-2c3d4e5f6a7b"
HOSTILE_CLIENT = 424242


def hostile_folder(raw_value: bytes | None = None) -> bytes:
    """A genuine folder document; entry ``/evil.md`` carries field ``x`` = ``raw_value``."""

    def fill(doc: Doc) -> None:
        meta = doc.get("filemeta_v0", type=Map)
        meta["/a.md"] = {"id": ID_A, "type": "markdown", "version": 0}
        meta["/dir"] = Map({"id": ID_B, "type": "folder", "version": 0})
        if raw_value is not None:
            meta["/evil.md"] = {"id": EVIL_ID, "type": "markdown", "version": 0, "x": "@"}

    data = build(fill)
    return replace_value(data, "@", raw_value) if raw_value is not None else data


def hostile_canvas(raw_value: bytes | None = None) -> bytes:
    """A genuine canvas; node ``evil`` carries field ``x`` = ``raw_value``."""

    def fill(doc: Doc) -> None:
        nodes = doc.get("nodes", type=Map)
        nodes["n1"] = {"id": "n1", "type": "text", "text": "hi", "x": 0, "y": 0, "width": 1, "height": 1}
        if raw_value is not None:
            nodes["evil"] = {"id": "evil", "type": "text", "styleAttributes": "@"}
        doc.get("n1", type=Text).insert(0, "live")

    data = build(fill)
    return replace_value(data, "@", raw_value) if raw_value is not None else data


def hostile_note(raw_value: bytes) -> bytes:
    """A note whose other root ``meta`` holds ``raw_value``: read_text never looks at it."""

    def fill(doc: Doc) -> None:
        doc.get("contents", type=Text).insert(0, "a note\n")
        doc.get("meta", type=Map)["x"] = "@"

    return replace_value(build(fill), "@", raw_value)


DEEP = {
    "folder-any-array": ("read_folder", hostile_folder(deep_array(20_000))),
    "folder-any-object": ("read_folder", hostile_folder(deep_object(30_000))),
    "folder-json": (
        "read_folder",
        add_run(hostile_folder(), HOSTILE_CLIENT, [json_entry("filemeta_v0", "/j.md", "[" * 20_000 + "]" * 20_000)]),
    ),
    "folder-y-maps": (
        "read_folder",
        add_run(hostile_folder(), HOSTILE_CLIENT, nested_maps("filemeta_v0", "/t.md", 20_000, HOSTILE_CLIENT)),
    ),
    "canvas-any-array": ("read_canvas", hostile_canvas(deep_array(20_000))),
    "canvas-y-maps": (
        "read_canvas",
        add_run(hostile_canvas(), HOSTILE_CLIENT, nested_maps("nodes", "evil", 20_000, HOSTILE_CLIENT)),
    ),
    "note-any-array": ("read_text", hostile_note(deep_array(30_000))),
    "note-never-written": ("is_never_written", hostile_note(deep_array(30_000))),
}


def read_isolated(reader: str, data: bytes, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``ydoc.<reader>(data)`` in a child interpreter: a crash there cannot kill pytest."""
    path = tmp_path / "update.bin"
    path.write_bytes(data)
    code = (
        "import sys; from pathlib import Path; from gitsync import ydoc\n"
        "try:\n"
        f"    ydoc.{reader}(Path(sys.argv[1]).read_bytes())\n"
        "except ydoc.CorruptUpdate as exc:\n"
        "    print('CorruptUpdate:', exc)\n"
        "else:\n"
        "    print('read without error')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=300,
    )


@pytest.mark.parametrize(("reader", "data"), DEEP.values(), ids=DEEP.keys())
def test_deep_values_are_refused_not_fatal(reader, data, tmp_path):
    # Before the depth check: SIGSEGV (Any values), RecursionError (nested Y.Maps), or a
    # silent read (legacy JSON content). Now: one clear CorruptUpdate, the process lives.
    result = read_isolated(reader, data, tmp_path)
    assert result.returncode == 0, f"reader died (exit {result.returncode}): {result.stderr[-400:]}"
    assert result.stdout.strip() == (
        f"CorruptUpdate: cannot decode Yjs update ({len(data)} bytes): "
        f"a value is nested deeper than {MAX_DEPTH} levels"
    )


def test_depth_limit_through_the_readers():
    # filemeta_v0 (1) -> entry (2) -> 62 arrays = 64 levels: read, the field ignored
    assert read_folder(hostile_folder(deep_array(MAX_DEPTH - 2)))["evil.md"].id == EVIL_ID
    with pytest.raises(CorruptUpdate, match=f"nested deeper than {MAX_DEPTH} levels"):
        read_folder(hostile_folder(deep_array(MAX_DEPTH - 1)))
    # nodes (1) -> node (2) -> styleAttributes: 62 nested objects = 64 levels
    assert [n["id"] for n in read_canvas(hostile_canvas(deep_object(MAX_DEPTH - 2)))["nodes"]] == ["evil", "n1"]
    with pytest.raises(CorruptUpdate, match="nested deeper"):
        read_canvas(hostile_canvas(deep_object(MAX_DEPTH - 1)))
    # nodes (1) -> 63 nested Y.Maps = 64 levels
    chain = add_run(hostile_canvas(), HOSTILE_CLIENT, nested_maps("nodes", "evil", MAX_DEPTH - 1, HOSTILE_CLIENT))
    assert "evil" in [n["id"] for n in read_canvas(chain)["nodes"]]
    chain = add_run(hostile_canvas(), HOSTILE_CLIENT, nested_maps("nodes", "evil", MAX_DEPTH, HOSTILE_CLIENT))
    with pytest.raises(CorruptUpdate, match="nested deeper"):
        read_canvas(chain)


def test_a_deep_entry_refuses_the_whole_folder_document():
    # Reading the rest without the entry would make its file look deleted.
    data = hostile_folder(deep_array(100))
    for _ in range(2):  # refused every time (only accepted updates are remembered)
        with pytest.raises(CorruptUpdate, match="nested deeper"):
            read_folder(data)
    assert set(read_folder(hostile_folder(deep_array(3)))) == {"a.md", "dir", "evil.md"}


READERS = [read_folder, read_text, is_never_written, read_canvas]


def mutated(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, byte in edits:
        out[at % len(out)] = byte
    return bytes(out)


hostile_bytes = (
    st.binary(max_size=400)
    | st.lists(st.sampled_from([0x00, 0x01, 0x04, 0x07, 0x08, 0x27, 0x28, 0x75, 0x76, 0x77, 0x7E, 0x84, 0xFF]),
               max_size=400).map(bytes)
    | st.builds(
        mutated,
        st.sampled_from([fixture(n) for n in ("folder", "canvas", "note_unicode", "note_emptied")]),
        st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=4),
    )
)


@settings(max_examples=300, deadline=None)
@given(data=hostile_bytes)
def test_arbitrary_bytes_raise_only_corrupt_update(data):
    for reader in READERS:
        try:
            reader(data)
        except CorruptUpdate as exc:
            assert "\n" not in str(exc)


UNREADABLE = {
    "formatting mark": (6, varstring("bold") + varstring("true"), "KeyError"),
    "xml element": (7, b"\x03" + varstring("p"), "XmlElement has no Python equivalent"),
    "xml fragment": (7, b"\x04", "XmlFragment has no Python equivalent"),
}


@pytest.mark.parametrize(("ref", "content", "reason"), UNREADABLE.values(), ids=UNREADABLE.keys())
@pytest.mark.parametrize(
    ("reader", "root", "base"),
    [
        (read_folder, "filemeta_v0", hostile_folder()),
        (read_canvas, "nodes", hostile_canvas()),
        (read_canvas, "edges", hostile_canvas()),
    ],
    ids=["folder", "canvas-nodes", "canvas-edges"],
)
def test_content_without_a_plain_value_is_corrupt(reader, root, base, ref, content, reason):
    # pycrdt raises KeyError/ValueError converting these; callers only handle CorruptUpdate
    data = add_run(base, HOSTILE_CLIENT, [map_entry(root, "k", ref, content)])
    with pytest.raises(CorruptUpdate, match=f"cannot read Yjs map '{root}': .*{reason}"):
        reader(data)
