"""Git repositories with Dulwich: commit changed paths, fetch, rebuild, fast-forward push.

Commits are built directly in the object store (``commit_tree_changes`` on the parent's
tree sha, then a ``Commit`` object) so that their cost does not grow with the size of the
repository, no hook runs, no user gitconfig is read and no ``git`` binary is spawned
(TECH-NOTES §1-§3). The working tree stays a normal checkout that people can browse with
real git: only the index entries of the paths we commit are refreshed.

Pushing never forces (DESIGN invariant 2): when the remote branch moved, our unpushed
commits are rebuilt on top of the remote head *by construction* (remote tree + the paths
our commits changed), then pushed fast-forward with our own check inside ``update_refs``.

A dulwich ``Repo`` is not thread-safe: the caller holds the folder lock around every call.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from dulwich.diff_tree import tree_changes
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository, SendPackError
from dulwich.index import index_entry_from_stat, update_working_tree
from dulwich.object_store import commit_tree_changes, iter_tree_contents
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

__all__ = [
    "BULK_THRESHOLD",
    "GitError",
    "PushRejected",
    "PushResult",
    "RemoteSpec",
    "RemoteUnavailable",
    "commit_paths",
    "head_commit",
    "make_client",
    "open_or_init",
    "pack_if_needed",
    "parse_remote_url",
    "push_fast_forward",
    "read_tree_paths",
]

log = logging.getLogger(__name__)

#: More blobs than this in one commit go into one pack instead of loose objects.
BULK_THRESHOLD = 200

_FILE_MODE = 0o100644
_EXEC_MODE = 0o100755


class GitError(Exception):
    """A git operation failed; the message says what was tried and what happens next."""


class PushRejected(GitError):
    """The remote refused our update (or moved while we pushed); commits are kept locally."""

    def __init__(self, message: str, *, remote_head: str | None = None, our_head: str | None = None):
        super().__init__(message)
        self.remote_head = remote_head
        self.our_head = our_head


class RemoteUnavailable(GitError):
    """The remote could not be reached or read (network, auth, missing repository)."""


# ---------------------------------------------------------------------------
# local repository


def _ref(branch: str) -> bytes:
    return b"refs/heads/" + branch.encode("utf-8")


def open_or_init(path: Path | str, *, branch: str) -> Repo:
    """Open the non-bare repository at ``path``, creating it when absent.

    HEAD is made a symbolic ref to ``refs/heads/<branch>`` so that people running real
    git in the checkout see the branch we commit to.

    Args:
        path: directory of the working tree (created if missing).
        branch: branch name, e.g. ``"main"``.

    Returns:
        An open ``Repo``; the caller closes it.

    Raises:
        GitError: the directory exists but is not a usable repository.
    """
    path = Path(path)
    ref = _ref(branch)
    if (path / ".git").exists():
        try:
            repo = Repo(str(path))
        except NotGitRepository as exc:
            raise GitError(f"{path} has a .git entry but is not a git repository; fix or remove it") from exc
        if repo.bare:
            repo.close()
            raise GitError(f"{path} is a bare repository; a checkout is expected")
        try:
            current = repo.refs.get_symrefs().get(b"HEAD")
        except Exception:  # noqa: BLE001 - a detached or odd HEAD is simply re-pointed
            current = None
        if current != ref:
            log.info("pointing HEAD at branch path=%s branch=%s", path, branch)
            repo.refs.set_symbolic_ref(b"HEAD", ref)
        return repo
    path.mkdir(parents=True, exist_ok=True)
    log.info("initializing repository path=%s branch=%s", path, branch)
    return Repo.init(str(path), mkdir=False, default_branch=branch.encode("utf-8"))


def _get_ref(repo: Repo, ref: bytes) -> bytes | None:
    try:
        return repo.refs[ref]
    except KeyError:
        return None


def head_commit(repo: Repo, branch: str) -> str | None:
    """The commit id (hex) at ``refs/heads/<branch>``, or None when the branch has none."""
    sha = _get_ref(repo, _ref(branch))
    return sha.decode("ascii") if sha else None


class _TreeView:
    """Cached lookups in one tree (per call), so checking N paths reads each dir once."""

    def __init__(self, store: Any, root: bytes | None):
        self._store = store
        self._dirs: dict[bytes, Tree | None] = {}
        self._dirs[b""] = store[root] if root else Tree()

    def _dir(self, dirpath: bytes) -> Tree | None:
        if dirpath in self._dirs:
            return self._dirs[dirpath]
        parent, _, name = dirpath.rpartition(b"/")
        ptree = self._dir(parent)
        found: Tree | None = None
        if ptree is not None and name in ptree:
            mode, sha = ptree[name]
            if stat.S_ISDIR(mode):
                obj = self._store[sha]
                found = obj if isinstance(obj, Tree) else None
        self._dirs[dirpath] = found
        return found

    def lookup(self, path: bytes) -> tuple[int, bytes] | None:
        """(mode, sha) of the entry at ``path`` or None."""
        parent, _, name = path.rpartition(b"/")
        tree = self._dir(parent)
        if tree is None or name not in tree:
            return None
        mode, sha = tree[name]
        return mode, sha

    def blocking_file(self, path: bytes) -> bytes | None:
        """The ancestor of ``path`` that is a file (not a dir) in the tree, if any."""
        parts = path.split(b"/")[:-1]
        for i in range(1, len(parts) + 1):
            anc = b"/".join(parts[:i])
            entry = self.lookup(anc)
            if entry is None:
                return None
            if not stat.S_ISDIR(entry[0]):
                return anc
        return None


def _check_rel(path: str) -> bytes:
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise ValueError(f"not a repo-relative posix path: {path!r}")
    parts = path.split("/")
    if any(p in ("", ".", "..", ".git") for p in parts):
        raise ValueError(f"not a repo-relative posix path: {path!r}")
    return path.encode("utf-8")


def _identity(author: str) -> bytes:
    ident = author.strip().encode("utf-8")
    if b"<" not in ident or not ident.endswith(b">") or b"\n" in ident:
        raise ValueError(f"author must look like 'Name <email>', got {author!r}")
    return ident


def _new_commit(tree: bytes, parents: list[bytes], *, message: bytes, ident: bytes, when: int) -> Commit:
    commit = Commit()
    commit.tree = tree
    commit.parents = parents
    commit.author = commit.committer = ident
    commit.author_time = commit.commit_time = when
    commit.author_timezone = commit.commit_timezone = 0
    commit.encoding = b"utf-8"
    commit.message = message
    return commit


def commit_paths(
    repo: Repo,
    paths: Iterable[str],
    *,
    message: str,
    author: str,
    branch: str,
    timestamp: int | None = None,
) -> str | None:
    """Commit the working-tree state of ``paths`` on top of ``refs/heads/<branch>``.

    Each path is read from the working tree: a regular file is staged with its bytes
    (mode 100755 when executable), a missing path is a deletion, a symlink or directory
    is skipped (a file in the tree that became a directory is removed from the tree).
    Only the index entries of these paths are refreshed; nothing else is scanned.

    Args:
        repo: open non-bare repository (caller holds the folder lock).
        paths: repo-relative posix paths, prefix included.
        message: commit message.
        author: ``"Name <email>"``, used as author and committer.
        branch: branch to advance.
        timestamp: seconds since the epoch (default: now), timezone UTC.

    Returns:
        The new commit id (hex), or None when the tree did not change (no commit made).

    Raises:
        ValueError: a path is not repo-relative or the author is malformed.
        GitError: the branch moved under us (someone else wrote the ref).
    """
    ident = _identity(author)
    ref = _ref(branch)
    store = repo.object_store
    parent = _get_ref(repo, ref)
    parent_tree: bytes | None = store[parent].tree if parent else None
    view = _TreeView(store, parent_tree)
    root = Path(repo.path)

    wanted: dict[bytes, None] = {}
    for p in paths:
        wanted[_check_rel(p)] = None

    changes: dict[bytes, tuple[int | None, bytes | None]] = {}
    blobs: list[Blob] = []
    index_updates: dict[bytes, tuple[os.stat_result, bytes, int] | None] = {}
    for bpath in wanted:
        full = root / bpath.decode("utf-8")
        old = view.lookup(bpath)
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        if st is None:
            index_updates[bpath] = None
            if old is not None:
                changes[bpath] = (None, None)
            continue
        if stat.S_ISDIR(st.st_mode):
            if old is not None and not stat.S_ISDIR(old[0]):
                changes[bpath] = (None, None)
                index_updates[bpath] = None
            continue
        if not stat.S_ISREG(st.st_mode):
            log.debug("skipping non-regular file path=%s", bpath.decode("utf-8", "replace"))
            continue
        try:
            data = full.read_bytes()
        except FileNotFoundError:  # removed between lstat and read
            index_updates[bpath] = None
            if old is not None:
                changes[bpath] = (None, None)
            continue
        mode = _EXEC_MODE if st.st_mode & 0o111 else _FILE_MODE
        blob = Blob.from_string(data)
        index_updates[bpath] = (st, blob.id, mode)
        if old == (mode, blob.id):
            continue
        blobs.append(blob)
        changes[bpath] = (mode, blob.id)
        blocker = view.blocking_file(bpath)
        if blocker is not None and blocker not in changes:
            changes[blocker] = (None, None)
            index_updates[blocker] = None

    # a path that became a file where a directory was: drop changes below it
    files_set = {p for p, (m, _) in changes.items() if m is not None}
    change_list = [
        (p, m, s)
        for p, (m, s) in changes.items()
        if not any(p.startswith(anc + b"/") for anc in _ancestors(p) if anc in files_set)
    ]

    new_commit: str | None = None
    if change_list:
        _store_blobs(store, blobs)
        base: bytes | Tree = parent_tree if parent_tree else Tree()
        new_tree = commit_tree_changes(store, base, change_list)
        if new_tree != parent_tree and not (parent is None and new_tree == Tree().id):
            text = message if message.endswith("\n") else message + "\n"
            when = int(time.time()) if timestamp is None else int(timestamp)
            commit = _new_commit(
                new_tree, [parent] if parent else [], message=text.encode("utf-8"), ident=ident, when=when
            )
            store.add_object(commit)
            ok = (
                repo.refs.set_if_equals(ref, parent, commit.id, committer=ident, message=b"commit: gitsync")
                if parent
                else repo.refs.add_if_new(ref, commit.id, committer=ident, message=b"commit (initial): gitsync")
            )
            if not ok:
                raise GitError(
                    f"branch {branch} moved while committing in {root}; the files stay dirty and "
                    "the next commit cycle retries"
                )
            new_commit = commit.id.decode("ascii")
            log.debug("committed branch=%s commit=%s paths=%d", branch, new_commit[:12], len(change_list))
    _refresh_index(repo, index_updates)
    return new_commit


def _ancestors(path: bytes) -> Iterable[bytes]:
    parts = path.split(b"/")[:-1]
    for i in range(1, len(parts) + 1):
        yield b"/".join(parts[:i])


def _store_blobs(store: Any, blobs: list[Blob]) -> None:
    """Loose objects for small commits, one pack for bulk ones (TECH-NOTES §2 hygiene)."""
    if len(blobs) > BULK_THRESHOLD:
        seen: set[bytes] = set()
        todo = []
        for b in blobs:
            if b.id not in seen and b.id not in store:
                seen.add(b.id)
                todo.append((b, None))
        if todo:
            store.add_objects(todo)
    else:
        for b in blobs:
            store.add_object(b)


def _refresh_index(repo: Repo, updates: Mapping[bytes, tuple[os.stat_result, bytes, int] | None]) -> None:
    if not updates:
        return
    idx = repo.open_index()
    changed = False
    for bpath, info in updates.items():
        if info is None:
            if bpath in idx:
                del idx[bpath]
                changed = True
        else:
            st, sha, mode = info
            idx[bpath] = index_entry_from_stat(st, sha, mode)
            changed = True
    if changed:
        idx.write()


def read_tree_paths(repo: Repo, branch: str, prefix: str = "") -> dict[str, bytes]:
    """All blobs of the branch head under ``prefix`` (repo-relative paths, prefix included).

    Meant for tests and diagnostics: it reads every blob under the prefix.
    """
    sha = _get_ref(repo, _ref(branch))
    if not sha:
        return {}
    store = repo.object_store
    tree = store[sha].tree
    pre = prefix.strip("/").encode("utf-8")
    out: dict[str, bytes] = {}
    for entry in iter_tree_contents(store, tree):
        if pre and not (entry.path == pre or entry.path.startswith(pre + b"/")):
            continue
        if stat.S_ISGITLINK(entry.mode) if hasattr(stat, "S_ISGITLINK") else entry.mode == 0o160000:
            continue
        out[entry.path.decode("utf-8")] = store[entry.sha].as_raw_string()
    return out


def pack_if_needed(repo: Repo, *, max_loose: int = 1000, max_packs: int = 50) -> bool:
    """Pack loose objects past ``max_loose`` and repack past ``max_packs`` packs.

    Many packs slow down the first lookup of every fresh ``Repo`` (each index is
    loaded); many loose objects waste inodes. Run under the folder lock.

    Returns:
        True when something was packed.
    """
    store = repo.object_store
    did = False
    loose = store.count_loose_objects()
    if loose > max_loose:
        n = store.pack_loose_objects()
        log.info("packed loose objects path=%s count=%d", repo.path, n)
        did = True
    if store.count_pack_files() > max_packs:
        store.repack()
        log.info("repacked path=%s", repo.path)
        did = True
    return did
