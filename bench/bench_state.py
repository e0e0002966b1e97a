#!/usr/bin/env python3
"""Cost of saving a relay's state after a one-document change, by vault size.

    python bench/bench_state.py [--sizes 10000,50000] [--runs 31]

For each size, in the same run: the state database (``gitsync.state``) and, as the
baseline, the JSON files of the previous release, saved by a copy of that release's
algorithm kept below (``OldJsonState``).  Both fsync what they write.  Then: the same
change with ``synchronous=NORMAL`` (for the durability trade-off), first open and import
of the JSON files, and concurrent saves from threads over one shared connection under a
lock (what ``StateDB`` does) against one connection per thread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitsync.state import FileRecord, StateRegistry, write_atomic  # noqa: E402

RELAY = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
FOLDER = "f47ac10b-58cc-4372-a567-0e02b2c3d479"


# --- BASELINE: the previous release's JSON state, copied here to measure against ---------
# (gitsync/state.py before the state database; only what saving needs.)


@dataclass
class OldFileRecord:
    path: str
    type: str
    hash: str | None = None
    sha256: str | None = None
    size: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class OldFolderState:
    files: dict[str, OldFileRecord] = field(default_factory=dict)
    dirty: list[str] = field(default_factory=list)
    changes: list[list[str]] = field(default_factory=list)
    held: dict[str, Any] | None = None
    last_sync: float | None = None
    index_entries: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "files": {doc: rec.to_json() for doc, rec in sorted(self.files.items())},
            "dirty": self.dirty,
            "changes": self.changes,
        }
        if self.last_sync is not None:
            out["last_sync"] = self.last_sync
        return out


class OldJsonState:
    """The previous release's RelayState.save: three JSON files, each rewritten whole."""

    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.lock = threading.RLock()
        self.doc_hashes: dict[str, str] = {}
        self.folder_meta: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, OldFolderState] = {}
        self._saved: dict[str, bytes] = {}

    def folder(self, folder_id: str) -> OldFolderState:
        return self.folders.setdefault(folder_id, OldFolderState())

    def save(self) -> None:
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
                "document_hashes.json": self.doc_hashes,
                "shared_folders.json": meta,
                "local_state.json": {fid: f.to_json() for fid, f in self.folders.items()},
            }
            for name, obj in payloads.items():
                data = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
                if self._saved.get(name) != data:
                    write_atomic(self.dir / name, data)
                    self._saved[name] = data


# --- END OF BASELINE ---------------------------------------------------------------------


def populate(relay: Any, folder: Any, files: int, record: type) -> None:
    for i in range(files):
        doc = str(uuid.UUID(int=i))
        folder.files[doc] = record(path=f"d{i % 50}/note {i}.md", type="markdown",
                                   sha256=hashlib.sha256(doc.encode()).hexdigest(), size=120)
        relay.doc_hashes[f"{RELAY}-{doc}"] = hashlib.sha256(doc.encode()[::-1]).hexdigest()
    folder.last_sync = 1.0


def one_document_change(relay: Any, folder: Any, n: int, record: type) -> None:
    """What the engine does for one edited document (sync_docs -> _write_file, _store)."""
    doc = str(uuid.UUID(int=n * 7919 % 10_000))
    path = f"d{n % 50}/note {n}.md"
    folder.dirty.append(f"vault/{path}")
    folder.files[doc] = record(path=path, type="markdown", sha256=f"{n:064x}", size=121 + n)
    folder.changes.append(["update", path])
    relay.doc_hashes[f"{RELAY}-{doc}"] = f"{n:064x}"
    folder.last_sync = 2.0 + n


def timed_saves(relay: Any, folder: Any, runs: int, record: type,
                floor: Path | None = None) -> tuple[list[float], list[float]]:
    """Save times after a one-document change; with ``floor``, a bare fsync before each, paired."""
    saves, floors = [], []
    for n in range(runs):
        if floor is not None:
            floors.append(fsync_floor(floor))
        one_document_change(relay, folder, n, record)
        t0 = time.perf_counter()
        relay.save()
        saves.append(time.perf_counter() - t0)
    return saves, floors


def fsync_floor(directory: Path) -> float:
    """One 4 KiB append and fdatasync: what any durable save costs on this disk at this moment."""
    with open(directory / "floor", "ab") as handle:
        t0 = time.perf_counter()
        handle.write(b"x" * 4096)
        handle.flush()
        os.fdatasync(handle.fileno())
        return time.perf_counter() - t0


def old_load(state_dir: Path) -> None:
    """BASELINE: the previous release's start-up read of the three files (parse and records)."""
    data = {name: json.loads((state_dir / name).read_bytes())
            for name in ("document_hashes.json", "shared_folders.json", "local_state.json")}
    for folder in data["local_state.json"].values():
        {doc: OldFileRecord(path=str(r["path"]), type=str(r.get("type", "markdown")), hash=r.get("hash"),
                            sha256=r.get("sha256"), size=r.get("size")) for doc, r in folder["files"].items()}


def fmt(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"median {statistics.median(ordered) * 1000:7.2f} ms, p90 {p90 * 1000:7.2f} ms"


def bench_size(files: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        old = OldJsonState(root / "json" / RELAY)
        old_folder = old.folder(FOLDER)
        populate(old, old_folder, files, OldFileRecord)
        old.save()
        json_size = sum(p.stat().st_size for p in (root / "json" / RELAY).iterdir())
        baseline, _ = timed_saves(old, old_folder, runs, OldFileRecord)
        t0 = time.perf_counter()
        old_load(root / "json" / RELAY)
        baseline_load = time.perf_counter() - t0

        states = StateRegistry(root / "db")
        relay = states.relay(RELAY)
        folder = relay.folder(FOLDER)
        populate(relay, folder, files, FileRecord)
        t0 = time.perf_counter()
        relay.save()
        first = time.perf_counter() - t0
        ours, floor = timed_saves(relay, folder, runs, FileRecord, floor=root)
        states.db.connection.execute("PRAGMA synchronous = NORMAL")
        normal, _ = timed_saves(relay, folder, runs, FileRecord)
        states.close()
        db_size = (root / "db" / "state" / "state.db").stat().st_size

        t0 = time.perf_counter()
        states = StateRegistry(root / "db")
        states.relay(RELAY)
        reopen = time.perf_counter() - t0
        states.close()

        # first start after an upgrade: import of the previous release's files
        legacy = root / "upgrade" / "state"
        shutil.copytree(root / "json", legacy)
        t0 = time.perf_counter()
        states = StateRegistry(root / "upgrade")
        states.relay(RELAY)
        imported = time.perf_counter() - t0
        states.close()

        print(f"{files:>6} documents, save after a one-document change ({runs} runs):")
        print(f"  state database (synchronous=FULL)      {fmt(ours)}")
        print(f"  BASELINE JSON files (previous release) {fmt(baseline)}   ({json_size / 1e6:.1f} MB rewritten)")
        print(f"  state database, synchronous=NORMAL     {fmt(normal)}   (not durable across a power cut)")
        print(f"  disk floor: 4 KiB write + fdatasync    {fmt(floor)}   (paired with the FULL saves)")
        print(f"  database {db_size / 1e6:.1f} MB; first save of all rows {first * 1000:.0f} ms; "
              f"open and load {reopen * 1000:.0f} ms (BASELINE JSON load {baseline_load * 1000:.0f} ms); "
              f"one-time import of the JSON files {imported * 1000:.0f} ms")


SCHEMA_FILES = ("CREATE TABLE IF NOT EXISTS files (folder INTEGER NOT NULL, doc_id TEXT NOT NULL, "
                "path TEXT NOT NULL, type TEXT NOT NULL, hash TEXT, sha256 TEXT, size INTEGER, "
                "PRIMARY KEY (folder, doc_id)) WITHOUT ROWID")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _save_row(conn: sqlite3.Connection, n: int, i: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT OR REPLACE INTO files VALUES (?, ?, 'p', 'markdown', NULL, 's', 1)", (n, f"doc-{i}"))
    conn.execute("COMMIT")


def _threads_variant(per_thread: bool, threads: int, saves: int) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.db"
        shared = _connect(path)
        shared.execute(SCHEMA_FILES)
        lock = threading.Lock()
        latencies: list[float] = []
        start = threading.Barrier(threads + 1)

        def work(n: int) -> None:
            own = _connect(path) if per_thread else None
            start.wait()
            for i in range(saves):
                t0 = time.perf_counter()
                if own is not None:
                    _save_row(own, n, i)
                else:
                    with lock:
                        _save_row(shared, n, i)
                latencies.append(time.perf_counter() - t0)
            if own is not None:
                own.close()

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        start.wait()
        t0 = time.perf_counter()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - t0
        shared.close()
    return wall, latencies


def bench_threads(threads: int, saves: int) -> None:
    """One shared connection under a lock against one connection per thread (same SQL)."""
    print(f"concurrent saves: {threads} threads x {saves} one-row transactions")
    for per_thread, name in ((False, "shared connection + lock"), (True, "connection per thread")):
        wall, latencies = _threads_variant(per_thread, threads, saves)
        ordered = sorted(latencies)
        print(f"  {name:<26} {threads * saves / wall:7.0f} saves/s, latency {fmt(ordered)}, "
              f"max {ordered[-1] * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {time.strftime('%Y-%m-%d')}")
    for files in (int(s) for s in args.sizes.split(",")):
        bench_size(files, args.runs)
    bench_threads(args.threads, 300)


if __name__ == "__main__":
    main()
