"""gitsync.gitrepo: object-store commits, remote URLs, never-force pushes over real sshd."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dulwich.repo import Repo

from gitsync.gitrepo import (
    BULK_THRESHOLD,
    STALE_LOCK_AGE,
    CommitPart,
    GitError,
    InvalidRemote,
    PushRejected,
    RemoteUnavailable,
    clear_stale_locks,
    commit_changes,
    commit_parts,
    commit_paths,
    head_commit,
    open_or_init,
    pack_if_needed,
    parse_remote_url,
    push_fast_forward,
    read_tree_paths,
)
from gitsync.ssh import HostKeyUnknown, ParamikoVendor, load_private_key

AUTHOR = "Relay Git Sync <relay-git-sync@localhost>"


def write(root: Path, rel: str, text: str) -> None:
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def git(git_binary: str, cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
    proc = subprocess.run([git_binary, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def repo(tmp_path: Path):
    r = open_or_init(tmp_path / "work", branch="main")
    try:
        yield r
    finally:
        r.close()


def workdir(repo: Repo) -> Path:
    return Path(repo.path)


# ---------------------------------------------------------------- authored commits

ADA = "Ada Lovelace <ada@example.org>"
ZOE = "Zoë Ångström <zoë@exämple.org>"


def test_author_differs_from_committer(repo: Repo, git_binary: str):
    write(workdir(repo), "a.md", "a\n")
    sha = commit_changes(repo, ["a.md"], message="Add a.md", author=ZOE, committer=AUTHOR, branch="main").commit
    commit = repo[sha.encode()]
    assert (commit.author, commit.committer) == (ZOE.encode("utf-8"), AUTHOR.encode())
    shown = git(git_binary, workdir(repo), "log", "-1", "--format=%an|%ae|%cn|%ce")
    assert shown.strip() == "Zoë Ångström|zoë@exämple.org|Relay Git Sync|relay-git-sync@localhost"
    with pytest.raises(ValueError):
        commit_changes(repo, ["a.md"], message="x", author=ADA, committer="no email", branch="main")


def test_commit_parts_chain_to_the_tree_of_one_commit(repo: Repo, tmp_path: Path, git_binary: str):
    root = workdir(repo)
    for name in ("a.md", "b.md", "c.md", "blocker"):
        write(root, name, f"{name}\n")
    base = commit_paths(repo, ["a.md", "b.md", "c.md", "blocker"], message="base", author=AUTHOR, branch="main")
    # the same working tree change, committed once in a twin repository
    twin = open_or_init(tmp_path / "twin", branch="main")
    for name in ("a.md", "b.md", "c.md", "blocker"):
        write(Path(twin.path), name, f"{name}\n")
    commit_paths(twin, ["a.md", "b.md", "c.md", "blocker"], message="base", author=AUTHOR, branch="main")
    for where in (root, Path(twin.path)):
        write(where, "a.md", "ada's edit\n")
        write(where, "b.md", "zoë's edit\n")
        (where / "c.md").unlink()
        (where / "blocker").unlink()
        write(where, "blocker/inside.md", "a file where a file was a directory\n")
    paths = ["a.md", "b.md", "c.md", "blocker", "blocker/inside.md", "unchanged.md"]
    single = commit_paths(twin, paths, message="all", author=AUTHOR, branch="main")
    result = commit_parts(repo, [
        CommitPart(("unchanged.md",), "nothing of hers changed", AUTHOR),  # makes no commit
        CommitPart(("a.md", "blocker/inside.md"), "Ada's part", ADA),
        CommitPart(("b.md", "a.md"), "Zoë's part", ZOE),  # a.md belongs to the first part naming it
        CommitPart(("c.md", "blocker"), "the rest", AUTHOR),
    ], branch="main", committer=AUTHOR, timestamp=1_700_000_000)
    assert len(result.commits) == 3 and result.commit == result.commits[-1]
    assert head_commit(repo, "main") == result.commit
    first, second, third = (repo[c.encode()] for c in result.commits)
    assert first.parents == [base.encode()] and second.parents == [first.id] and third.parents == [second.id]
    assert [c.author for c in (first, second, third)] == [ADA.encode(), ZOE.encode(), AUTHOR.encode()]
    assert {c.committer for c in (first, second, third)} == {AUTHOR.encode()}
    assert third.tree == twin[single.encode()].tree  # exactly the interval's tree
    shown = git(git_binary, root, "log", "--format=%x00%s", "--name-status", f"{base}..HEAD")
    assert [entry.split() for entry in shown.split("\0")[1:]] == [
        ["the", "rest", "D", "c.md"], ["Zoë's", "part", "M", "b.md"],
        ["Ada's", "part", "M", "a.md", "D", "blocker", "A", "blocker/inside.md"]]
    assert git(git_binary, root, "status", "--porcelain") == ""
    twin.close()
    # nothing changed: no commit at all
    assert commit_parts(repo, [CommitPart(("a.md",), "x", ADA), CommitPart(("b.md",), "y", ZOE)],
                        branch="main").commits == ()
    with pytest.raises(ValueError):
        commit_parts(repo, [], branch="main")


# ---------------------------------------------------------------- local commits


def test_open_or_init_points_head_at_branch(tmp_path: Path):
    r = open_or_init(tmp_path / "w", branch="trunk")
    assert r.refs.get_symrefs()[b"HEAD"] == b"refs/heads/trunk"
    assert not r.bare
    r.close()
    r = open_or_init(tmp_path / "w", branch="main")  # existing repo, other branch configured
    assert r.refs.get_symrefs()[b"HEAD"] == b"refs/heads/main"
    r.close()


def test_commit_paths_basics(repo: Repo, git_binary: str):
    root = workdir(repo)
    write(root, "notes/deep/idea.md", "idea\n")
    write(root, "top.md", "top\n")
    first = commit_paths(repo, ["notes/deep/idea.md", "top.md"], message="Add notes", author=AUTHOR,
                         branch="main", timestamp=1_700_000_000)
    assert first is not None and head_commit(repo, "main") == first
    assert read_tree_paths(repo, "main") == {"notes/deep/idea.md": b"idea\n", "top.md": b"top\n"}
    commit = repo[first.encode()]
    assert commit.author == commit.committer == AUTHOR.encode()
    assert commit.author_time == 1_700_000_000 and commit.parents == []
    assert commit.message == b"Add notes\n"

    # unchanged content: no commit
    assert commit_paths(repo, ["top.md", "notes/deep/idea.md"], message="noop", author=AUTHOR, branch="main") is None
    assert head_commit(repo, "main") == first

    # a path that never existed and does not exist: nothing to do
    assert commit_paths(repo, ["ghost.md"], message="noop", author=AUTHOR, branch="main") is None

    # delete + modify in one commit; the emptied directories disappear from the tree
    (root / "notes/deep/idea.md").unlink()
    write(root, "top.md", "top v2\n")
    second = commit_paths(repo, ["notes/deep/idea.md", "top.md"], message="Edit", author=AUTHOR, branch="main")
    assert second is not None and repo[second.encode()].parents == [first.encode()]
    assert read_tree_paths(repo, "main") == {"top.md": b"top v2\n"}

    # the index was refreshed for exactly those paths: real git sees a clean checkout
    assert git(git_binary, root, "status", "--porcelain") == ""
    assert "dangling" not in git(git_binary, root, "fsck", "--strict", "--no-dangling")
    assert git(git_binary, root, "log", "--format=%s").split("\n")[:2] == ["Edit", "Add notes"]


def test_commit_paths_skips_symlinks_and_handles_file_to_dir(repo: Repo, git_binary: str):
    root = workdir(repo)
    write(root, "a.md", "a")
    write(root, "real.md", "r")
    os.symlink("real.md", root / "link.md")
    commit_paths(repo, ["a.md", "real.md", "link.md"], message="one", author=AUTHOR, branch="main")
    assert set(read_tree_paths(repo, "main")) == {"a.md", "real.md"}
    (root / "a.md").unlink()
    write(root, "a.md/inner.md", "inner")
    commit_paths(repo, ["a.md/inner.md"], message="file becomes dir", author=AUTHOR, branch="main")
    assert read_tree_paths(repo, "main") == {"a.md/inner.md": b"inner", "real.md": b"r"}
    (root / "link.md").unlink()
    assert git(git_binary, root, "status", "--porcelain") == ""


def test_commit_paths_never_reads_through_a_link(repo: Repo, tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("secret outside the repository\n")
    root = workdir(repo)
    os.symlink(outside, root / "linked")  # a linked ancestor
    os.symlink(outside / "secret.md", root / "direct.md")  # the path itself
    os.symlink(root / ".git", root / "meta")  # into .git
    os.mkfifo(root / "pipe.md")  # would block a plain read
    write(root, "ok.md", "ok")
    sha = commit_paths(repo, ["linked/secret.md", "direct.md", "meta/config", "pipe.md", "ok.md"],
                       message="m", author=AUTHOR, branch="main")
    assert sha is not None
    assert read_tree_paths(repo, "main") == {"ok.md": b"ok"}


def test_commit_paths_rejects_unsafe_paths_and_authors(repo: Repo):
    for bad in ["/etc/passwd", "../x", "a/../b", ".git/config", "a\\b", ""]:
        with pytest.raises(ValueError):
            commit_paths(repo, [bad], message="m", author=AUTHOR, branch="main")
    with pytest.raises(ValueError):
        commit_paths(repo, ["x"], message="m", author="no email", branch="main")


def test_commit_paths_bulk_writes_one_pack(repo: Repo, git_binary: str):
    root = workdir(repo)
    paths = [f"d{i % 7}/f{i}.md" for i in range(BULK_THRESHOLD + 50)]
    for p in paths:
        write(root, p, f"content {p}\n")
    sha = commit_paths(repo, paths, message="bulk", author=AUTHOR, branch="main")
    assert sha is not None
    store = repo.object_store
    assert store.count_pack_files() == 1
    assert store.count_loose_objects() < 20  # trees + commit only
    assert len(read_tree_paths(repo, "main")) == len(paths)
    assert git(git_binary, root, "status", "--porcelain") == ""
    # later small commit: loose objects again, no new pack
    write(root, "d0/f0.md", "changed\n")
    commit_paths(repo, ["d0/f0.md"], message="small", author=AUTHOR, branch="main")
    assert store.count_pack_files() == 1
    assert pack_if_needed(repo, max_loose=1) is True
    assert store.count_loose_objects() == 0
    assert read_tree_paths(repo, "main", "d0")["d0/f0.md"] == b"changed\n"


def test_read_tree_paths_prefix(repo: Repo):
    root = workdir(repo)
    for p in ["vault/a.md", "vault/sub/b.md", "vaulty.md", "other.md"]:
        write(root, p, p)
    commit_paths(repo, ["vault/a.md", "vault/sub/b.md", "vaulty.md", "other.md"], message="m",
                 author=AUTHOR, branch="main")
    assert set(read_tree_paths(repo, "main", "vault")) == {"vault/a.md", "vault/sub/b.md"}
    assert read_tree_paths(repo, "nope") == {}


# ---------------------------------------------------------------- remote urls


def test_parse_remote_url_forms(tmp_path: Path):
    s = parse_remote_url("ssh://deploy@example.com:2222/srv/repo.git")
    assert (s.kind, s.host, s.port, s.username, s.path) == ("ssh", "example.com", 2222, "deploy", "/srv/repo.git")
    s = parse_remote_url("ssh://example.com/~/repo.git")
    assert (s.username, s.port, s.path) == ("git", None, "~/repo.git")
    s = parse_remote_url("git@github.com:org/repo.git")
    assert (s.kind, s.host, s.port, s.username, s.path) == ("ssh", "github.com", None, "git", "org/repo.git")
    s = parse_remote_url("https://example.com/org/repo.git",
                         env={"GIT_HTTPS_USERNAME": "bot", "GIT_HTTPS_PASSWORD": "s3cret-token"})
    assert (s.kind, s.username, s.password, s.path) == ("https", "bot", "s3cret-token", "/org/repo.git")
    assert "s3cret" not in repr(s) and "s3cret" not in str(s)
    s = parse_remote_url("https://user:inline-secret@example.com/r.git")
    assert s.password == "inline-secret" and "inline-secret" not in repr(s) and "inline-secret" not in s.display
    s = parse_remote_url("file:///srv/x.git")
    assert (s.kind, s.path) == ("local", "/srv/x.git")
    s = parse_remote_url("remotes/x.git", base_dir=tmp_path)
    assert (s.kind, s.path) == ("local", str(tmp_path / "remotes/x.git"))
    s = parse_remote_url("/abs/x.git")
    assert (s.kind, s.path) == ("local", "/abs/x.git")
    with pytest.raises(InvalidRemote) as info:
        parse_remote_url("ftp://u:pw-secret@example.com/x")
    assert "pw-secret" not in str(info.value)
    with pytest.raises(InvalidRemote):
        parse_remote_url("ssh://example.com")


def test_push_to_local_path_remote(repo: Repo, tmp_path: Path):
    bare = Repo.init_bare(str(tmp_path / "remote.git"), mkdir=True, default_branch=b"main")
    bare.close()
    spec = parse_remote_url(str(tmp_path / "remote.git"))
    write(workdir(repo), "a.md", "a")
    commit_paths(repo, ["a.md"], message="one", author=AUTHOR, branch="main")
    result = push_fast_forward(repo, spec, branch="main")
    assert result.status == "created" and result.pushed_commits == 1
    assert push_fast_forward(repo, spec, branch="main").status == "up-to-date"
    with Repo(str(tmp_path / "remote.git")) as remote:
        assert remote.refs[b"refs/heads/main"].decode() == head_commit(repo, "main")
    assert repo.refs[b"refs/remotes/origin/main"].decode() == head_commit(repo, "main")


def test_push_to_missing_local_remote_is_unavailable(repo: Repo, tmp_path: Path):
    write(workdir(repo), "a.md", "a")
    commit_paths(repo, ["a.md"], message="one", author=AUTHOR, branch="main")
    with pytest.raises(RemoteUnavailable) as info:
        push_fast_forward(repo, parse_remote_url(str(tmp_path / "missing.git")), branch="main")
    assert "missing.git" in str(info.value) and "commits stay local" in str(info.value)


def test_ssh_remote_without_key_is_a_clear_error(repo: Repo):
    with pytest.raises(GitError, match="SSH_PRIVATE_KEY"):
        push_fast_forward(repo, parse_remote_url("git@example.com:x.git"), branch="main")


# ---------------------------------------------------------------- over sshd


def vendor_for(remote) -> ParamikoVendor:
    return ParamikoVendor(load_private_key(remote.client_private_key), [remote.known_hosts_line])


@pytest.mark.ssh
def test_push_fresh_repo_then_incremental(repo: Repo, git_remote):
    root = workdir(repo)
    spec = parse_remote_url(git_remote.url)
    vendor = vendor_for(git_remote)
    write(root, "a.md", "a1")
    write(root, "dir/b.md", "b1")
    commit_paths(repo, ["a.md", "dir/b.md"], message="first", author=AUTHOR, branch="main")
    result = push_fast_forward(repo, spec, branch="main", vendor=vendor)
    assert result.status == "created" and result.pushed_commits == 1
    assert git_remote.head() == head_commit(repo, "main") == result.remote_head
    assert git_remote.read("dir/b.md") == "b1"

    for i in range(2, 5):
        write(root, "a.md", f"a{i}")
        commit_paths(repo, ["a.md"], message=f"edit {i}", author=AUTHOR, branch="main")
    result = push_fast_forward(repo, spec, branch="main", vendor=vendor)
    assert (result.status, result.pushed_commits, result.rebuilt) == ("pushed", 3, 0)
    assert git_remote.subjects() == ["first", "edit 2", "edit 3", "edit 4"]
    assert git_remote.read("a.md") == "a4"
    assert push_fast_forward(repo, spec, branch="main", vendor=vendor).status == "up-to-date"
    git_remote.fsck()


@pytest.mark.ssh
def test_prefix_files_land_under_subdirectory(repo: Repo, git_remote):
    root = workdir(repo)
    prefix = "vault/notes"
    write(root, f"{prefix}/idea.md", "idea")
    write(root, f"{prefix}/sub/x.canvas", "{}")
    commit_paths(repo, [f"{prefix}/idea.md", f"{prefix}/sub/x.canvas"], message="sync", author=AUTHOR,
                 branch="main")
    push_fast_forward(repo, parse_remote_url(git_remote.url), branch="main", vendor=vendor_for(git_remote))
    assert sorted(git_remote.files()) == [f"{prefix}/idea.md", f"{prefix}/sub/x.canvas"]


@pytest.mark.ssh
def test_external_pushes_are_kept_and_ours_win(repo: Repo, git_remote, tmp_path: Path, git_binary: str):
    root = workdir(repo)
    spec = parse_remote_url(git_remote.url)
    vendor = vendor_for(git_remote)
    for name in ("ours.md", "shared.md", "theirs.md"):
        write(root, f"vault/{name}", f"{name} v1\n")
    commit_paths(repo, ["vault/ours.md", "vault/shared.md", "vault/theirs.md"], message="initial",
                 author=AUTHOR, branch="main")
    push_fast_forward(repo, spec, branch="main", vendor=vendor)

    person = git_remote.clone(tmp_path / "person")
    person.write("README.md", "outside the prefix\n")           # (a)
    person.write("vault/shared.md", "their edit\n")             # (b) we change it too
    person.write("vault/theirs.md", "their edit inside\n")      # (c) we do not touch it
    external = person.commit_all("external edits")
    person.push()

    write(root, "vault/shared.md", "our edit\n")
    write(root, "vault/ours.md", "ours v2\n")
    commit_paths(repo, ["vault/shared.md", "vault/ours.md"], message="sync 1", author=AUTHOR, branch="main")
    write(root, "vault/new.md", "new\n")
    commit_paths(repo, ["vault/new.md"], message="sync 2", author=AUTHOR, branch="main")

    result = push_fast_forward(repo, spec, branch="main", vendor=vendor)
    assert (result.status, result.rebuilt, result.pushed_commits) == ("pushed", 2, 2)
    new_head = git_remote.head()
    assert git_remote.is_ancestor(external, new_head)  # no force: their commit is history
    assert git_remote.subjects() == ["initial", "external edits", "sync 1", "sync 2"]
    assert git_remote.read("README.md") == "outside the prefix\n"              # (a) kept
    assert git_remote.read("vault/theirs.md") == "their edit inside\n"         # (c) kept
    assert git_remote.read("vault/shared.md") == "our edit\n"                  # (b) ours win
    assert git_remote.read("vault/new.md") == "new\n"
    git_remote.fsck()

    # local branch, working tree and index followed the rebuilt history
    assert head_commit(repo, "main") == new_head
    assert (root / "README.md").read_text() == "outside the prefix\n"
    assert (root / "vault/theirs.md").read_text() == "their edit inside\n"
    assert git(git_binary, root, "status", "--porcelain") == ""

    # the person pulls fast-forward (nothing rewritten under them) and deletes a file
    person.pull()
    (person.path / "vault/theirs.md").unlink()
    person.commit_all("drop theirs")
    person.push()
    write(root, "vault/ours.md", "ours v3\n")
    commit_paths(repo, ["vault/ours.md"], message="sync 3", author=AUTHOR, branch="main")
    push_fast_forward(repo, spec, branch="main", vendor=vendor)
    assert git_remote.read("vault/theirs.md") is None
    assert not (root / "vault/theirs.md").exists()
    assert git_remote.subjects()[-2:] == ["drop theirs", "sync 3"]


@pytest.mark.ssh
def test_adopts_existing_remote_branch_when_local_is_empty(repo: Repo, git_remote, tmp_path: Path):
    person_repo = tmp_path / "seed"
    person_repo.mkdir()
    seed = git_remote.clone(person_repo / "c")
    seed.write("existing.md", "hello\n")
    sha = seed.commit_all("seed")
    seed.push()
    result = push_fast_forward(repo, parse_remote_url(git_remote.url), branch="main", vendor=vendor_for(git_remote))
    assert result.status == "up-to-date" and head_commit(repo, "main") == sha
    assert (workdir(repo) / "existing.md").read_text() == "hello\n"


@pytest.mark.ssh
def test_a_file_in_the_way_of_a_remote_addition_is_kept_and_reported(
        repo: Repo, git_remote, tmp_path: Path, git_binary: str, caplog):
    """The checkout after a rebuild overwrites only files we wrote: a person's untracked
    file at a path the remote adds stays, its path named in a warning."""
    root = workdir(repo)
    spec = parse_remote_url(git_remote.url)
    vendor = vendor_for(git_remote)
    write(root, "vault/a.md", "a\n")
    commit_paths(repo, ["vault/a.md"], message="initial", author=AUTHOR, branch="main")
    push_fast_forward(repo, spec, branch="main", vendor=vendor)

    person = git_remote.clone(tmp_path / "person")
    person.write("notes/plan.md", "the remote's plan\n")
    person.write("notes/same.md", "same bytes\n")
    person.commit_all("remote adds two files")
    person.push()

    write(root, "notes/plan.md", "a person's draft, never committed\n")  # untracked here
    write(root, "notes/same.md", "same bytes\n")                         # untracked, equal
    write(root, "vault/a.md", "a v2\n")
    commit_paths(repo, ["vault/a.md"], message="sync", author=AUTHOR, branch="main")
    caplog.set_level("WARNING", logger="gitsync.gitrepo")
    result = push_fast_forward(repo, spec, branch="main", vendor=vendor)

    assert (result.status, result.rebuilt) == ("pushed", 1)
    assert git_remote.read("notes/plan.md") == "the remote's plan\n"
    assert (root / "notes/plan.md").read_text() == "a person's draft, never committed\n"
    assert (root / "notes/same.md").read_text() == "same bytes\n"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("notes/plan.md" in w and "kept" in w for w in warnings), warnings
    assert not any("notes/same.md" in w for w in warnings), warnings
    # git shows the difference: the remote's file is not in the index, the person's is untracked
    status = git(git_binary, root, "status", "--porcelain").splitlines()
    assert sorted(status) == ["?? notes/plan.md", "D  notes/plan.md"]


@pytest.mark.ssh
def test_unknown_host_key_is_unavailable_with_fingerprint(repo: Repo, git_remote):
    write(workdir(repo), "a.md", "a")
    commit_paths(repo, ["a.md"], message="one", author=AUTHOR, branch="main")
    vendor = ParamikoVendor(load_private_key(git_remote.client_private_key), [])
    with pytest.raises(RemoteUnavailable) as info:
        push_fast_forward(repo, parse_remote_url(git_remote.url), branch="main", vendor=vendor)
    assert isinstance(info.value.__cause__, HostKeyUnknown)
    assert "SHA256:" in str(info.value) and git_remote.known_hosts_line in str(info.value)
    assert git_remote.head() is None


@pytest.mark.ssh
def test_remote_down_then_back_delivers_all_commits_in_order(repo: Repo, sshd_private, git_binary: str):
    from tests.fixtures_ssh import GitRemote, make_bare_repo

    remote = GitRemote(sshd_private, make_bare_repo(sshd_private, git_binary, "down"), git_binary)
    spec = parse_remote_url(remote.url)
    vendor = vendor_for(remote)
    root = workdir(repo)
    write(root, "a.md", "0")
    commit_paths(repo, ["a.md"], message="c0", author=AUTHOR, branch="main")
    push_fast_forward(repo, spec, branch="main", vendor=vendor)

    sshd_private.stop()
    for i in range(1, 4):
        write(root, "a.md", str(i))
        commit_paths(repo, ["a.md"], message=f"c{i}", author=AUTHOR, branch="main")
        with pytest.raises(RemoteUnavailable) as info:
            push_fast_forward(repo, spec, branch="main", vendor=vendor)
        assert "commits stay local" in str(info.value)
    assert remote.subjects() == ["c0"]

    sshd_private.start()
    result = push_fast_forward(repo, spec, branch="main", vendor=vendor)
    assert (result.status, result.pushed_commits) == ("pushed", 3)
    assert remote.subjects() == ["c0", "c1", "c2", "c3"]
    assert remote.read("a.md") == "3"


@pytest.mark.ssh
def test_pushes_share_one_ssh_connection_and_fetch_only_when_the_remote_moved(
        repo: Repo, sshd_private, git_binary: str, make_vendor, tmp_path: Path):
    from tests.fixtures_ssh import GitRemote, make_bare_repo, settled

    remote = GitRemote(sshd_private, make_bare_repo(sshd_private, git_binary, "kept"), git_binary)
    spec = parse_remote_url(remote.url)
    vendor = make_vendor(remote.client_private_key, [remote.known_hosts_line])
    root = workdir(repo)
    for i in range(4):
        write(root, "a.md", str(i))
        commit_paths(repo, ["a.md"], message=f"c{i}", author=AUTHOR, branch="main")
        result = push_fast_forward(repo, spec, branch="main", vendor=vendor)
        assert result.status in ("created", "pushed") and not result.fetched
    assert remote.subjects() == ["c0", "c1", "c2", "c3"]
    assert settled(sshd_private.logins, 1) == 1  # one SSH handshake for four pushes
    assert vendor.connections_opened == 1
    # no fetch before a push: the receive-pack advertisement says where the remote is
    assert [c.split()[0] for c in sshd_private.commands()] == ["git-receive-pack"] * 4

    person = remote.clone(tmp_path / "person")
    person.write("theirs.md", "x\n")
    person.commit_all("theirs")
    person.push()
    before = len(settled(sshd_private.commands, None, timeout=0.5))
    write(root, "a.md", "4")
    commit_paths(repo, ["a.md"], message="c4", author=AUTHOR, branch="main")
    result = push_fast_forward(repo, spec, branch="main", vendor=vendor)
    assert (result.status, result.rebuilt, result.fetched) == ("pushed", 1, True)
    assert remote.subjects() == ["c0", "c1", "c2", "c3", "theirs", "c4"]  # rebuilt, never forced
    # only a moved remote costs a fetch: the first receive-pack learns it moved and sends nothing
    want = ["git-receive-pack", "git-upload-pack", "git-receive-pack"]
    assert [c.split()[0] for c in settled(lambda: sshd_private.commands()[before:], want)] == want


@pytest.mark.ssh
def test_rejected_ref_raises_push_rejected(repo: Repo, git_remote, tmp_path: Path):
    # a server-side hook refuses every update: the rejection must not pass silently
    hook = git_remote.bare / "hooks" / "update"
    hook.write_text("#!/bin/sh\necho 'nope' >&2\nexit 1\n")
    hook.chmod(0o755)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(git_remote.server.user)
        os.chown(hook, entry.pw_uid, entry.pw_gid)
    write(workdir(repo), "a.md", "a")
    commit_paths(repo, ["a.md"], message="one", author=AUTHOR, branch="main")
    with pytest.raises(PushRejected) as info:
        push_fast_forward(repo, parse_remote_url(git_remote.url), branch="main", vendor=vendor_for(git_remote))
    assert info.value.our_head == head_commit(repo, "main")
    assert git_remote.head() is None


_SPAWNS: list[str] = []
_WATCH = threading.Event()


def _audit(event: str, args: tuple) -> None:
    if _WATCH.is_set() and event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system"):
        _SPAWNS.append(f"{event} {args[:2]!r}")


@pytest.mark.ssh
def test_client_never_spawns_a_process(repo: Repo, git_remote, tmp_path: Path):
    import shutil

    assert shutil.which("git") is None  # conftest removed git from PATH
    if not getattr(sys, "_gitsync_audit_installed", False):
        sys.addaudithook(_audit)
        sys._gitsync_audit_installed = True  # type: ignore[attr-defined]
    _WATCH.set()  # the hook itself works: a spawn inside the window is recorded
    try:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    finally:
        _WATCH.clear()
    assert _SPAWNS, "audit hook did not record a spawn"
    root = workdir(repo)
    spec = parse_remote_url(git_remote.url)
    vendor = vendor_for(git_remote)
    _SPAWNS.clear()
    _WATCH.set()
    try:
        write(root, "a.md", "a")
        commit_paths(repo, ["a.md"], message="one", author=AUTHOR, branch="main")
        push_fast_forward(repo, spec, branch="main", vendor=vendor)
    finally:
        _WATCH.clear()
    person = git_remote.clone(tmp_path / "p")  # spawns git, outside the watched window
    person.write("b.md", "b")
    person.commit_all("theirs")
    person.push()
    _WATCH.set()
    try:
        write(root, "a.md", "a2")
        commit_paths(repo, ["a.md"], message="two", author=AUTHOR, branch="main")
        result = push_fast_forward(repo, spec, branch="main", vendor=vendor)
        pack_if_needed(repo, max_loose=0)
    finally:
        _WATCH.clear()
    assert result.rebuilt == 1
    assert _SPAWNS == []


# ---------------------------------------------------------------- durability and hostile config


@pytest.fixture
def fsynced(monkeypatch):
    """Every path os.fsync is called on, in order (a pass-through recorder)."""
    calls: list[str] = []
    real = os.fsync

    def record(fd):
        try:
            calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            calls.append("?")
        return real(fd)

    monkeypatch.setattr(os, "fsync", record)
    return calls


def test_objects_and_the_branch_are_flushed_before_and_after_the_ref_moves(repo: Repo, fsynced):
    root = workdir(repo)
    git_dir = str(root / ".git")
    write(root, "notes/deep/a.md", "a\n")
    sha = commit_paths(repo, ["notes/deep/a.md"], message="one", author=AUTHOR, branch="main")
    commit = repo[sha.encode()]
    new = [commit.id, commit.tree]
    tree = repo[commit.tree]
    new.append(tree[b"notes"][1])
    new.append(repo[tree[b"notes"][1]][b"deep"][1])
    new.append(repo[new[-1]][b"a.md"][1])
    objects = [f"{git_dir}/objects/{o[:2].decode()}/{o[2:].decode()}" for o in new]
    for path in objects:  # each object file itself (written as .lock, then renamed)
        assert path + ".lock" in fsynced or path in fsynced, path
    ref_dir = fsynced.index(f"{git_dir}/refs/heads")
    for path in objects:  # the directory of every new name, before the branch names it
        assert fsynced.index(os.path.dirname(path)) < ref_dir

    fsynced.clear()
    for i in range(BULK_THRESHOLD + 5):
        write(root, f"bulk/{i}.md", str(i))
    commit_paths(repo, [f"bulk/{i}.md" for i in range(BULK_THRESHOLD + 5)], message="bulk",
                 author=AUTHOR, branch="main")
    packs = [p for p in fsynced if p.startswith(f"{git_dir}/objects/pack/") and p.endswith(".pack")]
    assert packs and fsynced.index(f"{git_dir}/objects/pack") < fsynced.index(f"{git_dir}/refs/heads")


def test_checkout_and_index_ignore_the_global_git_config(repo: Repo, tmp_path: Path):
    # a colleague's machine-wide settings that would change what we write
    Path(os.environ["HOME"], ".gitconfig").write_text(
        "[core]\n\tautocrlf = true\n\tignorecase = true\n\tprecomposeunicode = true\n"
        "[index]\n\tversion = 4\n\tskipHash = true\n[feature]\n\tmanyFiles = true\n"
        "[user]\n\tname = Hostile Global\n\temail = hostile@example.com\n"
    )
    bare = tmp_path / "remote.git"
    Repo.init_bare(str(bare), mkdir=True, default_branch=b"main").close()
    spec = parse_remote_url(str(bare))
    root = workdir(repo)
    write(root, "a.md", "line one\nline two\n")
    commit_paths(repo, ["a.md"], message="ours", author=AUTHOR, branch="main")
    push_fast_forward(repo, spec, branch="main")
    from tests.test_publish import external_commit

    external_commit(bare, "theirs.md", b"theirs\nwith LF\n")
    write(root, "a.md", "line one\nline 2\n")
    commit_paths(repo, ["a.md"], message="ours again", author=AUTHOR, branch="main")
    result = push_fast_forward(repo, spec, branch="main")  # rebuild + checkout of theirs.md
    assert result.rebuilt == 1
    assert (root / "theirs.md").read_bytes() == b"theirs\nwith LF\n"
    index = (root / ".git" / "index").read_bytes()
    assert index[:8] == b"DIRC\x00\x00\x00\x02"  # the index format the repository had
    assert index[-20:] != b"\x00" * 20  # and its checksum (skipHash not taken from the user)
    logs = b"".join(p.read_bytes() for p in (root / ".git" / "logs").rglob("*") if p.is_file())
    assert b"Hostile" not in logs


def test_only_old_lock_files_are_removed(repo: Repo):
    git_dir = workdir(repo) / ".git"
    now = time.time()
    for name, age in (("index.lock", 30), ("config.lock", 15), ("HEAD.lock", 600),
                      ("refs/heads/main.lock", 30), ("refs/heads/other.lock", 2), ("objects/ab/cdef.lock", 1)):
        path = git_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        os.utime(path, (now - age, now - age))
    sweep = clear_stale_locks(workdir(repo), now=now)
    # A person's git may hold the young ones right now (the index for as long as its commit
    # editor is open, a ref only for an instant); object locks are only ever ours.
    assert sorted(sweep.removed) == ["HEAD.lock", "config.lock", "objects/ab/cdef.lock", "refs/heads/main.lock"]
    assert sorted(sweep.kept) == ["index.lock", "refs/heads/other.lock"]
    assert (git_dir / "index.lock").exists() and not (git_dir / "refs/heads/main.lock").exists()
    assert sorted(clear_stale_locks(workdir(repo), now=now + STALE_LOCK_AGE).removed) == [
        "index.lock", "refs/heads/other.lock"]


def test_a_held_index_lock_does_not_block_a_commit(repo: Repo):
    root = workdir(repo)
    write(root, "a.md", "a")
    commit_paths(repo, ["a.md"], message="one", author=AUTHOR, branch="main")
    (root / ".git" / "index.lock").write_bytes(b"someone's git status")
    write(root, "a.md", "b")
    assert commit_paths(repo, ["a.md"], message="two", author=AUTHOR, branch="main")
    assert read_tree_paths(repo, "main") == {"a.md": b"b"}
    assert (root / ".git" / "index.lock").read_bytes() == b"someone's git status"


def test_files_over_the_size_limit_are_left_out(repo: Repo):
    root = workdir(repo)
    write(root, "small.md", "s")
    write(root, "big.bin", "x" * 50)
    result = commit_changes(repo, ["small.md", "big.bin"], message="one", author=AUTHOR, branch="main",
                            max_file_bytes=10)
    assert result.commit and result.left_out == (("big.bin", 50),)
    assert read_tree_paths(repo, "main") == {"small.md": b"s"}


def test_a_large_commit_writes_its_blobs_in_chunks_and_stays_whole(repo: Repo, git_binary: str, monkeypatch):
    # A first sync commits thousands of files: their blobs are written out every
    # COMMIT_CHUNK instead of all held until the end; the commit is the same.
    from gitsync import gitrepo

    flushed: list[int] = []
    real_flush = gitrepo._Staged.flush

    def counting_flush(self, target):
        flushed.append(len(self.objects))
        real_flush(self, target)

    monkeypatch.setattr(gitrepo, "COMMIT_CHUNK", 4)
    monkeypatch.setattr(gitrepo._Staged, "flush", counting_flush)
    root = workdir(repo)
    files = {f"d{i % 3}/n{i}.md": f"note {i}\n" for i in range(11)}
    for rel, text in files.items():
        write(root, rel, text)
    head = commit_paths(repo, list(files), message="Add", author=AUTHOR, branch="main")
    assert head is not None
    assert read_tree_paths(repo, "main") == {rel: text.encode() for rel, text in files.items()}
    assert max(flushed) <= 4 + 5 and len(flushed) >= 3  # chunks of 4 blobs, then trees and commit
    assert "dangling" not in git(git_binary, root, "fsck", "--strict", "--no-dangling")
    assert git(git_binary, root, "status", "--porcelain") == ""


def test_a_held_config_lock_does_not_stop_opening_a_repository(tmp_path):
    # A process killed while recording core.symlinks leaves config.lock behind; the next
    # open must still work (the setting is recorded once the lock is gone).
    Repo.init(str(tmp_path / "work"), mkdir=True).close()
    lock = tmp_path / "work" / ".git" / "config.lock"
    lock.write_bytes(b"")
    with open_or_init(tmp_path / "work", branch="main") as opened:
        write(workdir(opened), "a.md", "a")
        assert commit_paths(opened, ["a.md"], message="one", author=AUTHOR, branch="main")
    lock.unlink()
    with open_or_init(tmp_path / "work", branch="main") as opened:
        assert opened.get_config().get(b"core", b"symlinks") == b"false"
