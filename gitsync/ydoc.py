"""Read Relay Server Yjs documents (v1 updates) into plain Python values.

Pure: decodes bytes with pycrdt and returns data; no I/O. The layouts are those of
docs/relay-protocol.md ("Yjs document layouts"): a shared folder's ``filemeta_v0`` and legacy
``docs`` maps, a markdown document's ``contents`` text, and a canvas's ``nodes`` and
``edges`` maps plus one root text per text node.

Every reader decodes the whole update into a fresh ``pycrdt.Doc`` and drops it before
returning, so nothing here is shared between threads. Any undecodable input raises
:class:`CorruptUpdate`, never a pycrdt or pyo3 exception. Before pycrdt sees the bytes,
:func:`gitsync.ycheck.check_update` rejects values nested so deep that pycrdt would
crash the process (a native stack overflow, not an exception): such a document is
refused whole rather than read without the deep value, so a damaged entry can neither
delete a file nor drop a canvas node from Git.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Doc, Map, Text

from gitsync.ids import is_uuid
from gitsync.ycheck import UpdateRejected, check_update

__all__ = [
    "CorruptUpdate",
    "FILE_TYPES",
    "ATTACHMENT_TYPES",
    "Entry",
    "read_folder",
    "read_text",
    "is_never_written",
    "read_canvas",
    "render_canvas",
    "Authorship",
    "read_authorship",
    "Document",
    "read_document",
    "read_users",
    "state_vector",
]

log = logging.getLogger(__name__)

FILE_TYPES = frozenset(
    {"folder", "markdown", "canvas", "image", "pdf", "audio", "video", "base", "file", "document"}
)
"""Entry types accepted in ``filemeta_v0``; ``document`` is older data's name for markdown."""

ATTACHMENT_TYPES = frozenset({"image", "pdf", "audio", "video", "base", "file"})
"""Types whose content is a content-addressed blob (``hash``), not a Yjs document."""

_EMPTY_STATE_VECTOR = b"\x00"
# Bounds of what the ``users`` map may make us hold (a hostile document could list more).
MAX_USERS = 10_000
MAX_CLIENT_IDS = 100_000
MAX_USER_ID_CHARS = 256
_MAX_CLIENT_ID = 2**53 - 1
# Canvas numbers at or below this magnitude are exact integers in a JS double.
_MAX_SAFE_INTEGER = 2**53 - 1

# Key order used when writing canvas objects. A Yjs map keeps no key order (pycrdt even
# returns plain-object keys in a random order per process), so one fixed order is the
# only way an unchanged canvas yields an unchanged file. The common keys follow the order
# recent Obsidian files show (id, type, text/file/url, x, y, width, height, color); the
# place of label/background is a guess; keys not listed follow in alphabetical order.
_NODE_KEY_ORDER = (
    "id", "type", "text", "file", "subpath", "url", "label", "background", "backgroundStyle",
    "x", "y", "width", "height", "color",
)  # fmt: skip
_EDGE_KEY_ORDER = (
    "id", "fromNode", "fromSide", "fromEnd", "toNode", "toSide", "toEnd", "color", "label",
)  # fmt: skip
_CANVAS_KEY_ORDER = ("nodes", "edges")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_last_checked = threading.local()
_REMEMBER_MAX_BYTES = 1 << 20


class CorruptUpdate(ValueError):
    """The bytes are not a decodable Yjs v1 update (truncated, garbage, an error body...)."""


@dataclass(frozen=True)
class Entry:
    """One file or folder of a shared folder, as listed in its folder document.

    Attributes:
        path: Path inside the shared folder without the leading ``/`` ("notes/idea.md").
        id: Document UUID, lower-case (the second half of the compound id).
        type: ``folder``, ``markdown``, ``canvas``, ``image``, ``pdf``, ``audio``,
            ``video``, ``base`` or ``file``; :func:`read_folder` turns the legacy
            ``document`` into ``markdown``.
        hash: sha256 hex of an attachment's content (lower-case), else None.
        mimetype: Content type of an attachment, if given.
        synctime: Milliseconds since the epoch of an attachment's upload, if given.
    """

    path: str
    id: str
    type: str
    hash: str | None = None
    mimetype: str | None = None
    synctime: int | None = None

    def __post_init__(self) -> None:
        if self.type not in FILE_TYPES:
            raise ValueError(f"unknown entry type {self.type!r}")

    @property
    def kind(self) -> str:
        """How the content is fetched: ``folder``, ``text``, ``canvas`` or ``attachment``.

        A ``file`` without a hash is a text document (some editors create ``.html`` pages
        that way). An attachment type without a hash is still an ``attachment``: its
        bytes cannot be fetched yet, and the engine skips it until a hash appears.
        """
        if self.type == "folder":
            return "folder"
        if self.type in ("markdown", "document"):
            return "text"
        if self.type == "canvas":
            return "canvas"
        if self.type == "file" and not self.hash:
            return "text"
        return "attachment"


# --------------------------------------------------------------------------- decoding


def _load(update: bytes) -> Doc:
    """Decode ``update`` into a fresh Doc.

    Raises:
        CorruptUpdate: the bytes are not a Yjs v1 update, or nest too deep to decode safely.
        TypeError: ``update`` is not bytes-like (a programming error, not bad data).
    """
    if not isinstance(update, bytes | bytearray | memoryview):
        raise TypeError(f"update must be bytes, not {type(update).__name__}")
    data = bytes(update)
    if not data:
        raise CorruptUpdate("cannot decode Yjs update: empty input (an empty document is 00 00)")
    _check(data)
    doc = Doc()
    try:
        doc.apply_update(data)
    except Exception as exc:  # pycrdt>=0.14 raises ValueError("Cannot decode update: ...")
        raise CorruptUpdate(_describe(data, exc)) from exc
    except BaseException as exc:
        # pycrdt<0.14 raised pyo3_runtime.PanicException, a BaseException, on bad input.
        # It cannot be imported by name, so recognise it by class name; let
        # KeyboardInterrupt, SystemExit and friends through untouched.
        if type(exc).__name__ != "PanicException":
            raise
        raise CorruptUpdate(_describe(data, exc)) from exc
    return doc


def _check(data: bytes) -> None:
    """Refuse what pycrdt cannot decode safely (see :mod:`gitsync.ycheck`).

    Callers often read one update twice (``is_never_written``, then ``read_text``): the
    last update a thread accepted is remembered by identity (bytes are immutable) and
    not walked again. Only updates up to 1 MB are remembered, to hold little memory.
    """
    if getattr(_last_checked, "data", None) is data:
        return
    try:
        check_update(data)
    except UpdateRejected as exc:
        raise CorruptUpdate(f"cannot decode Yjs update ({len(data)} bytes): {exc}") from exc
    _last_checked.data = data if len(data) <= _REMEMBER_MAX_BYTES else None


def _map_values(doc: Doc, name: str) -> dict[Any, Any]:
    """The root map ``name`` as plain values (``{}`` when absent).

    Raises:
        CorruptUpdate: the map holds content that has no plain value (pycrdt raises
            ``KeyError`` for a formatting mark, ``ValueError`` for an XML type).
    """
    try:
        return doc.get(name, type=Map).to_py() or {}
    except Exception as exc:
        raise CorruptUpdate(_unreadable(f"map {name!r}", exc)) from exc


def _text(doc: Doc, name: str) -> str:
    """The root text ``name`` (``""`` when absent); see :func:`_map_values` for Raises."""
    try:
        return str(doc.get(name, type=Text))
    except Exception as exc:
        raise CorruptUpdate(_unreadable(f"text {name[:40]!r}", exc)) from exc


def _unreadable(what: str, exc: Exception) -> str:
    reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    if len(reason) > 120:
        reason = reason[:117] + "..."
    return f"cannot read Yjs {what}: it holds content with no plain value ({reason})"


def _describe(data: bytes, exc: BaseException) -> str:
    # The reason comes from the Rust decoder and names what it expected, never the input
    # bytes; cut it short anyway so a message stays one readable line.
    reason = str(exc).replace("\n", " ").strip()
    if reason.lower().startswith("cannot decode update:"):
        reason = reason[len("cannot decode update:") :].strip()
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return f"cannot decode Yjs update ({len(data)} bytes): {reason or type(exc).__name__}"


# --------------------------------------------------------------------------- folder


def read_folder(update: bytes) -> dict[str, Entry]:
    """List the files and folders of a shared-folder document.

    Reads ``filemeta_v0`` (values may be plain objects or nested Y.Maps) and adds the
    paths of the legacy ``docs`` map (path -> markdown doc id) that ``filemeta_v0``
    lacks. Paths lose their leading ``/``; ``/a.md`` and ``a.md`` are the same path.
    An entry with a missing or non-UUID id, an unknown type, or a malformed value is
    skipped with a warning: one bad entry must not stop a folder from syncing.

    Args:
        update: The folder document as a Yjs v1 update.

    Returns:
        path -> :class:`Entry`, in path order.

    Raises:
        CorruptUpdate: the bytes are not a Yjs v1 update, nest deeper than
            :data:`gitsync.ycheck.MAX_DEPTH` levels, or hold content with no plain value.
    """
    doc = _load(update)
    meta = _map_values(doc, "filemeta_v0")
    legacy = _map_values(doc, "docs")

    entries: dict[str, Entry] = {}
    # Sorted keys: when "/a.md" and "a.md" both exist, "/a.md" (the canonical spelling)
    # is seen first and wins, whatever order pycrdt listed them in.
    for key in sorted(meta, key=str):
        entry = _meta_entry(key, meta[key])
        if entry is None:
            continue
        if entry.path in entries:
            log.warning(
                "duplicate folder entry, keeping first path=%s doc=%s", entry.path, entry.id
            )
            continue
        entries[entry.path] = entry

    for key in sorted(legacy, key=str):
        path = _clean_path(key)
        if path is None or path in entries:
            continue
        doc_id = legacy[key]
        if not is_uuid(doc_id):
            log.warning("skipping legacy entry with bad id path=%s", path)
            continue
        entries[path] = Entry(path=path, id=doc_id.lower(), type="markdown")

    return dict(sorted(entries.items()))


def _clean_path(key: object) -> str | None:
    if not isinstance(key, str):
        log.warning("skipping folder entry with non-string path")
        return None
    path = key.lstrip("/")
    if not path:
        log.warning("skipping folder entry with empty path")
        return None
    return path


def _meta_entry(key: object, value: object) -> Entry | None:
    path = _clean_path(key)
    if path is None:
        return None
    if not isinstance(value, Mapping):
        log.warning("skipping folder entry that is not an object path=%s", path)
        return None
    doc_id = value.get("id")
    if not is_uuid(doc_id):
        log.warning("skipping folder entry with bad id path=%s", path)
        return None
    doc_id = doc_id.lower()
    kind = value.get("type")
    if kind not in FILE_TYPES:
        shown = kind if isinstance(kind, str) and len(kind) <= 40 else type(kind).__name__
        log.warning(
            "skipping folder entry with unknown type path=%s doc=%s type=%s", path, doc_id, shown
        )
        return None
    if kind == "document":
        kind = "markdown"
    raw_hash = value.get("hash")
    file_hash = raw_hash.strip().lower() if isinstance(raw_hash, str) and raw_hash.strip() else None
    mimetype = value.get("mimetype")
    return Entry(
        path=path,
        id=doc_id,
        type=kind,
        hash=file_hash,
        mimetype=mimetype if isinstance(mimetype, str) and mimetype else None,
        synctime=_as_int(value.get("synctime")),
    )


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


# --------------------------------------------------------------------------- text


def read_text(update: bytes) -> str:
    """Return a markdown (or text ``file``) document's ``contents`` exactly.

    A never-written document reads as ``""``; use :func:`is_never_written` to tell it
    from a note whose text was deleted.

    Raises:
        CorruptUpdate: the bytes are not a Yjs v1 update, nest deeper than
            :data:`gitsync.ycheck.MAX_DEPTH` levels, or hold content with no plain value.
    """
    doc = _load(update)
    return _text(doc, "contents")


def is_never_written(update: bytes) -> bool:
    """True when the update's state vector is empty: nothing was ever written to it.

    Such a document is either a genuinely empty note or one registered but not uploaded
    yet, so an existing file must not be blanked from it (docs/relay-protocol.md). A note whose text
    was written then deleted has a non-empty state vector and returns False.

    Raises:
        CorruptUpdate: the bytes are not a Yjs v1 update, nest deeper than
            :data:`gitsync.ycheck.MAX_DEPTH` levels, or hold content with no plain value.
    """
    return _load(update).get_state() == _EMPTY_STATE_VECTOR


# --------------------------------------------------------------------------- canvas


def read_canvas(update: bytes) -> dict[str, list[dict[str, Any]]]:
    """Rebuild a JSON Canvas object from a canvas document.

    Nodes come from ``Map("nodes")`` and edges from ``Map("edges")``. A ``text`` node's
    live text is the root ``Text(<node id>)``; when that is non-empty it replaces the
    node's (stale) ``text`` field. Integral numbers become ``int`` (pycrdt returns every
    JS number as a float), so ``-50`` is written as ``-50`` and ``10.5`` stays ``10.5``.

    In JSON Canvas the node order is the z-order, but a Y.Map keeps no order, so the
    original order cannot be recovered: nodes and edges are sorted by id, and keys of
    each object follow one fixed order (see :func:`render_canvas`).

    Returns:
        ``{"nodes": [...], "edges": [...]}``.

    Raises:
        CorruptUpdate: the bytes are not a Yjs v1 update, nest deeper than
            :data:`gitsync.ycheck.MAX_DEPTH` levels, or hold content with no plain value.
    """
    return _canvas(_load(update))


def _canvas(doc: Doc) -> dict[str, list[dict[str, Any]]]:
    roots = set(doc.keys())
    nodes = _canvas_items(_map_values(doc, "nodes"), "node")
    for node in nodes:
        node_id = node["id"]
        if node.get("type") != "text" or not isinstance(node_id, str) or node_id not in roots:
            continue
        if node_id in _CANVAS_KEY_ORDER:
            continue  # a root of that name is the nodes/edges map, not this node's text
        live = _text(doc, node_id)
        if live:
            node["text"] = live
    edges = _canvas_items(_map_values(doc, "edges"), "edge")
    return {
        "nodes": [_ordered(n, _NODE_KEY_ORDER) for n in nodes],
        "edges": [_ordered(e, _EDGE_KEY_ORDER) for e in edges],
    }


def _canvas_items(raw: Mapping[Any, Any], what: str) -> list[dict[str, Any]]:
    items = []
    for key, value in raw.items():
        if not isinstance(value, Mapping):
            log.warning("skipping canvas %s that is not an object", what)
            continue
        item = _normalize_numbers(dict(value))
        if item.get("id") is None:
            item["id"] = key  # the map key is the id; keep objects that omit it
        items.append(item)
    items.sort(key=lambda item: str(item["id"]))
    return items


def _normalize_numbers(value: Any) -> Any:
    """Turn integral floats back into ints, recursively, as JS would print them."""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) <= _MAX_SAFE_INTEGER:
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {k: _normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalize_numbers(v) for v in value]
    return value


def _ordered(obj: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    known = [k for k in order if k in obj]
    rest = sorted((k for k in obj if k not in order), key=str)
    return {k: obj[k] for k in known + rest}


def render_canvas(canvas: Mapping[str, Any]) -> bytes:
    """Serialize a canvas the way Obsidian writes ``.canvas`` files, deterministically.

    Layout: tab indentation, one compact object per node or edge line, no spaces after
    ``:`` or ``,``, no trailing newline, non-ASCII written as UTF-8 (like JS
    ``JSON.stringify``). Nodes and edges are sorted by id (the z-order is lost in the
    Y.Map, so it cannot be restored) and each object's keys follow a fixed order, so
    the same canvas always gives the same bytes. Numbers are printed as JS prints them
    (``-50``, ``10.5``, ``1e-7``); NaN and infinities become ``null``.

    Args:
        canvas: ``{"nodes": [...], "edges": [...]}``, e.g. from :func:`read_canvas`;
            other top-level keys are kept after those two, in key order.

    Returns:
        The file content as UTF-8 bytes.
    """
    lines = []
    keys = [k for k in _CANVAS_KEY_ORDER if k in canvas] or list(_CANVAS_KEY_ORDER)
    keys += sorted((k for k in canvas if k not in _CANVAS_KEY_ORDER), key=str)
    for key in keys:
        value = canvas.get(key, [])
        name = _js_string(str(key))
        if key in _CANVAS_KEY_ORDER and isinstance(value, list | tuple):
            order = _NODE_KEY_ORDER if key == "nodes" else _EDGE_KEY_ORDER
            items = sorted(
                (_ordered(item, order) if isinstance(item, Mapping) else item for item in value),
                key=lambda item: str(item.get("id")) if isinstance(item, Mapping) else "",
            )
            if items:
                body = ",\n".join("\t\t" + _compact(item) for item in items)
                lines.append(f"\t{name}:[\n{body}\n\t]")
            else:
                lines.append(f"\t{name}:[]")
        else:
            lines.append(f"\t{name}:{_compact(value)}")
    return ("{\n" + ",\n".join(lines) + "\n}").encode("utf-8")


def _compact(value: Any) -> str:
    """JSON like JS ``JSON.stringify(value)``: no spaces, JS number format."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _js_number(value)
    if isinstance(value, str):
        return _js_string(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_js_string(str(k))}:{_compact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} into a canvas")


def _js_string(text: str) -> str:
    out = json.dumps(text, ensure_ascii=False)
    # JS escapes lone surrogates (well-formed JSON.stringify); they cannot be UTF-8.
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)


def _js_number(value: float) -> str:
    """Format a float exactly as ECMAScript ``Number.prototype.toString`` does."""
    if not math.isfinite(value):
        return "null"  # JSON.stringify writes NaN and Infinity as null
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest round-tripping digits, as JS does; only the layout differs.
    mantissa, _, exp_text = repr(abs(value)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    exponent = int(exp_text or 0) - len(frac_part)  # value = int(digits) * 10**exponent
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = k + exponent  # value = 0.<digits> * 10**n
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        e_text = f"e{'+' if e >= 0 else '-'}{abs(e)}"
        body = (digits if k == 1 else digits[0] + "." + digits[1:]) + e_text
    return sign + body


# --------------------------------------------------------------------------- authorship


@dataclass(frozen=True)
class Authorship:
    """What a document says about who wrote it.

    Attributes:
        state_vector: the encoded Yjs v1 state vector (client id -> clock).
        users: client id -> relay user id, from the root map ``users``.
    """

    state_vector: bytes
    users: dict[int, str]


def state_vector(update: bytes) -> bytes:
    """The document's encoded v1 state vector (``00`` for a never-written document).

    Raises:
        CorruptUpdate: the bytes are not a Yjs v1 update.
    """
    return _load(update).get_state()


def read_users(update: bytes) -> dict[int, str]:
    """Client id -> relay user id, from the document's root ``users`` map.

    The layout is yjs's PermanentUserData: ``users[<user id>]`` is a Y.Map whose ``ids``
    is a Y.Array of client ids (``ds`` holds delete sets, not read here); a plain object
    ``{"ids": [...]}`` is read the same way. Anything else is skipped. A client id that
    two users claim is left out (it counts as unknown), so nobody is credited with
    another's work. Bounded: at most :data:`MAX_USERS` users and :data:`MAX_CLIENT_IDS`
    ids are read; values are read one level at a time, never converted whole.

    Raises:
        CorruptUpdate: the bytes are not a Yjs v1 update.
    """
    return _users(_load(update))


@dataclass(frozen=True)
class Document:
    """A text or canvas document read in one decoding (see :func:`read_document`).

    Attributes:
        never_written: the state vector is empty (see :func:`is_never_written`).
        content: the file's bytes: the text as UTF-8, or the rendered canvas.
        authorship: state vector and ``users`` map (see :func:`read_authorship`).
    """

    never_written: bool
    content: bytes
    authorship: Authorship


def read_document(update: bytes, kind: str) -> Document:
    """Everything a fetch needs from a ``text`` or ``canvas`` document, decoded once.

    The same as :func:`is_never_written`, :func:`read_text` (or :func:`read_canvas` and
    :func:`render_canvas`) and :func:`read_authorship` one after the other, at the cost
    of one decoding instead of three.

    Raises:
        CorruptUpdate: as :func:`read_text` and :func:`read_canvas`.
        ValueError: ``kind`` is neither ``text`` nor ``canvas``.
    """
    if kind not in ("text", "canvas"):
        raise ValueError(f"read_document reads text and canvas documents, not {kind!r}")
    doc = _load(update)
    vector = doc.get_state()
    if kind == "canvas":
        content = render_canvas(_canvas(doc))
    else:
        content = _text(doc, "contents").encode("utf-8")
    return Document(never_written=vector == _EMPTY_STATE_VECTOR, content=content,
                    authorship=Authorship(state_vector=vector, users=_users(doc)))


def read_authorship(update: bytes) -> Authorship:
    """State vector and ``users`` map in one decoding (see :func:`read_users`).

    Raises:
        CorruptUpdate: the bytes are not a Yjs v1 update.
    """
    doc = _load(update)
    return Authorship(state_vector=doc.get_state(), users=_users(doc))


def _users(doc: Doc) -> dict[int, str]:
    if "users" not in set(doc.keys()):
        return {}
    with doc.transaction():
        return _users_in(doc.get("users", type=Map))


def _users_in(users: Map) -> dict[int, str]:
    owner: dict[int, str] = {}
    shared: set[int] = set()
    read = 0
    for count, user in enumerate(sorted(users.keys())):
        if count >= MAX_USERS:
            log.warning("document lists more than %d users; the rest are not read", MAX_USERS)
            break
        if not isinstance(user, str) or not user or len(user) > MAX_USER_ID_CHARS:
            continue
        try:
            ids = _client_ids(users[user])
        except Exception:  # noqa: BLE001 - a malformed entry is skipped, never fatal
            continue
        for client in ids:
            read += 1
            if read > MAX_CLIENT_IDS:
                log.warning("document lists more than %d client ids; the rest are not read", MAX_CLIENT_IDS)
                return {c: u for c, u in owner.items() if c not in shared}
            known = owner.setdefault(client, user)
            if known != user:
                shared.add(client)
    return {c: u for c, u in owner.items() if c not in shared}


def _client_ids(value: object) -> list[int]:
    """The client ids of one ``users`` entry (a Y.Map or a plain object with ``ids``)."""
    if isinstance(value, Map):
        if "ids" not in set(value.keys()):
            return []
        ids = value["ids"]
    elif isinstance(value, Mapping):
        ids = value.get("ids")
    else:
        return []
    if isinstance(ids, Array):
        # The list as JSON in one call (item by item costs a transaction each); the depth
        # of what it holds is bounded before pycrdt decodes anything (_load).
        try:
            items = json.loads(str(ids))
        except (ValueError, RecursionError):
            return []
        if not isinstance(items, list):
            return []
        items = items[:MAX_CLIENT_IDS]
    elif isinstance(ids, list):
        items = ids[:MAX_CLIENT_IDS]
    else:
        return []
    out = []
    for item in items:
        client = _client_id(item)
        if client is not None:
            out.append(client)
    return out


def _client_id(value: object) -> int | None:
    """A Yjs client id: a non-negative integer (JS numbers arrive as floats)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= _MAX_CLIENT_ID else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value) if 0 <= value <= _MAX_CLIENT_ID else None
    return None
