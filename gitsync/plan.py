"""Turn two snapshots of a shared folder into an ordered list of file operations.

Pure: no I/O. ``previous`` is what the engine wrote last time (keyed by document id),
``current`` is the folder index just read (keyed by its unsanitized paths). Documents
are followed by id, so a renamed file is a :class:`Move`, never a delete plus a write.

Paths coming from the folder index are hostile until :func:`safe_path` accepts them
(invariant 5 in docs/architecture.md); an entry that fails, that would be repository configuration
(:func:`repository_config`: CI workflows, ``.gitattributes``, ...) unless the connector
allows it, or that cannot coexist with the entries already accepted (same document
twice, a file inside a file, names differing only in letter case), goes to
:attr:`Plan.rejected` and the rest of the folder proceeds.

The operations are correct when applied one after the other, in order, on a case
sensitive *or* case insensitive filesystem: no :class:`Move` or :class:`Write` ever
lands on a path that holds another document's file at that moment. Chains, swaps,
cycles and case-only renames go through a temporary name ``.gitsync-tmp-<doc id>``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from gitsync.ydoc import Entry

__all__ = [
    "MAX_PATH_BYTES",
    "MAX_PATH_SEGMENTS",
    "TMP_PREFIX",
    "UnsafePath",
    "safe_path",
    "repository_config",
    "Tracked",
    "Delete",
    "Move",
    "Mkdir",
    "Write",
    "Rmdir",
    "Op",
    "Plan",
    "diff_folders",
    "mass_deletion",
]

TMP_PREFIX = ".gitsync-tmp-"
"""Reserved name prefix of the temporary files moves go through; rejected in the index."""

MAX_PATH_BYTES = 4096
"""Longest folder index path accepted, in UTF-8 bytes (PATH_MAX of Linux)."""
MAX_PATH_SEGMENTS = 255
"""Most segments (folders plus the file name) a folder index path may have."""
_MAX_NAME_BYTES = 255  # NAME_MAX of every filesystem we may write on
_DRIVE = re.compile(r"^[A-Za-z]:")
# Unicode categories Cc (C0, DEL, C1 controls) and Cs (surrogates), as one scan.
_BAD_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Code points HFS+ ignores when comparing names, so ".g\u200cit" is ".git" on a Mac
# (git's own is_hfs_dotgit skips the same set).
_HFS_IGNORABLE = dict.fromkeys(
    map(ord, "\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u206a\u206b\u206c\u206d\u206e\u206f\ufeff")
)


class UnsafePath(ValueError):
    """A folder index path that must not be written (outside the tree, into .git, ...)."""


def safe_path(path: str) -> str:
    """Return ``path`` as a normalized relative posix path, or refuse it.

    One leading ``/`` is dropped (folder index paths start with one), ``.`` segments
    and repeated slashes collapse: ``"/notes//./a.md"`` becomes ``"notes/a.md"``.

    Raises:
        UnsafePath: empty after normalization, absolute, a ``..`` segment, a NUL or
            other control character, a lone surrogate, a backslash, a ``.git``
            segment in any letter case (also ``.git.``, ``.git::$DATA``, ``git~1``
            and HFS-ignorable spellings), a Windows drive letter such as ``C:``, a
            name longer than 255 bytes, a path longer than :data:`MAX_PATH_BYTES`
            (as the index spells it, less one leading ``/``) or with more than
            :data:`MAX_PATH_SEGMENTS` segments. The message says which; it never
            repeats the path.
    """
    if not isinstance(path, str):
        raise UnsafePath(f"path is a {type(path).__name__}, not a string")
    # Length first, so a hostile path costs no more than MAX_PATH_BYTES of work below.
    body = path[1:] if path.startswith("/") else path
    if len(body) > MAX_PATH_BYTES or len(body.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise UnsafePath(f"path longer than {MAX_PATH_BYTES} bytes")
    bad = _BAD_CHAR.search(path)
    if bad is not None:
        char = bad.group()
        if char == "\x00":
            raise UnsafePath("NUL character in path")
        if char < "\ud800":
            raise UnsafePath("control character in path")
        raise UnsafePath("invalid unicode (lone surrogate) in path")
    if "\\" in path:
        raise UnsafePath("backslash in path")
    if body.startswith("/"):
        raise UnsafePath("absolute path")
    segments = [seg for seg in body.split("/") if seg not in ("", ".")]
    if not segments:
        raise UnsafePath("empty path")
    if len(segments) > MAX_PATH_SEGMENTS:
        raise UnsafePath(f"path has more than {MAX_PATH_SEGMENTS} segments (folders and file name)")
    if _suspect(body, segments):
        _check_segments(segments)
    return "/".join(segments)


def _suspect(body: str, segments: list[str]) -> bool:
    """Cheap whole-path scans: False when no segment can fail :func:`_check_segments`."""
    return (
        ".." in segments
        or "git" in body.translate(_HFS_IGNORABLE).lower()
        or ":" in body
        or max(map(len, body.encode("utf-8").split(b"/"))) > _MAX_NAME_BYTES
    )


def _check_segments(segments: list[str]) -> None:
    """Refuse the first bad segment, in path order (see :func:`safe_path`)."""
    for seg in segments:
        if seg == "..":
            raise UnsafePath("'..' segment in path")
        if _is_dotgit(seg):
            raise UnsafePath("'.git' segment in path")
        if _DRIVE.match(seg):
            raise UnsafePath("windows drive letter in path")
        if len(seg.encode("utf-8")) > _MAX_NAME_BYTES:
            raise UnsafePath(f"name longer than {_MAX_NAME_BYTES} bytes in path")


def _is_dotgit(segment: str) -> bool:
    name = segment.translate(_HFS_IGNORABLE).split(":", 1)[0].rstrip(" .").lower()
    return name in (".git", "git~1")


# --------------------------------------------------------------------------- repository policy

_CI = "a CI service runs jobs from it, with the repository's secrets"
_RUNS = "a hosting service runs code from it"
# Names git reads in any folder of the tree: they apply to that folder and below.
_CONFIG_ANYWHERE: dict[str, str] = {
    ".gitattributes": "git applies its filters, diff and merge drivers to the folder it is in",
}
# Names read at the repository root only; a folder here is refused with all it holds.
_CONFIG_AT_ROOT: dict[str, str] = {
    ".gitmodules": "git reads submodule urls from it",
    ".lfsconfig": "git-lfs reads its server url from it",
    ".github": "GitHub runs workflows and actions from it with the repository's secrets",
    ".gitlab-ci.yml": _CI,
    ".gitlab": "GitLab reads CI templates and settings from it",
    ".gitea": _CI,
    ".forgejo": _CI,
    "bitbucket-pipelines.yml": _CI,
    "azure-pipelines.yml": _CI,
    ".azure-pipelines": _CI,
    ".circleci": _CI,
    ".travis.yml": _CI,
    ".drone.yml": _CI,
    ".woodpecker.yml": _CI,
    ".woodpecker": _CI,
    ".buildkite": _CI,
    "Jenkinsfile": _CI,
    ".cirrus.yml": _CI,
    ".cirrus.star": _CI,
    "appveyor.yml": _CI,
    ".appveyor.yml": _CI,
    ".build.yml": _CI,
    ".builds": _CI,
    ".pre-commit-config.yaml": "pre-commit runs the hooks it names on every commit",
    ".devcontainer": _RUNS,
    ".devcontainer.json": _RUNS,
}
_ROOT_NAMES = {name.lower(): name for name in _CONFIG_AT_ROOT}
# 8.3 short names Windows may give those files (git checks the same spellings).
_SHORT_NAMES = {"gitatt": ".gitattributes", "gi7d29": ".gitattributes",
                "gitmod": ".gitmodules", "gi7eba": ".gitmodules", "lfscon": ".lfsconfig"}
_SHORT_NAME = re.compile(r"^([a-z0-9]{6})~[1-9]$")


def _config_name(folded: str) -> str:
    """The name a case insensitive, NTFS or HFS+ filesystem would see for a folded segment."""
    name = folded.split(":", 1)[0].rstrip(" .")
    short = _SHORT_NAME.match(name)
    if short is not None and short.group(1) in _SHORT_NAMES:
        return _SHORT_NAMES[short.group(1)]
    return name


def repository_config(path: str) -> str | None:
    """Why ``path`` would be repository configuration rather than vault content, or None.

    A vault editor must not be able to add what runs code or changes how git treats
    the repository: CI definitions that a hosting service runs with the repository's
    secrets (``.github/``, ``.gitlab-ci.yml`` and other CI files), git's own in-tree
    configuration (``.gitmodules``, ``.lfsconfig``) and hooks run on people's machines
    (``.pre-commit-config.yaml``, ``.devcontainer``). Those count only at the
    repository root, where they are read; ``.gitattributes`` counts in every folder.
    Names compare as a case insensitive, HFS+ or NTFS filesystem would (letter case,
    ignorable characters, trailing dots and spaces, 8.3 short names). ``.gitignore``
    and ``.mailmap`` are allowed: they run nothing and only affect people's checkouts.

    Args:
        path: a safe path relative to the repository root (connector prefix included).

    Returns:
        A reason naming the setting that allows such paths, or None.
    """
    folded = _fold(path.translate(_HFS_IGNORABLE))
    names = folded.split("/")
    name = _ROOT_NAMES.get(_config_name(names[0]))
    if name is not None:
        why, where = _CONFIG_AT_ROOT[name], " at the repository root"
    elif ("gitatt" in folded or "gi7d29" in folded) and ".gitattributes" in map(_config_name, names):
        name, why, where = ".gitattributes", _CONFIG_ANYWHERE[".gitattributes"], ""
    else:
        return None
    return (f"{name!r}{where} is repository configuration ({why}); set allow_repository_config = "
            "true for this connector in git_connectors.toml to sync it")


def _fold(path: str) -> str:
    """Comparison key of a case (and normalization) insensitive filesystem.

    Every lookup in the planner's models goes through this key, once per walked path
    (never once per ancestor: that made planning quadratic in the path length).
    """
    return unicodedata.normalize("NFC", path).lower()


def _split(path: str) -> tuple[list[str], list[str]]:
    """``path``'s segments and the comparison key of each, from one fold of the path."""
    segs = path.split("/")
    keys = _fold(path).split("/")
    if len(keys) != len(segs):  # folding never adds or drops a "/"; stay correct if it did
        keys = [_fold(seg) for seg in segs]
    return segs, keys


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _depth_key(path: str) -> tuple[int, str]:
    return (path.count("/"), path)


def _deepest_first(path: str) -> tuple[int, str]:
    return (-path.count("/"), path)


def _is_reserved(path: str) -> bool:
    folded = path.lower()
    return TMP_PREFIX in folded and any(seg.startswith(TMP_PREFIX) for seg in folded.split("/"))


class _Node:
    """One name in a model of a case insensitive tree; children keyed by folded name.

    A node may hold a directory (``dir``: its spelling, one segment), a file (``file``:
    its exact path, ``doc``: the document in it) or, in a passing state, both.
    ``files_below`` counts the files in the subtree, so a search for them skips
    directories that hold none.
    """

    __slots__ = ("parent", "key", "kids", "dir", "file", "doc", "files_below")

    def __init__(self, parent: _Node | None, key: str) -> None:
        self.parent = parent
        self.key = key
        self.kids: dict[str, _Node] = {}
        self.dir: str | None = None
        self.file: str | None = None
        self.doc: str | None = None
        self.files_below = 0

    def child(self, key: str) -> _Node:
        node = self.kids.get(key)
        if node is None:
            node = self.kids[key] = _Node(self, key)
        return node

    def prune(self) -> None:
        """Drop this node and its emptied ancestors from the tree."""
        node = self
        while node.parent is not None and node.dir is None and node.file is None and not node.kids:
            parent, node.parent = node.parent, None  # detached: a second prune is a no-op
            del parent.kids[node.key]
            node = parent


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Tracked:
    """What the engine wrote for one document: its path, type and (attachments) hash."""

    path: str
    type: str
    hash: str | None = None

    @classmethod
    def of(cls, entry: Entry) -> Tracked:
        """The record to keep after ``entry`` was written (hash only for attachments)."""
        return cls(entry.path, entry.type, entry.hash if entry.kind == "attachment" else None)


@dataclass(frozen=True)
class Delete:
    """Remove the file of a tracked document that left the folder."""

    doc_id: str
    path: str


@dataclass(frozen=True)
class Move:
    """Rename a tracked document's file; ``dst`` is free when the op comes.

    The engine creates missing parent directories of ``dst``.
    """

    doc_id: str
    src: str
    dst: str


@dataclass(frozen=True)
class Mkdir:
    """Create a folder entry's directory (with parents; fine if it exists)."""

    path: str


@dataclass(frozen=True)
class Write:
    """Fetch and write a document's content; ``entry.path == path`` (sanitized).

    ``reason`` is ``"new"`` (not tracked), ``"type"`` (type changed) or ``"hash"``
    (an attachment's content changed). The engine creates missing parent directories.
    """

    doc_id: str
    path: str
    entry: Entry
    reason: str


@dataclass(frozen=True)
class Rmdir:
    """Remove a directory the folder no longer has, only if it is empty."""

    path: str


Op = Delete | Move | Mkdir | Write | Rmdir


@dataclass
class Plan:
    """Ordered operations for one folder plus what was refused.

    Attributes:
        ops: Deletes, Moves, Mkdirs (parents first), Writes, Rmdirs (deepest first).
            An Rmdir that must clear the way for a file (a directory replaced by a
            file, a directory whose letter case changed) comes right before the
            Move, Mkdir or Write that needs the path, so apply the ops in order.
        rejected: ``(path as in the index, reason)`` for entries skipped.
        accepted: Sanitized path -> entry (``entry.path`` sanitized too) for every
            entry that passed; the new snapshot of the folder.
    """

    ops: list[Op] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    accepted: dict[str, Entry] = field(default_factory=dict)

    @property
    def deleted(self) -> list[Delete]:
        return [op for op in self.ops if isinstance(op, Delete)]

    @property
    def written(self) -> list[Write]:
        return [op for op in self.ops if isinstance(op, Write)]

    @property
    def moved(self) -> list[tuple[str, str, str]]:
        """``(doc_id, original path, final path)`` per renamed document, temp hops folded."""
        first: dict[str, str] = {}
        last: dict[str, str] = {}
        for op in self.ops:
            if isinstance(op, Move):
                first.setdefault(op.doc_id, op.src)
                last[op.doc_id] = op.dst
        return [(doc, first[doc], last[doc]) for doc in first if first[doc] != last[doc]]

    @property
    def touched(self) -> set[str]:
        """Paths whose content may differ after the plan (temporary names excluded)."""
        paths: set[str] = set()
        for op in self.ops:
            if isinstance(op, Delete | Write):
                paths.add(op.path)
            elif isinstance(op, Move):
                paths.update(p for p in (op.src, op.dst) if not _is_reserved(p))
        return paths


# --------------------------------------------------------------------------- acceptance


class _Layout:
    """Paths accepted so far, checked for coexistence on any filesystem.

    A tree of :class:`_Node` keyed by folded names: checking or adding a path walks
    its segments once, so the cost is linear in the path's length.
    """

    def __init__(self) -> None:
        self.root = _Node(None, "")

    def admit(self, path: str, *, is_file: bool) -> str | None:
        """Add ``path`` (its parents as folders), or say why it cannot join the layout."""
        segs, keys = _split(path)
        node = self.root
        last = len(segs) - 1
        for i, (seg, key) in enumerate(zip(segs, keys, strict=True)):
            hit = node.kids.get(key)
            if hit is None:
                break  # nothing below was added either: no conflict from here on
            if i < last:
                if hit.file is not None:
                    return f"inside {hit.file!r}, which is a file"
                if hit.dir != seg:
                    return (f"folder {'/'.join(segs[:i + 1])!r} differs only in letter case "
                            f"from {'/'.join([*segs[:i], str(hit.dir)])!r}")
                node = hit
                continue
            if hit.file is None and hit.dir == seg:
                # the same folder twice (two folder documents) is harmless
                return "a file and a folder at the same path" if is_file else None
            if hit.file == path:
                return "a file and a folder at the same path"
            spelled = hit.file if hit.file is not None else "/".join([*segs[:i], str(hit.dir)])
            return f"differs only in letter case from {spelled!r}"
        for j in range(i, last):
            node = node.child(keys[j])
            node.dir = segs[j]
        node = node.child(keys[last])
        if is_file:
            node.file = path
        else:
            node.dir = segs[last]
        return None

    def safe_for_temp(self, directory: str) -> bool:
        """True if a temporary file in ``directory`` can never be in the way.

        That holds unless ``directory`` or one of its ancestors must become a file or
        be spelled in another letter case.
        """
        if not directory:
            return True
        segs, keys = _split(directory)
        node = self.root
        for seg, key in zip(segs, keys, strict=True):
            hit = node.kids.get(key)
            if hit is None:
                return True
            if hit.file is not None or hit.dir != seg:
                return False
            node = hit
        return True


def _accept(current: Mapping[str, Entry], rejected: list[tuple[str, str]], *, prefix: str,
            allow_repository_config: bool) -> tuple[dict[str, Entry], _Layout]:
    candidates: list[tuple[str, str, Entry]] = []
    for raw, entry in current.items():
        try:
            clean = safe_path(raw)
        except UnsafePath as exc:
            rejected.append((raw, str(exc)))
            continue
        if _is_reserved(clean):
            rejected.append((raw, f"name starts with the reserved prefix {TMP_PREFIX}"))
            continue
        if not allow_repository_config:
            why = repository_config(f"{prefix}/{clean}" if prefix else clean)
            if why is not None:
                rejected.append((raw, why))
                continue
        candidates.append((clean, raw, entry))

    by_path: dict[str, tuple[str, Entry]] = {}
    for clean, raw, entry in sorted(candidates, key=lambda c: (c[0], c[1])):
        if clean in by_path:
            rejected.append((raw, f"same path as {by_path[clean][0]!r} once normalized"))
        else:
            by_path[clean] = (raw, entry)

    path_of_id: dict[str, str] = {}
    for clean in sorted(by_path):
        raw, entry = by_path[clean]
        if entry.id in path_of_id:
            rejected.append((raw, f"document {entry.id} is already at {path_of_id[entry.id]!r}"))
        else:
            path_of_id[entry.id] = clean

    layout = _Layout()
    accepted: dict[str, Entry] = {}
    for clean in sorted(path_of_id.values(), key=_depth_key):
        raw, entry = by_path[clean]
        problem = layout.admit(clean, is_file=entry.kind != "folder")
        if problem is not None:
            rejected.append((raw, problem))
            continue
        accepted[clean] = entry if entry.path == clean else replace(entry, path=clean)
    rejected.sort()
    return dict(sorted(accepted.items())), layout


def _usable_previous(previous: Mapping[str, Tracked]) -> dict[str, Tracked]:
    """Tracked records we can act on: safe paths that form a possible tree.

    A record that fails is ignored (its path is never touched); if its document is
    still in the folder, it is written again as new.
    """
    items: list[tuple[str, str, Tracked]] = []
    for doc_id, rec in previous.items():
        try:
            clean = safe_path(rec.path)
        except UnsafePath:
            continue
        items.append((clean, doc_id, rec if rec.path == clean else replace(rec, path=clean)))
    layout = _Layout()
    usable: dict[str, Tracked] = {}
    for clean, doc_id, rec in sorted(items, key=lambda i: (*_depth_key(i[0]), i[1])):
        if layout.admit(clean, is_file=rec.type != "folder") is None:
            usable[doc_id] = rec
    return usable


# --------------------------------------------------------------------------- planning


class _Tree:
    """Model of the files and directories we know of while the plan is built.

    It behaves like a case insensitive filesystem: at most one spelling per folded
    path. Directories never vanish on their own (only through Rmdir). Every method
    walks the segments of one path once (linear in its length); only
    :meth:`docs_under` and :meth:`clear` visit a subtree, as a real filesystem would.
    """

    def __init__(self) -> None:
        self.root = _Node(None, "")

    def _find(self, keys: list[str]) -> _Node | None:
        node: _Node | None = self.root
        for key in keys:
            node = node.kids.get(key)
            if node is None:
                return None
        return node

    def _makedirs(self, segs: list[str], keys: list[str]) -> _Node:
        node = self.root
        for seg, key in zip(segs, keys, strict=True):
            node = node.child(key)
            if node.dir is None:
                node.dir = seg  # an existing directory keeps its spelling
        return node

    def makedirs(self, path: str) -> None:
        self._makedirs(*_split(path))

    def add_file(self, path: str, doc_id: str) -> None:
        segs, keys = _split(path)
        node = self._makedirs(segs[:-1], keys[:-1]).child(keys[-1])
        if node.file is None:
            up = node.parent
            while up is not None:
                up.files_below += 1
                up = up.parent
        node.file, node.doc = path, doc_id

    def remove_file(self, path: str) -> None:
        node = self._find(_split(path)[1])
        if node is None or node.file is None:
            raise KeyError(path)
        node.file = node.doc = None
        up = node.parent
        while up is not None:
            up.files_below -= 1
            up = up.parent
        node.prune()

    def occupied(self, path: str) -> bool:
        """True when a file or a directory has the folded ``path``."""
        node = self._find(_split(path)[1])
        return node is not None and (node.file is not None or node.dir is not None)

    @staticmethod
    def docs_under(node: _Node) -> set[str]:
        """Docs of the files strictly below ``node``."""
        found: set[str] = set()
        stack = [node]
        while stack:
            for kid in stack.pop().kids.values():
                if kid.doc is not None:
                    found.add(kid.doc)
                if kid.files_below:
                    stack.append(kid)
        return found

    def blockers(self, target: str) -> set[str]:
        """Docs whose files stand in the way of a file at ``target``."""
        segs, keys = _split(target)
        found: set[str] = set()
        node: _Node | None = self.root
        for seg, key in zip(segs[:-1], keys[:-1], strict=True):
            node = node.kids.get(key)
            if node is None:
                return found
            if node.doc is not None:
                found.add(node.doc)  # a file where a folder must be
            if node.dir is not None and node.dir != seg:
                return found | self.docs_under(node)  # folder in another letter case: empty it
        last = node.kids.get(keys[-1])
        if last is not None:
            if last.doc is not None:
                found.add(last.doc)
            if last.dir is not None:
                found |= self.docs_under(last)  # a folder where the file must be
        return found

    def clear(self, target: str, *, as_file: bool) -> list[str]:
        """Remove (from the model) directories in the way of ``target``; deepest first.

        Those are a directory at ``target`` when a file goes there, and directories
        spelled in another letter case than ``target`` or its ancestors. The caller
        made sure no file is left in them.
        """
        segs, keys = _split(target)
        node: _Node | None = self.root
        doomed: tuple[_Node, int] | None = None
        for i, (seg, key) in enumerate(zip(segs[:-1], keys[:-1], strict=True)):
            node = node.kids.get(key)
            if node is None:
                return []
            if node.dir is not None and node.dir != seg:
                doomed = (node, i)
                break
        if doomed is None:
            last = node.kids.get(keys[-1])
            if last is None or last.dir is None or not (as_file or last.dir != segs[-1]):
                return []
            doomed = (last, len(segs) - 1)
        top, depth = doomed
        gone: list[str] = []
        visited: list[_Node] = []
        stack = [(top, "/".join([*segs[:depth], str(top.dir)]))]
        while stack:
            here, spelled = stack.pop()
            visited.append(here)
            gone.append(spelled)
            here.dir = None
            stack.extend((kid, f"{spelled}/{kid.dir}") for kid in here.kids.values() if kid.dir is not None)
        for here in reversed(visited):
            here.prune()
        return sorted(gone, key=_deepest_first)

    def surplus_dirs(self, layout: _Layout) -> list[str]:
        """Directories of the model that ``layout`` has no folder for (same spelling)."""
        gone: list[str] = []
        stack: list[tuple[_Node, _Node | None, str]] = [(self.root, layout.root, "")]
        while stack:
            here, wanted, spelled = stack.pop()
            for key, kid in here.kids.items():
                if kid.dir is None:
                    continue
                path = f"{spelled}/{kid.dir}" if spelled else kid.dir
                match = wanted.kids.get(key) if wanted is not None else None
                if match is None or match.file is not None or match.dir != kid.dir:
                    gone.append(path)
                    match = None  # nothing below a folder the layout lacks is wanted
                stack.append((kid, match, path))
        return gone


def diff_folders(previous: Mapping[str, Tracked], current: Mapping[str, Entry], *,
                 prefix: str = "", allow_repository_config: bool = False) -> Plan:
    """Plan the operations that turn the tracked tree into the folder's new layout.

    Args:
        previous: doc id -> what we wrote (files and folders). Records with unsafe or
            clashing paths are ignored: their paths are never touched.
        current: the folder index, unsanitized path -> entry.
        prefix: the connector's folder inside the repository ('' for the root), so
            :func:`repository_config` judges where an entry really lands.
        allow_repository_config: accept entries :func:`repository_config` refuses.

    Returns:
        A :class:`Plan`; rename+edit is a Move then a Write (only when the type or an
        attachment's hash changed: refreshing text content is the engine's job).
        A tracked document whose entry is rejected counts as gone (Delete).
    """
    rejected: list[tuple[str, str]] = []
    accepted, layout = _accept(current, rejected, prefix=prefix.strip("/"),
                               allow_repository_config=allow_repository_config)
    tracked = _usable_previous(previous)
    by_id = {entry.id: entry for entry in accepted.values()}
    return _Planner(tracked, accepted, by_id, layout).run(rejected)


class _Planner:
    def __init__(self, tracked: dict[str, Tracked], accepted: dict[str, Entry],
                 by_id: dict[str, Entry], layout: _Layout) -> None:
        self.tracked = tracked
        self.accepted = accepted
        self.by_id = by_id
        self.layout = layout
        self.tree = _Tree()
        self.ops: list[Op] = []
        self.loc: dict[str, str] = {}  # doc id -> where its file is now (model)
        for doc_id, rec in tracked.items():
            if rec.type == "folder":
                self.tree.makedirs(rec.path)
            else:
                self.tree.add_file(rec.path, doc_id)
                self.loc[doc_id] = rec.path

    def run(self, rejected: list[tuple[str, str]]) -> Plan:
        deletes: list[Delete] = []
        moves: dict[str, str] = {}
        writes: dict[str, Write] = {}
        mkdirs: list[str] = []
        for doc_id, rec in self.tracked.items():
            entry = self.by_id.get(doc_id)
            if rec.type != "folder" and (entry is None or entry.kind == "folder"):
                deletes.append(Delete(doc_id, rec.path))
        for path, entry in self.accepted.items():
            rec = self.tracked.get(entry.id)
            if entry.kind == "folder":
                if rec is None or rec.type != "folder" or rec.path != path:
                    mkdirs.append(path)
                continue
            if rec is None:
                writes[entry.id] = Write(entry.id, path, entry, "new")
                continue
            if rec.type != "folder" and rec.path != path:
                moves[entry.id] = path
            if rec.type != entry.type:
                writes[entry.id] = Write(entry.id, path, entry, "type")
            elif entry.kind == "attachment" and entry.hash and entry.hash != rec.hash:
                writes[entry.id] = Write(entry.id, path, entry, "hash")

        for op in sorted(deletes, key=lambda d: d.path):
            self.tree.remove_file(op.path)
            del self.loc[op.doc_id]
            self.ops.append(op)
        self._moves(moves)
        for path in sorted(mkdirs, key=_depth_key):
            self._rmdirs(self.tree.clear(path, as_file=False))
            self.tree.makedirs(path)
            self.ops.append(Mkdir(path))
        for op in sorted(writes.values(), key=lambda w: w.path):
            if op.doc_id not in self.loc:
                self._rmdirs(self.tree.clear(op.path, as_file=True))
                self.tree.add_file(op.path, op.doc_id)
                self.loc[op.doc_id] = op.path
            self.ops.append(op)
        self._rmdirs(sorted(self.tree.surplus_dirs(self.layout), key=_deepest_first))
        return Plan(self.ops, rejected, self.accepted)

    def _rmdirs(self, paths: list[str]) -> None:
        self.ops.extend(Rmdir(p) for p in paths)

    def _move(self, doc_id: str, dst: str) -> None:
        src = self.loc[doc_id]
        self.tree.remove_file(src)
        self.tree.add_file(dst, doc_id)
        self.loc[doc_id] = dst
        self.ops.append(Move(doc_id, src, dst))

    def _park(self, doc_id: str) -> None:
        """Move a file out of everyone's way, to a temporary name."""
        src = self.loc[doc_id]
        directory = _parent(src)
        if not self.layout.safe_for_temp(directory):
            directory = ""
        base = f"{directory}/{TMP_PREFIX}{doc_id}" if directory else f"{TMP_PREFIX}{doc_id}"
        tmp, n = base, 1
        while self.tree.occupied(tmp):
            n += 1
            tmp = f"{base}-{n}"
        self._move(doc_id, tmp)

    def _moves(self, pending: dict[str, str]) -> None:
        """Emit moves so that none lands on a file still in use.

        A move waits for the files in its way to leave; when every remaining move
        waits (a swap or cycle), one file in the way is parked under a temporary name
        in a directory that never has to give way. A parked file blocks nothing, so
        each document is parked at most once and the loop ends.
        """
        parked: set[str] = set()
        waiting: dict[str, list[str]] = {}
        stack = sorted(pending, key=lambda d: pending[d], reverse=True)

        def wake(doc_id: str) -> None:
            stack.extend(reversed(waiting.pop(doc_id, [])))

        while pending:
            while stack:
                doc_id = stack.pop()
                if doc_id not in pending:
                    continue
                target = pending[doc_id]
                blockers = self.tree.blockers(target)
                if doc_id in blockers and doc_id not in parked:
                    # its own file is in the way: a case-only rename, or its folder
                    # must become a file or change letter case
                    self._park(doc_id)
                    parked.add(doc_id)
                    wake(doc_id)
                    blockers = self.tree.blockers(target)
                blockers.discard(doc_id)
                if blockers:
                    waiting.setdefault(min(blockers), []).append(doc_id)
                    continue
                self._rmdirs(self.tree.clear(target, as_file=True))
                self._move(doc_id, target)
                del pending[doc_id]
                wake(doc_id)
            if pending:
                stuck = sorted(d for d in waiting if d in pending and d not in parked)
                if not stuck:  # cannot happen: the accepted layout is consistent
                    raise RuntimeError(f"cannot order moves of {sorted(pending)}")
                self._park(stuck[0])
                parked.add(stuck[0])
                wake(stuck[0])
                stack.append(stuck[0])


# --------------------------------------------------------------------------- guard


def mass_deletion(previous: Mapping[str, Tracked], plan: Plan, *,
                  ratio: float = 0.10, minimum: int = 25) -> str | None:
    """Say why ``plan`` deletes suspiciously much (invariant 6 in docs/architecture.md), or None.

    Absence from one read of the folder index is not proof of deletion: the engine
    holds such a plan until a later read confirms it or an operator does.

    Returns:
        A reason when the plan deletes more than ``ratio`` of the tracked files and
        more than ``minimum`` files, or when the new index has no file at all while
        files are tracked; else None.
    """
    files = {doc_id for doc_id, rec in previous.items() if rec.type != "folder"}
    if not files:
        return None
    if not any(entry.kind != "folder" for entry in plan.accepted.values()):
        return f"folder index lists no files while {len(files)} are tracked"
    deleted = {op.doc_id for op in plan.ops if isinstance(op, Delete)}
    if len(deleted) > ratio * len(files) and len(deleted) > minimum:
        return (f"would delete {len(deleted)} of {len(files)} files "
                f"(more than {ratio:.0%} and more than {minimum})")
    return None
