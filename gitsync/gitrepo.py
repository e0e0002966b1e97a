"""Git repositories with Dulwich: commit changed paths, fetch, rebuild, fast-forward push.

Commits are built directly in the object store (``commit_tree_changes`` on the parent's
tree sha, then a ``Commit`` object) so that their cost does not grow with the size of the
repository, no hook runs, no user gitconfig is read and no ``git`` binary is spawned.
The working tree stays a normal checkout that people can browse with real git: only the
index entries of the paths we commit are refreshed. Every file of
the working tree is read and written through ``worktree`` (no link is ever followed),
and a symbolic link in a tree from the remote is checked out as a regular file holding
the link's text, as git does with ``core.symlinks=false`` (set in the repository's
config so that people running git in the checkout see the same thing).

No user or machine git config (``~/.gitconfig``, ``/etc/gitconfig``) is consulted: the
index and the working-tree update read the repository's own ``.git/config`` only, and
every ref update names its identity, so a colleague's global settings (index format,
case folding, sparse checkout, identity) cannot change what we write.

Durability: objects are written with fsync (loose and packs), the directories their
names were renamed into are flushed before a branch is moved to them, and the branch's
directory is flushed after the move, so after a power cut a branch never points at a
missing object.

Pushing never forces: when the remote branch moved, our unpushed commits are rebuilt on
top of the remote head *by construction* (remote tree + the paths our commits changed),
then pushed fast-forward with our own check inside ``update_refs``.

A dulwich ``Repo`` is not thread-safe: the caller holds the repository's lock around
every call (and the folder's lock for anything that touches the working tree).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from dulwich.diff_tree import tree_changes
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository, SendPackError
from dulwich.file import FileLocked
from dulwich.index import index_entry_from_stat, validate_path, validate_path_element_default
from dulwich.object_store import commit_tree_changes, iter_tree_contents
from dulwich.objects import S_ISGITLINK, Blob, Commit, ShaFile, Tree
from dulwich.repo import Repo

from . import worktree
from .durable import fsync_dirs
from .redact import redact_url

__all__ = [
    "BULK_THRESHOLD",
    "CommitPart",
    "CommitResult",
    "GitError",
    "LockSweep",
    "RepositoryLocked",
    "STALE_LOCK_AGE",
    "STALE_REF_LOCK_AGE",
    "PushRejected",
    "PushResult",
    "REF_IDENTITY",
    "RemoteMoved",
    "RemoteSpec",
    "RemoteUnavailable",
    "commit_changes",
    "commit_parts",
    "commit_paths",
    "head_commit",
    "make_client",
    "open_or_init",
    "pack_if_needed",
    "parse_remote_url",
    "clear_stale_locks",
    "count_unpushed",
    "has_unpushed",
    "remote_head",
    "set_remote",
    "push_fast_forward",
    "push_without_fetch",
    "read_tree_paths",
    "refresh_index",
]

log = logging.getLogger(__name__)

#: A path's index entry to write, ``(stat, blob id, mode)``, or None to drop it.
IndexUpdate = tuple[os.stat_result, bytes, int] | None

#: More objects than this in one commit go into one pack instead of loose objects.
COMMIT_CHUNK = 2000  # new blobs a commit holds in memory before writing them out
BULK_THRESHOLD = 200

#: Seconds after which a ``.lock`` file in ``.git`` is taken to be left by a dead process
#: and removed. A younger one may belong to a person running git in the checkout right
#: now: it is left alone and reported.
STALE_LOCK_AGE = 120.0

#: The same for a lock on a ref, HEAD, packed-refs or the config. git holds those only for
#: the instant of an update (``git commit`` keeps ``index.lock`` while its editor is open,
#: never these; only ``git config --edit`` would, and a person's checkout of a synced
#: folder has no use for it), so one older than this is a dead process's: after a SIGKILL
#: mid-commit or mid-open the next commit waits seconds, not minutes.
STALE_REF_LOCK_AGE = 10.0

#: Who the reflog names for ref updates that are not commits (tracking refs, rebuilds):
#: given explicitly, so no user or machine git config is consulted for it.
REF_IDENTITY = b"relay-git-sync <relay-git-sync@localhost>"

#: Refusals that mean the remote moved between its ref advertisement and our update
#: (git's receive-pack and dulwich's local client): fetch, rebuild and try again.
_RACE_STATUS = ("failed to update ref", "fetch first", "non-fast-forward", "stale info",
                "failed to lock", "unable to set")

_FILE_MODE = 0o100644
_EXEC_MODE = 0o100755


class GitError(Exception):
    """A git operation failed; the message says what was tried and what happens next."""


class PushRejected(GitError):
    """The remote refused our update (or moved while we pushed); commits are kept locally.

    ``permanent`` is True when the server itself refused the update (a hook, a file size
    limit): trying again soon gives the same answer.
    """

    def __init__(self, message: str, *, remote_head: str | None = None, our_head: str | None = None,
                 permanent: bool = False):
        super().__init__(message)
        self.remote_head = remote_head
        self.our_head = our_head
        self.permanent = permanent


class RemoteUnavailable(GitError):
    """The remote could not be reached or read (network, auth, missing repository)."""


class RepositoryLocked(GitError):
    """A ``.lock`` file in ``.git`` stops an update: someone (or a dead process) holds it."""

    def __init__(self, message: str, *, lock: str):
        super().__init__(message)
        self.lock = lock


class RemoteMoved(GitError):
    """The remote branch is not where our history has it: fetch and rebuild before pushing."""

    def __init__(self, message: str, *, remote_head: str | None = None):
        super().__init__(message)
        self.remote_head = remote_head


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
        An open ``Repo`` whose object store fsyncs every object it writes; the caller
        closes it.

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
            repo.refs.set_symbolic_ref(b"HEAD", ref, committer=REF_IDENTITY)
        repo.object_store.fsync_object_files = True
        _no_symlinks(repo)
        return repo
    path.mkdir(parents=True, exist_ok=True)
    log.info("initializing repository path=%s branch=%s", path, branch)
    repo = Repo.init(str(path), mkdir=False, default_branch=branch.encode("utf-8"))
    repo.object_store.fsync_object_files = True
    _no_symlinks(repo)
    return repo


def _no_symlinks(repo: Repo) -> None:
    """Record ``core.symlinks=false``: links in trees are files holding the link text.

    Our checkout never makes a link (see ``_checkout_change``); with this setting real
    git agrees (a clean ``git status``) and makes none either when a person checks out.
    """
    config = repo.get_config()
    try:
        current = config.get(b"core", b"symlinks")
    except KeyError:
        current = None
    if current != b"false":
        config.set(b"core", b"symlinks", False)
        try:
            config.write_to_path()
        except (FileLocked, FileExistsError):
            # config.lock is held (a person's git, or left by a killed process until the
            # lock sweep removes it). The setting only helps people's git; ours never
            # makes a link either way, so the sync goes on and a later open records it.
            log.warning("config.lock exists, core.symlinks=false not recorded yet path=%s",
                        repo.path)


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


def _new_commit(tree: bytes, parents: list[bytes], *, message: bytes, ident: bytes, when: int,
                committer: bytes | None = None) -> Commit:
    commit = Commit()
    commit.tree = tree
    commit.parents = parents
    commit.author = ident
    commit.committer = committer or ident
    commit.author_time = commit.commit_time = when
    commit.author_timezone = commit.commit_timezone = 0
    commit.encoding = b"utf-8"
    commit.message = message
    return commit


@dataclass(frozen=True)
class CommitResult:
    """What :func:`commit_changes` did.

    commit: the new commit id (hex), or None when the tree did not change; with
        several parts, the last of the chain (the branch's new head);
    left_out: ``(path, size)`` of files over ``max_file_bytes``, not committed;
    commits: every commit made, oldest first;
    index_updates: the index entries still to refresh when the commit was asked not to
        (see :func:`refresh_index`); empty otherwise.
    """

    commit: str | None
    left_out: tuple[tuple[str, int], ...] = ()
    commits: tuple[str, ...] = ()
    index_updates: Mapping[bytes, IndexUpdate] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class CommitPart:
    """One commit of a chain made by :func:`commit_parts`: its paths, message and author.

    paths: repo-relative posix paths (prefix included) this commit holds;
    message: its commit message;
    author: ``"Name <email>"`` of its author.
    """

    paths: tuple[str, ...]
    message: str
    author: str


class _Staged:
    """An object-store view that keeps new objects in memory until :meth:`flush`.

    ``commit_tree_changes`` writes each new tree as it goes; gathering them lets one
    commit's objects be written together (one pack for a bulk commit, so one fsync) and
    made durable before any ref points at them.
    """

    def __init__(self, store: Any):
        self._store = store
        self.objects: dict[bytes, ShaFile] = {}

    def __getitem__(self, sha: bytes) -> ShaFile:
        found = self.objects.get(sha)
        # a copy, like a read from disk: commit_tree_changes edits the trees it reads
        return found.copy() if found is not None else self._store[sha]

    def __contains__(self, sha: bytes) -> bool:
        return sha in self.objects or sha in self._store

    def add_object(self, obj: ShaFile) -> None:
        self.objects.setdefault(obj.id, obj)

    def flush(self, repo: Repo) -> None:
        """Write the gathered objects (new ones only) and flush their directories."""
        _write_objects(repo, [o for sha, o in self.objects.items() if sha not in self._store])
        self.objects.clear()


def _write_objects(repo: Repo, objects: list[ShaFile]) -> None:
    """Loose objects for a small batch, one pack for a bulk one; then flush directories.

    Many packs slow down the first lookup of every fresh ``Repo``, so small commits stay
    loose; each object file is fsync'd by the store, and the directories its name was
    renamed into are flushed here.
    """
    if not objects:
        return
    store = repo.object_store
    base = os.path.join(repo.controldir(), "objects")
    if len(objects) > BULK_THRESHOLD:
        store.add_objects([(o, None) for o in objects])
        fsync_dirs([os.path.join(base, "pack")])
        return
    dirs = []
    for obj in objects:
        store.add_object(obj)
        dirs.append(os.path.join(base, obj.id[:2].decode("ascii")))
    fsync_dirs([*dirs, base])


def _move_ref(repo: Repo, ref: bytes, old: bytes | None, new: bytes, *, committer: bytes,
              message: bytes) -> bool:
    """Compare-and-swap ``ref`` from ``old`` (None: must not exist) to ``new``, durably.

    Raises:
        RepositoryLocked: the ref's ``.lock`` file exists.
    """
    try:
        if old is None:
            ok = repo.refs.add_if_new(ref, new, committer=committer, message=message)
        else:
            ok = repo.refs.set_if_equals(ref, old, new, committer=committer, message=message)
    except FileLocked:
        lock = ref.decode("utf-8", "replace") + ".lock"
        raise RepositoryLocked(
            f"{lock} exists in {repo.controldir()}: someone may be running git in the checkout; "
            f"the update is retried (the lock is removed once older than {STALE_REF_LOCK_AGE:.0f} s)",
            lock=lock,
        ) from None
    if ok:
        fsync_dirs([os.path.dirname(os.path.join(repo.controldir(), os.fsdecode(ref)))])
    return ok


def commit_paths(
    repo: Repo,
    paths: Iterable[str],
    *,
    message: str,
    author: str,
    branch: str,
    timestamp: int | None = None,
    max_file_bytes: int | None = None,
) -> str | None:
    """Like :func:`commit_changes`, returning only the new commit id (hex) or None."""
    return commit_changes(repo, paths, message=message, author=author, branch=branch,
                          timestamp=timestamp, max_file_bytes=max_file_bytes).commit


def commit_changes(
    repo: Repo,
    paths: Iterable[str],
    *,
    message: str,
    author: str,
    branch: str,
    timestamp: int | None = None,
    max_file_bytes: int | None = None,
    committer: str | None = None,
) -> CommitResult:
    """Commit the working-tree state of ``paths`` on top of ``refs/heads/<branch>``.

    Each path is read from the working tree through ``worktree.read_file``: a regular
    file is staged with its bytes (mode 100755 when executable), a missing path (or one
    under a file) is a deletion, a directory is skipped (a file in the tree that became
    a directory is removed from the tree). A path that is a link, lies under a link, or
    is not a regular file is never read: it is left out of the commit with a warning.
    A file larger than ``max_file_bytes`` is left out (its previous version, if any,
    stays in the tree) and listed in the result. Only the index entries of these paths
    are refreshed; nothing else is scanned.

    Args:
        repo: open non-bare repository (caller holds the repository lock).
        paths: repo-relative posix paths, prefix included.
        message: commit message.
        author: ``"Name <email>"`` of the author.
        branch: branch to advance.
        timestamp: seconds since the epoch (default: now), timezone UTC.
        max_file_bytes: largest file to commit (None: no limit).
        committer: ``"Name <email>"`` of the committer (default: the author).

    Returns:
        The new commit (None when the tree did not change) and the files left out.

    Raises:
        ValueError: a path is not repo-relative or the author is malformed.
        GitError: the branch moved under us (someone else wrote the ref).
        RepositoryLocked: the branch's lock file exists.
    """
    part = CommitPart(tuple(paths), message, author)
    return commit_parts(repo, [part], branch=branch, committer=committer, timestamp=timestamp,
                        max_file_bytes=max_file_bytes)


def commit_parts(
    repo: Repo,
    parts: Sequence[CommitPart],
    *,
    branch: str,
    committer: str | None = None,
    timestamp: int | None = None,
    max_file_bytes: int | None = None,
    refresh: bool = True,
) -> CommitResult:
    """Commit the working-tree state of the parts' paths as a chain of commits.

    The tree of the last commit is exactly the tree one commit of all the paths would
    have (see :func:`commit_changes` for how each path is read); every earlier commit
    adds only its own part's paths to the tree before it. A part whose paths change
    nothing makes no commit. The branch moves once, from its old head to the last
    commit, so a reader sees all of the chain or none of it. A path named by several
    parts belongs to the first of them.

    Args:
        repo: open non-bare repository (caller holds the repository lock).
        parts: the commits to make, oldest first (at least one).
        branch: branch to advance.
        committer: ``"Name <email>"`` of the committer of every commit (default: each
            commit's author).
        timestamp: seconds since the epoch (default: now), timezone UTC.
        max_file_bytes: largest file to commit (None: no limit).
        refresh: refresh the index entries of the paths now; when False they are returned
            (``index_updates``) for :func:`refresh_index` later, so a commit that must
            be pushed at once does not wait for the rewrite of a large index.

    Returns:
        The new head (None when the tree did not change), every commit made, the files
        left out, and the index entries not yet refreshed.

    Raises:
        ValueError: no part, a path is not repo-relative, or an identity is malformed.
        GitError: the branch moved under us (someone else wrote the ref).
        RepositoryLocked: the branch's lock file exists.
    """
    if not parts:
        raise ValueError("commit_parts needs at least one part")
    authors = [_identity(part.author) for part in parts]
    committer_ident = _identity(committer) if committer else None
    ref = _ref(branch)
    store = repo.object_store
    parent = _get_ref(repo, ref)
    parent_tree: bytes | None = store[parent].tree if parent else None
    view = _TreeView(store, parent_tree)
    root = repo.path

    wanted: dict[bytes, int] = {}  # path -> index of the part holding it
    for index, part in enumerate(parts):
        for p in part.paths:
            wanted.setdefault(_check_rel(p), index)

    changes: dict[bytes, tuple[int | None, bytes | None]] = {}
    owner: dict[bytes, int] = {}  # changed path -> index of its part
    staged = _Staged(store)
    left_out: list[tuple[str, int]] = []
    index_updates: dict[bytes, IndexUpdate] = {}
    reader = worktree.Reader(root)
    try:
        # By parent directory: one walk per directory, not one per file (10,000 files of a
        # first sync in a few directories cost a few walks). Nothing below depends on
        # the order but the owner of a removal: the first part that needs it.
        for bpath, index in sorted(wanted.items(), key=lambda item: item[0].rpartition(b"/")[0]):
            rel = bpath.decode("utf-8")
            old = view.lookup(bpath)
            if max_file_bytes is not None:
                try:
                    before = reader.lstat(rel)
                except OSError:
                    before = None
                if before is not None and stat.S_ISREG(before.st_mode) and before.st_size > max_file_bytes:
                    left_out.append((rel, before.st_size))  # not read: it may be very large
                    continue
            try:
                data, st = reader.read(rel)
            except (FileNotFoundError, NotADirectoryError):
                data, st = None, None
            except IsADirectoryError:
                if old is not None and not stat.S_ISDIR(old[0]):
                    changes[bpath] = (None, None)
                    owner[bpath] = min(owner.get(bpath, index), index)
                    index_updates[bpath] = None
                continue
            except worktree.PathRefused as exc:
                if exc.errno != errno.ENOTDIR:
                    # A link (the path or an ancestor), a FIFO, a device: never read.
                    log.warning("left out of the commit path=%r reason=%s", rel, exc.reason)
                    continue
                data, st = None, None  # a file stands where a directory was: the path is gone
            if st is None or data is None:
                index_updates[bpath] = None
                # A directory in the parent tree is not deleted by name: its files are dirty
                # paths of their own (and any file we did not write stays).
                if old is not None and not stat.S_ISDIR(old[0]):
                    changes[bpath] = (None, None)
                    owner[bpath] = min(owner.get(bpath, index), index)
                continue
            mode = _EXEC_MODE if st.st_mode & 0o111 else _FILE_MODE
            blob = Blob.from_string(data)
            index_updates[bpath] = (st, blob.id, mode)
            if old == (mode, blob.id):
                continue
            staged.add_object(blob)
            if len(staged.objects) >= COMMIT_CHUNK:
                # A first sync's commit of 10,000 files holds at most this many blobs:
                # written (one pack each) and dropped; nothing points at them until the
                # branch moves, after the last chunk is durable.
                staged.flush(repo)
            changes[bpath] = (mode, blob.id)
            owner[bpath] = index
            blocker = view.blocking_file(bpath)
            if blocker is not None and blocker not in changes:
                changes[blocker] = (None, None)
                owner[blocker] = index
                index_updates[blocker] = None
            elif blocker is not None and changes[blocker] == (None, None):
                # its removal belongs to the first part that needs it, whichever of
                # the two paths was read first
                owner[blocker] = min(owner[blocker], index)
    finally:
        reader.close()
    # a path that became a file where a directory was: drop changes below it
    files_set = {p for p, (m, _) in changes.items() if m is not None}
    change_list = [
        (p, m, s)
        for p, (m, s) in changes.items()
        if not any(p.startswith(anc + b"/") for anc in _ancestors(p) if anc in files_set)
    ]

    made: list[Commit] = []
    if change_list:
        base: bytes | Tree = parent_tree if parent_tree else Tree()
        final_tree = commit_tree_changes(staged, base, change_list)
        if final_tree != parent_tree and not (parent is None and final_tree == Tree().id):
            when = int(time.time()) if timestamp is None else int(timestamp)
            trees: list[tuple[bytes, int]] = []  # (tree, part index) of each commit
            prev_tree = parent_tree
            for index in range(len(parts) - 1):
                own = [c for c in change_list if owner.get(c[0]) == index]
                if not own:
                    continue
                tree = commit_tree_changes(staged, prev_tree if prev_tree else Tree(), own)
                if tree == prev_tree or (prev_tree is None and tree == Tree().id):
                    continue
                trees.append((tree, index))
                prev_tree = tree
            if final_tree != prev_tree:
                # The last commit holds the interval's tree exactly, whatever the split did.
                trees.append((final_tree, len(parts) - 1))
            head = parent
            for tree, index in trees:
                text = parts[index].message
                text = text if text.endswith("\n") else text + "\n"
                commit = _new_commit(tree, [head] if head else [], message=text.encode("utf-8"),
                                     ident=authors[index], committer=committer_ident, when=when)
                staged.add_object(commit)
                made.append(commit)
                head = commit.id
            staged.flush(repo)  # durable before the branch points at them
            ok = _move_ref(repo, ref, parent, made[-1].id, committer=committer_ident or authors[-1],
                           message=b"commit: gitsync" if parent else b"commit (initial): gitsync")
            if not ok:
                raise GitError(
                    f"branch {branch} moved while committing in {root}; the files stay dirty and "
                    "the next commit cycle retries"
                )
            log.debug("committed branch=%s commit=%s commits=%d paths=%d", branch,
                      made[-1].id[:12].decode("ascii"), len(made), len(change_list))
    ids = tuple(c.id.decode("ascii") for c in made)
    if refresh:
        refresh_index(repo, index_updates)
        index_updates = {}
    return CommitResult(ids[-1] if ids else None, tuple(left_out), ids, index_updates)


def _ancestors(path: bytes) -> Iterable[bytes]:
    parts = path.split(b"/")[:-1]
    for i in range(1, len(parts) + 1):
        yield b"/".join(parts[:i])


def _local_config(repo: Repo) -> Any:
    """The repository's own ``.git/config``: never the user's or the machine's."""
    return repo.get_config()


def refresh_index(repo: Repo, updates: Mapping[bytes, IndexUpdate]) -> None:
    """Refresh the index entries of committed paths (a convenience for people using git).

    ``updates`` maps a path to its ``(stat, blob id, mode)`` when committed, or to None
    when it left the tree. Caller holds the repository lock.

    A locked index (a person's git holds ``index.lock``) is left as it is: the commit
    does not depend on it.
    """
    if not updates:
        return
    idx = repo.open_index(config=_local_config(repo))
    changed = False
    for bpath, info in updates.items():
        if info is None:
            if bpath in idx:
                del idx[bpath]
                changed = True
        else:
            st, sha, mode = info
            entry = index_entry_from_stat(st, sha, mode)
            try:
                if idx[bpath] == entry:
                    continue
            except KeyError:
                pass
            idx[bpath] = entry
            changed = True
    if changed:
        try:
            idx.write()
        except FileLocked:
            log.warning("index is locked, entries not refreshed (git status may show committed "
                        "files as changed) path=%s", repo.path)


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
        if entry.mode == 0o160000:  # submodule: no blob to read
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


# ---------------------------------------------------------------------------
# remotes

HTTPS_USERNAME_ENV = "GIT_HTTPS_USERNAME"
HTTPS_PASSWORD_ENV = "GIT_HTTPS_PASSWORD"


class InvalidRemote(GitError, ValueError):
    """A remote URL we cannot use; the message shows the URL without credentials."""


@dataclass(frozen=True)
class RemoteSpec:
    """Where to push: parsed from a connector's ``url``.

    ``display`` is the URL with any credentials removed: the only form that may be
    logged or shown. ``password`` never appears in the repr.
    """

    kind: str  # "ssh" | "https" | "http" | "local"
    display: str
    path: str
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return self.display


@dataclass(frozen=True)
class PushResult:
    """Outcome of :func:`push_fast_forward`.

    status: ``"pushed"`` (fast-forward), ``"created"`` (remote branch was absent) or
    ``"up-to-date"``; remote_head: the remote branch head afterwards (hex) or None;
    pushed_commits: commits newly on the remote; rebuilt: commits rebuilt on a moved remote;
    fetched: whether the remote branch had to be fetched (it was not where our history
    had it).
    """

    status: str
    remote_head: str | None
    pushed_commits: int = 0
    rebuilt: int = 0
    fetched: bool = False


def parse_remote_url(url: str, *, env: Mapping[str, str] | None = None, base_dir: Path | None = None) -> RemoteSpec:
    """Parse a connector's remote URL.

    Accepted: ``ssh://[user@]host[:port]/path`` (also ``git+ssh://``), scp-like
    ``[user@]host:path``, ``https://`` / ``http://`` (credentials from ``env``'s
    ``GIT_HTTPS_USERNAME`` / ``GIT_HTTPS_PASSWORD``, or embedded in the URL), and local
    paths or ``file://`` URLs (relative paths resolve against ``base_dir``).

    Raises:
        InvalidRemote: unsupported scheme or missing host/path.
    """
    env = env or {}
    url = url.strip()
    if not url:
        raise InvalidRemote("remote url is empty")
    if "://" in url:
        userinfo = url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[0]
        if "?" in userinfo or "#" in userinfo:  # the parsers would disagree on where the host is
            raise InvalidRemote(f"remote url credentials must be percent-encoded: {redact_url(url)}")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme in ("ssh", "git+ssh", "ssh+git"):
            if not parts.hostname or not parts.path or parts.path == "/":
                raise InvalidRemote(f"ssh remote needs a host and a path: {redact_url(url)}")
            try:
                port = parts.port
            except ValueError as exc:
                raise InvalidRemote(f"bad port in remote url {redact_url(url)}") from exc
            path = unquote(parts.path)
            if path.startswith("/~"):
                path = path[1:]
            user = unquote(parts.username) if parts.username else "git"
            host = parts.hostname
            disp_host = f"[{host}]" if ":" in host else host
            display = f"ssh://{user}@{disp_host}{f':{port}' if port else ''}{parts.path}"
            return RemoteSpec("ssh", display, path, host=host, port=port, username=user)
        if scheme in ("https", "http"):
            if not parts.hostname:
                raise InvalidRemote(f"{scheme} remote needs a host: {redact_url(url)}")
            try:
                parts.port  # noqa: B018 (raises on a bad port)
            except ValueError as exc:
                raise InvalidRemote(f"bad port in remote url {redact_url(url)}") from exc
            username = env.get(HTTPS_USERNAME_ENV) or (unquote(parts.username) if parts.username else None)
            password = env.get(HTTPS_PASSWORD_ENV) or (unquote(parts.password) if parts.password else None)
            host = parts.hostname
            netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
            display = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
            return RemoteSpec(scheme, display, parts.path or "/", host=host, port=parts.port,
                              username=username, password=password)
        if scheme == "file":
            path = unquote(parts.path)
            return RemoteSpec("local", f"file://{path}", path)
        raise InvalidRemote(f"unsupported remote url scheme {scheme!r}: {redact_url(url)}")
    # scp-like: [user@]host:path (a "/" before the first ":" means a local path)
    colon = url.find(":")
    slash = url.find("/")
    if colon > 0 and (slash == -1 or colon < slash) and not (colon == 1 and url[0].isalpha() and os.name == "nt"):
        userhost, path = url[:colon], url[colon + 1 :]
        user, _, host = userhost.rpartition("@")
        if not host or not path:
            raise InvalidRemote(f"scp-like remote needs host:path, got {redact_url(url)!r}")
        user = user or "git"
        return RemoteSpec("ssh", redact_url(f"{user}@{host}:{path}") or "", path, host=host, port=None,
                          username=user)
    path = Path(url).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return RemoteSpec("local", str(path), str(path))


def make_client(spec: RemoteSpec, *, vendor: Any = None) -> tuple[Any, str]:
    """A Dulwich client for the remote, and the path to pass to it.

    Raises:
        GitError: an SSH remote without a vendor (no SSH_PRIVATE_KEY configured).
    """
    from dulwich.client import HttpGitClient, LocalGitClient, SSHGitClient

    if spec.kind == "ssh":
        if vendor is None:
            raise GitError(f"remote {spec.display} uses SSH but no SSH key is configured (SSH_PRIVATE_KEY)")
        return SSHGitClient(spec.host, port=spec.port, username=spec.username, vendor=vendor), spec.path
    if spec.kind in ("https", "http"):
        host = f"[{spec.host}]" if spec.host and ":" in spec.host else spec.host
        base = f"{spec.kind}://{host}{f':{spec.port}' if spec.port else ''}"
        client = HttpGitClient(base, username=spec.username, password=spec.password, timeout=60)
        return client, spec.path
    if spec.kind == "local":
        return LocalGitClient(), spec.path
    raise InvalidRemote(f"unsupported remote kind {spec.kind!r}")


@dataclass(frozen=True)
class LockSweep:
    """What :func:`clear_stale_locks` found: removed stale locks and recent ones left alone."""

    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()


def clear_stale_locks(path: Path | str, *, min_age: float = STALE_LOCK_AGE,
                      min_ref_age: float = STALE_REF_LOCK_AGE, now: float | None = None) -> LockSweep:
    """Remove ``*.lock`` files a killed process left in ``.git``; leave recent ones.

    Dulwich, like git, refuses to write while such a file exists, so one SIGKILL during
    a commit would block every later commit. A lock on the index is removed only when
    older than ``min_age`` seconds, a lock on HEAD, packed-refs, the config or a ref when
    older than ``min_ref_age``: a younger one may be held by a person running git in the
    checkout right now, so it is left and reported (and removed by a later sweep once
    old). A lock on an object file is always ours (git writes objects through temporary
    files, not locks) and is removed at any age.

    Only call this when no other process of ours can be writing the repository (the
    service holds the data-directory lock) and, in this process, under the repository
    lock; call it before opening the repository, since opening may write HEAD.

    Args:
        path: the repository's working directory (its ``.git`` is cleaned).
        min_age: seconds an index lock must have existed to be taken as stale.
        min_ref_age: the same for HEAD, packed-refs, config and ref locks.
        now: the current time (seconds since the epoch; tests pass it).

    Returns:
        The removed and the kept lock files, relative to ``.git``.
    """
    git_dir = Path(path) / ".git"
    if not git_dir.is_dir():
        return LockSweep()
    current = time.time() if now is None else now
    slow = [(git_dir / "index.lock", min_age)]
    refs = [git_dir / "HEAD.lock", git_dir / "packed-refs.lock", git_dir / "config.lock",
            *(git_dir / "refs").rglob("*.lock")]
    objects = [(lock, 0.0) for lock in (git_dir / "objects").glob("??/*.lock")]
    removed, kept = [], []
    for lock, stale_after in slow + [(lock, min_ref_age) for lock in refs] + objects:
        try:
            age = current - lock.lstat().st_mtime
        except FileNotFoundError:
            continue
        name = str(lock.relative_to(git_dir))
        if age < stale_after:
            kept.append(name)
            continue
        try:
            lock.unlink()
        except FileNotFoundError:
            continue
        removed.append(name)
    if removed:
        log.warning("removed stale lock files path=%s files=%s", path, ",".join(removed))
    if kept:
        log.warning("recent lock files left alone (someone may be running git in the checkout; they "
                    "are removed after %.0f s, the others after %.0f s) path=%s files=%s",
                    min_age, min_ref_age, path, ",".join(kept))
    return LockSweep(tuple(removed), tuple(kept))


def has_unpushed(repo: Repo, *, branch: str, remote_name: str) -> bool:
    """True when the local branch differs from what we last saw on the remote.

    A local check (no network): the commit timer uses it to skip remotes with nothing
    to send. A repository never pushed has no remote-tracking ref and answers True.
    """
    local = _get_ref(repo, _ref(branch))
    tracking = _get_ref(repo, f"refs/remotes/{remote_name}/{branch}".encode())
    return local is not None and local != tracking


def count_unpushed(repo: Repo, *, branch: str, remote_name: str, limit: int = 10_000) -> int:
    """Local commits not under the remote-tracking ref (at most ``limit``; no network).

    A repository never pushed counts its whole history (up to ``limit``).
    """
    local = _get_ref(repo, _ref(branch))
    if local is None:
        return 0
    tracking = _get_ref(repo, f"refs/remotes/{remote_name}/{branch}".encode())
    if local == tracking:
        return 0
    exclude = [tracking] if tracking is not None and tracking in repo.object_store else []
    return sum(1 for _ in repo.get_walker(include=[local], exclude=exclude, max_entries=limit))


def set_remote(repo: Repo, name: str, url: str, *, branch: str) -> bool:
    """Record the remote in ``.git/config`` so people browsing the checkout see it.

    ``url`` must already be free of credentials. Returns True when the config changed.
    """
    config = repo.get_config()
    remote, tracking = (b"remote", name.encode()), (b"branch", branch.encode())
    wanted = [
        (remote, b"url", url.encode()),
        (remote, b"fetch", f"+refs/heads/*:refs/remotes/{name}/*".encode()),
        (tracking, b"remote", name.encode()),
        (tracking, b"merge", _ref(branch)),
    ]
    changed = False
    for section, key, value in wanted:
        try:
            current = config.get(section, key)
        except KeyError:
            current = None
        if current != value:
            config.set(section, key, value)
            changed = True
    if changed:
        config.write_to_path()
    return changed


def remote_head(spec: RemoteSpec, *, branch: str, vendor: Any = None) -> str | None:
    """The remote branch's head (hex), or None when the branch does not exist yet.

    Raises:
        RemoteUnavailable: the remote cannot be reached, refuses us, or is no repository.
    """
    client, path = make_client(spec, vendor=vendor)
    try:
        refs = client.get_refs(path)
    except _network_errors() as exc:
        raise RemoteUnavailable(f"cannot read {spec.display}: {exc}") from exc
    finally:
        close = getattr(client, "close", None)
        if close:
            close()
    refs = getattr(refs, "refs", refs)
    sha = refs.get(_ref(branch))
    return sha.decode("ascii") if sha else None


class _RemoteMoved(Exception):
    def __init__(self, current: bytes | None):
        super().__init__("remote branch moved")
        self.current = current


def _network_errors() -> tuple[type[BaseException], ...]:
    import paramiko
    from dulwich.client import HTTPProxyUnauthorized, HTTPUnauthorized

    from gitsync.ssh import SSHError

    return (
        SSHError,
        paramiko.SSHException,
        GitProtocolError,
        HangupException,
        NotGitRepository,
        HTTPUnauthorized,
        HTTPProxyUnauthorized,
        OSError,
        EOFError,
    )


def _fetch_branch(repo: Repo, client: Any, path: str, ref: bytes) -> bytes | None:
    def determine_wants(refs: Mapping[bytes, bytes], depth: int | None = None) -> list[bytes]:
        sha = refs.get(ref)
        if sha and sha not in repo.object_store:
            return [sha]
        return []

    result = client.fetch(path, repo, determine_wants=determine_wants, ref_prefix=[ref])
    fsync_dirs([os.path.join(repo.controldir(), "objects", "pack")])  # before a ref names them
    refs = result.refs or {}
    sha = refs.get(ref)
    return sha or None


def _pending_chain(repo: Repo, local_head: bytes, remote_head: bytes | None) -> list[Commit]:
    """Our commits not on the remote, oldest first, along the first-parent chain."""
    exclude = [remote_head] if remote_head else []
    not_on_remote = {e.commit.id for e in repo.get_walker(include=[local_head], exclude=exclude)}
    chain: list[Commit] = []
    sha: bytes | None = local_head
    while sha is not None and sha in not_on_remote:
        commit = repo.object_store[sha]
        chain.append(commit)
        sha = commit.parents[0] if commit.parents else None
    chain.reverse()
    return chain


def _replay(store: Any, base_tree: bytes, parent_tree: bytes | None, tree: bytes) -> bytes:
    """``base_tree`` + the paths that changed between ``parent_tree`` and ``tree``.

    Ours win on those paths; every other path stays as in ``base_tree``. A deletion of a
    path the base no longer has (or has as a directory) is dropped; a file of the base
    in the way of one of our paths is replaced.
    """
    view = _TreeView(store, base_tree)
    changes: dict[bytes, tuple[int | None, bytes | None]] = {}
    for ch in tree_changes(store, parent_tree, tree):
        if ch.new is None or ch.new.path is None or ch.type == "delete":
            old_path = ch.old.path
            entry = view.lookup(old_path)
            if entry is not None and not stat.S_ISDIR(entry[0]):
                changes[old_path] = (None, None)
            continue
        if ch.old is not None and ch.old.path is not None and ch.old.path != ch.new.path:
            entry = view.lookup(ch.old.path)
            if entry is not None and not stat.S_ISDIR(entry[0]):
                changes[ch.old.path] = (None, None)
        new_path = ch.new.path
        if view.lookup(new_path) == (ch.new.mode, ch.new.sha):
            continue
        changes[new_path] = (ch.new.mode, ch.new.sha)
        blocker = view.blocking_file(new_path)
        if blocker is not None and blocker not in changes:
            changes[blocker] = (None, None)
    if not changes:
        return base_tree
    files_set = {p for p, (m, _) in changes.items() if m is not None}
    change_list = [
        (p, m, s)
        for p, (m, s) in changes.items()
        if not any(anc in files_set for anc in _ancestors(p))
    ]
    return commit_tree_changes(store, base_tree, change_list)


def _rebuild(repo: Repo, pending: list[Commit], remote_head: bytes) -> tuple[bytes, int]:
    """Rebuild ``pending`` on ``remote_head`` by construction; returns (new head, commits made).

    The new trees and commits are written (durably) before returning.
    """
    store = _Staged(repo.object_store)
    prev = remote_head
    prev_tree = store[remote_head].tree
    made = 0
    now = int(time.time())
    for old in pending:
        parent_tree = store[old.parents[0]].tree if old.parents else None
        new_tree = _replay(store, prev_tree, parent_tree, old.tree)
        if new_tree == prev_tree:
            log.debug("dropping commit already on remote commit=%s", old.id[:12].decode())
            continue
        commit = Commit()
        commit.tree = new_tree
        commit.parents = [prev]
        commit.author = old.author
        commit.author_time = old.author_time
        commit.author_timezone = old.author_timezone
        commit.committer = old.committer
        commit.commit_time = max(now, old.commit_time)
        commit.commit_timezone = old.commit_timezone
        commit.encoding = old.encoding
        commit.message = old.message
        store.add_object(commit)
        prev, prev_tree = commit.id, new_tree
        made += 1
    store.flush(repo)
    return prev, made


def _require_free_index(repo: Repo, where: str) -> None:
    """Refuse to rewrite the working tree while someone holds the index lock.

    Raises:
        RepositoryLocked: ``.git/index.lock`` exists.
    """
    if os.path.lexists(os.path.join(repo.controldir(), "index.lock")):
        raise RepositoryLocked(
            f"cannot rebuild on {where}: index.lock exists in {repo.controldir()} (someone may be "
            f"running git in the checkout); retried later, the lock is removed once older than "
            f"{STALE_LOCK_AGE:.0f} s",
            lock="index.lock",
        )


def _checkout_change(repo: Repo, old_commit: bytes | None, new_commit: bytes) -> None:
    """Bring working tree and index from ``old_commit``'s tree to ``new_commit``'s.

    Used after a rebuild on a moved remote and to adopt an existing remote branch: the
    trees come from someone else, so nothing here trusts them. Every file goes through
    ``worktree`` (no link or non-directory ancestor is followed, ``.git`` is refused),
    and no link is ever made: a link entry (mode 120000) becomes a regular file holding
    the link's target text, its index entry keeping mode 120000, as git does with
    ``core.symlinks=false``. A submodule entry becomes an empty directory. A path that
    cannot be checked out (refused, or something in the way) is left as it is, logged,
    and dropped from the index, so ``git status`` shows the difference.

    Only files we wrote are replaced: a path the old tree has. Whatever is at a path the
    remote adds (a person's untracked file, say) is kept, with a warning naming the path,
    unless it already holds the same bytes (then it is simply tracked).
    """
    store = repo.object_store
    old_tree = store[old_commit].tree if old_commit else None
    new_tree = store[new_commit].tree
    if old_tree == new_tree:
        return
    root = repo.path
    changes = list(tree_changes(store, old_tree, new_tree))
    index = repo.open_index(config=_local_config(repo))
    emptied: set[str] = set()
    # Removals first, so that a directory that becomes a file (or the reverse) is free.
    for change in changes:
        old = change.old
        if old is None or old.path is None or (change.new is not None and change.new.path == old.path
                                               and change.type == "modify"):
            continue
        if old.path in index:
            del index[old.path]
        rel = os.fsdecode(old.path)
        try:
            if S_ISGITLINK(old.mode or 0):
                worktree.remove_empty_dir(root, rel)
            else:
                worktree.delete_file(root, rel)
        except OSError as exc:
            log.warning("remote deletion not applied in the checkout path=%r reason=%s", rel, exc)
            continue
        emptied.update(_str_ancestors(rel))
    for directory in sorted(emptied, key=lambda d: d.count("/"), reverse=True):
        worktree.remove_empty_dir(root, directory)  # only when empty: keeps people's files
    for change in changes:
        new = change.new
        if new is None or new.path is None or new.mode is None or new.sha is None:
            continue
        rel = os.fsdecode(new.path)
        ours = change.old is not None and change.old.path == new.path  # the old tree had it
        try:
            if not validate_path(new.path, validate_path_element_default):
                raise worktree.PathRefused(rel, "not a usable name in a checkout")
            if S_ISGITLINK(new.mode):
                st = worktree.make_dirs(root, rel)
            else:
                data = store[new.sha].as_raw_string()
                executable = stat.S_ISREG(new.mode) and bool(new.mode & 0o111)
                st = worktree.write_file(root, rel, data, mode=0o755 if executable else 0o644,
                                         overwrite=ours, fsync=False)
        except FileExistsError:
            st = None if S_ISGITLINK(new.mode) else _same_bytes(root, rel, data)
            if st is None:
                log.warning("remote file not checked out: a file the service did not write is in "
                            "the way, kept as it is (move it away to get the remote's) path=%r", rel)
                if new.path in index:
                    del index[new.path]
                continue
        except OSError as exc:
            log.warning("remote file not checked out path=%r reason=%s", rel, exc)
            if new.path in index:
                del index[new.path]
            continue
        index[new.path] = index_entry_from_stat(st, new.sha, mode=new.mode)
    index.write()


def _same_bytes(root: str, rel: str, data: bytes) -> os.stat_result | None:
    """The ``stat`` of the regular file at ``rel`` when it holds exactly ``data``, else None."""
    try:
        st = worktree.lstat(root, rel)
        if st is None or not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
            return None
        found, st = worktree.read_file(root, rel)
    except OSError:  # a link on the way, gone, unreadable: not the same file
        return None
    return st if found == data else None


def _str_ancestors(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _count(repo: Repo, head: bytes, exclude: bytes | None) -> int:
    return sum(1 for _ in repo.get_walker(include=[head], exclude=[exclude] if exclude else []))


def _is_race(status: str) -> bool:
    """A refused update that means the remote moved after its advertisement."""
    text = status.lower()
    return any(marker in text for marker in _RACE_STATUS)


def _send(repo: Repo, client: Any, path: str, ref: bytes, new_head: bytes | None,
          accept: Any) -> tuple[bytes | None, str | None]:
    """One receive-pack exchange: update ``ref`` to ``new_head`` if ``accept(current)``.

    ``current`` is the remote's head as its ref advertisement states it, so no fetch is
    needed to know it. ``accept`` raising or returning False aborts before any pack is
    sent (:class:`_RemoteMoved`); when the remote already has ``new_head`` (or there is
    nothing to send) no update is requested.

    Returns:
        (the advertised head, the server's refusal text or None).
    """
    seen: list[bytes | None] = []

    def update_refs(refs: dict[bytes, bytes]) -> dict[bytes, bytes]:
        # our fast-forward check: send_pack itself would happily force-push
        current = refs.get(ref)
        seen.append(current)
        if not accept(current):
            raise _RemoteMoved(current)
        if new_head is None or current == new_head:
            return {}
        return {ref: new_head}

    def generate_pack_data(have: Any, want: Any, ofs_delta: bool = False, progress: Any = None) -> Any:
        return repo.generate_pack_data(have, want, ofs_delta=ofs_delta, progress=progress)

    result = client.send_pack(path, update_refs, generate_pack_data)
    status = (result.ref_status or {}).get(ref)
    return (seen[-1] if seen else None), status


def _close(client: Any) -> None:
    close = getattr(client, "close", None)
    if close is not None:
        close()


def _set_tracking(repo: Repo, tracking: bytes, sha: bytes, committer: bytes) -> None:
    """Remember where the remote branch is (a hint: a missed update costs one more push)."""
    try:
        repo.refs.set_if_equals(tracking, None, sha, committer=committer, message=b"update by push")
    except FileLocked:
        log.warning("remote-tracking ref is locked, not updated ref=%s", tracking.decode("utf-8", "replace"))


def push_without_fetch(
    repo: Repo,
    spec: RemoteSpec,
    *,
    branch: str,
    remote_name: str = "origin",
    vendor: Any = None,
    committer: bytes = REF_IDENTITY,
) -> PushResult:
    """Push our branch when the remote branch is where our history says; never fetches.

    The remote's ref advertisement (the first thing receive-pack sends) tells where its
    branch is. When the branch is absent, at our head, or at a commit of our history,
    the update is a fast-forward and is sent in the same exchange: one round trip, no
    fetch, no working-tree change. Otherwise nothing is sent and :class:`RemoteMoved`
    says that a fetch and rebuild (:func:`push_fast_forward`) are needed.

    Only the object store and refs are read and written, never the working tree or the
    index: the caller holds the repository's lock, not necessarily the folder's.

    Raises:
        RemoteMoved: the remote head is not in our history (someone else pushed), or
            our branch has no commit yet and the remote has one (to adopt).
        RemoteUnavailable: the remote could not be reached or read (commits stay local).
        PushRejected: the remote refused the update (commits stay local).
    """
    from dulwich.graph import can_fast_forward

    ref = _ref(branch)
    tracking = f"refs/remotes/{remote_name}/{branch}".encode()
    where = spec.display
    local_head = _get_ref(repo, ref)

    def accept(current: bytes | None) -> bool:
        if current is None or current == local_head:
            return True
        if local_head is None or current not in repo.object_store:
            return False
        return can_fast_forward(repo, current, local_head)

    client, path = make_client(spec, vendor=vendor)
    try:
        current, status = _send(repo, client, path, ref, local_head, accept)
    except _RemoteMoved as moved:
        head = moved.current.decode("ascii") if moved.current else None
        raise RemoteMoved(f"{branch} on {where} is at {head}, not in our history", remote_head=head) from None
    except SendPackError as exc:
        raise PushRejected(
            f"{where} rejected the pack for {branch}: {_describe(exc)}; commits stay local",
            our_head=local_head.decode("ascii") if local_head else None,
        ) from exc
    except _network_errors() as exc:
        raise RemoteUnavailable(f"pushing {branch} to {where} failed: {_describe(exc)}; commits stay local") from exc
    finally:
        _close(client)
    head_hex = current.decode("ascii") if current else None
    if status is not None:
        if _is_race(status):
            raise RemoteMoved(f"{branch} on {where} moved during the push ({status})", remote_head=head_hex)
        raise PushRejected(
            f"{where} refused the update of {branch}: {status}; commits stay local",
            remote_head=head_hex, our_head=local_head.decode("ascii") if local_head else None, permanent=True,
        )
    if local_head is None or current == local_head:
        if current is not None:
            _set_tracking(repo, tracking, current, committer)
        return PushResult("up-to-date", head_hex)
    count = _count(repo, local_head, current)
    _set_tracking(repo, tracking, local_head, committer)
    pushed = "created" if current is None else "pushed"
    log.info("pushed remote=%s branch=%s commits=%d status=%s", where, branch, count, pushed)
    return PushResult(pushed, local_head.decode("ascii"), count, 0)


def push_fast_forward(
    repo: Repo,
    spec: RemoteSpec,
    *,
    branch: str,
    remote_name: str = "origin",
    vendor: Any = None,
    attempts: int = 3,
    fetch_first: bool = False,
    committer: bytes = REF_IDENTITY,
) -> PushResult:
    """Publish our branch on the remote without ever forcing.

    First a push without fetch (:func:`push_without_fetch`, skipped with
    ``fetch_first``): when the remote branch is where our history has it, that is all.
    Otherwise only the branch is fetched (stored as ``refs/remotes/<remote_name>/<branch>``)
    and, if the remote moved, our unpushed commits are rebuilt on the remote head by
    construction (remote tree + the paths each of our commits changed; messages and
    authors kept); the local branch, working tree and index move to the rebuilt head,
    then we fast-forward. ``update_refs`` refuses unless the remote still points at the
    head we built on; a race is retried up to ``attempts`` times.

    When our branch has no commit yet and the remote has one, the remote branch is
    adopted (checked out) and nothing is pushed.

    The caller holds the folder lock: a rebuild rewrites the working tree.

    Raises:
        RemoteUnavailable: the remote could not be reached or read (commits stay local).
        PushRejected: the remote refused the update (commits stay local).
    """
    if not fetch_first:
        try:
            return push_without_fetch(repo, spec, branch=branch, remote_name=remote_name, vendor=vendor,
                                      committer=committer)
        except RemoteMoved as exc:
            log.info("remote moved, fetching it remote=%s branch=%s head=%s", spec.display, branch,
                     (exc.remote_head or "none")[:12])
    ref = _ref(branch)
    tracking = f"refs/remotes/{remote_name}/{branch}".encode()
    where = spec.display
    net_errors = _network_errors()
    last_reject: PushRejected | None = None
    for attempt in range(1, attempts + 1):
        client, path = make_client(spec, vendor=vendor)
        try:
            try:
                remote_head = _fetch_branch(repo, client, path, ref)
            except net_errors as exc:
                raise RemoteUnavailable(
                    f"fetching {branch} from {where} failed: {_describe(exc)}; commits stay local"
                ) from exc
            if remote_head:
                _set_tracking(repo, tracking, remote_head, committer)
            local_head = _get_ref(repo, ref)
            remote_hex = remote_head.decode("ascii") if remote_head else None
            if local_head is None:
                if remote_head:
                    _require_free_index(repo, where)
                    if not _move_ref(repo, ref, None, remote_head, committer=committer, message=b"adopt remote"):
                        raise GitError(f"branch {branch} appeared while adopting {where}")
                    _checkout_change(repo, None, remote_head)
                    log.info("adopted remote branch remote=%s branch=%s", where, branch)
                return PushResult("up-to-date", remote_hex, fetched=True)
            if local_head == remote_head:
                return PushResult("up-to-date", remote_hex, fetched=True)
            rebuilt = 0
            if remote_head is not None:
                from dulwich.graph import can_fast_forward

                if not can_fast_forward(repo, remote_head, local_head):
                    _require_free_index(repo, where)
                    pending = _pending_chain(repo, local_head, remote_head)
                    new_head, rebuilt = _rebuild(repo, pending, remote_head)
                    if not _move_ref(repo, ref, local_head, new_head, committer=committer,
                                     message=b"rebuild on remote"):
                        raise GitError(f"branch {branch} moved while rebuilding on {where}")
                    _checkout_change(repo, local_head, new_head)
                    log.info(
                        "rebuilt commits on moved remote remote=%s branch=%s rebuilt=%d",
                        where, branch, rebuilt,
                    )
                    local_head = new_head
                    if local_head == remote_head:
                        return PushResult("up-to-date", remote_hex, 0, 0, fetched=True)
            count = _count(repo, local_head, remote_head)
            try:
                _current, status = _send(repo, client, path, ref, local_head,
                                         lambda current, built_on=remote_head: current == built_on)
            except _RemoteMoved:
                status = "remote moved after the fetch"
            except SendPackError as exc:
                raise PushRejected(
                    f"{where} rejected the pack for {branch}: {_describe(exc)}; commits stay local",
                    remote_head=remote_hex, our_head=local_head.decode("ascii"),
                ) from exc
            except net_errors as exc:
                raise RemoteUnavailable(
                    f"pushing {branch} to {where} failed: {_describe(exc)}; commits stay local"
                ) from exc
            if status is not None:
                if status == "remote moved after the fetch" or _is_race(status):
                    last_reject = PushRejected(
                        f"{branch} on {where} moved during the push; commits stay local",
                        remote_head=remote_hex, our_head=local_head.decode("ascii"),
                    )
                    log.info("remote moved during push, retrying remote=%s attempt=%d", where, attempt)
                    continue
                raise PushRejected(
                    f"{where} refused the update of {branch}: {status}; commits stay local",
                    remote_head=remote_hex, our_head=local_head.decode("ascii"), permanent=True,
                )
            _set_tracking(repo, tracking, local_head, committer)
            pushed = "created" if remote_head is None else "pushed"
            log.info("pushed remote=%s branch=%s commits=%d status=%s", where, branch, count, pushed)
            return PushResult(pushed, local_head.decode("ascii"), count, rebuilt, fetched=True)
        finally:
            _close(client)
    assert last_reject is not None
    raise last_reject


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
