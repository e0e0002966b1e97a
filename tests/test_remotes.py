"""Publishing through Remotes: commit-then-push in one lock hold, over a local bare remote."""

from __future__ import annotations

import time

from dulwich.object_store import commit_tree_changes
from dulwich.objects import Blob, Commit
from dulwich.repo import Repo

from gitsync import gitrepo
from gitsync.config import Connector, ConnectorsConfig, Settings
from gitsync.engine import Engine
from gitsync.redact import redact_url
from gitsync.relay import RelayClient
from gitsync.remotes import Remotes


def external_commit(bare, path: str, data: bytes, message: str = "by hand") -> bytes:
    """A colleague's commit straight into the bare remote (no git binary needed)."""
    with Repo(str(bare)) as repo:
        head = repo.refs[b"refs/heads/main"]
        blob = Blob.from_string(data)
        repo.object_store.add_object(blob)
        tree = commit_tree_changes(repo.object_store, repo[head].tree, [(path.encode(), 0o100644, blob.id)])
        commit = Commit()
        commit.tree, commit.parents, commit.message = tree, [head], message.encode()
        commit.author = commit.committer = b"Colleague <c@example.com>"
        commit.author_time = commit.commit_time = int(time.time())
        commit.author_timezone = commit.commit_timezone = 0
        repo.object_store.add_object(commit)
        repo.refs[b"refs/heads/main"] = commit.id
        return commit.id


def publisher(relay_server, data_dir, conn, env=None):
    """An engine and Remotes for one connector, as the service wires them."""
    settings = Settings(data_dir=data_dir, relay_server_url=relay_server.url,
                        relay_server_api_key=relay_server.api_key)
    config = ConnectorsConfig((conn,))
    engine = Engine(settings, RelayClient(relay_server.url, relay_server.api_key), config)
    return engine, Remotes(settings, config, env=env or {}), settings


def test_uncommitted_relay_edit_survives_a_rebuild_on_a_moved_remote(relay_server, tmp_path):
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "v1\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=str(bare))
    engine, remotes, settings = publisher(relay_server, tmp_path / "data", conn)
    try:
        engine.sync_folder(conn)
        with engine.lock(conn):
            assert remotes.push(engine, conn)["status"] == "created"
        theirs = external_commit(bare, "a.md", b"person's edit\n")
        folder.edit_markdown("a.md", "v2 from relay\n")
        engine.sync_docs(conn, [folder.doc_id("a.md")])  # written, not committed yet
        with engine.lock(conn):
            result = remotes.push(engine, conn)
        assert result["ok"], result
        work = settings.repo_dir(conn) / "a.md"
        assert work.read_text() == "v2 from relay\n"
        with Repo(str(bare)) as repo:
            assert gitrepo.read_tree_paths(repo, "main") == {"a.md": b"v2 from relay\n"}
            head = repo.refs[b"refs/heads/main"]
            assert theirs in {e.commit.id for e in repo.get_walker(include=[head])}
    finally:
        engine.close()


def test_failed_push_backs_off_and_reports_without_secrets(relay_server, tmp_path):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    conn = Connector(folder.relay_id, folder.folder_id, url="https://u:TOKEN-MARKER@127.0.0.1:9/x.git")
    engine, remotes, _ = publisher(relay_server, tmp_path, conn)
    try:
        engine.sync_folder(conn)
        with engine.lock(conn):
            result = remotes.push(engine, conn)
        assert result["ok"] is False and result["failures"] == 1 and result["retry_in"] > 0
        assert "TOKEN-MARKER" not in str(result)
        assert not remotes.due(conn)  # backing off
        assert remotes.due(conn, force=True)
        assert gitrepo.head_commit(engine.repo(conn), "main")  # the commit stays local
    finally:
        engine.close()
    assert redact_url("https://u:secret@host/x.git") == "https://host/x.git"
