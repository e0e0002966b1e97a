"""gitsync.publish: commit, push, back off and report, over a local bare remote."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest
from dulwich.object_store import commit_tree_changes
from dulwich.objects import Blob, Commit
from dulwich.repo import Repo

from gitsync import gitrepo
from gitsync.config import Connector, ConnectorsConfig, Settings
from gitsync.engine import Engine
from gitsync.publish import Publisher
from gitsync.redact import redact_url
from gitsync.relay import RelayClient
from tests.fixtures_ssh import settled


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


def make_publisher(relay_server, data_dir, conn, env=None, known_hosts=(), **options):
    """An engine and a Publisher for one connector, as the service wires them."""
    settings = Settings(data_dir=data_dir, relay_server_url=relay_server.url,
                        relay_server_api_key=relay_server.api_key, **options)
    config = ConnectorsConfig((conn,), tuple(known_hosts))
    engine = Engine(settings, RelayClient(relay_server.url, relay_server.api_key), config)
    return engine, Publisher(settings, config, env=env or {}), settings


def test_uncommitted_relay_edit_survives_a_rebuild_on_a_moved_remote(relay_server, tmp_path):
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "v1\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=str(bare))
    engine, publisher, settings = make_publisher(relay_server, tmp_path / "data", conn)
    try:
        engine.sync_folder(conn)
        with engine.lock(conn):
            assert publisher.push(engine, conn).status == "created"
        theirs = external_commit(bare, "a.md", b"person's edit\n")
        folder.edit_markdown("a.md", "v2 from relay\n")
        engine.sync_docs(conn, [folder.doc_id("a.md")])  # written, not committed yet
        with engine.lock(conn):
            result = publisher.push(engine, conn)
        assert result.ok, result
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
    engine, publisher, _ = make_publisher(relay_server, tmp_path, conn)
    try:
        engine.sync_folder(conn)
        with engine.lock(conn):
            result = publisher.push(engine, conn)
        assert result.ok is False and result.failures == 1 and result.retry_in > 0
        assert not result.permanent
        assert "TOKEN-MARKER" not in str(result)
        assert publisher.status(conn) == result
        assert set(result.as_status()) == {"ok", "at", "error", "failures", "retry_in", "permanent"}
        assert not publisher.due(conn)  # backing off
        assert publisher.due(conn, force=True)
        assert gitrepo.head_commit(engine.repo(conn), "main")  # the commit stays local
    finally:
        engine.close()
    assert redact_url("https://u:secret@host/x.git") == "https://host/x.git"  # no userinfo at all


def server_hook(remote, name: str, script: str) -> None:
    """Install a hook in the bare repository on the test sshd, owned by its git user."""
    hook = remote.bare / "hooks" / name
    hook.write_text("#!/bin/sh\n" + script)
    hook.chmod(0o755)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(remote.server.user)
        os.chown(hook, entry.pw_uid, entry.pw_gid)


@pytest.mark.ssh
def test_documents_sync_while_a_push_waits_on_the_network(relay_server, git_remote, tmp_path):
    gate = git_remote.server.base / f"gate-{uuid.uuid4().hex}"
    gate.mkdir()
    gate.chmod(0o777)
    # the server holds the push (after receiving the pack) until the test releases it
    server_hook(git_remote, "pre-receive",
                f"touch {gate}/started\nwhile [ ! -e {gate}/release ]; do sleep 0.02; done\n")
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "v1\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=git_remote.url)
    engine, publisher, _ = make_publisher(relay_server, tmp_path / "data", conn,
                                          known_hosts=[git_remote.known_hosts_line],
                                          ssh_private_key=git_remote.client_private_key)
    done = []
    pusher = threading.Thread(target=lambda: done.append(publisher.publish(engine, conn)))
    try:
        engine.sync_folder(conn)
        pusher.start()
        assert settled(lambda: (gate / "started").exists(), True), "the push never reached the server"
        # the push is on the network: the folder lock is free and a webhook's sync runs
        lock = engine.lock(conn)
        assert lock.acquire(timeout=5), "the folder lock is held across the network push"
        lock.release()
        folder.edit_markdown("a.md", "v2\n")
        assert engine.sync_docs(conn, [folder.doc_id("a.md")]).updated == 1
    finally:
        (gate / "release").touch()
        pusher.join(timeout=60)
    try:
        assert done[0].push.ok and done[0].push.status == "created"
        assert git_remote.read("a.md") == "v1\n"
        again = publisher.publish(engine, conn)  # the edit made during the push follows
        assert again.commit and again.push.ok and git_remote.read("a.md") == "v2\n"
    finally:
        publisher.close()
        engine.close()


@pytest.mark.ssh
def test_a_host_key_trusted_on_first_use_is_kept_and_a_changed_one_refused(relay_server, sshd_private,
                                                                           git_binary, tmp_path):
    from gitsync.ssh import fingerprint, parse_known_hosts
    from tests.fixtures_ssh import GitRemote, make_bare_repo

    remote = GitRemote(sshd_private, make_bare_repo(sshd_private, git_binary, "tofu"), git_binary)
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=remote.url)
    data = tmp_path / "data"
    options = dict(ssh_private_key=remote.client_private_key, trust_on_first_use=True)
    engine, publisher, settings = make_publisher(relay_server, data, conn, **options)
    try:
        engine.sync_folder(conn)
        assert publisher.publish(engine, conn).push.ok  # no known_hosts entry: learned on first use
    finally:
        publisher.close()
        engine.close()
    kept = settings.learned_hosts_path
    assert kept.read_text() == remote.known_hosts_line + "\n"
    assert (kept.stat().st_mode & 0o777, kept.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    learned = fingerprint(next(iter(parse_known_hosts([remote.known_hosts_line], include_builtin=False)
                                    .lookup(f"[{sshd_private.host}]:{sshd_private.port}").values())))

    sshd_private.rekey()  # the server (or someone in the middle) now presents another key
    folder.edit_markdown("a.md", "b\n")
    engine, publisher, _ = make_publisher(relay_server, data, conn, **options)  # a restart
    try:
        engine.sync_folder(conn)
        outcome = publisher.publish(engine, conn).push
    finally:
        publisher.close()
        engine.close()
    assert not outcome.ok
    offered = sshd_private.host_public_key.split()[1]
    assert "changed" in outcome.error and str(kept) in outcome.error and learned in outcome.error
    assert fingerprint(next(iter(parse_known_hosts([f"x {sshd_private.host_public_key}"], include_builtin=False)
                                 .lookup("x").values()))) in outcome.error
    assert offered not in kept.read_text()  # the new key was not learned over the old one
    assert remote.read("a.md") == "a\n"


@pytest.mark.ssh
def test_a_permanent_rejection_is_reported_as_such_and_waits_longest(relay_server, git_remote, tmp_path):
    from gitsync.backoff import MAX_DELAY

    # what a host's size limit or policy hook does: refuse every update, with a reason
    server_hook(git_remote, "pre-receive", "echo 'GH001: Large files detected' >&2\nexit 1\n")
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=git_remote.url)
    engine, publisher, _ = make_publisher(relay_server, tmp_path / "data", conn,
                                          known_hosts=[git_remote.known_hosts_line],
                                          ssh_private_key=git_remote.client_private_key)
    try:
        engine.sync_folder(conn)
        outcome = publisher.publish(engine, conn).push
        assert not outcome.ok and outcome.permanent
        assert outcome.retry_in == MAX_DELAY  # not the short first backoff: no hammering
        assert outcome.as_status()["permanent"] is True
        assert "declined" in outcome.error
        assert not publisher.due(conn)
        assert git_remote.head() is None
    finally:
        publisher.close()
        engine.close()


def test_a_stale_branch_lock_is_cleared_by_the_next_publish(relay_server, tmp_path):
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=str(bare))
    engine, publisher, settings = make_publisher(relay_server, tmp_path / "data", conn)
    try:
        engine.sync_folder(conn)
        assert publisher.publish(engine, conn).push.ok
        lock = settings.repo_dir(conn) / ".git" / "refs" / "heads" / "main.lock"
        lock.write_bytes(b"left by a process killed mid-commit")
        folder.edit_markdown("a.md", "b\n")
        engine.sync_docs(conn, [folder.doc_id("a.md")])
        with pytest.raises(gitrepo.RepositoryLocked):
            publisher.publish(engine, conn)  # recent: maybe a person's git, left alone
        assert lock.exists()
        old = time.time() - gitrepo.STALE_LOCK_AGE - 1
        os.utime(lock, (old, old))
        done = publisher.publish(engine, conn)  # old: a dead process's, removed, commit made
        assert done.commit and done.push.ok and not lock.exists()
        with Repo(str(bare)) as remote:
            assert gitrepo.read_tree_paths(remote, "main") == {"a.md": b"b\n"}
    finally:
        engine.close()


def test_publish_says_when_a_push_starts_and_only_then(relay_server, tmp_path):
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "a\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=str(bare))
    engine, publisher, _ = make_publisher(relay_server, tmp_path / "data", conn)
    pushes: list[bool] = []

    def on_push() -> None:  # called before the push: nothing is on the remote yet
        with Repo(str(bare)) as repo:
            pushes.append(b"refs/heads/main" in repo.refs)

    try:
        engine.sync_folder(conn)
        done = publisher.publish(engine, conn, on_push=on_push)
        assert done.commit and done.push is not None and done.push.ok
        assert pushes == [False]
        again = publisher.publish(engine, conn, on_push=on_push)  # nothing to commit or send
        assert again.commit is None and again.push is None and pushes == [False]
    finally:
        engine.close()


def test_the_index_is_written_after_the_push_and_an_edit_made_meanwhile_waits_for_the_next_commit(
        relay_server, tmp_path):
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "v1\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=str(bare))
    engine, publisher, settings = make_publisher(relay_server, tmp_path / "data", conn)
    seen: list[bool] = []

    def on_push() -> None:
        # the commit is made; its index entries wait for the push; an edit lands meanwhile
        with Repo(str(settings.repo_dir(conn))) as repo:
            seen.append(b"a.md" in repo.open_index())
        folder.edit_markdown("a.md", "v2\n")
        assert engine.sync_docs(conn, [folder.doc_id("a.md")]).updated == 1

    try:
        engine.sync_folder(conn)
        done = publisher.publish(engine, conn, on_push=on_push)
        assert done.commit and done.push is not None and done.push.ok
        assert seen == [False]
        with Repo(str(bare)) as remote:
            # one commit per interval: the edit made during the push is not committed with it
            assert gitrepo.read_tree_paths(remote, "main") == {"a.md": b"v1\n"}
            assert len(list(remote.get_walker())) == 1
        with Repo(str(settings.repo_dir(conn))) as repo:
            index = repo.open_index()
            assert b"a.md" in index  # written once the push is done
            assert index[b"a.md"].sha == Blob.from_string(b"v1\n").id
        assert engine.pending_paths(conn)
        again = publisher.publish(engine, conn)  # the folder's next interval
        assert again.commit and again.push is not None and again.push.ok
        with Repo(str(bare)) as remote:
            assert gitrepo.read_tree_paths(remote, "main") == {"a.md": b"v2\n"}
        assert not engine.pending_paths(conn)
    finally:
        engine.close()
