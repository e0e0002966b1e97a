"""A hostile Git remote: symbolic links pushed by someone else never become a way out.

A person with push access commits links (``leak -> /proc/self``, a link to a directory
outside the repository, a link into ``.git``) over the paths of documents we sync. The
service rebuilds its commits on that remote over a real OpenSSH server; afterwards no
link exists in the checkout, and editing, deleting or renaming the documents behind
the links neither reads nor writes anything outside the repository.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from dulwich.objects import Blob
from dulwich.repo import Repo

from gitsync import gitrepo
from gitsync.config import Connector, ConnectorsConfig, Settings
from gitsync.engine import Engine
from gitsync.publish import Publisher
from gitsync.relay import RelayClient

pytestmark = pytest.mark.ssh

SECRET = b"outside-secret-3f9a1c marker, must never reach the remote\n"


def _environment_entries() -> list[bytes]:
    """The entries of this process's ``/proc/self/environ`` worth searching for.

    What ``/proc/self/environ`` shows is the environment the process started with (a
    later ``setenv`` does not change it), so the test looks for those entries.
    """
    raw = Path("/proc/self/environ").read_bytes()
    return [entry for entry in raw.split(b"\0") if b"=" in entry and len(entry) >= 12]


def _links_in(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if ".git" in dirnames and Path(dirpath) == root:
            dirnames.remove(".git")
        for name in dirnames + filenames:
            if os.path.islink(os.path.join(dirpath, name)):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def _git(git_binary: str, cwd: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
    proc = subprocess.run([git_binary, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _remote_blobs(bare: Path) -> list[bytes]:
    """Every blob reachable from any commit of the remote's branch (all of history)."""
    with Repo(str(bare)) as repo:
        blobs = []
        head = repo.refs[b"refs/heads/main"]
        for entry in repo.get_walker(include=[head]):
            tree = entry.commit.tree
            for item in repo.object_store.iter_tree_contents(tree):
                obj = repo.object_store[item.sha]
                if isinstance(obj, Blob):
                    blobs.append(obj.as_raw_string())
        return blobs


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    place = tmp_path / "outside"
    place.mkdir()
    (place / "secret.md").write_bytes(SECRET)
    return place


def test_symlinks_pushed_to_the_remote_never_lead_outside(relay_server, git_remote, git_binary, tmp_path,
                                                         outside):
    folder = relay_server.add_folder()
    folder.put_markdown("a.md", "v1\n")
    folder.put_markdown("leak/environ", "a note that happens to be called environ\n")
    folder.put_markdown("out/secret.md", "our note\n")
    folder.put_markdown("meta/config", "a note named config\n")
    folder.put_markdown("stays.md", "stays\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=git_remote.url)
    settings = Settings(data_dir=tmp_path / "data", relay_server_url=relay_server.url,
                        relay_server_api_key=relay_server.api_key,
                        ssh_private_key=git_remote.client_private_key)
    config = ConnectorsConfig((conn,), known_hosts=(git_remote.known_hosts_line,))
    engine = Engine(settings, RelayClient(relay_server.url, relay_server.api_key), config)
    remotes = Publisher(settings, config, env={})
    root = settings.repo_dir(conn)
    try:
        engine.sync_folder(conn)
        with engine.lock(conn):
            assert remotes.push(engine, conn).status == "created"

        # Someone replaces our folders with links on the remote.
        person = git_remote.clone(tmp_path / "person")
        person.git("rm", "-q", "-r", "leak", "out", "meta")
        os.symlink("/proc/self", person.path / "leak")
        os.symlink(str(outside), person.path / "out")
        os.symlink(".git", person.path / "meta")
        os.symlink("../../../../../../../../etc", person.path / "etc-link")
        theirs = person.commit_all("links")
        person.push()

        # A pending commit of ours meets the moved remote: rebuilt on top of it.
        folder.edit_markdown("a.md", "v2\n")
        engine.sync_docs(conn, [folder.doc_id("a.md")])
        with engine.lock(conn):
            result = remotes.push(engine, conn)
        assert result.ok, result
        assert git_remote.is_ancestor(theirs, git_remote.head())

        assert _links_in(root) == []  # the links are files holding their target's name
        assert (root / "leak").read_bytes() == b"/proc/self"
        assert (root / "meta").read_bytes() == b".git"
        assert _git(git_binary, root, "status", "--porcelain") == ""  # real git agrees
        git_config = (root / ".git" / "config").read_bytes()

        # The documents behind the links change on the Relay.
        folder.delete("leak/environ")
        folder.edit_markdown("out/secret.md", "our note, edited\n")
        folder.rename("meta/config", "renamed.md")
        folder.edit_markdown("stays.md", "stays, edited\n")
        report = engine.sync_folder(conn)
        with engine.lock(conn):
            result = remotes.push(engine, conn)
        assert result.ok, result

        # Nothing outside the repository was read, written, moved or removed.
        assert sorted(p.name for p in outside.iterdir()) == ["secret.md"]
        assert (outside / "secret.md").read_bytes() == SECRET
        assert (root / ".git" / "config").read_bytes() == git_config
        blobs = _remote_blobs(git_remote.bare)
        leaked = [e.split(b"=")[0] for e in _environment_entries() if any(e in blob for blob in blobs)]
        assert leaked == []  # names only: the values must not reach a test log either
        assert not any(SECRET in blob for blob in blobs)
        assert not any(b"repositoryformatversion" in blob for blob in blobs)

        # Everything else synced; the refused documents are reported.
        assert git_remote.read("stays.md") == "stays, edited\n"
        assert git_remote.read("a.md") == "v2\n"
        assert git_remote.read("renamed.md") == "a note named config\n"
        skipped = dict(report.skipped)
        assert "out/secret.md" in skipped and "not a directory" in skipped["out/secret.md"]
        # the person's links are kept in history as links (never rewritten by us)
        modes = git_remote.bare_git("ls-tree", "main").split("\n")
        assert any(line.startswith("120000") and line.endswith("\tleak") for line in modes)
    finally:
        engine.close()


def test_initial_checkout_of_a_remote_with_links_makes_no_links(relay_server, git_remote, tmp_path, outside):
    seed = git_remote.clone(tmp_path / "seed")
    seed.write("readme.md", "hello\n")
    os.symlink(str(outside), seed.path / "out")
    os.symlink("/proc/self", seed.path / "leak")
    seed.commit_all("seed with links")
    seed.push()
    folder = relay_server.add_folder()
    folder.put_markdown("out/secret.md", "ours\n")
    folder.put_markdown("ok.md", "ok\n")
    conn = Connector(folder.relay_id, folder.folder_id, url=git_remote.url)
    settings = Settings(data_dir=tmp_path / "data", relay_server_url=relay_server.url,
                        relay_server_api_key=relay_server.api_key,
                        ssh_private_key=git_remote.client_private_key)
    config = ConnectorsConfig((conn,), known_hosts=(git_remote.known_hosts_line,))
    engine = Engine(settings, RelayClient(relay_server.url, relay_server.api_key), config)
    remotes = Publisher(settings, config, env={})
    root = settings.repo_dir(conn)
    try:
        with engine.lock(conn):
            assert remotes.push(engine, conn).ok  # adopts the remote branch
        assert _links_in(root) == []
        assert (root / "readme.md").read_text() == "hello\n"
        report = engine.sync_folder(conn)
        with engine.lock(conn):
            assert remotes.push(engine, conn).ok
        assert (outside / "secret.md").read_bytes() == SECRET
        assert sorted(p.name for p in outside.iterdir()) == ["secret.md"]
        assert git_remote.read("ok.md") == "ok\n"
        assert "out/secret.md" in dict(report.skipped)
        with Repo(str(root)) as repo:
            assert gitrepo.head_commit(repo, "main") == git_remote.head()
    finally:
        engine.close()
