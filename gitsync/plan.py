"""Turn two snapshots of a shared folder into an ordered list of file operations.

Pure: no I/O. ``previous`` is what the engine wrote last time (keyed by document id),
``current`` is the folder index just read (keyed by its unsanitized paths). Documents
are followed by id, so a renamed file is a :class:`Move`, never a delete plus a write.

Paths coming from the folder index are hostile until :func:`safe_path` accepts them
(DESIGN invariant 5); an entry that fails, or that cannot coexist with the entries
already accepted (same document twice, a file inside a file, names differing only in
letter case), goes to :attr:`Plan.rejected` and the rest of the folder proceeds.

The operations are correct when applied one after the other, in order, on a case
sensitive *or* case insensitive filesystem: no :class:`Move` or :class:`Write` ever
lands on a path that holds another document's file at that moment. Chains, swaps,
cycles and case-only renames go through a temporary name ``.gitsync-tmp-<doc id>``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace

from gitsync.ydoc import Entry

__all__ = [
    "TMP_PREFIX",
    "UnsafePath",
    "safe_path",
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

_MAX_NAME_BYTES = 255  # NAME_MAX of every filesystem we may write on
_DRIVE = re.compile(r"^[A-Za-z]:")
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
            and HFS-ignorable spellings), a Windows drive letter such as ``C:``, or
            a name longer than 255 bytes. The message says which; it never
            repeats the path.
    """
    if not isinstance(path, str):
        raise UnsafePath(f"path is a {type(path).__name__}, not a string")
    for char in path:
        category = unicodedata.category(char)
        if char == "\x00":
            raise UnsafePath("NUL character in path")
        if category == "Cc":
            raise UnsafePath("control character in path")
        if category == "Cs":
            raise UnsafePath("invalid unicode (lone surrogate) in path")
    if "\\" in path:
        raise UnsafePath("backslash in path")
    rest = path[1:] if path.startswith("/") else path
    if rest.startswith("/"):
        raise UnsafePath("absolute path")
    segments = [seg for seg in rest.split("/") if seg not in ("", ".")]
    if not segments:
        raise UnsafePath("empty path")
    for seg in segments:
        if seg == "..":
            raise UnsafePath("'..' segment in path")
        if _is_dotgit(seg):
            raise UnsafePath("'.git' segment in path")
        if _DRIVE.match(seg):
            raise UnsafePath("windows drive letter in path")
        if len(seg.encode("utf-8")) > _MAX_NAME_BYTES:
            raise UnsafePath(f"name longer than {_MAX_NAME_BYTES} bytes in path")
    return "/".join(segments)


def _is_dotgit(segment: str) -> bool:
    name = segment.translate(_HFS_IGNORABLE).split(":", 1)[0].rstrip(" .").lower()
    return name in (".git", "git~1")


def _fold(path: str) -> str:
    """Comparison key of a case (and normalization) insensitive filesystem."""
    return unicodedata.normalize("NFC", path).lower()


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _ancestors(path: str) -> Iterator[str]:
    """Proper ancestors of ``path``, shallowest first ("a", "a/b" for "a/b/c")."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def _depth_key(path: str) -> tuple[int, str]:
    return (path.count("/"), path)


def _deepest_first(path: str) -> tuple[int, str]:
    return (-path.count("/"), path)


def _is_reserved(path: str) -> bool:
    return any(seg.lower().startswith(TMP_PREFIX) for seg in path.split("/"))


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

    Keyed by the folded path, each value is the spelling and whether it is a file.
    """

    def __init__(self) -> None:
        self.seen: dict[str, tuple[str, bool]] = {}

    def conflict(self, path: str, *, is_file: bool) -> str | None:
        """Why ``path`` cannot join the layout, or None."""
        for prefix in _ancestors(path):
            hit = self.seen.get(_fold(prefix))
            if hit is None:
                continue
            spelled, hit_is_file = hit
            if hit_is_file:
                return f"inside {spelled!r}, which is a file"
            if spelled != prefix:
                return f"folder {prefix!r} differs only in letter case from {spelled!r}"
        hit = self.seen.get(_fold(path))
        if hit is not None:
            spelled, hit_is_file = hit
            if spelled == path and not hit_is_file and not is_file:
                return None  # the same folder twice (two folder documents): harmless
            if spelled == path:
                return "a file and a folder at the same path"
            return f"differs only in letter case from {spelled!r}"
        return None

    def add(self, path: str, *, is_file: bool) -> None:
        for prefix in _ancestors(path):
            self.seen.setdefault(_fold(prefix), (prefix, False))
        self.seen[_fold(path)] = (path, is_file)

    def safe_for_temp(self, directory: str) -> bool:
        """True if a temporary file in ``directory`` can never be in the way.

        That holds unless ``directory`` or one of its ancestors must become a file or
        be spelled in another letter case.
        """
        if not directory:
            return True
        for prefix in [*_ancestors(directory), directory]:
            hit = self.seen.get(_fold(prefix))
            if hit is not None and (hit[1] or hit[0] != prefix):
                return False
        return True


def _accept(current: Mapping[str, Entry], rejected: list[tuple[str, str]]) -> tuple[dict[str, Entry], _Layout]:
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
        is_file = entry.kind != "folder"
        problem = layout.conflict(clean, is_file=is_file)
        if problem is not None:
            rejected.append((raw, problem))
            continue
        layout.add(clean, is_file=is_file)
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
        is_file = rec.type != "folder"
        if layout.conflict(clean, is_file=is_file) is None:
            layout.add(clean, is_file=is_file)
            usable[doc_id] = rec
    return usable


# --------------------------------------------------------------------------- planning


class _Tree:
    """Model of the files and directories we know of while the plan is built.

    It behaves like a case insensitive filesystem: at most one spelling per folded
    path. Directories never vanish on their own (only through Rmdir).
    """

    def __init__(self) -> None:
        self.files: dict[str, str] = {}  # folded path -> exact path
        self.doc_at: dict[str, str] = {}  # exact path -> doc id
        self.dirs: dict[str, str] = {}  # folded path -> exact path
        self.under: dict[str, set[str]] = {}  # folded dir -> exact file paths below it

    def makedirs(self, path: str) -> None:
        for prefix in [*_ancestors(path), path]:
            self.dirs.setdefault(_fold(prefix), prefix)

    def add_file(self, path: str, doc_id: str) -> None:
        parent = _parent(path)
        if parent:
            self.makedirs(parent)
        self.files[_fold(path)] = path
        self.doc_at[path] = doc_id
        for prefix in _ancestors(path):
            self.under.setdefault(_fold(prefix), set()).add(path)

    def remove_file(self, path: str) -> None:
        del self.files[_fold(path)]
        del self.doc_at[path]
        for prefix in _ancestors(path):
            self.under[_fold(prefix)].discard(path)

    def docs_under(self, folded_dir: str) -> set[str]:
        return {self.doc_at[p] for p in self.under.get(folded_dir, ())}

    def blockers(self, target: str) -> set[str]:
        """Docs whose files stand in the way of a file at ``target``."""
        found: set[str] = set()
        for prefix in _ancestors(target):
            key = _fold(prefix)
            if key in self.files:
                found.add(self.doc_at[self.files[key]])  # a file where a folder must be
            spelled = self.dirs.get(key)
            if spelled is not None and spelled != prefix:
                found |= self.docs_under(key)  # folder in another letter case: empty it
                break
        key = _fold(target)
        if key in self.files:
            found.add(self.doc_at[self.files[key]])
        if key in self.dirs:
            found |= self.docs_under(key)  # a folder where the file must be
        return found

    def clear(self, target: str, *, as_file: bool) -> list[str]:
        """Remove (from the model) directories in the way of ``target``; deepest first.

        Those are a directory at ``target`` when a file goes there, and directories
        spelled in another letter case than ``target`` or its ancestors. The caller
        made sure no file is left in them.
        """
        doomed: str | None = None
        for prefix in _ancestors(target):
            spelled = self.dirs.get(_fold(prefix))
            if spelled is not None and spelled != prefix:
                doomed = spelled
                break
        if doomed is None:
            spelled = self.dirs.get(_fold(target))
            if spelled is not None and (as_file or spelled != target):
                doomed = spelled
        if doomed is None:
            return []
        root = _fold(doomed)
        gone = [d for k, d in self.dirs.items() if k == root or k.startswith(root + "/")]
        for d in gone:
            del self.dirs[_fold(d)]
        return sorted(gone, key=_deepest_first)


def diff_folders(previous: Mapping[str, Tracked], current: Mapping[str, Entry]) -> Plan:
    """Plan the operations that turn the tracked tree into the folder's new layout.

    Args:
        previous: doc id -> what we wrote (files and folders). Records with unsafe or
            clashing paths are ignored: their paths are never touched.
        current: the folder index, unsanitized path -> entry.

    Returns:
        A :class:`Plan`; rename+edit is a Move then a Write (only when the type or an
        attachment's hash changed: refreshing text content is the engine's job).
        A tracked document whose entry is rejected counts as gone (Delete).
    """
    rejected: list[tuple[str, str]] = []
    accepted, layout = _accept(current, rejected)
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
        needed = {spelled for spelled, is_file in self.layout.seen.values() if not is_file}
        self._rmdirs(sorted((d for d in self.tree.dirs.values() if d not in needed),
                            key=_deepest_first))
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
        while _fold(tmp) in self.tree.files or _fold(tmp) in self.tree.dirs:
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
    """Say why ``plan`` deletes suspiciously much (DESIGN invariant 6), or None.

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
