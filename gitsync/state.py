"""Sync state in memory, and what changed in it since the last save.

The engine reads and changes plain-looking objects (:class:`FolderState` with its
``files`` and ``writers`` dicts, ``dirty`` and ``changes`` lists, ``held`` and
``last_sync``; a relay's ``doc_hashes`` and ``doc_clocks`` dicts) while it holds the folder's lock.  Each of them remembers which
entries changed, so :meth:`RelayState.save` writes only those rows to the state database
(``statedb``), in one transaction: its cost follows the change, not the vault.

Saves may come from any folder's thread at any point.  Every tracked change and the
snapshot a save takes hold one lock per relay, so a save sees the relay's state as of
one instant: a change the engine makes after another (a file record after its dirty
path) is never saved without the earlier one.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ids import compound_id
from .statedb import (
    DB_FILE,
    FileItem,
    FileRow,
    FolderChanges,
    FolderRows,
    LegacyState,
    ListChange,
    RelayChanges,
    RelayRows,
    StateDB,
    StateReset,
    change_row,
    damaged_files,
    mark_imported,
    read_legacy,
    writers_row,
)

__all__ = [
    "DataDirBusy",
    "DataDirLock",
    "FileRecord",
    "FolderState",
    "HeldDeletion",
    "RelayState",
    "StateRegistry",
    "damaged_state_files",
    "write_atomic",
]

log = logging.getLogger(__name__)

_ABSENT: Any = object()  # the key had no value
_UNKNOWN: Any = object()  # what the database holds is unknown: always write


def write_atomic(path: Path, data: bytes, *, fsync: bool = True, tmp_prefix: str | None = None,
                 mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new bytes, never half.

    Args:
        fsync: flush the file and its directory to disk before returning.
        tmp_prefix: name prefix of the temporary file beside ``path``.
        mode: permissions of the result (``mkstemp`` makes 0600 files).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix or f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass
class FileRecord:
    """A file (or folder) the service wrote for one document id.

    Changing an attribute of a record that sits in a :class:`FolderState`'s ``files``
    marks that record for the next save.
    """

    path: str  # relative to the connector prefix, posix
    type: str
    hash: str | None = None  # attachment content hash from the folder index
    sha256: str | None = None  # sha256 of the bytes we wrote
    size: int | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        table = self.__dict__.get("_table")
        if table is None:
            object.__setattr__(self, name, value)
            return
        with table._lock:
            table._note(self.__dict__["_key"])
            object.__setattr__(self, name, value)

    def row(self) -> FileRow:
        return (self.path, self.type, self.hash, self.sha256, self.size)

    def __getstate__(self) -> dict[str, Any]:  # a copy belongs to no table
        return {k: v for k, v in self.__dict__.items() if k not in ("_table", "_key")}


class _TrackedDict(dict):
    """A dict that remembers, per key changed since the last save, the value saved then.

    A key set back to what was saved (a record deleted and recreated alike) costs no row.
    """

    __slots__ = ("_lock", "_before", "_reset")

    def __init__(self, lock: threading.RLock, data: dict | None = None, *, saved: bool = True):
        super().__init__()
        if data:
            dict.update(self, data)
        self._lock = lock
        self._before: dict[Any, Any] = {}
        self._reset = not saved  # write every row (and drop the others) at the next save

    @staticmethod
    def _row(value: Any) -> Any:
        return value

    def _note(self, key: Any) -> None:
        """Remember the saved value of ``key`` before its first change (caller holds the lock)."""
        if key not in self._before:
            value = dict.get(self, key, _ABSENT)
            self._before[key] = value if value is _ABSENT else self._row(value)

    def _attach(self, key: Any, value: Any, old: Any) -> None:
        pass

    def _detach(self, value: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        with self._lock:
            self._note(key)
            old = dict.get(self, key, _ABSENT)
            dict.__setitem__(self, key, value)
            self._attach(key, value, old)

    def __delitem__(self, key: Any) -> None:
        with self._lock:
            self._note(key)
            old = dict.pop(self, key)
            self._detach(old)

    def pop(self, key: Any, *default: Any) -> Any:
        with self._lock:
            if key not in self:
                return dict.pop(self, key, *default)
            self._note(key)
            old = dict.pop(self, key)
            self._detach(old)
            return old

    def popitem(self) -> tuple[Any, Any]:
        with self._lock:
            key = next(reversed(self.keys()))
            return key, self.pop(key)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        with self._lock:
            if key not in self:
                self[key] = default
            return dict.__getitem__(self, key)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        for key, value in dict(other, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> _TrackedDict:
        self.update(other)
        return self

    def clear(self) -> None:
        with self._lock:
            for value in dict.values(self):
                self._detach(value)
            dict.clear(self)
            self._before.clear()
            self._reset = True

    def copy(self) -> dict:
        return dict(self)

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))

    def _take(self) -> tuple[bool, list[tuple[Any, Any]], list[Any]]:
        """The rows to write: ``(reset, upserts, deletes)``; forgets them (caller holds the lock)."""
        before, self._before = self._before, {}
        if self._reset:
            self._reset = False
            return True, [(k, self._row(v)) for k, v in dict.items(self)], []
        upserts, deletes = [], []
        for key, was in before.items():
            value = dict.get(self, key, _ABSENT)
            now = value if value is _ABSENT else self._row(value)
            if now is _ABSENT:
                if was is not _ABSENT:
                    deletes.append(key)
            elif now != was:
                upserts.append((key, now))
        return False, upserts, deletes

    def _removed(self) -> list[Any]:
        """Keys changed since the last save that are absent now (caller holds the lock)."""
        return [key for key in self._before if not dict.__contains__(self, key)]

    def _untake(self, reset: bool, keys: Iterable[Any]) -> None:
        """A save failed: write these again next time (caller holds the lock)."""
        self._reset = self._reset or reset
        for key in keys:
            self._before[key] = _UNKNOWN


class _FileTable(_TrackedDict):
    """``FolderState.files``: also follows changes made to the records it holds."""

    __slots__ = ()

    @staticmethod
    def _row(value: FileRecord) -> FileRow:
        return value.row()

    def _attach(self, key: str, value: FileRecord, old: Any) -> None:
        if old is not _ABSENT and old is not value:
            self._detach(old)
        value.__dict__["_table"] = self
        value.__dict__["_key"] = key

    def _detach(self, value: FileRecord) -> None:
        if value.__dict__.get("_table") is self:
            del value.__dict__["_table"], value.__dict__["_key"]

    @classmethod
    def restore(cls, lock: threading.RLock, rows: list[FileItem]) -> _FileTable:
        table = cls(lock)
        new, put = object.__new__, dict.__setitem__
        for doc_id, path, kind, content_hash, sha256, size in rows:
            rec = new(FileRecord)  # the fields as stored, without a tracked __setattr__ per field
            rec.__dict__.update(path=path, type=kind, hash=content_hash, sha256=sha256, size=size,
                                _table=table, _key=doc_id)
            put(table, doc_id, rec)
        return table


class _WritersTable(_TrackedDict):
    """``FolderState.writers``: dirty path -> {relay user id: operations}, saved as JSON rows.

    Values are replaced, never changed in place (see :meth:`FolderState.add_writers`).
    """

    __slots__ = ()

    @staticmethod
    def _row(value: dict[str, int]) -> str:
        return writers_row(value)


class _TrackedList(list):
    """A list whose appended tail is saved as new rows; any other change rewrites it."""

    __slots__ = ("_lock", "_saved", "_stale")

    def __init__(self, lock: threading.RLock, items: Iterable[Any] = (), *, saved: bool = False):
        super().__init__(items)
        self._lock = lock
        self._saved = len(self) if saved else 0  # leading items the database holds
        self._stale = not saved

    def append(self, item: Any) -> None:
        with self._lock:
            list.append(self, item)

    def extend(self, items: Iterable[Any]) -> None:
        items = list(items)
        with self._lock:
            list.extend(self, items)

    def __iadd__(self, items: Iterable[Any]) -> _TrackedList:
        self.extend(items)
        return self

    def _take(self, convert: Any = None) -> ListChange | None:
        """The rows to write, or None; forgets them (caller holds the lock)."""
        if self._stale:
            change = ListChange(True, 0, list(self))
        elif len(self) > self._saved:
            change = ListChange(False, self._saved, list.__getitem__(self, slice(self._saved, None)))
        else:
            change = None
        self._saved, self._stale = len(self), False
        if change is not None and convert is not None:
            change.items = [convert(item) for item in change.items]
        return change


def _rewriting(name: str) -> Any:
    method = getattr(list, name)

    def change(self: _TrackedList, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self._stale = True
            return method(self, *args, **kwargs)

    change.__name__ = name
    return change


for _name in ("__setitem__", "__delitem__", "__imul__", "insert", "remove", "pop", "clear", "sort", "reverse"):
    setattr(_TrackedList, _name, _rewriting(_name))


class _ClaimSet(set):
    """A set of claimed paths that tells its folder when it changed (to be saved)."""

    def __init__(self, owner: FolderState, items: Iterable[str]):
        super().__init__(items)
        self._owner = owner

    def add(self, item: str) -> None:
        if item not in self:
            super().add(item)
            self._owner._claimed_changed = True

    def discard(self, item: str) -> None:
        if item in self:
            super().discard(item)
            self._owner._claimed_changed = True

    def clear(self) -> None:
        if self:
            super().clear()
            self._owner._claimed_changed = True


@dataclass(frozen=True)
class HeldDeletion:
    """A mass deletion the engine holds back until a later read confirms it.

    The state saves it as a plain JSON record (``FolderState.held``); the engine, status,
    health and metrics use this typed value (``FolderState.held_deletion``).

    Attributes:
        reason: why it is held, for the operator.
        since: when it was first seen (epoch seconds).
        count: files it would delete.
        docs: the doc ids it would delete.
    """

    reason: str
    since: float | None
    count: int
    docs: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> HeldDeletion | None:
        """The held deletion of a saved record, or None when nothing is held.

        Tolerates a record written by an older version (missing or odd fields).
        """
        if not record:
            return None
        since = record.get("since")
        count = record.get("count")
        docs = record.get("docs")
        return cls(
            reason=str(record.get("reason") or "mass deletion"),
            since=float(since) if isinstance(since, int | float) else None,
            count=count if isinstance(count, int) else len(docs) if isinstance(docs, list) else 0,
            docs=tuple(str(d) for d in docs) if isinstance(docs, list) else (),
        )

    def to_record(self) -> dict[str, Any]:
        """The plain record the state saves (JSON)."""
        return {"reason": self.reason, "since": self.since, "count": self.count, "docs": list(self.docs)}


class FolderState:
    """What we know about one shared folder's working tree.

    Attributes:
        files: doc id -> :class:`FileRecord` (folders included).
        dirty: repository paths changed since the last commit, in order.
        changes: ``[verb, path, (dst)]`` lines for the next commit message.
        held: a mass deletion waiting for confirmation, or None.
        last_sync: when the folder was last synced (epoch seconds).
        index_entries: entries in the folder index at the last sync.
        claimed: free paths a sync was about to create, saved before it acted: after a
            crash, a file at one of them was written by us even though no record says so.
        writers: dirty path -> {relay user id: operations} of the changes written to it
            since the last commit (``authors.UNKNOWN`` for clients no user claims).
    """

    def __init__(
        self,
        files: dict[str, FileRecord] | None = None,
        dirty: list[str] | None = None,
        changes: list[list[str]] | None = None,
        held: dict[str, Any] | None = None,
        last_sync: float | None = None,
        index_entries: int = 0,
        *,
        lock: threading.RLock | None = None,
    ):
        self._lock = lock or threading.RLock()
        self._files = _FileTable(self._lock, saved=False)
        self._files.update(files or {})
        self._dirty = _TrackedList(self._lock, dirty or ())
        self._dirty_cache: set[str] | None = None
        self._changes = _TrackedList(self._lock, changes or ())
        self._held = held
        self._last_sync = last_sync
        self._index_entries = index_entries
        self._claimed = _ClaimSet(self, ())
        self._claimed_changed = False
        self._writers = _WritersTable(self._lock, saved=False)
        self._row_changed = self._held_changed = True  # a new folder: all of it is unsaved

    @classmethod
    def _restore(cls, rows: FolderRows, lock: threading.RLock) -> FolderState:
        state = cls.__new__(cls)
        state._lock = lock
        state._files = _FileTable.restore(lock, rows.files)
        state._dirty = _TrackedList(lock, rows.dirty, saved=True)
        state._dirty_cache = None
        state._changes = _TrackedList(lock, rows.changes, saved=True)
        state._held, state._last_sync, state._index_entries = rows.held, rows.last_sync, rows.index_entries
        state._writers = _WritersTable(lock, rows.writers)
        state._row_changed = state._held_changed = False
        state._claimed = _ClaimSet(state, (str(p) for p in rows.extra.get("claimed") or ()))
        state._claimed_changed = False
        return state

    # --- tracked attributes -----------------------------------------------------------

    @property
    def files(self) -> dict[str, FileRecord]:
        return self._files

    @files.setter
    def files(self, value: dict[str, FileRecord]) -> None:
        table = _FileTable(self._lock, saved=False)
        table.update(value)
        with self._lock:
            self._files = table

    @property
    def dirty(self) -> list[str]:
        return self._dirty

    @dirty.setter
    def dirty(self, value: Iterable[str]) -> None:
        with self._lock:
            self._dirty = _TrackedList(self._lock, value)
            self._dirty_cache = None

    @property
    def changes(self) -> list[list[str]]:
        return self._changes

    @changes.setter
    def changes(self, value: Iterable[list[str]]) -> None:
        with self._lock:
            self._changes = _TrackedList(self._lock, value)

    @property
    def held(self) -> dict[str, Any] | None:
        return self._held

    @held.setter
    def held(self, value: dict[str, Any] | None) -> None:
        with self._lock:
            if value != self._held:
                self._held_changed = True
            self._held = value

    @property
    def held_deletion(self) -> HeldDeletion | None:
        """The mass deletion held back for this folder, if any."""
        return HeldDeletion.from_record(self._held)

    @held_deletion.setter
    def held_deletion(self, value: HeldDeletion | None) -> None:
        self.held = value.to_record() if value is not None else None

    @property
    def claimed(self) -> set[str]:
        return self._claimed

    @claimed.setter
    def claimed(self, value: Iterable[str]) -> None:
        with self._lock:
            new = _ClaimSet(self, value)
            if new != self._claimed:
                self._claimed_changed = True
            self._claimed = new

    @property
    def last_sync(self) -> float | None:
        return self._last_sync

    @last_sync.setter
    def last_sync(self, value: float | None) -> None:
        with self._lock:
            self._row_changed = self._row_changed or value != self._last_sync
            self._last_sync = value

    @property
    def index_entries(self) -> int:
        return self._index_entries

    @index_entries.setter
    def index_entries(self, value: int) -> None:
        with self._lock:
            self._row_changed = self._row_changed or value != self._index_entries
            self._index_entries = value

    @property
    def writers(self) -> dict[str, dict[str, int]]:
        return self._writers

    # --- helpers for the engine ---------------------------------------------------------

    def add_writers(self, repo_path: str, writers: dict[str, int]) -> None:
        """Add who wrote a change of ``repo_path`` (a dirty path) to what it had."""
        if not writers:
            return
        with self._lock:
            merged = dict(self._writers.get(repo_path, {}))
            for user, ops in writers.items():
                merged[user] = merged.get(user, 0) + ops
            self._writers[repo_path] = merged

    def add_dirty(self, repo_paths: Iterable[str]) -> None:
        """Remember repository paths to stage in the next commit."""
        known = self._dirty_set
        for repo_path in repo_paths:
            if repo_path not in known:
                known.add(repo_path)
                self.dirty.append(repo_path)

    def note(self, verb: str, path: str, dst: str | None = None) -> None:
        """Record one line of the next commit message (``add``/``update``/``rename``/``delete``)."""
        entry = [verb, path] + ([dst] if dst else [])
        if entry not in self.changes[-50:]:
            self.changes.append(entry)

    @property
    def _dirty_set(self) -> set[str]:
        cache = self._dirty_cache
        if cache is None:
            cache = self._dirty_cache = set(self.dirty)
        return cache

    def clear_pending(self, committed: list[str]) -> None:
        """Forget the dirty paths and change lines a commit has taken."""
        done = set(committed)
        self.dirty = [p for p in self.dirty if p not in done]
        for path in done:
            self._writers.pop(path, None)
        if not self.dirty:
            self.changes = []

    def by_path(self) -> dict[str, str]:
        return {rec.path: doc_id for doc_id, rec in self.files.items()}

    # --- saving -------------------------------------------------------------------------

    def _take(self, folder_id: str) -> FolderChanges | None:
        """The rows changed since the last save, or None; forgets them (caller holds the lock)."""
        reset, upserts, deletes = self._files._take()
        w_reset, w_upserts, w_deletes = self._writers._take()
        out = FolderChanges(folder_id, files_reset=reset, files_upsert=upserts, files_delete=deletes,
                            dirty=self._dirty._take(), changes=self._changes._take(change_row),
                            writers_reset=w_reset, writers_upsert=w_upserts, writers_delete=w_deletes)
        if self._row_changed:
            out.row = (self._last_sync, self._index_entries)
        if self._held_changed:
            out.held = (self._held,)
        if self._claimed_changed:
            out.claimed = (sorted(self._claimed),)
        self._row_changed = self._held_changed = self._claimed_changed = False
        if (out.row is None and out.held is None and not reset and not upserts and not deletes
                and out.dirty is None and out.changes is None and out.claimed is None
                and not w_reset and not w_upserts and not w_deletes):
            return None
        return out

    def _untake(self, change: FolderChanges) -> None:
        """A save failed: mark what it carried as unsaved again (caller holds the lock)."""
        self._files._untake(change.files_reset, [k for k, _ in change.files_upsert] + change.files_delete)
        self._writers._untake(change.writers_reset,
                              [k for k, _ in change.writers_upsert] + change.writers_delete)
        if change.dirty is not None:
            self._dirty._stale = True
        if change.changes is not None:
            self._changes._stale = True
        self._row_changed = self._row_changed or change.row is not None
        self._held_changed = self._held_changed or change.held is not None
        self._claimed_changed = self._claimed_changed or change.claimed is not None

    def _mark_all(self) -> None:
        """Write everything at the next save (the database was replaced)."""
        with self._lock:
            self._files._reset = self._writers._reset = True
            self._dirty._stale = self._changes._stale = True
            self._row_changed = self._held_changed = self._claimed_changed = True


class RelayState:
    """One relay's state: its folders and document hashes, saved as changed rows.

    Args:
        relay_id: the relay.
        db: where :meth:`save` writes; None for a read-only view.
        rows: the stored state to start from.
    """

    def __init__(self, relay_id: str, db: StateDB | None = None, rows: RelayRows | None = None):
        self.relay_id = relay_id
        self.lock = threading.RLock()  # one save at a time; creating folders
        self._track = threading.RLock()  # every tracked change, and the snapshot of a save
        self._db = db
        rows = rows or RelayRows()
        self._hashes = _TrackedDict(self._track, rows.hashes)
        self._clocks = _TrackedDict(self._track, rows.clocks)
        self.folders: dict[str, FolderState] = {
            folder_id: FolderState._restore(folder, self._track) for folder_id, folder in rows.folders.items()
        }

    @property
    def doc_hashes(self) -> dict[str, str]:
        """Compound doc id -> sha256 of the last update applied (changes are tracked)."""
        return self._hashes

    @property
    def doc_clocks(self) -> dict[str, bytes]:
        """Compound doc id -> encoded Yjs state vector at the last applied change (tracked)."""
        return self._clocks

    def folder(self, folder_id: str) -> FolderState:
        state = self.folders.get(folder_id)
        if state is not None:
            return state
        with self.lock:
            state = self.folders.get(folder_id)
            if state is None:
                state = self.folders[folder_id] = FolderState(lock=self._track)
            return state

    def save(self) -> None:
        """Write the rows changed since the last save in one transaction (on disk when it returns).

        Raises:
            RuntimeError: this is a read-only view.
            sqlite3.Error: the write failed; the changes stay marked for the next save.
        """
        if self._db is None:
            raise RuntimeError(f"state of relay {self.relay_id} was opened read-only")
        with self.lock:
            for attempt in range(2):
                changes = self._take()
                if changes.empty:
                    return
                try:
                    self._db.write(self.relay_id, changes)
                    return
                except StateReset:
                    # The database was damaged and started afresh: every loaded relay was
                    # marked for a full write; write ours now, once.
                    if attempt:
                        raise
                except BaseException:
                    self._untake(changes)
                    raise

    def _prune_documents(self) -> None:
        """Drop the hash and clock of each document that left every folder since the last
        save (caller holds ``_track``).

        Checked at save time, over the records removed since the last one, so a record
        removed and added back in between (folder records on every sync) costs nothing,
        and a document that moved to another folder of this relay keeps its rows.
        """
        removed = {doc_id for folder in self.folders.values() for doc_id in folder._files._removed()}
        for doc_id in removed:
            if any(doc_id in folder._files for folder in self.folders.values()):
                continue
            key = compound_id(self.relay_id, doc_id)
            self._hashes.pop(key, None)
            self._clocks.pop(key, None)

    def _take(self) -> RelayChanges:
        with self._track:
            self._prune_documents()
            reset, upserts, deletes = self._hashes._take()
            c_reset, c_upserts, c_deletes = self._clocks._take()
            changes = RelayChanges(hashes_reset=reset, hashes_upsert=upserts, hashes_delete=deletes,
                                   clocks_reset=c_reset, clocks_upsert=c_upserts, clocks_delete=c_deletes)
            for folder_id, folder in list(self.folders.items()):
                change = folder._take(folder_id)
                if change is not None:
                    changes.folders.append(change)
        return changes

    def _untake(self, changes: RelayChanges) -> None:
        with self._track:
            self._hashes._untake(
                changes.hashes_reset, [k for k, _ in changes.hashes_upsert] + changes.hashes_delete)
            self._clocks._untake(
                changes.clocks_reset, [k for k, _ in changes.clocks_upsert] + changes.clocks_delete)
            for change in changes.folders:
                folder = self.folders.get(change.folder_id)
                if folder is not None:
                    folder._untake(change)

    def _mark_all(self) -> None:
        with self._track:
            self._hashes._reset = self._clocks._reset = True
            for folder in list(self.folders.values()):
                folder._mark_all()


class StateRegistry:
    """One :class:`RelayState` per relay id, all in ``<data-dir>/state/state.db``.

    The database opens on first use.  A relay's JSON state files from earlier releases
    are imported when that relay is first opened, then renamed to ``*.imported``.

    Args:
        readonly: for ``cli.py status`` while the service may run: read the database
            without creating, migrating or importing anything; JSON files not yet
            imported are read in place.  ``problem`` says why the state was unreadable.
    """

    def __init__(self, data_dir: Path, *, readonly: bool = False):
        self.root = data_dir / "state"
        self.readonly = readonly
        self._lock = threading.Lock()
        self._relays: dict[str, RelayState] = {}
        self._db: StateDB | None = None

    @property
    def db(self) -> StateDB:
        with self._lock:
            return self._open_db()

    @property
    def problem(self) -> str | None:
        return self.db.problem

    def _open_db(self) -> StateDB:
        if self._db is None:
            self._db = StateDB(self.root / DB_FILE, readonly=self.readonly, on_reset=self._mark_all)
        return self._db

    def _mark_all(self) -> None:
        for relay in list(self._relays.values()):
            relay._mark_all()

    def relay(self, relay_id: str) -> RelayState:
        state = self._relays.get(relay_id)
        if state is not None:
            return state
        with self._lock:
            state = self._relays.get(relay_id)
            if state is None:
                state = self._relays[relay_id] = self._open_relay(relay_id)
            return state

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()

    def _open_relay(self, relay_id: str) -> RelayState:
        db = self._open_db()
        legacy_dir = self.root / relay_id
        legacy = None
        if legacy_dir.is_dir():
            if not self.readonly:
                for debris in legacy_dir.glob(".*.json.*.tmp"):
                    debris.unlink(missing_ok=True)  # an interrupted write of an earlier release
            legacy = read_legacy(legacy_dir, set_aside=not self.readonly)
        if self.readonly:
            rows = db.load(relay_id)
            return RelayState(relay_id, None, legacy.apply_to(rows) if legacy else rows)
        if legacy is not None and legacy.present:
            return RelayState(relay_id, db, self._import(db, relay_id, legacy))
        try:
            rows = db.load(relay_id)
        except StateReset:
            rows = RelayRows()
        return RelayState(relay_id, db, rows)

    @staticmethod
    def _import(db: StateDB, relay_id: str, legacy: LegacyState) -> RelayRows:
        """Move a relay's JSON state into the database; the files are renamed only after.

        Returns:
            the relay's state as stored.
        """
        for attempt in range(2):
            try:
                rows = legacy.apply_to(db.load(relay_id))
                db.replace_relay(relay_id, rows)
                break
            except StateReset:
                if attempt:
                    raise
        mark_imported(legacy.present)
        log.info("state imported into the database relay=%s files=%s database=%s", relay_id,
                 ",".join(p.name for p in legacy.present), db.path)
        return rows


def damaged_state_files(data_dir: Path, relay_id: str) -> list[str]:
    """Names of state files that were found damaged and set aside (rebuilt by a full sync)."""
    return damaged_files(data_dir / "state", relay_id)


class DataDirBusy(Exception):
    """Another process (the service, or a sync) is using the data directory."""


class DataDirLock:
    """An exclusive ``flock`` on ``state/.lock``: one process per data directory.

    The service and ``cli.py sync`` both write the same repositories and state files;
    two of them at once would corrupt both. The kernel drops the lock when the process
    dies, so a crash never leaves it stale.
    """

    def __init__(self, data_dir: Path):
        self.path = data_dir / "state" / ".lock"
        self._fd: int | None = None

    def acquire(self, timeout: float = 0.0) -> None:
        """Raises DataDirBusy when still held by another process after ``timeout`` seconds."""
        import fcntl
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise DataDirBusy(
                        f"data directory {self.path.parent.parent} is in use by another process "
                        f"(pid {holder}): stop the service before running a one-time sync"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
