"""The state database: every relay's sync state in one SQLite file, ``<data-dir>/state/state.db``.

A one-document change costs a few rows in one transaction, whatever the vault's size
(the JSON files this replaces were rewritten whole on every save).

Durability: write-ahead logging with ``synchronous=FULL``.  A transaction returns only
after its log frames are fsync'd, so a saved state is on disk before the caller goes on
to mark a queued webhook done; a power cut keeps every completed save.  (``NORMAL`` would
skip that fsync and could silently roll back the last saves after a power cut.)  A crash
in the middle of a save leaves the previous state: SQLite applies a transaction whole or
not at all.

The schema carries its version (table ``schema_version``, one row per applied step);
steps are applied in order on open.  A damaged file (not a database, or failing
``PRAGMA quick_check``) is set aside as ``state.db.damaged`` and replaced by an empty
database: the next full sync rebuilds the state from the Relay Server, as it did for a
damaged JSON file.

The JSON files of earlier releases (``state/<relay-id>/*.json``) are imported once, when
a relay's state is first opened, then renamed to ``*.imported``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DB_FILE",
    "SCHEMA_VERSION",
    "FolderChanges",
    "FolderRows",
    "LegacyState",
    "ListChange",
    "RelayChanges",
    "RelayRows",
    "StateDB",
    "StateDBError",
    "StateReset",
    "change_row",
    "damaged_files",
    "mark_imported",
    "read_legacy",
    "writers_from_row",
    "writers_row",
]

log = logging.getLogger(__name__)

DB_FILE = "state.db"
HASHES_FILE = "document_hashes.json"
FOLDERS_FILE = "shared_folders.json"
LOCAL_FILE = "local_state.json"
LEGACY_FILES = (HASHES_FILE, FOLDERS_FILE, LOCAL_FILE)
IMPORTED = ".imported"
DAMAGED = ".damaged"
WAL_LIMIT = 32 * 1024 * 1024  # bytes of write-ahead log kept after a checkpoint

_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26

# One tuple of statements per schema version; never edit a released step, add one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)",
        "CREATE TABLE relays (id INTEGER PRIMARY KEY, relay_id TEXT NOT NULL UNIQUE)",
        # held: JSON of a mass deletion waiting for confirmation; extra: JSON of folder
        # metadata imported from shared_folders.json that this release does not use.
        "CREATE TABLE folders (id INTEGER PRIMARY KEY, relay INTEGER NOT NULL REFERENCES relays(id),"
        " folder_id TEXT NOT NULL, last_sync REAL, index_entries INTEGER NOT NULL DEFAULT 0,"
        " held TEXT, extra TEXT, UNIQUE (relay, folder_id))",
        # One row per document (or folder) the service wrote into a checkout.
        "CREATE TABLE files (folder INTEGER NOT NULL, doc_id TEXT NOT NULL, path TEXT NOT NULL,"
        " type TEXT NOT NULL, hash TEXT, sha256 TEXT, size INTEGER,"
        " PRIMARY KEY (folder, doc_id)) WITHOUT ROWID",
        # sha256 of the last update applied, per compound document id.
        "CREATE TABLE doc_hashes (relay INTEGER NOT NULL, doc TEXT NOT NULL, sha256 TEXT NOT NULL,"
        " PRIMARY KEY (relay, doc)) WITHOUT ROWID",
        # Repository paths changed since the last commit, in order.
        "CREATE TABLE dirty (folder INTEGER NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL,"
        " PRIMARY KEY (folder, seq)) WITHOUT ROWID",
        # Lines of the next commit message, in order.
        "CREATE TABLE pending_changes (folder INTEGER NOT NULL, seq INTEGER NOT NULL,"
        " verb TEXT NOT NULL, path TEXT NOT NULL, dst TEXT, PRIMARY KEY (folder, seq)) WITHOUT ROWID",
    ),
    (
        # Encoded Yjs state vector of each document at its last applied change: the
        # clients whose clocks advanced past it wrote the next change.
        "CREATE TABLE doc_clocks (relay INTEGER NOT NULL, doc TEXT NOT NULL, state_vector BLOB NOT NULL,"
        " PRIMARY KEY (relay, doc)) WITHOUT ROWID",
        # Who wrote each path changed since the last commit: JSON {relay user id: operations}.
        "CREATE TABLE pending_writers (folder INTEGER NOT NULL, path TEXT NOT NULL, writers TEXT NOT NULL,"
        " PRIMARY KEY (folder, path)) WITHOUT ROWID",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

FileRow = tuple[str, str, str | None, str | None, int | None]  # path, type, hash, sha256, size
FileItem = tuple[str, str, str, str | None, str | None, int | None]  # doc id, then a FileRow
ChangeRow = tuple[str, str, str | None]  # verb, path, dst


_REBUILT = " (if it is damaged, the service sets it aside and rebuilds the state when it starts)"


class StateDBError(Exception):
    """The state database cannot be used (and setting it aside would not help)."""


class StateReset(Exception):
    """The database was found damaged and replaced by an empty one during this call."""


class _Damaged(Exception):
    pass


# --- what is read and written -----------------------------------------------------------


@dataclass
class FolderRows:
    """One folder's stored state."""

    last_sync: float | None = None
    index_entries: int = 0
    held: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    files: list[FileItem] = field(default_factory=list)
    dirty: list[str] = field(default_factory=list)
    changes: list[list[str]] = field(default_factory=list)
    writers: dict[str, dict[str, int]] = field(default_factory=dict)  # dirty path -> {user: operations}


@dataclass
class RelayRows:
    """One relay's stored state."""

    hashes: dict[str, str] = field(default_factory=dict)
    folders: dict[str, FolderRows] = field(default_factory=dict)
    clocks: dict[str, bytes] = field(default_factory=dict)  # compound doc id -> encoded state vector


@dataclass
class ListChange:
    """New rows of an ordered list: appended at ``start``, or replacing all (``reset``)."""

    reset: bool
    start: int
    items: list[Any]


@dataclass
class FolderChanges:
    """The rows of one folder that changed since the last save."""

    folder_id: str
    row: tuple[float | None, int] | None = None  # (last_sync, index_entries)
    held: tuple[dict[str, Any] | None] | None = None  # (held deletion or None,) when it changed
    claimed: tuple[list[str]] | None = None  # (claimed paths,) when they changed
    files_reset: bool = False
    files_upsert: list[tuple[str, FileRow]] = field(default_factory=list)
    files_delete: list[str] = field(default_factory=list)
    dirty: ListChange | None = None
    changes: ListChange | None = None
    writers_reset: bool = False
    writers_upsert: list[tuple[str, str]] = field(default_factory=list)  # (path, JSON of writers)
    writers_delete: list[str] = field(default_factory=list)


@dataclass
class RelayChanges:
    """The rows of one relay that changed since the last save."""

    hashes_reset: bool = False
    hashes_upsert: list[tuple[str, str]] = field(default_factory=list)
    hashes_delete: list[str] = field(default_factory=list)
    folders: list[FolderChanges] = field(default_factory=list)
    clocks_reset: bool = False
    clocks_upsert: list[tuple[str, bytes]] = field(default_factory=list)
    clocks_delete: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.hashes_reset or self.hashes_upsert or self.hashes_delete or self.folders
                    or self.clocks_reset or self.clocks_upsert or self.clocks_delete)


# --- the database -----------------------------------------------------------------------


def _is_damage(exc: BaseException) -> bool:
    if isinstance(exc, _Damaged):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None and code & 0xFF in (
        _SQLITE_CORRUPT, _SQLITE_NOTADB)


def _schema_version(conn: sqlite3.Connection) -> int:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone() is None:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def _too_new(path: Path, version: int) -> StateDBError:
    return StateDBError(
        f"state database {path} has schema version {version}, newer than this release "
        f"understands ({SCHEMA_VERSION}): run the newer release, or move the file aside "
        "to rebuild the state from the relay"
    )


class StateDB:
    """One SQLite connection shared by every thread, writes serialized by a lock.

    Writers are serialized by SQLite anyway; a shared connection under a Python lock
    avoids its busy-wait (per-thread connections back off by sleeping when they
    collide), see ``bench/bench_state.py``.

    Args:
        path: the database file.
        readonly: open for reading only (``cli.py status`` while the service runs);
            nothing is created, migrated or set aside, and problems go to ``problem``.
        on_reset: called (under the database lock) after a damaged database was
            replaced by an empty one, so owners of loaded state can write it all again.

    Raises:
        StateDBError: the file cannot be opened, its schema is newer than this release,
            or WAL mode is refused.
    """

    def __init__(self, path: Path, *, readonly: bool = False, on_reset: Callable[[], None] | None = None):
        self.path = path
        self.readonly = readonly
        self.on_reset = on_reset
        self.problem: str | None = None
        self._lock = threading.Lock()
        self._relay_pks: dict[str, int] = {}
        self._folder_pks: dict[tuple[int, str], int] = {}
        self._conn: sqlite3.Connection | None = None
        if readonly:
            self._open_readonly()
            return
        try:
            try:
                self._conn = self._connect()
            except (sqlite3.DatabaseError, _Damaged) as exc:
                if not _is_damage(exc):
                    raise
                self._set_aside(exc)
                self._conn = self._connect()
        except sqlite3.Error as exc:  # permissions, a full disk, a lock held elsewhere
            raise StateDBError(f"state database {self.path} cannot be opened: {exc}") from exc

    @property
    def connection(self) -> sqlite3.Connection | None:
        """The open connection (for diagnostics and tests: hold no transaction on it)."""
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()  # checkpoints the log into the database file
                self._conn = None

    # --- opening ------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # Created by us with 0600 (vault paths are in it); SQLite gives its log the same mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            if mode != "wal":
                raise StateDBError(f"state database {self.path}: write-ahead logging refused (journal mode "
                                   f"{mode}); keep the data directory on a local filesystem")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
            self._migrate(conn)
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _Damaged(f"integrity check failed: {check}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = _schema_version(conn)
        if version > SCHEMA_VERSION:
            raise _too_new(self.path, version)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[target - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (target, time.time()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("state database schema updated path=%s version=%d", self.path, target)

    def _open_readonly(self) -> None:
        if not self.path.exists():
            return
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            self.problem = f"state database {self.path} cannot be opened: {exc}"
            return
        try:
            version = _schema_version(conn)
        except sqlite3.Error as exc:
            conn.close()
            self.problem = f"state database {self.path} is unreadable: {exc}{_REBUILT}"
            return
        if version != SCHEMA_VERSION:
            conn.close()
            self.problem = (str(_too_new(self.path, version)) if version > SCHEMA_VERSION else
                            f"state database {self.path} has schema version {version}: start the service "
                            "once to update it")
            return
        self._conn = conn

    def _set_aside(self, exc: BaseException) -> None:
        """Move a damaged database (and its log) aside for the operator; start afresh."""
        backup = self.path.with_name(self.path.name + DAMAGED)
        log.error("state database unreadable, starting it afresh (the next full sync rebuilds it) "
                  "path=%s backup=%s error=%s", self.path, backup, exc)
        for suffix in ("", "-wal"):
            try:
                os.replace(f"{self.path}{suffix}", f"{self.path}{suffix}{DAMAGED}")
            except FileNotFoundError:
                pass
        Path(f"{self.path}-shm").unlink(missing_ok=True)
        self._relay_pks.clear()
        self._folder_pks.clear()

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        """Run one unit of work under the lock; a damaged database is replaced (StateReset)."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StateDBError(f"state database {self.path} is closed")
            try:
                yield conn
            except BaseException as exc:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                if self.readonly or not _is_damage(exc):
                    raise
                conn.close()
                self._conn = None
                self._set_aside(exc)
                self._conn = self._connect()
                if self.on_reset is not None:
                    self.on_reset()
                raise StateReset(f"state database {self.path} was damaged and has been started afresh") from exc

    # --- reading ------------------------------------------------------------------------

    def load(self, relay_id: str) -> RelayRows:
        """Everything stored for one relay (empty when nothing is, or on a read-only problem)."""
        if self._conn is None and self.readonly:
            return RelayRows()
        try:
            with self._guard() as conn:
                return self._load(conn, relay_id)
        except sqlite3.Error as exc:
            if not self.readonly:
                raise
            self.problem = f"state database {self.path} is unreadable: {exc}{_REBUILT}"
            return RelayRows()

    def _load(self, conn: sqlite3.Connection, relay_id: str) -> RelayRows:
        out = RelayRows()
        row = conn.execute("SELECT id FROM relays WHERE relay_id = ?", (relay_id,)).fetchone()
        if row is None:
            return out
        relay_pk = int(row[0])
        out.hashes = dict(conn.execute("SELECT doc, sha256 FROM doc_hashes WHERE relay = ?", (relay_pk,)))
        out.clocks = {doc: bytes(sv) for doc, sv in conn.execute(
            "SELECT doc, state_vector FROM doc_clocks WHERE relay = ?", (relay_pk,))}
        folders = conn.execute("SELECT id, folder_id, last_sync, index_entries, held, extra FROM folders "
                               "WHERE relay = ?", (relay_pk,)).fetchall()
        for pk, folder_id, last_sync, entries, held, extra in folders:
            rows = FolderRows(last_sync=last_sync, index_entries=int(entries or 0),
                              held=_json_dict(held) or None, extra=_json_dict(extra))
            rows.files = conn.execute("SELECT doc_id, path, type, hash, sha256, size FROM files WHERE folder = ?",
                                      (pk,)).fetchall()
            rows.dirty = [p for (p,) in conn.execute("SELECT path FROM dirty WHERE folder = ? ORDER BY seq", (pk,))]
            rows.changes = [[verb, path] + ([dst] if dst is not None else []) for verb, path, dst in conn.execute(
                "SELECT verb, path, dst FROM pending_changes WHERE folder = ? ORDER BY seq", (pk,))]
            rows.writers = {path: writers_from_row(text) for path, text in conn.execute(
                "SELECT path, writers FROM pending_writers WHERE folder = ?", (pk,))}
            out.folders[folder_id] = rows
            if not self.readonly:
                self._folder_pks[(relay_pk, folder_id)] = int(pk)
        if not self.readonly:
            self._relay_pks[relay_id] = relay_pk
        return out

    # --- writing ------------------------------------------------------------------------

    def write(self, relay_id: str, changes: RelayChanges) -> None:
        """Apply one relay's changed rows in one transaction; durable when this returns.

        Raises:
            StateReset: the database was damaged; it is now empty and ``on_reset`` ran.
        """
        with self._guard() as conn:
            new_pks: dict[Any, int] = {}
            conn.execute("BEGIN IMMEDIATE")
            relay_pk = self._relay_pk(conn, relay_id, new_pks)
            _write_per_doc(conn, "doc_hashes", "sha256", relay_pk, changes.hashes_reset,
                           changes.hashes_delete, changes.hashes_upsert)
            _write_per_doc(conn, "doc_clocks", "state_vector", relay_pk, changes.clocks_reset,
                           changes.clocks_delete, changes.clocks_upsert)
            for folder in changes.folders:
                self._write_folder(conn, self._folder_pk(conn, relay_pk, folder.folder_id, new_pks), folder)
            conn.execute("COMMIT")
            self._remember(new_pks)

    def replace_relay(self, relay_id: str, rows: RelayRows) -> None:
        """Store ``rows`` as the relay's whole state (the one-time JSON import)."""
        with self._guard() as conn:
            new_pks: dict[Any, int] = {}
            conn.execute("BEGIN IMMEDIATE")
            relay_pk = self._relay_pk(conn, relay_id, new_pks)
            conn.execute("DELETE FROM doc_hashes WHERE relay = ?", (relay_pk,))
            conn.executemany("INSERT INTO doc_hashes (relay, doc, sha256) VALUES (?, ?, ?)",
                             [(relay_pk, doc, sha) for doc, sha in rows.hashes.items()])
            for folder_id, folder in rows.folders.items():
                pk = self._folder_pk(conn, relay_pk, folder_id, new_pks)
                conn.execute("UPDATE folders SET extra = ? WHERE id = ?",
                             (json.dumps(folder.extra) if folder.extra else None, pk))
                self._write_folder(conn, pk, FolderChanges(
                    folder_id=folder_id,
                    row=(folder.last_sync, folder.index_entries),
                    held=(folder.held,),
                    files_reset=True,
                    files_upsert=[(item[0], item[1:]) for item in folder.files],
                    dirty=ListChange(True, 0, list(folder.dirty)),
                    changes=ListChange(True, 0, [change_row(c) for c in folder.changes]),
                    writers_reset=True,
                    writers_upsert=[(path, writers_row(w)) for path, w in folder.writers.items()],
                ))
            conn.execute("COMMIT")
            self._remember(new_pks)

    @staticmethod
    def _write_folder(conn: sqlite3.Connection, pk: int, folder: FolderChanges) -> None:
        if folder.row is not None:
            conn.execute("UPDATE folders SET last_sync = ?, index_entries = ? WHERE id = ?", (*folder.row, pk))
        if folder.held is not None:
            held = folder.held[0]
            conn.execute("UPDATE folders SET held = ? WHERE id = ?",
                         (json.dumps(held, sort_keys=True) if held else None, pk))
        if folder.claimed is not None:
            row = conn.execute("SELECT extra FROM folders WHERE id = ?", (pk,)).fetchone()
            extra = _json_dict(row[0] if row else None)
            if folder.claimed[0]:
                extra["claimed"] = folder.claimed[0]
            else:
                extra.pop("claimed", None)
            conn.execute("UPDATE folders SET extra = ? WHERE id = ?",
                         (json.dumps(extra, sort_keys=True) if extra else None, pk))
        if folder.files_reset:
            conn.execute("DELETE FROM files WHERE folder = ?", (pk,))
        if folder.files_delete:
            conn.executemany("DELETE FROM files WHERE folder = ? AND doc_id = ?",
                             [(pk, doc) for doc in folder.files_delete])
        if folder.files_upsert:
            conn.executemany("INSERT OR REPLACE INTO files (folder, doc_id, path, type, hash, sha256, size) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", [(pk, doc, *row) for doc, row in folder.files_upsert])
        if folder.writers_reset:
            conn.execute("DELETE FROM pending_writers WHERE folder = ?", (pk,))
        if folder.writers_delete:
            conn.executemany("DELETE FROM pending_writers WHERE folder = ? AND path = ?",
                             [(pk, path) for path in folder.writers_delete])
        if folder.writers_upsert:
            conn.executemany("INSERT OR REPLACE INTO pending_writers (folder, path, writers) VALUES (?, ?, ?)",
                             [(pk, path, text) for path, text in folder.writers_upsert])
        for table, columns, change in (("dirty", "path", folder.dirty),
                                       ("pending_changes", "verb, path, dst", folder.changes)):
            if change is None:
                continue
            if change.reset:
                conn.execute(f"DELETE FROM {table} WHERE folder = ?", (pk,))
            if change.items:
                width = columns.count(",") + 1
                marks = ", ".join("?" * (width + 2))
                conn.executemany(
                    f"INSERT OR REPLACE INTO {table} (folder, seq, {columns}) VALUES ({marks})",
                    [(pk, change.start + n, *((item,) if width == 1 else item))
                     for n, item in enumerate(change.items)])

    def _relay_pk(self, conn: sqlite3.Connection, relay_id: str, new_pks: dict[Any, int]) -> int:
        pk = self._relay_pks.get(relay_id) or new_pks.get(relay_id)
        if pk is None:
            row = conn.execute("SELECT id FROM relays WHERE relay_id = ?", (relay_id,)).fetchone()
            pk = int(row[0]) if row else int(
                conn.execute("INSERT INTO relays (relay_id) VALUES (?)", (relay_id,)).lastrowid or 0)
            new_pks[relay_id] = pk
        return pk

    def _folder_pk(self, conn: sqlite3.Connection, relay_pk: int, folder_id: str, new_pks: dict[Any, int]) -> int:
        key = (relay_pk, folder_id)
        pk = self._folder_pks.get(key) or new_pks.get(key)
        if pk is None:
            row = conn.execute("SELECT id FROM folders WHERE relay = ? AND folder_id = ?", key).fetchone()
            pk = int(row[0]) if row else int(
                conn.execute("INSERT INTO folders (relay, folder_id) VALUES (?, ?)", key).lastrowid or 0)
            new_pks[key] = pk
        return pk

    def _remember(self, new_pks: dict[Any, int]) -> None:
        """Cache row ids created by a committed transaction (never those of a rolled-back one)."""
        for key, pk in new_pks.items():
            if isinstance(key, tuple):
                self._folder_pks[key] = pk
            else:
                self._relay_pks[key] = pk


def _write_per_doc(conn: sqlite3.Connection, table: str, column: str, relay_pk: int, reset: bool,
                   delete: list[str], upsert: list[tuple[str, Any]]) -> None:
    """Apply one relay's changed rows of a per-document table (``doc_hashes``, ``doc_clocks``).

    ``table`` and ``column`` are our own constants, never input.
    """
    if reset:
        conn.execute(f"DELETE FROM {table} WHERE relay = ?", (relay_pk,))
    if delete:
        conn.executemany(f"DELETE FROM {table} WHERE relay = ? AND doc = ?", [(relay_pk, doc) for doc in delete])
    if upsert:
        conn.executemany(f"INSERT OR REPLACE INTO {table} (relay, doc, {column}) VALUES (?, ?, ?)",
                         [(relay_pk, doc, value) for doc, value in upsert])


def change_row(change: list[str]) -> ChangeRow:
    """A commit-message line ``[verb, path, (dst)]`` as a row."""
    return (change[0], change[1], change[2] if len(change) > 2 else None)


def writers_row(writers: dict[str, int]) -> str:
    """The writers of one path as stored (JSON, keys sorted: equal writers, equal rows)."""
    return json.dumps(writers, sort_keys=True, ensure_ascii=False)


def writers_from_row(text: str | None) -> dict[str, int]:
    """The writers of one path from a stored row (anything malformed reads as none)."""
    return {str(user): ops for user, ops in _json_dict(text).items()
            if isinstance(ops, int) and not isinstance(ops, bool) and ops > 0}


def _json_dict(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def damaged_files(state_root: Path, relay_id: str) -> list[str]:
    """Names of state files set aside as damaged (the database, or a relay's JSON files)."""
    names = [p.name for p in state_root.glob(f"{DB_FILE}*{DAMAGED}")]
    relay_dir = state_root / relay_id
    if relay_dir.is_dir():
        names += [p.name for p in relay_dir.glob(f"*{DAMAGED}")]
    return sorted(names)


# --- the JSON files of earlier releases ---------------------------------------------------


@dataclass
class LegacyState:
    """What a relay's JSON state files hold; ``None`` for a file that is absent (or damaged)."""

    hashes: dict[str, str] | None = None
    local: dict[str, FolderRows] | None = None
    meta: dict[str, dict[str, Any]] | None = None
    present: list[Path] = field(default_factory=list)

    def apply_to(self, rows: RelayRows) -> RelayRows:
        """``rows`` with the parts these files cover replaced by theirs.

        Each file covers its own part (hashes; files, dirty paths and pending changes;
        folder metadata), so importing again after a crash between renames changes nothing.
        """
        if self.hashes is not None:
            rows.hashes = dict(self.hashes)
        if self.local is not None:
            for folder_id, local in self.local.items():
                kept = rows.folders.get(folder_id)
                if kept is not None:
                    local.index_entries, local.held, local.extra = kept.index_entries, kept.held, kept.extra
                rows.folders[folder_id] = local
        for folder_id, meta in (self.meta or {}).items():
            folder = rows.folders.get(folder_id)
            if folder is None or not isinstance(meta, dict):
                continue  # as before: metadata only describes folders with local state
            try:
                folder.index_entries = int(meta.get("entries", 0))
            except (TypeError, ValueError):
                folder.index_entries = 0
            held = meta.get("held")
            folder.held = held if isinstance(held, dict) and held else None
            folder.extra = {k: v for k, v in meta.items() if k not in ("entries", "synced_at", "held")}
            if folder.last_sync is None and isinstance(meta.get("synced_at"), (int, float)):
                folder.last_sync = float(meta["synced_at"])
        return rows


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _legacy_folder(data: Any, folder_id: str) -> FolderRows:
    out = FolderRows()
    if not isinstance(data, dict):
        log.warning("state record skipped folder=%s", folder_id)
        return out
    for doc_id, rec in (data.get("files") or {}).items():
        if not isinstance(rec, dict) or "path" not in rec:
            log.warning("state record skipped doc=%s", doc_id)
            continue
        size = rec.get("size")
        out.files.append((str(doc_id), str(rec["path"]), str(rec.get("type", "markdown")), _opt_str(rec.get("hash")),
                          _opt_str(rec.get("sha256")), size if isinstance(size, int) else None))
    out.dirty = [str(p) for p in data.get("dirty") or []]
    out.changes = [c for c in ([str(x) for x in change][:3] for change in data.get("changes") or []
                               if isinstance(change, list)) if len(c) >= 2]
    last_sync = data.get("last_sync")
    out.last_sync = float(last_sync) if isinstance(last_sync, (int, float)) else None
    return out


def read_legacy(relay_dir: Path, *, set_aside: bool) -> LegacyState:
    """Read a relay's JSON state files (the layout of earlier releases).

    Args:
        set_aside: rename a damaged file to ``*.damaged`` (like earlier releases did);
            otherwise (read-only callers) just ignore it.
    """
    out = LegacyState()
    parsed: dict[str, dict[str, Any]] = {}
    for name in LEGACY_FILES:
        path = relay_dir / name
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            if set_aside:
                backup = path.with_name(path.name + DAMAGED)
                log.error("state file unreadable, starting it afresh path=%s backup=%s error=%s", path, backup, exc)
                try:
                    os.replace(path, backup)
                except OSError:
                    pass
            continue
        parsed[name] = data if isinstance(data, dict) else {}
        out.present.append(path)
    if HASHES_FILE in parsed:
        out.hashes = {str(k): v for k, v in parsed[HASHES_FILE].items() if isinstance(v, str)}
    if LOCAL_FILE in parsed:
        out.local = {str(fid): _legacy_folder(data, fid) for fid, data in parsed[LOCAL_FILE].items()}
    if FOLDERS_FILE in parsed:
        out.meta = {str(fid): meta for fid, meta in parsed[FOLDERS_FILE].items() if isinstance(meta, dict)}
    return out


def mark_imported(paths: list[Path]) -> None:
    """Rename imported JSON files to ``*.imported`` so they are never read again."""
    for path in paths:
        os.replace(path, path.with_name(path.name + IMPORTED))
    if paths:
        fd = os.open(paths[0].parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
