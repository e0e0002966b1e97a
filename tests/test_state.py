"""The state database: round trips, the one-time JSON import, rows written per change,
damage, threads and SIGKILL.  Real SQLite files in a temporary data directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gitsync.state import FileRecord, FolderState, HeldDeletion, StateRegistry, damaged_state_files
from gitsync.statedb import SCHEMA_VERSION

FIXTURE = Path(__file__).parent / "fixtures" / "state_json"  # written by the JSON-era state.py
R1 = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
R2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
F1 = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
F2 = "a3bb189e-8bf9-3888-9912-ace4e6543002"
F3 = "c56a4180-65aa-42ec-a945-5fd21dec0538"
ROOT = str(Path(__file__).resolve().parents[1])


def reopen(data_dir: Path, registry: StateRegistry | None = None) -> StateRegistry:
    """What a restart finds: close the old registry, open a new one."""
    if registry is not None:
        registry.close()
    return StateRegistry(data_dir)


def snapshot(folder: FolderState) -> dict:
    return {
        "files": {doc: rec.row() for doc, rec in folder.files.items()},
        "dirty": list(folder.dirty),
        "changes": [list(c) for c in folder.changes],
        "held": folder.held,
        "last_sync": folder.last_sync,
        "index_entries": folder.index_entries,
    }


def fill(folder: FolderState, count: int, prefix: str = "") -> None:
    for i in range(count):
        folder.files[f"{prefix}doc-{i}"] = FileRecord(f"{prefix}d{i % 7}/note {i}.md", "markdown",
                                                      sha256=f"{i:064x}", size=i)


class Statements:
    """Data-changing SQL statements run on the registry's connection."""

    def __init__(self, registry: StateRegistry):
        self.conn = registry.db.connection
        self.seen: list[str] = []
        self.conn.set_trace_callback(self.seen.append)
        self.start = self.conn.total_changes

    @property
    def writes(self) -> list[tuple[str, str]]:
        """(verb, table) of each statement that changes rows."""
        found = (re.match(r"(INSERT OR REPLACE INTO|INSERT INTO|DELETE FROM|UPDATE) (\w+)", s) for s in self.seen)
        return [(m[1].split()[0], m[2]) for m in found if m]

    @property
    def rows(self) -> int:
        return self.conn.total_changes - self.start

    def reset(self) -> None:
        self.seen.clear()
        self.start = self.conn.total_changes


def test_a_document_leaving_the_state_takes_its_hash_and_clock_rows_along(tmp_path):
    """Rows of deleted documents are pruned with the deletion, in the same save, and only
    theirs: a document still held by another folder of the relay keeps its rows."""
    states = StateRegistry(tmp_path)
    relay = states.relay(R1)
    folder, other = relay.folder(F1), relay.folder(F2)
    fill(folder, 50)
    for i in range(50):
        relay.doc_hashes[f"{R1}-doc-{i}"] = f"{i:064x}"
        relay.doc_clocks[f"{R1}-doc-{i}"] = b"\x01\x02"
    other.files["doc-2"] = FileRecord("moved here.md", "markdown")  # left F1 for F2
    relay.doc_clocks[f"{R1}-{F1}"] = b"\x00"  # the folder document's own clock
    relay.save()
    sql = Statements(states)
    try:
        for doc in ("doc-1", "doc-2"):
            del folder.files[doc]
        folder.files.pop("doc-3")
        relay.save()
        gone = {f"{R1}-doc-1", f"{R1}-doc-3"}
        assert gone.isdisjoint(relay.doc_hashes) and gone.isdisjoint(relay.doc_clocks)
        assert sorted(set(sql.writes)) == [("DELETE", "doc_clocks"), ("DELETE", "doc_hashes"),
                                           ("DELETE", "files")]
        assert sql.rows == 2 + 2 + 3  # the two documents' rows and the three file records
    finally:
        sql.conn.set_trace_callback(None)
        states.close()
    again = StateRegistry(tmp_path).relay(R1)
    assert f"{R1}-doc-1" not in again.doc_hashes and f"{R1}-doc-1" not in again.doc_clocks
    assert f"{R1}-doc-2" in again.doc_hashes and f"{R1}-doc-2" in again.doc_clocks
    assert f"{R1}-{F1}" in again.doc_clocks
    assert len(again.doc_hashes) == 48


def test_round_trip_of_every_part(tmp_path):
    states = StateRegistry(tmp_path)
    relay = states.relay(R1)
    folder = relay.folder(F1)
    fill(folder, 30)
    folder.files["att"] = FileRecord("img/ü.png", "image", hash="h" * 64, sha256="b" * 64, size=10)
    folder.files["dir"] = FileRecord("d1", "folder")
    folder.add_dirty(["vault/a.md", "vault/b.md"])
    folder.note("add", "a.md")
    folder.note("rename", "old.md", "b.md")
    folder.held = {"reason": "the folder index is empty", "since": 1.5, "count": 2, "docs": ["x", "y"]}
    folder.last_sync = 1764000000.25
    folder.index_entries = 32
    relay.doc_hashes[f"{R1}-doc-1"] = "1" * 64
    states.relay(R2).folder(F3).files["only"] = FileRecord("only.md", "markdown")
    relay.save()
    states.relay(R2).save()
    want = snapshot(folder)

    states = reopen(tmp_path, states)
    try:
        again = states.relay(R1)
        assert snapshot(again.folders[F1]) == want
        assert dict(again.doc_hashes) == {f"{R1}-doc-1": "1" * 64}
        assert list(states.relay(R2).folders[F3].files) == ["only"]
        assert F3 not in again.folders
        assert (tmp_path / "state" / "state.db").stat().st_mode & 0o777 == 0o600
    finally:
        states.close()


def test_every_kind_of_change_is_saved(tmp_path):
    states = StateRegistry(tmp_path)
    relay = states.relay(R1)
    folder = relay.folder(F1)
    fill(folder, 10)
    folder.add_dirty(["a", "b", "c"])
    folder.note("add", "a")
    relay.save()
    # the engine's ways of changing state, all between two saves
    folder.files["doc-1"].path = "moved.md"  # a rename changes a record in place
    folder.files["doc-2"].type, folder.files["doc-2"].hash = "image", "h"
    folder.files.pop("doc-3")
    del folder.files["doc-4"]
    folder.files["doc-5"] = FileRecord("replaced.md", "markdown")
    folder.clear_pending(["a", "c"])
    folder.add_dirty(["d"])
    folder.changes = []
    folder.note("delete", "x")
    folder.held = {"reason": "r", "since": 2.0, "count": 1, "docs": ["doc-6"]}
    relay.doc_hashes["k"] = "v"
    relay.save()
    folder.held = None
    relay.doc_hashes.pop("k")
    relay.doc_hashes["k2"] = "v2"
    relay.save()
    want = snapshot(folder)

    states = reopen(tmp_path, states)
    try:
        again = states.relay(R1)
        assert snapshot(again.folders[F1]) == want
        assert want["dirty"] == ["b", "d"] and want["changes"] == [["delete", "x"]]
        assert "doc-3" not in want["files"] and want["files"]["doc-1"][0] == "moved.md"
        assert dict(again.doc_hashes) == {"k2": "v2"}
    finally:
        states.close()


def test_a_one_document_change_writes_only_its_rows(tmp_path):
    states = StateRegistry(tmp_path)
    relay = states.relay(R1)
    folder = relay.folder(F1)
    fill(folder, 2_000)
    for i in range(2_000):
        relay.doc_hashes[f"{R1}-doc-{i}"] = f"{i:064x}"
    relay.save()
    sql = Statements(states)
    try:
        # what the engine does for one edited document, then a save
        folder.add_dirty(["d1/note 1.md"])
        folder.files["doc-1"] = FileRecord("d1/note 1.md", "markdown", sha256="f" * 64, size=3)
        folder.note("update", "d1/note 1.md")
        relay.doc_hashes[f"{R1}-doc-1"] = "e" * 64
        folder.last_sync = 5.0
        relay.save()
        assert sorted(sql.writes) == [("INSERT", "dirty"), ("INSERT", "doc_hashes"), ("INSERT", "files"),
                                      ("INSERT", "pending_changes"), ("UPDATE", "folders")]
        assert sql.rows == 5
        assert sql.seen[0] == "BEGIN IMMEDIATE" and sql.seen[-1] == "COMMIT"

        # nothing changed: no transaction at all
        sql.reset()
        relay.save()
        assert sql.seen == []

        # a record deleted and recreated alike (folder records on every sync) costs nothing
        for doc in ("doc-7", "doc-8"):
            rec = folder.files.pop(doc)
            folder.files[doc] = FileRecord(rec.path, rec.type, rec.hash, rec.sha256, rec.size)
        folder.files["doc-9"].type = "markdown"
        relay.save()
        assert sql.seen == []

        # a commit: dirty paths and change lines go, in two statements
        folder.clear_pending(list(folder.dirty))
        folder.changes = []
        relay.save()
        assert sql.writes == [("DELETE", "dirty"), ("DELETE", "pending_changes")]
    finally:
        sql.conn.set_trace_callback(None)
        states.close()


def test_a_failed_save_is_written_by_the_next_one(tmp_path):
    states = StateRegistry(tmp_path)
    relay = states.relay(R1)
    folder = relay.folder(F1)
    fill(folder, 5)
    relay.save()
    folder.files["doc-1"].path = "renamed.md"
    folder.add_dirty(["renamed.md"])
    relay.doc_hashes["k"] = "v"
    blocker = StateRegistry(tmp_path)  # a second writer holds the write lock
    blocker.db.connection.execute("BEGIN IMMEDIATE")
    states.db.connection.execute("PRAGMA busy_timeout = 0")
    with pytest.raises(Exception, match="locked"):
        relay.save()
    blocker.db.connection.execute("ROLLBACK")
    blocker.close()
    relay.save()
    want = snapshot(folder)
    states = reopen(tmp_path, states)
    try:
        assert snapshot(states.relay(R1).folders[F1]) == want
        assert states.relay(R1).doc_hashes == {"k": "v"}
    finally:
        states.close()


def copy_fixture(data_dir: Path) -> Path:
    shutil.copytree(FIXTURE, data_dir / "state")
    return data_dir / "state"


def check_fixture_state(states: StateRegistry) -> None:
    relay = states.relay(R1)
    first, second = relay.folders[F1], relay.folders[F2]
    assert snapshot(first) == {
        "files": {
            "11111111-1111-4111-8111-111111111111": ("notes/a.md", "markdown", None, "aa" * 32, 3),
            "22222222-2222-4222-8222-222222222222": ("img/ü.png", "image", "h" * 64, "bb" * 32, 10),
            "33333333-3333-4333-8333-333333333333": ("notes", "folder", None, None, None),
            "44444444-4444-4444-8444-444444444444": ("board.canvas", "canvas", None, "cc" * 32, 42),
        },
        "dirty": ["vault/notes/a.md", "vault/img/ü.png"],
        "changes": [["add", "notes/a.md"], ["rename", "old.png", "img/ü.png"]],
        "held": None,
        "last_sync": 1764000000.25,
        "index_entries": 4,
    }
    assert second.held == {"reason": "the folder index is empty", "since": 1764000001.5, "count": 1,
                           "docs": ["55555555-5555-4555-8555-555555555555"]}
    assert second.index_entries == 0 and second.last_sync == 1764000002.0
    assert relay.doc_hashes == {f"{R1}-11111111-1111-4111-8111-111111111111": "01" * 32,
                                f"{R1}-44444444-4444-4444-8444-444444444444": "02" * 32,
                                f"{R1}-55555555-5555-4555-8555-555555555555": "03" * 32}
    other = states.relay(R2)
    assert [rec.path for rec in other.folders[F3].files.values()] == ["only.md"]
    assert other.folders[F3].index_entries == 1


def test_json_state_of_an_earlier_release_is_imported_once(tmp_path):
    state_dir = copy_fixture(tmp_path)
    names = ["document_hashes.json", "local_state.json", "shared_folders.json"]

    # cli.py status before the first start: reads the JSON in place, changes nothing
    view = StateRegistry(tmp_path, readonly=True)
    check_fixture_state(view)
    view.close()
    assert not (state_dir / "state.db").exists()
    assert sorted(p.name for p in (state_dir / R1).iterdir()) == names

    states = StateRegistry(tmp_path)
    check_fixture_state(states)
    assert sorted(p.name for p in (state_dir / R1).iterdir()) == [n + ".imported" for n in names]
    # the database is the state now: a change survives, and the files are not read again
    states.relay(R1).folders[F1].files.pop("11111111-1111-4111-8111-111111111111")
    states.relay(R1).save()
    states = reopen(tmp_path, states)
    try:
        assert "11111111-1111-4111-8111-111111111111" not in states.relay(R1).folders[F1].files
        assert states.relay(R1).folders[F2].held is not None
        schema = states.db.connection.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        assert schema == SCHEMA_VERSION
    finally:
        states.close()


def test_import_interrupted_between_renames_imports_the_rest_alike(tmp_path):
    state_dir = copy_fixture(tmp_path)
    first = StateRegistry(tmp_path)
    first.relay(R1)
    first.relay(R2)
    first.close()
    # as if the process died after the import's transaction and its first rename
    for name in ("local_state.json", "shared_folders.json"):
        os.replace(state_dir / R1 / (name + ".imported"), state_dir / R1 / name)
    states = StateRegistry(tmp_path)
    try:
        check_fixture_state(states)
        assert not list((state_dir / R1).glob("*.json"))
    finally:
        states.close()


def test_damaged_json_file_is_set_aside_and_the_rest_imported(tmp_path):
    state_dir = copy_fixture(tmp_path)
    (state_dir / R1 / "document_hashes.json").write_text("{ not json")
    states = StateRegistry(tmp_path)
    try:
        relay = states.relay(R1)
        assert relay.doc_hashes == {}
        assert len(relay.folders[F1].files) == 4
        assert damaged_state_files(tmp_path, R1) == ["document_hashes.json.damaged"]
    finally:
        states.close()


def test_damaged_database_is_set_aside_and_started_afresh(tmp_path):
    states = StateRegistry(tmp_path)
    fill(states.relay(R1).folder(F1), 10)
    states.relay(R1).save()
    states.close()
    db = tmp_path / "state" / "state.db"
    db.write_bytes(b"this is not a database" * 500)

    view = StateRegistry(tmp_path, readonly=True)  # cli.py status: reports, touches nothing
    assert "unreadable" in (view.problem or "") or "not a database" in (view.problem or "")
    assert view.relay(R1).folders == {}
    view.close()
    assert not (tmp_path / "state" / "state.db.damaged").exists()

    states = StateRegistry(tmp_path)
    try:
        relay = states.relay(R1)
        assert relay.folders == {}  # rebuilt from the relay by the next full sync
        assert damaged_state_files(tmp_path, R1) == ["state.db.damaged"]
        fill(relay.folder(F1), 3)
        relay.save()
    finally:
        states.close()
    states = reopen(tmp_path)
    try:
        assert len(states.relay(R1).folders[F1].files) == 3
    finally:
        states.close()


def test_damage_found_while_running_is_repaired_by_a_full_write(tmp_path):
    states = StateRegistry(tmp_path)
    relay = states.relay(R1)
    folder = relay.folder(F1)
    fill(folder, 3_000)
    relay.doc_hashes["k"] = "v"
    relay.save()
    conn = states.db.connection
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA cache_size = 1")  # read pages from the file, not from memory
    conn.execute("PRAGMA shrink_memory")
    db = tmp_path / "state" / "state.db"
    with db.open("r+b") as handle:
        handle.seek(3 * 4096)
        handle.write(os.urandom(db.stat().st_size - 3 * 4096))
    folder.files["doc-1"].path = "after the damage.md"
    relay.save()  # finds the damage, starts afresh and writes the whole state again
    assert (tmp_path / "state" / "state.db.damaged").exists()
    want = snapshot(folder)
    states = reopen(tmp_path, states)
    try:
        assert snapshot(states.relay(R1).folders[F1]) == want
        assert states.relay(R1).doc_hashes == {"k": "v"}
    finally:
        states.close()


def test_a_newer_schema_is_refused_with_a_clear_error(tmp_path):
    states = StateRegistry(tmp_path)
    states.relay(R1)
    states.db.connection.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    states = reopen(tmp_path, states)
    try:
        with pytest.raises(Exception, match="newer than this release"):
            states.relay(R1)
    finally:
        states.close()
    assert not (tmp_path / "state" / "state.db.damaged").exists()


def test_saves_from_many_threads(tmp_path):
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave between almost every bytecode
    try:
        _saves_from_many_threads(tmp_path)
    finally:
        sys.setswitchinterval(switch)


def _saves_from_many_threads(tmp_path):
    states = StateRegistry(tmp_path)
    relays = [states.relay(R1), states.relay(R2)]
    failures: list[BaseException] = []
    start = threading.Barrier(6)

    def work(n: int) -> None:
        relay = relays[n % 2]
        folder = relay.folder(f"folder-{n}")
        try:
            start.wait()
            for i in range(150):
                # the engine's order: dirty path, then the record, then the hash
                folder.add_dirty([f"p{i}.md"])
                folder.files[f"doc-{i}"] = FileRecord(f"p{i}.md", "markdown", sha256=f"{n}-{i}")
                if i % 3 == 0:
                    folder.files[f"doc-{i}"].path = f"moved {i}.md"
                if i % 5 == 0:
                    folder.files.pop(f"doc-{i - 1}", None)
                folder.note("add", f"p{i}.md")
                relay.doc_hashes[f"{n}-doc-{i}"] = str(i)
                if i % 40 == 39:
                    folder.clear_pending(list(folder.dirty)[:20])
                relay.save()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    want = {n: snapshot(relays[n % 2].folders[f"folder-{n}"]) for n in range(6)}
    hashes = [dict(relay.doc_hashes) for relay in relays]
    states = reopen(tmp_path, states)
    try:
        for n in range(6):
            assert snapshot(states.relay((R1, R2)[n % 2]).folders[f"folder-{n}"]) == want[n]
        assert [dict(states.relay(r).doc_hashes) for r in (R1, R2)] == hashes
    finally:
        states.close()


CHILD = r"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from gitsync.state import FileRecord, StateRegistry

states = StateRegistry(Path(sys.argv[1]))
relay = states.relay("relay")
folder = relay.folder("folder")
kill_at = int(sys.argv[3])
for n in range(1, 5):
    # one generation: 300 records, the hash and a dirty path, in one save
    for i in range(300):
        folder.files[f"doc-{i}"] = FileRecord(f"gen-{n}/{i}.md", "markdown", size=n)
    relay.doc_hashes["generation"] = str(n)
    folder.add_dirty([f"p{n}"])
    if n == 4:
        statements = []

        def trace(sql):
            statements.append(sql)
            if len(statements) == kill_at or (kill_at < 0 and sql == "COMMIT"):
                os.kill(os.getpid(), signal.SIGKILL)  # in the middle of the save

        states.db.connection.set_trace_callback(trace)
    relay.save()
    print("saved", n, flush=True)
"""


@pytest.mark.parametrize("kill_at", [1, 2, 3, 150, 302, -1])  # BEGIN, first rows, mid-way, last, COMMIT
def test_sigkill_during_a_save_keeps_the_old_state_whole(tmp_path, kill_at):
    child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), ROOT, str(kill_at)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.split() == ["saved", "1", "saved", "2", "saved", "3"]
    states = StateRegistry(tmp_path)
    try:
        relay = states.relay("relay")
        folder = relay.folders["folder"]
        assert relay.doc_hashes["generation"] == "3"
        assert {rec.path.split("/")[0] for rec in folder.files.values()} == {"gen-3"}
        assert len(folder.files) == 300
        assert list(folder.dirty) == ["p1", "p2", "p3"]
    finally:
        states.close()


def test_schema_1_database_is_migrated_and_keeps_its_rows(tmp_path):
    """A database written before authorship was kept: migrated on open, nothing lost."""
    import sqlite3

    from gitsync.statedb import _MIGRATIONS

    db_path = tmp_path / "state" / "state.db"
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    for statement in _MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute("INSERT INTO relays (id, relay_id) VALUES (1, ?)", (R1,))
    conn.execute("INSERT INTO folders (id, relay, folder_id, last_sync) VALUES (1, 1, ?, 5.0)", (F1,))
    conn.execute("INSERT INTO files VALUES (1, 'doc-1', 'a.md', 'markdown', NULL, 'ab', 3)")
    conn.execute("INSERT INTO dirty VALUES (1, 0, 'a.md')")
    conn.execute("INSERT INTO doc_hashes VALUES (1, 'k', 'v')")
    conn.commit()
    conn.close()
    view = StateRegistry(tmp_path, readonly=True)
    assert "schema version 1: start the service once to update it" in (view.problem or "")
    view.close()

    states = StateRegistry(tmp_path)
    try:
        relay = states.relay(R1)
        folder = relay.folders[F1]
        assert (folder.files["doc-1"].path, list(folder.dirty), relay.doc_hashes) == ("a.md", ["a.md"], {"k": "v"})
        assert folder.writers == {} and relay.doc_clocks == {}
        version = states.db.connection.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        assert version == SCHEMA_VERSION == 2
        folder.add_writers("a.md", {"user-ada": 3, "": 1})
        folder.add_writers("a.md", {"user-ada": 2})
        relay.doc_clocks[f"{R1}-doc-1"] = b"\x01\x05\x09"
        relay.save()
        states = reopen(tmp_path, states)
        relay = states.relay(R1)
        assert relay.folders[F1].writers == {"a.md": {"user-ada": 5, "": 1}}
        assert relay.doc_clocks == {f"{R1}-doc-1": b"\x01\x05\x09"}
        relay.folders[F1].clear_pending(["a.md"])  # the commit took it: its writers go too
        relay.save()
        states = reopen(tmp_path, states)
        assert states.relay(R1).folders[F1].writers == {}
        rows = states.db.connection.execute("SELECT COUNT(*) FROM pending_writers").fetchone()[0]
        assert rows == 0
    finally:
        states.close()


def test_a_held_deletion_reads_as_a_typed_value_even_from_an_old_record():
    state = FolderState(held={"reason": "11 of 12 files", "since": 1700000000, "count": 11,
                              "docs": ["d1", "d2"]})
    assert state.held_deletion == HeldDeletion("11 of 12 files", 1700000000.0, 11, ("d1", "d2"))
    assert FolderState().held_deletion is None
    # written by an older release, or damaged: still a value status can show
    assert FolderState(held={"docs": ["d1"], "since": "yesterday"}).held_deletion == HeldDeletion(
        "mass deletion", None, 1, ("d1",))
