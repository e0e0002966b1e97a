"""``cli.py sync`` end to end: the Relay stand-in over HTTP, real files, real Dulwich repos."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from dulwich.repo import Repo

from cli import cli
from gitsync import gitrepo, ydoc
from gitsync.dev.relay import FolderHandle, tiny_pdf, tiny_png
from tests.relay_faults import FaultyRelay


def run(args: list[str], env: dict[str, str]):
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    return result


def base_env(relay: FaultyRelay, data_dir: Path, key: str | None = None) -> dict[str, str]:
    return {
        "RELAY_SERVER_URL": relay.url or "",
        "RELAY_SERVER_API_KEY": key or relay.api_key,
        "RELAY_GIT_DATA_DIR": str(data_dir),
    }


def sync_args(folder: FolderHandle, *extra: str) -> list[str]:
    return ["sync", "--relay-id", folder.relay_id, "--folder-id", folder.folder_id, *extra]


def expected_files(relay: FaultyRelay, folder: FolderHandle, blobs: dict[str, bytes]) -> dict[str, bytes]:
    """What the repository must hold: every file of the folder at its path, exact bytes."""
    out: dict[str, bytes] = {}
    for key, entry in folder.entries().items():
        path = key.lstrip("/")
        if entry["type"] == "markdown":
            out[path] = folder.text(path).encode()
        elif entry["type"] == "canvas":
            update = relay.get_update(folder.doc_compound_id(path))
            out[path] = ydoc.render_canvas(ydoc.read_canvas(update))
        elif entry["type"] != "folder":
            out[path] = blobs[path]
    return out


def head_files(repo_dir: Path, branch: str = "main", prefix: str = "") -> dict[str, bytes]:
    with Repo(str(repo_dir)) as repo:
        files = gitrepo.read_tree_paths(repo, branch, prefix)
    cut = len(prefix) + 1 if prefix else 0
    return {path[cut:]: data for path, data in files.items()}


def commit_count(repo_dir: Path) -> int:
    with Repo(str(repo_dir)) as repo:
        return sum(1 for _ in repo.get_walker())


def build_vault(folder: FolderHandle, notes: int = 195) -> dict[str, bytes]:
    blobs = {"attachments/logo.png": tiny_png(), "docs/manual.pdf": tiny_pdf("manual")}
    for i in range(notes):
        depth = ["", "notes/", "notes/deep/", "projects/alpha/"][i % 4]
        folder.put_markdown(f"{depth}note {i:03d}.md", f"# Note {i}\n\nBody {i} — café 🌍 文字\n")
    folder.mkdir("empty-folder")
    folder.put_canvas("boards/plan.canvas", {
        "nodes": [{"id": "n1", "type": "text", "text": "Plan", "x": 0, "y": -50, "width": 250, "height": 60},
                  {"id": "n2", "type": "file", "file": "notes/note 001.md", "x": 300, "y": 10.5,
                   "width": 400, "height": 400}],
        "edges": [{"id": "e1", "fromNode": "n1", "toNode": "n2", "fromSide": "right", "toSide": "left"}],
    })
    folder.put_attachment("attachments/logo.png", blobs["attachments/logo.png"], "image/png")
    folder.put_attachment("docs/manual.pdf", blobs["docs/manual.pdf"], "application/pdf")
    folder.put_markdown("README.md", "top\n")
    folder.put_markdown("notes/ignored-then-edited.md", "v1\n")
    return blobs


def test_sync_200_documents_then_noop_then_edit_rename_delete(relay_server: FaultyRelay, tmp_path):
    folder = relay_server.add_folder()
    blobs = build_vault(folder)
    env = base_env(relay_server, tmp_path)
    repo_dir = tmp_path / "repos" / folder.relay_id / folder.folder_id

    result = run(sync_args(folder), env)
    assert result.exit_code == 0, result.output
    assert "200 created" in result.output
    assert head_files(repo_dir) == expected_files(relay_server, folder, blobs)
    assert len(head_files(repo_dir)) == 200
    assert commit_count(repo_dir) == 1
    assert (repo_dir / "empty-folder").is_dir()
    assert (tmp_path / "state" / "state.db").is_file()

    # A second run with nothing changed (even after server housekeeping) makes no commit.
    folder.touch("README.md")
    result = run(sync_args(folder), env)
    assert result.exit_code == 0, result.output
    assert "no commit" in result.output
    assert commit_count(repo_dir) == 1

    # Edit + rename + delete: one commit with exactly those changes.
    folder.edit_markdown("notes/note 001.md", "# Note 1\n\nEdited.\n")
    folder.rename("notes/note 005.md", "archive/note 005.md")
    folder.delete("README.md")
    result = run(sync_args(folder), env)
    assert result.exit_code == 0, result.output
    assert "1 updated, 1 renamed, 1 deleted" in result.output
    assert commit_count(repo_dir) == 2
    assert head_files(repo_dir) == expected_files(relay_server, folder, blobs)
    with Repo(str(repo_dir)) as repo:
        head = repo[repo.refs[b"refs/heads/main"]]
        message = head.message.decode()
        changes = {(c.type, (c.old.path or b"").decode() if c.old else "", (c.new.path or b"").decode() if c.new else "")
                   for c in gitrepo_changes(repo, head)}
    subject = message.splitlines()[0]
    assert sorted(subject.lower().split(", ")) == [
        "delete readme.md", "rename notes/note 005.md -> archive/note 005.md", "update notes/note 001.md"]
    assert ("modify", "notes/note 001.md", "notes/note 001.md") in changes
    assert ("delete", "README.md", "") in changes
    assert ("add", "", "archive/note 005.md") in changes and ("delete", "notes/note 005.md", "") in changes
    assert len(changes) == 4


def gitrepo_changes(repo: Repo, commit):
    from dulwich.diff_tree import tree_changes

    parent = repo[commit.parents[0]]
    return list(tree_changes(repo.object_store, parent.tree, commit.tree))


def test_wrong_api_key_is_a_clear_error_without_traceback(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a")
    result = run(sync_args(folder), base_env(relay_server, tmp_path, key="wrong-key-MARKER"))
    assert result.exit_code == 2
    assert "RELAY_SERVER_API_KEY" in result.output
    assert "Traceback" not in result.output
    assert "wrong-key-MARKER" not in result.output


def test_relay_500_twice_then_success(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "alpha\n")
    relay_server.fail_next(2, status=500)
    result = run(sync_args(folder), base_env(relay_server, tmp_path))
    assert result.exit_code == 0, result.output
    repo_dir = tmp_path / "repos" / folder.relay_id / folder.folder_id
    assert head_files(repo_dir) == {"a.md": b"alpha\n"}


def test_corrupt_document_is_reported_and_skipped(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("good.md", "good\n")
    folder.put_markdown("bad.md", "bad\n")
    relay_server.set_raw(folder.doc_compound_id("bad.md"), b"\xff\xfe not yjs at all")
    result = run(sync_args(folder), base_env(relay_server, tmp_path))
    assert result.exit_code == 0, result.output
    assert "skipped bad.md" in result.output and "corrupt" in result.output
    repo_dir = tmp_path / "repos" / folder.relay_id / folder.folder_id
    assert head_files(repo_dir) == {"good.md": b"good\n"}


@pytest.mark.parametrize("hostile", ["../escape.md", "/../../etc/evil.md", "a/../../x.md",
                                     ".git/config", "sub/.git/hooks/post-commit", "a\\..\\b.md"])
def test_hostile_paths_write_nothing_outside_the_repository(relay_server, tmp_path, hostile):
    folder = relay_server.add_folder()
    folder.put_markdown("fine.md", "fine\n")
    doc = folder.put_markdown("victim.md", "owned\n")
    folder.set_entry(hostile, {"id": doc, "type": "markdown", "version": 0})
    folder.delete("victim.md")
    data_dir = tmp_path / "data"
    before = set(tmp_path.rglob("*"))
    result = run(sync_args(folder), base_env(relay_server, data_dir))
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output
    repo_dir = data_dir / "repos" / folder.relay_id / folder.folder_id
    outside = [p for p in set(tmp_path.rglob("*")) - before
               if data_dir not in p.parents and p != data_dir]
    assert outside == []
    assert head_files(repo_dir) == {"fine.md": b"fine\n"}
    assert not (repo_dir / ".git" / "config").read_bytes().count(b"owned")


def test_sync_all_uses_connectors_and_prefix(relay_server, tmp_path):
    one, two = relay_server.add_folder(), relay_server.add_folder()
    one.put_markdown("x.md", "one\n")
    two.put_markdown("y.md", "two\n")
    (tmp_path / "git_connectors.toml").write_text(
        f'[[git_connector]]\nshared_folder_id = "{one.folder_id}"\nrelay_id = "{one.relay_id}"\nprefix = "vault"\n\n'
        f'[[git_connector]]\nshared_folder_id = "{two.folder_id}"\nrelay_id = "{two.relay_id}"\n'
    )
    result = run(["sync", "--all"], base_env(relay_server, tmp_path))
    assert result.exit_code == 0, result.output
    assert head_files(tmp_path / "repos" / one.relay_id / one.folder_id) == {"vault/x.md": b"one\n"}
    assert head_files(tmp_path / "repos" / two.relay_id / two.folder_id) == {"y.md": b"two\n"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["sync"], "either --relay-id and --folder-id, or --all"),
        (["sync", "--relay-id", "nope", "--folder-id", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"],
         "--relay-id must be a UUID"),
    ],
)
def test_sync_usage_errors(relay_server, tmp_path, args, message):
    result = run(args, base_env(relay_server, tmp_path))
    assert result.exit_code == 2
    assert message in result.output


def test_missing_relay_url_names_the_variable(tmp_path):
    result = run(["sync", "--all"], {"RELAY_GIT_DATA_DIR": str(tmp_path)})
    assert result.exit_code != 0
    assert "RELAY_SERVER_URL" in result.output


def test_git_binary_is_not_on_path_for_the_code_under_test():
    import shutil

    assert shutil.which("git") is None
    assert "git" not in os.listdir(os.path.dirname(__file__))


def test_bad_ssh_key_is_a_clear_error_before_any_work(relay_server, tmp_path):
    folder = relay_server.add_folder()
    (tmp_path / "git_connectors.toml").write_text(
        f'[[git_connector]]\nshared_folder_id = "{folder.folder_id}"\nrelay_id = "{folder.relay_id}"\n'
        'url = "git@github.com:example/vault.git"\n')
    env = base_env(relay_server, tmp_path)
    env["SSH_PRIVATE_KEY"] = "not a key KEY-MARKER"
    result = run(["sync", "--all"], env)
    assert result.exit_code == 2
    assert "SSH_PRIVATE_KEY" in result.output
    assert "KEY-MARKER" not in result.output and "Traceback" not in result.output
    assert relay_server.total_fetches == 0


def test_sync_pushes_to_a_local_bare_remote(relay_server, tmp_path):
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "pushed\n")
    (tmp_path / "git_connectors.toml").write_text(
        f'[[git_connector]]\nshared_folder_id = "{folder.folder_id}"\nrelay_id = "{folder.relay_id}"\n'
        f'url = "{bare}"\nprefix = "notes"\n')
    result = run(["sync", "--all"], base_env(relay_server, tmp_path))
    assert result.exit_code == 0, result.output
    assert f"push to {bare} (main): created" in result.output
    with Repo(str(bare)) as repo:
        assert gitrepo.read_tree_paths(repo, "main") == {"notes/a.md": b"pushed\n"}


def test_sync_refuses_while_another_process_holds_the_data_dir(relay_server, tmp_path):
    from gitsync.state import DataDirLock

    folder = relay_server.add_folder()
    holder = DataDirLock(tmp_path)
    holder.acquire()
    try:
        result = run(sync_args(folder), base_env(relay_server, tmp_path))
    finally:
        holder.release()
    assert result.exit_code == 1
    assert "in use by another process" in result.output and "stop the service" in result.output
    assert run(sync_args(folder), base_env(relay_server, tmp_path)).exit_code == 0


def test_status_reads_the_data_directory(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    (tmp_path / "git_connectors.toml").write_text(
        f'[[git_connector]]\nshared_folder_id = "{folder.folder_id}"\nrelay_id = "{folder.relay_id}"\n')
    result = run(["status", "--data-dir", str(tmp_path)], {})
    assert result.exit_code == 0 and "never synced" in result.output
    assert run(["sync", "--all"], base_env(relay_server, tmp_path)).exit_code == 0
    result = run(["status", "--data-dir", str(tmp_path)], {})
    assert result.exit_code == 0, result.output
    assert "files: 1" in result.output and "uncommitted paths: 0" in result.output
    assert "head: " in result.output and "(no commit yet)" not in result.output


def test_status_reads_the_state_database_while_it_is_written_and_reports_damage(relay_server, tmp_path):
    from gitsync.state import FileRecord, StateRegistry

    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    (tmp_path / "git_connectors.toml").write_text(
        f'[[git_connector]]\nshared_folder_id = "{folder.folder_id}"\nrelay_id = "{folder.relay_id}"\n')
    assert run(["sync", "--all"], base_env(relay_server, tmp_path)).exit_code == 0
    writer = StateRegistry(tmp_path)  # as the running service: open, its latest save still in the log
    try:
        relay = writer.relay(folder.relay_id)
        relay.folder(folder.folder_id).files["another"] = FileRecord("b.md", "markdown")
        relay.folder(folder.folder_id).add_dirty(["b.md"])
        relay.save()
        assert (tmp_path / "state" / "state.db-wal").stat().st_size > 0
        result = run(["status", "--data-dir", str(tmp_path)], {})
        assert result.exit_code == 0, result.output
        assert "files: 2" in result.output and "uncommitted paths: 1" in result.output
    finally:
        writer.close()

    (tmp_path / "state" / "state.db").write_bytes(b"not a database" * 1000)
    result = run(["status", "--data-dir", str(tmp_path)], {})
    assert result.exit_code == 0, result.output
    assert "state: state database" in result.output and "never synced" in result.output, result.output
    assert not (tmp_path / "state" / "state.db.damaged").exists()  # status changes nothing
    assert run(["sync", "--all"], base_env(relay_server, tmp_path)).exit_code == 0
    result = run(["status", "--data-dir", str(tmp_path)], {})
    assert "set aside (state.db.damaged)" in result.output and "files: 1" in result.output


def test_sync_credits_the_writers_named_in_authors(relay_server: FaultyRelay, tmp_path: Path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "first\n", user="user-ada")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "git_connectors.toml").write_text('[authors]\n"user-ada" = "Ådå Lövelace <ådå@example.org>"\n',
                                                  encoding="utf-8")
    env = base_env(relay_server, data_dir)
    assert run(sync_args(folder), env).exit_code == 0
    folder.edit_markdown("a.md", "first, then more\n", user="user-ada")
    assert run(sync_args(folder), env).exit_code == 0
    repo_dir = data_dir / "repos" / folder.relay_id / folder.folder_id
    with Repo(str(repo_dir)) as repo:
        head = repo[repo.refs[b"refs/heads/main"]]
        assert head.author.decode("utf-8") == "Ådå Lövelace <ådå@example.org>"
        assert head.committer == b"Relay Git Sync <relay-git-sync@localhost>"
