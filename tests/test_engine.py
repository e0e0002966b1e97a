"""The engine over real HTTP (the stand-in), real files and real Dulwich repositories."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from dulwich.repo import Repo

from gitsync import gitrepo, ydoc
from gitsync.config import Connector, ConnectorsConfig, Settings
from gitsync.dev.relay import FolderHandle
from gitsync.engine import Engine, SyncAborted, describe_changes
from gitsync.relay import RelayClient, Unauthorized
from gitsync.state import StateRegistry
from tests.relay_faults import FaultyRelay


def make_engine(relay: FaultyRelay, data_dir: Path, folders: list[FolderHandle], *, prefix: str = "",
                key: str | None = None, **settings) -> tuple[Engine, list[Connector]]:
    connectors = [Connector(f.relay_id, f.folder_id, prefix=prefix) for f in folders]
    cfg = Settings(data_dir=data_dir, relay_server_url=relay.url, relay_server_api_key=relay.api_key,
                   **settings)
    client = RelayClient(relay.url or "", key or relay.api_key, retries=1, backoff=0.01)
    return Engine(cfg, client, ConnectorsConfig(tuple(connectors))), connectors


def tree(engine: Engine, connector: Connector) -> dict[str, bytes]:
    with Repo(str(engine.settings.repo_dir(connector))) as repo:
        return gitrepo.read_tree_paths(repo, connector.branch)


@pytest.fixture
def folder(relay_server: FaultyRelay) -> FolderHandle:
    return relay_server.add_folder()


def test_sync_commit_and_rename_keeps_identity(relay_server, folder, tmp_path):
    folder.put_markdown("a.md", "A\n")
    folder.put_markdown("b.md", "B\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder], prefix="vault")
    try:
        report = engine.sync_folder(conn)
        assert report.created == 2
        assert engine.commit(conn)
        assert tree(engine, conn) == {"vault/a.md": b"A\n", "vault/b.md": b"B\n"}
        # swap the two names: both are renames, no delete/add
        folder.rename("a.md", "tmp.md")
        folder.rename("b.md", "a.md")
        folder.rename("tmp.md", "b.md")
        report = engine.sync_folder(conn, full=False)
        assert (report.renamed, report.created, report.deleted) == (2, 0, 0)
        engine.commit(conn)
        assert tree(engine, conn) == {"vault/a.md": b"B\n", "vault/b.md": b"A\n"}
        # nothing changed: no commit
        assert engine.sync_folder(conn).changed == 0
        assert engine.commit(conn) is None
    finally:
        engine.close()


def test_files_we_did_not_write_are_left_alone(relay_server, folder, tmp_path):
    folder.put_markdown("notes/a.md", "A\n")
    folder.put_markdown("stays.md", "S\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        engine.commit(conn)
        root = engine.settings.repo_dir(conn)
        (root / "notes" / "by-hand.md").write_text("a person wrote this\n")
        folder.delete("notes")
        engine.sync_folder(conn)
        engine.commit(conn)
        assert not (root / "notes" / "a.md").exists()
        assert (root / "notes" / "by-hand.md").read_text() == "a person wrote this\n"
    finally:
        engine.close()


def test_symlinked_directory_cannot_lead_writes_outside(relay_server, folder, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    engine, (conn,) = make_engine(relay_server, tmp_path / "data", [folder])
    try:
        engine.sync_folder(conn)
        root = engine.settings.repo_dir(conn)
        os.symlink(outside, root / "linked")
        folder.put_markdown("linked/evil.md", "escape\n")
        folder.put_markdown("ok.md", "fine\n")
        report = engine.sync_folder(conn)
        assert list(outside.iterdir()) == []
        assert any("outside the repository" in reason for _, reason in report.skipped)
        assert (root / "ok.md").read_text() == "fine\n"
    finally:
        engine.close()


def test_never_written_document_does_not_blank_a_file(relay_server, folder, tmp_path):
    folder.put_markdown("keep.md", "precious\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        cid = folder.doc_compound_id("keep.md")
        relay_server.put_update(cid, b"\x00\x00")  # registered but nothing uploaded
        report = engine.sync_folder(conn)
        assert (engine.settings.repo_dir(conn) / "keep.md").read_text() == "precious\n"
        assert any("not uploaded" in reason for _, reason in report.skipped)
        # a new document that was never written is an empty note
        doc = folder.put_markdown("empty.md", "")
        relay_server.put_update(f"{folder.relay_id}-{doc}", b"\x00\x00")
        engine.sync_folder(conn)
        assert (engine.settings.repo_dir(conn) / "empty.md").read_bytes() == b""
    finally:
        engine.close()


def test_mass_deletion_is_held_then_confirmed(relay_server, folder, tmp_path):
    for i in range(40):
        folder.put_markdown(f"n{i}.md", f"{i}\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    engine.hold_confirm_seconds = 0.0
    try:
        engine.sync_folder(conn)
        engine.commit(conn)
        for i in range(30):
            folder.delete(f"n{i}.md")
        report = engine.sync_folder(conn)
        assert report.held and report.deleted == 0
        assert len(list(engine.settings.repo_dir(conn).glob("*.md"))) == 40
        held = engine.folder_state(conn).held
        assert held["count"] == 30
        saved = StateRegistry(tmp_path, readonly=True)  # what a restart would find
        assert saved.relay(folder.relay_id).folders[folder.folder_id].held["count"] == 30
        saved.close()
        # a later read that still shows the deletion confirms it
        report = engine.sync_folder(conn)
        assert report.deleted == 30 and not report.held
        assert engine.folder_state(conn).held is None
    finally:
        engine.close()


def test_empty_index_is_held_and_operator_can_confirm(relay_server, folder, tmp_path):
    folder.put_markdown("only.md", "x\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        folder.delete("only.md")
        assert engine.sync_folder(conn).held
        assert (engine.settings.repo_dir(conn) / "only.md").exists()
        assert engine.sync_folder(conn, confirm_deletions=True).deleted == 1
    finally:
        engine.close()


def test_content_webhook_for_unknown_document_is_reported(relay_server, folder, tmp_path):
    folder.put_markdown("a.md", "a\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        doc = folder.doc_id("a.md")
        assert engine.locate(folder.relay_id, doc) == (conn, "doc")
        assert engine.locate(folder.relay_id, folder.folder_id) == (conn, "folder")
        report = engine.sync_docs(conn, ["00000000-0000-4000-8000-000000000000"])
        assert report.unknown == ["00000000-0000-4000-8000-000000000000"]
    finally:
        engine.close()


def test_uncommitted_paths_survive_a_restart(relay_server, folder, tmp_path):
    folder.put_markdown("a.md", "a\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    engine.sync_folder(conn)
    engine.close()  # "crash" before the commit
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        assert engine.pending_paths(conn) == 1
        assert engine.commit(conn)
        assert tree(engine, conn) == {"a.md": b"a\n"}
    finally:
        engine.close()


def test_deleted_documents_leave_no_hash_or_clock_behind(relay_server, folder, tmp_path):
    folder.put_markdown("a.md", "a\n")
    folder.put_markdown("b.md", "b\n")
    gone = folder.doc_compound_id("a.md")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        relay_state = engine.states.relay(folder.relay_id)
        assert gone in relay_state.doc_hashes and gone in relay_state.doc_clocks
        folder.delete("a.md")
        engine.sync_folder(conn, full=False)
    finally:
        engine.close()
    again = StateRegistry(tmp_path).relay(folder.relay_id)
    assert gone not in again.doc_hashes and gone not in again.doc_clocks
    kept = folder.doc_compound_id("b.md")
    assert kept in again.doc_hashes and kept in again.doc_clocks


def test_missing_folder_and_bad_key(relay_server, tmp_path):
    ghost = FolderHandle(relay_server, "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
                         "f47ac10b-58cc-4372-a567-0e02b2c3d479")
    engine, (conn,) = make_engine(relay_server, tmp_path, [ghost])
    try:
        with pytest.raises(SyncAborted, match="check the relay and shared folder ids"):
            engine.sync_folder(conn)
    finally:
        engine.close()
    folder = relay_server.add_folder()
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder], key="bad")
    try:
        with pytest.raises(Unauthorized):
            engine.sync_folder(conn)
    finally:
        engine.close()


def test_damaged_state_database_is_set_aside(relay_server, folder, tmp_path):
    folder.put_markdown("a.md", "a\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    engine.sync_folder(conn)
    engine.commit(conn)
    engine.close()
    state_db = tmp_path / "state" / "state.db"
    state_db.write_bytes(b"{ not a database" * 100)
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        report = engine.sync_folder(conn)
        assert (tmp_path / "state" / "state.db.damaged").exists()
        assert report.created == 1  # rebuilt; same bytes so the next commit is empty
        assert engine.commit(conn) is None
    finally:
        engine.close()


@pytest.mark.parametrize(
    "changes, subject",
    [
        ([["update", "a.md"], ["rename", "b.md", "x/b.md"], ["delete", "c.md"]],
         "Update a.md, rename b.md -> x/b.md, delete c.md"),
        ([["add", f"n{i}.md"] for i in range(12)] + [["delete", "z.md"]], "Add 12 files, delete 1 file"),
        ([], "Sync from Relay"),
    ],
)
def test_commit_messages_name_the_changes(changes, subject):
    assert describe_changes(changes).splitlines()[0] == subject


def test_held_deletion_is_not_overwritten_by_a_new_file_at_its_path(relay_server, folder, tmp_path):
    for i in range(40):
        folder.put_markdown(f"n{i}.md", f"{i}\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        for i in range(30):
            folder.delete(f"n{i}.md")
        folder.put_markdown("n0.md", "a different document at a held path\n")
        report = engine.sync_folder(conn)
        assert report.held
        assert (engine.settings.repo_dir(conn) / "n0.md").read_text() == "0\n"
        assert engine.sync_folder(conn, confirm_deletions=True).deleted == 30
        assert (engine.settings.repo_dir(conn) / "n0.md").read_text() == "a different document at a held path\n"
    finally:
        engine.close()


def test_remote_is_recorded_in_git_config_without_credentials(relay_server, folder, tmp_path):
    from dulwich.repo import Repo as DRepo

    folder.put_markdown("a.md", "a\n")
    settings = Settings(data_dir=tmp_path, relay_server_url=relay_server.url, relay_server_api_key="k")
    for url in ("https://me:TOKEN-MARKER@git.example.com/team/vault.git", "git@example.org:team/moved.git"):
        conn = Connector(folder.relay_id, folder.folder_id, url=url, remote_name="backup")
        engine = Engine(settings, RelayClient(relay_server.url, relay_server.api_key), ConnectorsConfig((conn,)))
        engine.repo(conn)
        engine.close()
    with DRepo(str(settings.repo_dir(conn))) as repo:
        config = repo.get_config()
        assert config.get((b"remote", b"backup"), b"url") == b"git@example.org:team/moved.git"
        assert config.get((b"branch", b"main"), b"remote") == b"backup"
    assert b"TOKEN-MARKER" not in (settings.repo_dir(conn) / ".git" / "config").read_bytes()


def test_never_written_canvas_does_not_blank_a_board(relay_server, folder, tmp_path):
    folder.put_canvas("board.canvas", {"nodes": [{"id": "n1", "type": "text", "text": "keep", "x": 0, "y": 0,
                                                   "width": 10, "height": 10}], "edges": []})
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        before = (engine.settings.repo_dir(conn) / "board.canvas").read_bytes()
        relay_server.put_update(folder.doc_compound_id("board.canvas"), b"\x00\x00")
        report = engine.sync_folder(conn)
        assert (engine.settings.repo_dir(conn) / "board.canvas").read_bytes() == before
        assert report.updated == 0
    finally:
        engine.close()


def test_symlink_into_dot_git_is_refused(relay_server, folder, tmp_path):
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        root = engine.settings.repo_dir(conn)
        os.symlink(root / ".git", root / "meta")
        config_before = (root / ".git" / "config").read_bytes()
        folder.put_markdown("meta/config", "[core]\n\tfsmonitor = evil\n")
        folder.put_markdown("fine.md", "ok\n")
        report = engine.sync_folder(conn)
        assert (root / ".git" / "config").read_bytes() == config_before
        assert any("outside the repository" in reason for _, reason in report.skipped)
    finally:
        engine.close()


def test_changed_branch_gets_every_tracked_file(relay_server, folder, tmp_path):
    folder.put_markdown("a.md", "a\n")
    folder.put_markdown("sub/b.md", "b\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    engine.sync_folder(conn)
    engine.commit(conn)
    engine.close()
    moved = Connector(conn.relay_id, conn.folder_id, branch="vault")
    settings = Settings(data_dir=tmp_path, relay_server_url=relay_server.url, relay_server_api_key=relay_server.api_key)
    engine = Engine(settings, RelayClient(relay_server.url, relay_server.api_key), ConnectorsConfig((moved,)))
    try:
        engine.sync_folder(moved)
        assert engine.commit(moved)
        assert tree(engine, moved) == {"a.md": b"a\n", "sub/b.md": b"b\n"}
    finally:
        engine.close()


def test_lock_files_left_by_a_killed_process_are_cleared(relay_server, folder, tmp_path):
    folder.put_markdown("a.md", "a\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    engine.sync_folder(conn)
    engine.commit(conn)
    engine.close()
    git_dir = engine.settings.repo_dir(conn) / ".git"
    old = time.time() - gitrepo.STALE_LOCK_AGE - 5  # older than a person's git could hold them
    for name in ("index.lock", "refs/heads/main.lock", "HEAD.lock"):
        (git_dir / name).write_bytes(b"half-written by a killed process")
        os.utime(git_dir / name, (old, old))
    folder.edit_markdown("a.md", "after the crash\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        assert engine.commit(conn)
        assert tree(engine, conn) == {"a.md": b"after the crash\n"}
        assert not list(git_dir.rglob("*.lock"))
    finally:
        engine.close()


def test_half_written_temporary_files_are_removed_on_start(relay_server, folder, tmp_path):
    folder.put_markdown("notes/a.md", "a\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    engine.sync_folder(conn)
    engine.close()
    root = engine.settings.repo_dir(conn)
    debris = root / "notes" / ".gitsync-tmp-abc123.tmp"
    debris.write_bytes(b"half")
    mid_move = root / "notes" / ".gitsync-tmp-0b1f3c9e-8f43-4d6b-9a57-1f0d4c2b7a11"
    mid_move.write_bytes(b"a document between two moves")
    state_debris = tmp_path / "state" / folder.relay_id / ".local_state.json.xyz.tmp"  # an earlier release's
    state_debris.parent.mkdir(parents=True, exist_ok=True)
    state_debris.write_bytes(b"{")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        assert not debris.exists() and not state_debris.exists()
        assert mid_move.exists()  # not ours to judge here: the planner handles its names
    finally:
        engine.close()


def test_folder_replaced_by_a_file_then_renamed_within_one_interval_commits(relay_server, folder, tmp_path):
    """Found by an adversarial fuzz run: this once made every later commit raise."""
    folder.put_markdown("c/a.md", "A\n")
    folder.put_markdown("keep.md", "K\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        engine.commit(conn)
        folder.delete("c")
        folder.put_markdown("c", "now a file\n")
        engine.sync_folder(conn)
        folder.rename("c", "d.md")
        engine.sync_folder(conn)
        assert engine.commit(conn)
        assert tree(engine, conn) == {"d.md": b"now a file\n", "keep.md": b"K\n"}
        assert engine.pending_paths(conn) == 0
    finally:
        engine.close()


def _mass_delete_setup(folder, extra):
    for i in range(30):
        folder.put_markdown(f"n{i}.md", f"{i}\n")
    for path, text in extra.items():
        folder.put_markdown(path, text)


def test_held_deletion_with_a_rename_chain_clobbers_nothing(relay_server, folder, tmp_path):
    _mass_delete_setup(folder, {"p.md": "X\n", "q.md": "Y\n", "r.md": "Z\n"})
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        engine.commit(conn)
        for i in range(30):
            folder.delete(f"n{i}.md")
        folder.delete("p.md")
        folder.rename("q.md", "p.md")  # Y takes X's name
        folder.rename("r.md", "q.md")  # Z takes Y's name
        for full in (False, True):
            assert engine.sync_folder(conn, full=full).held
            work = engine.settings.repo_dir(conn)
            assert {p: (work / p).read_text() for p in ("p.md", "q.md", "r.md")} == {
                "p.md": "X\n", "q.md": "Y\n", "r.md": "Z\n"}  # frozen, nothing lost
        assert engine.sync_folder(conn, confirm_deletions=True).deleted == 31
        engine.commit(conn)
        assert tree(engine, conn) == {"p.md": b"Y\n", "q.md": b"Z\n"}
    finally:
        engine.close()


def test_held_deletion_with_a_new_folder_over_a_kept_file_does_not_abort(relay_server, folder, tmp_path):
    _mass_delete_setup(folder, {"x": "x is a file\n"})
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        for i in range(30):
            folder.delete(f"n{i}.md")
        folder.delete("x")
        folder.put_markdown("x/inner.md", "inner\n")
        assert engine.sync_folder(conn).held
        assert engine.sync_folder(conn, confirm_deletions=True).created == 1
        engine.commit(conn)
        assert tree(engine, conn) == {"x/inner.md": b"inner\n"}
    finally:
        engine.close()


def test_a_hand_made_file_in_the_way_skips_one_document_not_the_folder(relay_server, folder, tmp_path):
    folder.put_markdown("ok.md", "ok\n")
    folder.put_markdown("mv.md", "moving\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        root = engine.settings.repo_dir(conn)
        (root / "notes").write_text("a person's file named like a folder\n")
        (root / "target").mkdir()
        (root / "target" / "theirs.md").write_text("theirs\n")
        folder.put_markdown("notes/a.md", "under a file\n")
        folder.rename("mv.md", "target")  # a directory we did not write is in the way
        folder.put_markdown("z.md", "z\n")
        report = engine.sync_folder(conn)
        assert (root / "z.md").read_text() == "z\n"
        assert (root / "notes").read_text() == "a person's file named like a folder\n"
        assert (root / "target" / "theirs.md").read_text() == "theirs\n"
        reasons = " ".join(reason for _, reason in report.skipped)
        assert "in the way" in reasons
        engine.commit(conn)  # and committing still works
        (root / "notes").unlink()  # the person clears the way: the next sync catches up
        engine.sync_folder(conn)
        assert (root / "notes" / "a.md").read_text() == "under a file\n"
    finally:
        engine.close()


def test_full_sync_repairs_a_file_that_diverged_from_the_relay(relay_server, folder, tmp_path):
    folder.put_markdown("a.md", "relay text\n")
    folder.put_attachment("img.png", b"\x89PNG original", "image/png")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        engine.commit(conn)
        root = engine.settings.repo_dir(conn)
        (root / "a.md").write_text("edited text\n")  # same length as the original
        (root / "img.png").write_bytes(b"\x89PNG tampered")
        assert engine.sync_folder(conn, full=False).updated == 0  # webhooks trust the hashes
        report = engine.sync_folder(conn)  # the reconcile verifies bytes
        assert report.updated == 2
        assert (root / "a.md").read_text() == "relay text\n"
        assert (root / "img.png").read_bytes() == b"\x89PNG original"
        engine.commit(conn)
        assert tree(engine, conn) == {"a.md": b"relay text\n", "img.png": b"\x89PNG original"}
    finally:
        engine.close()


def test_a_deletion_whose_file_is_already_gone_is_still_committed(relay_server, folder, tmp_path):
    """A crash after the unlink but before the state was saved: the restart finds no file."""
    folder.put_markdown("gone.md", "g\n")
    folder.put_markdown("stays.md", "s\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        engine.commit(conn)
        (engine.settings.repo_dir(conn) / "gone.md").unlink()
        folder.delete("gone.md")
        engine.sync_folder(conn)
        engine.commit(conn)
        assert tree(engine, conn) == {"stays.md": b"s\n"}
    finally:
        engine.close()


def test_relay_outage_mid_sync_fails_fast_and_heals_later(relay_server, folder, tmp_path):
    for i in range(40):
        folder.put_markdown(f"n{i}.md", f"{i}\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder], fetch_concurrency=2)
    try:
        engine.sync_folder(conn)
        doc_ids = [folder.doc_compound_id(f"n{i}.md") for i in range(40)]
        for cid in doc_ids:  # every document read fails; the folder index still answers
            relay_server.fail_next(10, status=503, path_prefix=f"/d/{cid}/")
        relay_server.reset_counters()
        report = engine.sync_folder(conn)
        assert report.failed and report.changed == 0
        attempts = sum(relay_server.fetch_count(cid) for cid in doc_ids)
        assert attempts < 20  # without the breaker: 40 documents x 2 attempts each
        relay_server.clear_faults()
        report = engine.sync_folder(conn)
        assert not report.failed and report.unchanged == 40
    finally:
        engine.close()


def test_a_file_over_max_file_bytes_stays_out_of_commits_with_a_reason(relay_server, folder, tmp_path):
    from gitsync.engine import SyncReport

    folder.put_markdown("small.md", "small\n")
    folder.put_markdown("big.md", "x" * 3000)
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder], max_file_bytes=1000)
    try:
        engine.sync_folder(conn)
        report = SyncReport(conn)
        assert engine.commit(conn, report=report)
        assert tree(engine, conn) == {"small.md": b"small\n"}  # the folder is not blocked
        assert [p for p, _ in report.skipped] == ["big.md"]
        assert "3000 bytes" in report.skipped[0][1] and "RELAY_GIT_MAX_FILE_BYTES" in report.skipped[0][1]
        assert [p for p, _ in engine.left_out(conn)] == ["big.md"]
        assert engine.commit(conn) is None  # still pending, nothing new to commit
        folder.edit_markdown("big.md", "fits now\n")
        engine.sync_docs(conn, [folder.doc_id("big.md")])
        assert engine.commit(conn)
        assert tree(engine, conn) == {"small.md": b"small\n", "big.md": b"fits now\n"}
        assert engine.left_out(conn) == []
    finally:
        engine.close()


def test_a_recent_lock_file_is_left_alone_and_reported(relay_server, folder, tmp_path, caplog):
    folder.put_markdown("a.md", "a\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    engine.sync_folder(conn)
    engine.commit(conn)
    engine.close()
    git_dir = engine.settings.repo_dir(conn) / ".git"
    (git_dir / "refs/heads/main.lock").write_bytes(b"a person's git commit in progress")
    folder.edit_markdown("a.md", "b\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        assert (git_dir / "refs/heads/main.lock").exists()  # not removed on start
        assert "refs/heads/main.lock" in caplog.text and "left alone" in caplog.text
        with pytest.raises(gitrepo.RepositoryLocked, match="refs/heads/main.lock"):
            engine.commit(conn)
        assert tree(engine, conn) == {"a.md": b"a\n"}
        assert engine.folder_state(conn).dirty  # nothing lost: the edit is still pending
    finally:
        engine.close()


def test_a_persons_file_is_never_replaced_by_a_new_document_or_a_rename(relay_server, folder, tmp_path):
    folder.put_markdown("mv.md", "moving\n")
    folder.put_markdown("keep.md", "k1\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        engine.sync_folder(conn)
        engine.commit(conn)
        root = engine.settings.repo_dir(conn)
        theirs_new = b"a person's notes, not from the relay\n"
        theirs_target = b"\x00a person's binary file\xff\n"
        (root / "new.md").write_bytes(theirs_new)
        (root / "target.md").write_bytes(theirs_target)
        folder.put_markdown("new.md", "the relay's new document\n")
        folder.rename("mv.md", "target.md")
        folder.put_markdown("other.md", "other\n")
        folder.edit_markdown("keep.md", "k2\n")
        report = engine.sync_folder(conn)
        assert (root / "new.md").read_bytes() == theirs_new
        assert (root / "target.md").read_bytes() == theirs_target
        assert (root / "mv.md").read_text() == "moving\n"  # not moved: its record stays true
        skipped = dict(report.skipped)
        assert "something the service did not write is in the way" in skipped["new.md"]
        assert "something the service did not write is in the way" in skipped["target.md"]
        assert (root / "other.md").read_text() == "other\n" and (root / "keep.md").read_text() == "k2\n"
        engine.commit(conn)
        assert tree(engine, conn) == {"mv.md": b"moving\n", "keep.md": b"k2\n", "other.md": b"other\n"}
        # the person clears the way: the next sync catches up
        (root / "new.md").unlink()
        (root / "target.md").unlink()
        report = engine.sync_folder(conn)
        assert not report.skipped
        engine.commit(conn)
        assert tree(engine, conn) == {"new.md": b"the relay's new document\n", "target.md": b"moving\n",
                                      "keep.md": b"k2\n", "other.md": b"other\n"}
    finally:
        engine.close()


def test_files_written_before_a_crash_lost_the_state_are_recognised_as_ours(relay_server, folder, tmp_path):
    """A sync saves the free paths it will create ("claimed") before creating them.

    Here the sync's later state is lost, as a SIGKILL after the files were written would
    lose it: the saved state is the one from before, plus those claims.
    """
    import shutil

    from gitsync.state import StateRegistry

    folder.put_markdown("mv.md", "moving\n")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    engine.sync_folder(conn)
    engine.commit(conn)
    engine.close()
    state_dir = tmp_path / "state"
    shutil.copytree(state_dir, tmp_path / "state-before")
    folder.put_markdown("new.md", "new\n")
    folder.put_markdown("gone.md", "created, then deleted while the service was down\n")
    folder.rename("mv.md", "sub/moved.md")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    engine.sync_folder(conn)  # files written and moved ...
    assert engine.folder_state(conn).claimed == set()  # released when done
    engine.close()
    shutil.rmtree(state_dir)
    shutil.copytree(tmp_path / "state-before", state_dir)  # ... but the state of that sync is lost
    registry = StateRegistry(tmp_path)
    try:
        saved = registry.relay(folder.relay_id).folder(folder.folder_id)
        saved.claimed = {"gone.md", "new.md", "sub/moved.md"}  # saved before acting
        registry.relay(folder.relay_id).save()
    finally:
        registry.close()
    folder.delete("gone.md")
    root = engine.settings.repo_dir(conn)
    assert (root / "gone.md").exists() and (root / "sub" / "moved.md").exists()
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    try:
        assert engine.folder_state(conn).claimed == {"gone.md", "new.md", "sub/moved.md"}
        report = engine.sync_folder(conn)
        assert report.skipped == []
        assert not (root / "gone.md").exists()  # ours, owned by no document: removed
        engine.commit(conn)
        assert tree(engine, conn) == {"new.md": b"new\n", "sub/moved.md": b"moving\n"}
    finally:
        engine.close()


def test_a_fetched_note_and_canvas_are_each_decoded_once(relay_server, folder, tmp_path, monkeypatch):
    # The never-written check, the content and the authorship come from one decoding:
    # each decoding of a small note costs about as much as its fetch.
    folder.put_markdown("a.md", "A\n")
    folder.put_canvas("b.canvas", {"nodes": [{"id": "n1", "type": "text", "text": "t", "x": 0, "y": 0,
                                              "width": 1, "height": 1}], "edges": []})
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder])
    decoded: list[bytes] = []
    real_load = ydoc._load

    def counting_load(update):
        decoded.append(bytes(update))
        return real_load(update)

    monkeypatch.setattr(ydoc, "_load", counting_load)
    try:
        engine.sync_docs(conn, [folder.doc_id("a.md")])  # unknown yet: nothing fetched
        assert decoded == []
        engine.sync_folder(conn)
        for path in ("a.md", "b.canvas"):
            update = relay_server.get_update(folder.doc_compound_id(path))
            assert decoded.count(update) == 1, path
        assert (engine.settings.repo_dir(conn) / "a.md").read_bytes() == b"A\n"
        assert b'"text":"t"' in (engine.settings.repo_dir(conn) / "b.canvas").read_bytes()
    finally:
        engine.close()


def test_a_webhook_for_a_document_a_full_sync_has_not_reached_is_served_at_once(relay_server, folder, tmp_path):
    # A big folder's first sync takes minutes; an edit to one of its documents must not
    # wait for all of it. The other documents' reads are held so the sync stays in flight.
    others = [f"a{i:02d}.md" for i in range(20)]
    for name in others:
        folder.put_markdown(name, f"{name}\n")
    folder.put_markdown("zz.md", "first\n")
    target = folder.doc_compound_id("zz.md")
    engine, (conn,) = make_engine(relay_server, tmp_path, [folder], fetch_concurrency=3)
    relay_server.hold(folder.doc_compound_id(name) for name in others)
    errors: list[BaseException] = []

    def full_sync() -> None:
        try:
            engine.sync_folder(conn)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    worker = threading.Thread(target=full_sync)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while relay_server.held_waiting < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert relay_server.held_waiting == 3  # every bulk thread waits on a held read
        assert relay_server.fetch_count(target) == 0  # the sync has not reached it
        folder.edit_markdown("zz.md", "edited\n")
        assert engine.locate(folder.relay_id, folder.doc_id("zz.md")) == (conn, "doc")
        report = engine.sync_docs(conn, [folder.doc_id("zz.md")])
        assert report.unknown == [] and report.created == 1
        assert (engine.settings.repo_dir(conn) / "zz.md").read_bytes() == b"edited\n"
    finally:
        relay_server.release()
        worker.join(60)
    assert not errors and not worker.is_alive()
    engine.commit(conn)
    files = tree(engine, conn)
    assert files["zz.md"] == b"edited\n" and len(files) == 21
    engine.close()
