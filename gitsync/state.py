"""Persistent sync state in the layout users know (SPEC.md "Directory structure").

::

    state/<relay-id>/document_hashes.json   compound doc id -> sha256 of the last applied update
    state/<relay-id>/shared_folders.json    folder id -> index metadata, held deletions
    state/<relay-id>/local_state.json       folder id -> files we wrote, dirty paths, pending changes,
                                            paths a running sync claimed

Every file is written atomically (temp file, fsync, rename) and only when something in
it changed, once per sync rather than once per document.  The in-memory objects are
mutated by the engine while it holds the folder's lock; :meth:`RelayState.save` takes
the relay lock so folders of one relay can save concurrently.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DataDirBusy",
    "DataDirLock",
    "FileRecord",
    "FolderState",
    "RelayState",
    "StateRegistry",
    "write_atomic",
]

log = logging.getLogger(__name__)

HASHES_FILE = "document_hashes.json"
FOLDERS_FILE = "shared_folders.json"
LOCAL_FILE = "local_state.json"


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
    """A file (or folder) the service wrote for one document id."""

    path: str  # relative to the connector prefix, posix
    type: str
    hash: str | None = None  # attachment content hash from the folder index
    sha256: str | None = None  # sha256 of the bytes we wrote
    size: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileRecord:
        return cls(
            path=str(data["path"]),
            type=str(data.get("type", "markdown")),
            hash=data.get("hash"),
            sha256=data.get("sha256"),
            size=data.get("size"),
        )


@dataclass
class FolderState:
    """What we know about one shared folder's working tree."""

    files: dict[str, FileRecord] = field(default_factory=dict)  # doc id -> record (incl. folders)
    dirty: list[str] = field(default_factory=list)  # repo paths changed since the last commit
    changes: list[list[str]] = field(default_factory=list)  # [verb, path, (dst)] for the message
    held: dict[str, Any] | None = None  # a mass deletion waiting for confirmation
    # Free paths a sync was about to create, saved before it acted: after a crash, a file
    # at one of them was written by us even though no record says so yet.
    claimed: set[str] = field(default_factory=set)
    last_sync: float | None = None
    index_entries: int = 0

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
        cache = self.__dict__.get("_dirty_cache")
        if cache is None:
            cache = self.__dict__["_dirty_cache"] = set(self.dirty)
        return cache

    def clear_pending(self, committed: list[str]) -> None:
        """Forget the dirty paths and change lines a commit has taken."""
        done = set(committed)
        self.dirty = [p for p in self.dirty if p not in done]
        self.__dict__.pop("_dirty_cache", None)
        if not self.dirty:
            self.changes = []

    def by_path(self) -> dict[str, str]:
        return {rec.path: doc_id for doc_id, rec in self.files.items()}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "files": {doc: rec.to_json() for doc, rec in sorted(self.files.items())},
            "dirty": self.dirty,
            "changes": self.changes,
        }
        if self.claimed:
            out["claimed"] = sorted(self.claimed)
        if self.last_sync is not None:
            out["last_sync"] = self.last_sync
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FolderState:
        files = {}
        for doc_id, rec in (data.get("files") or {}).items():
            try:
                files[doc_id] = FileRecord.from_json(rec)
            except (KeyError, TypeError):
                log.warning("state record skipped doc=%s", doc_id)
        return cls(
            files=files,
            dirty=[str(p) for p in data.get("dirty") or []],
            changes=[list(map(str, c)) for c in data.get("changes") or []],
            claimed={str(p) for p in data.get("claimed") or []},
            last_sync=data.get("last_sync"),
        )


class RelayState:
    """The three state files of one relay, loaded once and saved atomically."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.lock = threading.RLock()
        for debris in state_dir.glob(".*.json.*.tmp") if state_dir.is_dir() else ():
            debris.unlink(missing_ok=True)  # an interrupted write_atomic
        self.doc_hashes: dict[str, str] = self._load(HASHES_FILE)
        folders_meta = self._load(FOLDERS_FILE)
        self.folder_meta: dict[str, dict[str, Any]] = folders_meta
        local = self._load(LOCAL_FILE)
        self.folders: dict[str, FolderState] = {
            folder_id: FolderState.from_json(data) for folder_id, data in local.items()
        }
        for folder_id, meta in folders_meta.items():
            if folder_id in self.folders:
                self.folders[folder_id].held = meta.get("held")
                self.folders[folder_id].index_entries = int(meta.get("entries", 0))
        self._saved: dict[str, bytes] = {}

    def _load(self, name: str) -> dict[str, Any]:
        path = self.dir / name
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # A damaged state file must not stop the service: start that part afresh
            # (a full sync rebuilds it) and keep the damaged copy for the operator.
            backup = path.with_suffix(path.suffix + ".damaged")
            log.error("state file unreadable, starting it afresh path=%s backup=%s error=%s", path, backup, exc)
            try:
                os.replace(path, backup)
            except OSError:
                pass
            return {}
        return data if isinstance(data, dict) else {}

    def folder(self, folder_id: str) -> FolderState:
        with self.lock:
            state = self.folders.get(folder_id)
            if state is None:
                state = self.folders[folder_id] = FolderState()
            return state

    def save(self) -> None:
        """Write the files whose content changed since the last save."""
        with self.lock:
            meta = {}
            for folder_id, folder in self.folders.items():
                entry = dict(self.folder_meta.get(folder_id, {}))
                entry["entries"] = folder.index_entries
                if folder.last_sync is not None:
                    entry["synced_at"] = folder.last_sync
                if folder.held:
                    entry["held"] = folder.held
                else:
                    entry.pop("held", None)
                meta[folder_id] = entry
            self.folder_meta = meta
            payloads = {
                HASHES_FILE: self.doc_hashes,
                FOLDERS_FILE: meta,
                LOCAL_FILE: {fid: f.to_json() for fid, f in self.folders.items()},
            }
            for name, obj in payloads.items():
                # Compact: the C encoder is twice as fast as indented output at 10k files,
                # and it serializes without yielding to threads changing other folders.
                data = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
                if self._saved.get(name) != data:
                    write_atomic(self.dir / name, data)
                    self._saved[name] = data


class StateRegistry:
    """One :class:`RelayState` per relay id, created on first use."""

    def __init__(self, data_dir: Path):
        self.root = data_dir / "state"
        self._lock = threading.Lock()
        self._relays: dict[str, RelayState] = {}

    def relay(self, relay_id: str) -> RelayState:
        with self._lock:
            state = self._relays.get(relay_id)
            if state is None:
                state = self._relays[relay_id] = RelayState(self.root / relay_id)
            return state


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
