"""The last head seen of every document, per connector, and what to fetch from new heads.

Why: the Relay Server answers "what is each document's head" for 100 documents per
websocket round trip. Comparing those answers with the heads stored here tells which
documents changed while we were not listening (a restart, a dropped socket, a routing
gap), so only those are fetched.

The rule that keeps this from losing an edit: a head is stored only after the fetch
of every document it names as changed is durably queued (or done). A head is never
newer than the content it vouches for, so "same head" always means "nothing to fetch".
Losing stored heads (a damaged or deleted file) only costs fetches.

Storage is one small SQLite file beside the other state (``state/heads.sqlite3``),
independent of the state files' format.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from .yframes import Head, same_head

__all__ = ["HEADS_FILE", "HeadStore", "docs_to_fetch"]

log = logging.getLogger(__name__)

HEADS_FILE = "heads.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS heads (
    relay_id TEXT NOT NULL,
    folder_id TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    snapshot BLOB NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (relay_id, folder_id, doc_id)
) WITHOUT ROWID
"""

ConnectorKey = tuple[str, str]


def docs_to_fetch(known: Iterable[str], stored: Mapping[str, bytes],
                  answered: Mapping[str, Head]) -> list[str]:
    """The documents of ``known`` to fetch, in order.

    A document is fetched when the server gave no head for it (it is not in the
    server's index: we cannot know), when we stored none (never compared), or when the
    two differ.

    Args:
        known: document ids of the connector's text documents.
        stored: doc id -> snapshot bytes stored earlier.
        answered: doc id -> head the server just reported.
    """
    out = []
    for doc_id in known:
        head, previous = answered.get(doc_id), stored.get(doc_id)
        if head is None or previous is None or not same_head(previous, head.snapshot):
            out.append(doc_id)
    return out


class HeadStore:
    """Document heads per connector in one SQLite file (thread-safe).

    A file that SQLite cannot read is set aside as ``<name>.damaged`` and replaced by
    an empty one: without heads the next catch-up fetches every document once.

    Raises:
        OSError: the directory cannot be created.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            damaged = self.path.with_name(self.path.name + ".damaged")
            log.warning("heads file unreadable, set aside; every document is fetched once "
                        "path=%s error=%s", self.path, exc)
            for suffix in ("", "-wal", "-shm"):
                source = Path(str(self.path) + suffix)
                if source.exists():
                    source.replace(Path(str(damaged) + suffix))
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a lost write only costs fetches
            db.execute(_SCHEMA)
            db.execute("SELECT count(*) FROM heads").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get_many(self, connector: ConnectorKey) -> dict[str, bytes]:
        """doc id -> stored snapshot for every document of the connector."""
        with self._lock:
            rows = self._db.execute(
                "SELECT doc_id, snapshot FROM heads WHERE relay_id = ? AND folder_id = ?",
                connector,
            ).fetchall()
        return {doc_id: bytes(snapshot) for doc_id, snapshot in rows}

    def put_many(self, connector: ConnectorKey, heads: Mapping[str, Head]) -> None:
        """Store (replace) the heads of these documents in one transaction."""
        if not heads:
            return
        rows = [(*connector, doc_id, bytes(h.snapshot), int(h.last_seen)) for doc_id, h in heads.items()]
        with self._lock:
            with self._db:  # one transaction
                self._db.execute("BEGIN")
                self._db.executemany(
                    "INSERT OR REPLACE INTO heads (relay_id, folder_id, doc_id, snapshot, last_seen)"
                    " VALUES (?, ?, ?, ?, ?)", rows)

    def forget(self, connector: ConnectorKey, doc_ids: Iterable[str] | None = None) -> None:
        """Drop the heads of these documents (all of the connector's when None)."""
        with self._lock:
            with self._db:
                self._db.execute("BEGIN")
                if doc_ids is None:
                    self._db.execute("DELETE FROM heads WHERE relay_id = ? AND folder_id = ?",
                                     connector)
                else:
                    self._db.executemany(
                        "DELETE FROM heads WHERE relay_id = ? AND folder_id = ? AND doc_id = ?",
                        [(*connector, d) for d in doc_ids])

    def count(self, connector: ConnectorKey) -> int:
        with self._lock:
            (n,) = self._db.execute(
                "SELECT count(*) FROM heads WHERE relay_id = ? AND folder_id = ?", connector,
            ).fetchone()
        return int(n)
