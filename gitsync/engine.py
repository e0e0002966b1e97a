"""Apply Relay folder changes to working trees and commit them.

The engine is where the pure parts (``ydoc`` decoding, ``plan`` diffing) meet the I/O
(``relay`` fetches, files on disk, ``state`` and ``gitrepo``).  Each folder has one lock,
held for a whole sync or commit, so one thread works on a folder at a time while other
folders proceed in parallel; document fetches inside one sync run on a bounded pool.

Every file operation goes through ``worktree`` (no link or non-directory ancestor is
ever followed); a path is marked for the next commit only after ``worktree.check``
accepted it. Only what the service wrote is replaced, moved over or deleted: a new
document or a rename onto something someone else put there is skipped with a reason.

A restart at any point is safe: files are replaced atomically, state is saved after the
files are written (a crash before that re-does the writes), and the paths changed since
the last commit are part of the saved state, so a commit lost to a crash is made on the
next cycle. Which files are ours survives a crash too: before a sync creates files it
saves the free paths it is about to use ("claims"); a file found at a claimed path after
a crash is ours, and one no document ends up owning is removed.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import gitrepo, worktree, ydoc
from .attribution import Attribution
from .config import Connector, ConnectorsConfig, Settings
from .fetch import FetchPool, Lane
from .heap import release_free_heap
from .ids import compound_id
from .plan import Delete, Mkdir, Move, Rmdir, Tracked, Write, diff_folders, mass_deletion
from .relay import NotFound, RelayClient, RelayError, TooLarge, Unauthorized, Unavailable
from .state import DataDirLock, FileRecord, FolderState, HeldDeletion, StateRegistry

__all__ = ["Engine", "SyncReport", "SyncAborted", "describe_changes"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
TMP_MARK = worktree.TMP_PREFIX
IN_THE_WAY = "something the service did not write is in the way"
# A held mass deletion is applied when a read at least this long after the first
# one still shows it (or at once when the operator confirms).
HOLD_CONFIRM_SECONDS = 60.0
SUBJECT_MAX_ITEMS = 10
SAVE_EVERY = 500  # documents written between state saves during a long sync
PACK_CHECK_EVERY = 50  # commits per folder between checks for loose objects to pack
# Folder indexes at least this large give the heap of their decoding back (a few ms).
TRIM_AFTER_ENTRIES = 1000


class SyncAborted(Exception):
    """A folder sync could not run at all (folder unreadable, bad credentials)."""


@dataclass
class SyncReport:
    """What one sync did to one folder; ``failed`` lists documents to retry later."""

    connector: Connector
    created: int = 0
    updated: int = 0
    renamed: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path or doc, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # transient: retry later
    unknown: list[str] = field(default_factory=list)  # doc ids not in this folder
    held: str | None = None
    commit: str | None = None
    # Who wrote the folder document's change this sync applies: credited with the
    # deletions, renames and attachments it causes, once per path (gitsync.attribution).
    index_writers: dict[str, int] = field(default_factory=dict)
    index_credited: set[str] = field(default_factory=set)

    @property
    def changed(self) -> int:
        return self.created + self.updated + self.renamed + self.deleted

    def summary(self) -> str:
        parts = [
            f"{self.created} created",
            f"{self.updated} updated",
            f"{self.renamed} renamed",
            f"{self.deleted} deleted",
        ]
        text = ", ".join(parts)
        if self.skipped:
            text += f", {len(self.skipped)} skipped"
        if self.failed:
            text += f", {len(self.failed)} failed"
        if self.held:
            text += " (mass deletion held)"
        commit = self.commit[:10] if self.commit else "no commit"
        return f"{self.connector.name}: {text}; {commit}"


def describe_changes(changes: list[list[str]]) -> str:
    """Commit message: a subject naming the changes (summarized past a few) and a body."""
    verbs = {"add": "Add", "update": "Update", "rename": "rename", "delete": "delete"}
    items = []
    for change in changes:
        verb, path = change[0], change[1]
        if verb == "rename" and len(change) > 2:
            items.append((verb, f"{path} -> {change[2]}"))
        else:
            items.append((verb, path))
    if not items:
        return "Sync from Relay"
    if len(items) <= SUBJECT_MAX_ITEMS:
        words = [f"{verbs.get(v, v).lower()} {what}" for v, what in items]
        subject = ", ".join(words)
    else:
        counts: dict[str, int] = {}
        for verb, _ in items:
            counts[verb] = counts.get(verb, 0) + 1
        words = [f"{verb} {n} file{'s' if n != 1 else ''}" for verb, n in counts.items()]
        subject = ", ".join(words)
    subject = subject[0].upper() + subject[1:]
    body = "\n".join(f"- {verbs.get(v, v).lower()} {what}" for v, what in items[:500])
    if len(items) > 500:
        body += f"\n- ... and {len(items) - 500} more"
    return f"{subject}\n\n{body}\n"


@dataclass(frozen=True)
class _Staged:
    """An attachment downloaded to a temporary file in the repository, not yet in place."""

    path: Path  # a TMP_MARK name in the repository directory (same filesystem: atomic rename)
    sha256: str
    size: int


@dataclass
class _Fetched:
    doc_id: str
    data: bytes | None = None
    file: _Staged | None = None  # attachments: the bytes are on disk, not in memory
    update_sha: str | None = None
    ticket: int = 0  # taken when the fetch started: a later ticket saw a newer document
    skip: str | None = None  # a reason not to write (not an error)
    error: str | None = None  # transient failure
    permanent: bool = False
    authorship: ydoc.Authorship | None = None  # text and canvas documents


def _discard(results: Iterable[_Fetched]) -> None:
    """Remove the temporary files of fetched attachments that were not put in place."""
    for fetched in results:
        if fetched.file is not None:
            try:
                fetched.file.path.unlink(missing_ok=True)
            except OSError as exc:  # left for the start-up sweep of TMP_MARK files
                log.warning("cannot remove a temporary file path=%s error=%s",
                            fetched.file.path, exc.strerror or exc)
            fetched.file = None


def _place(staged: _Staged, full: Path) -> None:
    """Move a staged attachment to ``full`` atomically (not fsync'd: see ``_write_file``)."""
    os.chmod(staged.path, 0o644)  # mkstemp made it 0600
    full.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged.path, full)


def _remove_write_debris(root: Path) -> None:
    """Delete half-written temporary files an interrupted atomic write left behind.

    Only ``<TMP_MARK>*.tmp`` names (from ``worktree.write_file``): the planner's
    temporary names for swaps carry no ``.tmp`` suffix and may hold a document mid-move.
    """
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):  # never descends into a link
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames:
            if name.startswith(TMP_MARK) and name.endswith(".tmp"):
                rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
                try:
                    if worktree.delete_file(root, rel):
                        log.warning("removed a half-written file path=%s", os.path.join(dirpath, name))
                except worktree.PathRefused:
                    pass  # its directory became a link meanwhile: not ours to touch


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(repo_root: Path, rel: str) -> str | None:
    """sha256 of the regular file at ``rel`` (never read through a link, read in chunks:
    an attachment may be hundreds of MB), or None when there is none."""
    try:
        return worktree.hash_file(repo_root, rel)[0]
    except OSError:
        return None


class Engine:
    """Syncs connectors' folders into their repositories; thread-safe per folder."""

    def __init__(
        self,
        settings: Settings,
        relay: RelayClient,
        connectors: ConnectorsConfig,
        *,
        hold_confirm_seconds: float = HOLD_CONFIRM_SECONDS,
        lock_timeout: float = 0.0,
    ):
        """Raises DataDirBusy: another process works on the same data directory."""
        self._dir_lock = DataDirLock(settings.data_dir)
        self._dir_lock.acquire(lock_timeout)
        self.settings = settings
        self.relay = relay
        self.connectors = connectors
        self.states = StateRegistry(settings.data_dir)
        self.attribution = Attribution(self.states, connectors.authors, settings.author)
        self.hold_confirm_seconds = hold_confirm_seconds
        self._locks: dict[tuple[str, str], threading.RLock] = {}
        self._repo_locks: dict[tuple[str, str], threading.RLock] = {}
        self._left_out: dict[tuple[str, str], dict[str, str]] = {}
        self._repos: dict[tuple[str, str], object] = {}
        self._meta_lock = threading.Lock()
        # Interactive fetches (webhooks, events) always find a free thread: bulk work
        # (startup syncs, reconciles) may take all but two of them.
        self._pool = FetchPool(max(settings.fetch_concurrency, 3) + 2,
                               bulk_limit=max(settings.fetch_concurrency, 3))
        self._tickets = itertools.count(1)
        # Newest fetch ticket applied per document and per folder index: a result that
        # was fetched before one already applied is older and is dropped.
        self._applied: dict[tuple[str, str], int] = {}
        self.on_change: Callable[[Connector], None] | None = None
        self._doc_index: dict[tuple[str, str], tuple[str, str]] = {}
        # New documents a full sync is writing, per folder: (sync ticket, doc -> (entry,
        # path)). A webhook for one of them is served at once (see sync_docs), not after
        # the whole sync, which for a big folder's first sync takes minutes.
        self._arriving: dict[tuple[str, str], tuple[int, dict[str, tuple[ydoc.Entry, str]]]] = {}
        self._commits_since_pack: dict[tuple[str, str], int] = {}
        # Index entries of committed paths not written yet (commit(defer_index=True)).
        self._index_pending: dict[tuple[str, str], dict[bytes, gitrepo.IndexUpdate]] = {}
        for connector in connectors.connectors:
            self._index_folder(connector, self._folder_state(connector))

    # --- plumbing -------------------------------------------------------------------

    def close(self) -> None:
        self._pool.close()
        for connector in self.connectors.connectors:
            try:
                self.refresh_index(connector)
            except Exception as exc:  # only a convenience for people using git
                log.warning("index not refreshed relay=%s folder=%s error=%s",
                            connector.relay_id, connector.folder_id, exc)
        with self._meta_lock:
            for repo in self._repos.values():
                repo.close()  # type: ignore[attr-defined]
            self._repos.clear()
        self.states.close()
        self._dir_lock.release()

    def lock(self, connector: Connector) -> threading.RLock:
        """The folder's lock; re-entrant so a caller may hold it across engine calls."""
        with self._meta_lock:
            lock = self._locks.get(connector.key)
            if lock is None:
                lock = self._locks[connector.key] = threading.RLock()
            return lock

    def repo_lock(self, connector: Connector) -> threading.RLock:
        """The lock of the folder's repository (object store, refs, index).

        A Dulwich repository is not thread-safe. Committing takes the folder lock, then
        this one; a push that leaves the working tree alone takes only this one, so the
        folder's documents keep syncing while it waits on the network.
        """
        with self._meta_lock:
            lock = self._repo_locks.get(connector.key)
            if lock is None:
                lock = self._repo_locks[connector.key] = threading.RLock()
            return lock

    def repo(self, connector: Connector):
        """The connector's repository, created on first use (caller holds the lock)."""
        with self._meta_lock:
            repo = self._repos.get(connector.key)
            if repo is None:
                repo_dir = self.settings.repo_dir(connector)
                gitrepo.clear_stale_locks(repo_dir)  # we hold the data-dir lock: any is a dead process's
                _remove_write_debris(repo_dir)
                repo = gitrepo.open_or_init(repo_dir, branch=connector.branch)
                if connector.url:
                    spec = gitrepo.parse_remote_url(connector.url, base_dir=self.settings.data_dir)
                    if gitrepo.set_remote(repo, connector.remote_name, spec.display, branch=connector.branch):
                        log.info("remote configured relay=%s folder=%s remote=%s url=%s",
                                 connector.relay_id, connector.folder_id, connector.remote_name, spec.display)
                self._repos[connector.key] = repo
                if gitrepo.head_commit(repo, connector.branch) is None:
                    # A new or changed branch: whatever we track goes into its first commit.
                    state = self._folder_state(connector)
                    state.add_dirty(self._repo_path(connector, rec.path)
                                    for rec in state.files.values() if rec.type != "folder")
            return repo

    def _folder_state(self, connector: Connector) -> FolderState:
        return self.states.relay(connector.relay_id).folder(connector.folder_id)

    def _save(self, connector: Connector) -> None:
        self.states.relay(connector.relay_id).save()

    def _index_folder(self, connector: Connector, state: FolderState) -> None:
        with self._meta_lock:
            for key in [k for k, v in self._doc_index.items() if v == connector.key]:
                del self._doc_index[key]
            for doc_id in state.files:
                self._doc_index[(connector.relay_id, doc_id)] = connector.key
            for doc_id in self._arriving.get(connector.key, (0, {}))[1]:
                self._doc_index[(connector.relay_id, doc_id)] = connector.key

    def _arrival(self, connector: Connector, doc_id: str) -> tuple[ydoc.Entry, str] | None:
        """The entry and path of a document a running full sync is about to create."""
        with self._meta_lock:
            return self._arriving.get(connector.key, (0, {}))[1].get(doc_id)

    def locate(self, relay_id: str, doc_id: str) -> tuple[Connector, str] | None:
        """Which connector a document belongs to: ``(connector, "folder"|"doc")``."""
        for connector in self.connectors.connectors:
            if connector.relay_id == relay_id and connector.folder_id == doc_id:
                return connector, "folder"
        with self._meta_lock:
            key = self._doc_index.get((relay_id, doc_id))
        if key is None:
            return None
        connector = self.connectors.find(*key)
        return (connector, "doc") if connector else None

    def pending_paths(self, connector: Connector) -> int:
        return len(self._folder_state(connector).dirty)

    def folder_state(self, connector: Connector) -> FolderState:
        return self._folder_state(connector)

    def _repo_path(self, connector: Connector, rel: str) -> str:
        return f"{connector.prefix}/{rel}" if connector.prefix else rel

    def _refused(self, connector: Connector, path: str, exc: worktree.PathRefused,
                 report: SyncReport) -> None:
        """Report a path ``worktree`` refused (a link or a file on its way): nothing was done."""
        reason = f"{exc} ({IN_THE_WAY})"
        log.warning("path refused relay=%s folder=%s path=%r reason=%s",
                    connector.relay_id, connector.folder_id, path, exc.reason)
        report.skipped.append((path, reason))

    def _owns(self, state: FolderState, rec: FileRecord | None, path: str) -> bool:
        """True when the file at ``path`` is one we wrote: recorded there, or claimed."""
        if rec is not None and rec.type != "folder" and rec.path == path and rec.sha256 is not None:
            return True
        return path in state.claimed

    def _claim(self, connector: Connector, state: FolderState, ops: list) -> set[str]:
        """Save the free paths the ops may create, before any is created.

        Returns the claims an interrupted earlier sync left behind (files there may be
        ours without a record): :meth:`_release_claims` settles them after the ops.
        """
        leftover = set(state.claimed)
        repo_root = self.settings.repo_dir(connector)
        wanted = {op.dst if isinstance(op, Move) else op.path if isinstance(op, Write) else None for op in ops}
        wanted.discard(None)
        # by directory: one walk per directory, not per path (a first sync claims them all)
        with worktree.Reader(repo_root) as reader:
            for path in sorted(wanted - state.claimed, key=lambda p: p.rpartition("/")[0]):
                try:
                    free = reader.lstat(self._repo_path(connector, path)) is None
                except OSError:
                    free = False  # refused: the op reports it
                if free:
                    state.claimed.add(path)
        if len(state.claimed) > len(leftover):
            self._save(connector)  # durable before the first file is written
        return leftover

    def _release_claims(self, connector: Connector, state: FolderState, leftover: set[str]) -> None:
        """Forget this sync's claims; remove files an interrupted sync left unowned.

        A file at a leftover claim that no document owns now was written by a sync that
        died before saving what it did (the document moved or went away since): it is
        ours, and nothing would ever remove it otherwise.
        """
        owned = {rec.path for rec in state.files.values() if rec.type != "folder" and rec.sha256}
        repo_root = self.settings.repo_dir(connector)
        for path in sorted(leftover):
            if path in owned:
                continue
            rel = self._repo_path(connector, path)
            try:
                worktree.check(repo_root, rel)
                found = worktree.lstat(repo_root, rel)
            except OSError:
                continue
            if found is not None and stat.S_ISREG(found.st_mode):
                state.add_dirty([rel])
                if worktree.delete_file(repo_root, rel):
                    log.warning("removed a file an interrupted sync left behind relay=%s folder=%s path=%r",
                                connector.relay_id, connector.folder_id, path)
        state.claimed = set()

    # --- syncing --------------------------------------------------------------------

    def sync_folder(
        self,
        connector: Connector,
        *,
        full: bool = True,
        confirm_deletions: bool = False,
        progress: Progress | None = None,
        lane: Lane | None = None,
    ) -> SyncReport:
        """Read the folder index, apply renames/moves/deletes, fetch content, write files.

        ``full`` refreshes the content of every document (startup, reconcile, CLI);
        otherwise only new or changed documents are fetched (a folder webhook). ``lane``
        defaults to bulk for a full sync and interactive otherwise.

        The folder lock is never held across network I/O: the index is read first, the
        structure (deletes, moves, folders) is applied under the lock, then documents are
        fetched outside it and each is written under the lock as soon as it arrives. A
        result older than one already written for the same document (a webhook's fetch
        that overtook this sync) is dropped, and so is an index older than one already
        applied. Memory is bounded by the fetch window, not by the folder.

        Raises:
            SyncAborted: the folder document cannot be read or decoded.
            Unauthorized: the Relay Server refused the API key.
        """
        lane = lane or (Lane.BULK if full else Lane.INTERACTIVE)
        report = SyncReport(connector)
        ticket = next(self._tickets)
        entries, index_seen = self._read_index(connector)
        with self.lock(connector):
            self.repo(connector)
            state = self._folder_state(connector)
            index_key = (connector.key, "")
            stale = self._applied.get(index_key, 0) > ticket
            if not stale:
                self._applied[index_key] = ticket
            report.index_writers = self.attribution.writers(connector, connector.folder_id, index_seen)
            previous = {
                doc_id: Tracked(rec.path, rec.type, rec.hash) for doc_id, rec in state.files.items()
            }
            plan = diff_folders(previous, entries, prefix=connector.prefix,
                                allow_repository_config=connector.allow_repository_config)
            for path, reason in plan.rejected:
                log.warning("unsafe path skipped relay=%s folder=%s path=%r reason=%s",
                            connector.relay_id, connector.folder_id, path, reason)
                report.skipped.append((path, reason))
            current = {entry.id: entry for entry in plan.accepted.values()}
            leftover: set[str] | None = None
            if stale:
                # a newer index was applied meanwhile: its structure stands; only refresh content
                ops, writes = [], {}
            else:
                ops = self._guard_deletions(connector, state, previous, plan, confirm_deletions, report)
                writes = {op.doc_id: op for op in ops if isinstance(op, Write)}
                # Claimed before anything is created, released once the new files exist.
                leftover = self._claim(connector, state, ops)
                refetch = self._apply_ops(connector, state, [op for op in ops if not isinstance(op, Write)],
                                          report)
                for doc_id in refetch:
                    if doc_id in current and doc_id not in writes:
                        writes[doc_id] = Write(doc_id, state.files[doc_id].path, current[doc_id], "moved")
            targets = {doc_id: op.entry for doc_id, op in writes.items()}
            if full:
                for doc_id in state.files:
                    entry = current.get(doc_id)
                    if entry is not None and entry.kind != "folder":
                        targets.setdefault(doc_id, entry)
            if not report.held and not stale:
                self._track_folders(state, current)
                self.attribution.keep(connector, connector.folder_id, index_seen)
            jobs = self._fetch_jobs(connector, state, targets, force=set(writes), verify=full)
            self._flush(connector)
            arriving = {d: (op.entry, op.path) for d, op in writes.items() if d not in state.files}
            with self._meta_lock:
                self._arriving[connector.key] = (ticket, arriving)
            self._index_folder(connector, state)
        self._notify(connector, report)
        try:
            self._fetch_and_apply(connector, jobs, report, lane=lane, progress=progress,
                                  paths={d: op.path for d, op in writes.items()}, from_index=set(writes))
        finally:
            with self._meta_lock:
                if self._arriving.get(connector.key, (0,))[0] == ticket:
                    del self._arriving[connector.key]
        with self.lock(connector):
            if leftover is not None:
                self._release_claims(connector, state, leftover)
            state.last_sync = time.time()
            state.index_entries = len(entries)
            self._flush(connector)
            self._index_folder(connector, state)
        log.info("folder synced relay=%s folder=%s created=%d updated=%d renamed=%d deleted=%d "
                 "skipped=%d failed=%d", connector.relay_id, connector.folder_id, report.created,
                 report.updated, report.renamed, report.deleted, len(report.skipped), len(report.failed))
        return report

    def _read_index(self, connector: Connector) -> tuple[dict[str, ydoc.Entry], ydoc.Authorship]:
        try:
            update = self.relay.get_update(compound_id(connector.relay_id, connector.folder_id))
            entries, authorship = ydoc.read_folder(update), ydoc.read_authorship(update)
        except Unauthorized:
            raise
        except NotFound as exc:
            raise SyncAborted(
                f"shared folder {connector.folder_id} not found on relay {connector.relay_id}: "
                "check the relay and shared folder ids (git_connectors.toml, or --relay-id/--folder-id)"
            ) from exc
        except (RelayError, ydoc.CorruptUpdate) as exc:
            raise SyncAborted(f"cannot read folder {connector.name}: {exc}") from exc
        if len(entries) >= TRIM_AFTER_ENTRIES:
            # The decoded documents are gone; without this the heap they held stays
            # resident through the sync and adds to the commit's own peak.
            del update
            release_free_heap()
        return entries, authorship

    def _guard_deletions(self, connector, state: FolderState, previous, plan, confirm: bool, report):
        """Hold a sudden mass deletion (invariant 6 in docs/architecture.md) unless it is confirmed."""
        reason = mass_deletion(
            previous,
            plan,
            ratio=self.settings.mass_delete_ratio,
            minimum=self.settings.mass_delete_min,
        )
        if reason is None:
            if state.held:
                log.info("held deletion withdrawn relay=%s folder=%s", connector.relay_id, connector.folder_id)
            state.held_deletion = None
            return list(plan.ops)
        doomed = tuple(sorted(op.doc_id for op in plan.ops if isinstance(op, Delete)))
        now = time.time()
        held = state.held_deletion
        if confirm or (
            held
            and set(held.docs) <= set(doomed)
            and now - (held.since if held.since is not None else now) >= self.hold_confirm_seconds
        ):
            log.warning("mass deletion confirmed, applying relay=%s folder=%s files=%d",
                        connector.relay_id, connector.folder_id, len(doomed))
            state.held_deletion = None
            return list(plan.ops)
        since = held.since if held and held.since is not None and set(held.docs) == set(doomed) else now
        state.held_deletion = HeldDeletion(reason=reason, since=since, count=len(doomed), docs=doomed)
        report.held = reason
        log.error(
            "mass deletion held, not applied relay=%s folder=%s files=%d reason=%s (applied when a "
            "read %.0f s later confirms it; or run: cli.py sync --relay-id %s --folder-id %s "
            "--confirm-deletions, with ADMIN_TOKEN set while the service runs)",
            connector.relay_id, connector.folder_id, len(doomed), reason, self.hold_confirm_seconds,
            connector.relay_id, connector.folder_id,
        )
        # Freeze the folder's structure while the index is suspect: no delete, move or new
        # file (a partial plan can clobber files: a rename chain through a held path).
        # Edits of files at their current paths still sync.
        return []

    def _apply_ops(self, connector, state: FolderState, ops, report: SyncReport) -> set[str]:
        """Apply the plan's structure in order; returns doc ids whose file vanished and must
        be re-fetched. Writes are not here: content is written as it arrives.

        An op that the filesystem refuses (a file or folder we did not write in the way)
        skips that one document with a reason; the rest of the folder proceeds.
        """
        refetch: set[str] = set()
        origins: dict[str, str] = {}
        for op in ops:
            try:
                self._apply_op(connector, state, op, report, refetch, origins)
            except OSError as exc:
                where = getattr(op, "dst", None) or getattr(op, "path", "")
                reason = f"cannot {type(op).__name__.lower()}: {exc.strerror or exc} ({IN_THE_WAY})"
                log.warning("operation skipped relay=%s folder=%s path=%s reason=%s",
                            connector.relay_id, connector.folder_id, where, reason)
                report.skipped.append((where, reason))
        return refetch

    def _apply_op(self, connector, state: FolderState, op, report: SyncReport,
                  refetch: set[str], origins: dict[str, str]) -> None:
        """Apply one op. Containment (``worktree.check``) comes before a path is marked dirty.

        Raises:
            OSError: the file system refused (something in the way); nothing was marked.
        """
        repo_root = self.settings.repo_dir(connector)
        if isinstance(op, Delete):
            rec = state.files.get(op.doc_id)
            if rec is not None and rec.type != "folder":
                rel = self._repo_path(connector, op.path)
                try:
                    worktree.check(repo_root, rel)
                except worktree.PathRefused as exc:
                    self._refused(connector, op.path, exc, report)
                    state.files.pop(op.doc_id, None)
                    return
                # Dirty even when the file is already gone (a crash after the unlink but
                # before the state was saved): the commit must still record the deletion.
                state.add_dirty([rel])
                self._credit_index(connector, state, report, [op.path])
                if worktree.delete_file(repo_root, rel):
                    report.deleted += 1
                    state.note("delete", op.path)
            state.files.pop(op.doc_id, None)
        elif isinstance(op, Move):
            rec = state.files.get(op.doc_id)
            if rec is None:
                return
            src, dst = self._repo_path(connector, op.src), self._repo_path(connector, op.dst)
            worktree.check(repo_root, dst)  # raises: the op is skipped, the record stays true
            try:
                worktree.check(repo_root, src)
                src_refused = None
            except worktree.PathRefused as exc:
                src_refused = exc  # the old file cannot be reached: write afresh at dst
            if worktree.lstat(repo_root, dst) is not None:
                if not self._owns(state, None, op.dst):
                    raise FileExistsError(errno.EEXIST, "something is already at the new path", op.dst)
                worktree.delete_file(repo_root, dst)  # ours, left by an interrupted sync
            if src_refused is not None:
                self._refused(connector, op.src, src_refused, report)
            origins.setdefault(op.doc_id, op.src)
            marked = [dst] if src_refused is not None else [src, dst]
            state.add_dirty(p for p in marked if TMP_MARK not in p)
            self._credit_index(connector, state, report,
                               [p for p in ((op.dst,) if src_refused is not None else (op.src, op.dst))
                                if TMP_MARK not in p])
            if src_refused is not None or not worktree.move(repo_root, src, dst):
                # No file of ours moved: the document is fetched and written at dst, where
                # nothing is ours until we write it (the claim covers this sync only).
                rec.sha256 = None
                refetch.add(op.doc_id)
            rec.path = op.dst
            if TMP_MARK not in op.dst:
                original = origins.pop(op.doc_id)
                if original != op.dst:
                    report.renamed += 1
                    state.note("rename", original, op.dst)
        elif isinstance(op, Mkdir):
            worktree.make_dirs(repo_root, self._repo_path(connector, op.path))
        elif isinstance(op, Rmdir):
            self._rmdir(connector, op.path)

    @staticmethod
    def _track_folders(state: FolderState, current: dict[str, ydoc.Entry]) -> None:
        """Folder records follow the index (they hold no content, only paths)."""
        for doc_id in [d for d, rec in state.files.items() if rec.type == "folder"]:
            del state.files[doc_id]
        for doc_id, entry in current.items():
            if entry.kind == "folder":
                state.files[doc_id] = FileRecord(path=entry.path, type="folder")

    def _rmdir(self, connector: Connector, path: str) -> None:
        # only when empty: never removes a person's files; never through a link
        worktree.remove_empty_dir(self.settings.repo_dir(connector), self._repo_path(connector, path))

    def sync_docs(self, connector: Connector, doc_ids: Iterable[str], *,
                  lane: Lane = Lane.INTERACTIVE) -> SyncReport:
        """Re-fetch known documents of the folder (a content webhook) and write changes.

        The fetch runs outside the folder lock; each result is written under it.
        """
        report = SyncReport(connector)
        with self.lock(connector):
            self.repo(connector)
            state = self._folder_state(connector)
            targets: dict[str, ydoc.Entry] = {}
            paths: dict[str, str] = {}
            for doc_id in doc_ids:
                rec = state.files.get(doc_id)
                arrival = self._arrival(connector, doc_id) if rec is None else None
                if arrival is not None:
                    # listed by the folder and not written yet: a full sync is on its way to
                    # it; fetched now (of the two reads, the later one is written)
                    targets[doc_id], paths[doc_id] = arrival
                    continue
                if rec is None or rec.type == "folder":
                    report.unknown.append(doc_id)
                    continue
                targets[doc_id] = ydoc.Entry(path=rec.path, id=doc_id, type=rec.type, hash=rec.hash)
            jobs = self._fetch_jobs(connector, state, targets, force=set())
        if jobs:
            self._fetch_and_apply(connector, jobs, report, lane=lane, paths=paths)
            with self.lock(connector):
                state.last_sync = time.time()
                self._flush(connector)
        return report

    def _notify(self, connector: Connector, report: SyncReport) -> None:
        if self.on_change is not None and report.changed:
            self.on_change(connector)

    def _fetch_one(self, connector: Connector, entry: ydoc.Entry, rec: FileRecord | None,
                   known_sha: str | None, rel: str, force: bool, verify: bool,
                   relay_down: threading.Event | None = None) -> _Fetched:
        out = _Fetched(entry.id, ticket=next(self._tickets))
        if relay_down is not None and relay_down.is_set():
            out.error = "relay unavailable during this sync; retried later"
            return out
        repo_root = self.settings.repo_dir(connector)
        # Only a regular file reached without a link counts (a refused path: the write
        # reports it); one walk per document, this runs for every document of a folder.
        if verify and rec is not None and rec.sha256:
            try:
                digest = _file_sha256(repo_root, rel)
                exists, intact = digest is not None, digest == rec.sha256
            except OSError:
                exists = intact = False
        else:
            try:
                st = worktree.lstat(repo_root, rel)
            except OSError:
                st = None
            exists = intact = st is not None and stat.S_ISREG(st.st_mode)
        cid = compound_id(connector.relay_id, entry.id)
        kind = entry.kind
        try:
            if kind == "attachment":
                if not entry.hash:
                    out.skip = "attachment has no content hash yet"
                    return out
                if not force and rec is not None and rec.hash == entry.hash and intact:
                    out.skip = "unchanged"
                    return out
                # Staged in the repository directory: placing it is then one rename.
                tmp, sha, size = self.relay.download_attachment_to(
                    connector.relay_id, entry.id, entry.hash, self.settings.repo_dir(connector),
                    folder_id=connector.folder_id, prefix=TMP_MARK,
                )
                out.file = _Staged(tmp, sha, size)
                return out
            update = self.relay.get_update(cid)
            out.update_sha = _sha256(update)
            if not force and known_sha == out.update_sha and intact:
                out.skip = "unchanged"
                return out
            document = ydoc.read_document(update, "canvas" if kind == "canvas" else "text")
            if document.never_written and exists:
                # registered but not uploaded yet: never blank a file on such a read
                out.skip = "document not uploaded yet; keeping the file"
                out.update_sha = None
                return out
            out.data, out.authorship = document.content, document.authorship
        except Unauthorized:
            raise
        except NotFound:
            out.error, out.permanent = "document not found on the relay", True
        except ydoc.CorruptUpdate as exc:
            out.error, out.permanent = f"corrupt document: {exc}", True
        except TooLarge as exc:  # permanent for this version; a smaller one syncs
            out.error, out.permanent = str(exc), True
        except Unavailable as exc:
            out.error = str(exc)
            if relay_down is not None:
                relay_down.set()  # the rest of this round fails fast instead of retrying each
        except RelayError as exc:
            out.error = str(exc)
        except OSError as exc:  # the attachment's temporary file (e.g. a full disk)
            out.error = f"cannot store the download: {exc.strerror or exc}"
        return out

    def _fetch_jobs(self, connector, state: FolderState, targets: dict[str, ydoc.Entry], *,
                    force: set[str], verify: bool = False) -> list[tuple]:
        """What to fetch, with what is known of each document now (caller holds the lock)."""
        hashes = self.states.relay(connector.relay_id).doc_hashes
        jobs = []
        for doc_id, entry in targets.items():
            rec = state.files.get(doc_id)
            path = rec.path if rec is not None and rec.type != "folder" else entry.path
            cid = compound_id(connector.relay_id, doc_id)
            jobs.append((entry, rec, hashes.get(cid), self._repo_path(connector, path), doc_id in force, verify))
        return jobs

    def _fetch_and_apply(self, connector, jobs: list[tuple], report: SyncReport, *,
                         lane: Lane, progress: Progress | None = None,
                         paths: dict[str, str] | None = None,
                         from_index: set[str] | None = None) -> None:
        """Fetch and decode on the pool, writing each result under the lock as it arrives.

        ``verify`` jobs (full syncs) also re-read the file: bytes that differ from what we
        wrote (edited in the checkout, or by a rebuild) are rewritten from the Relay.
        """
        paths = paths or {}
        total = len(jobs)
        if progress:
            progress(0, total)
        relay_down = threading.Event()  # set by the first fetch that gives up on the relay
        state = self._folder_state(connector)
        changed_before = report.changed
        since_save = 0

        def fetch(job: tuple) -> _Fetched:
            return self._fetch_one(connector, *job, relay_down=relay_down)

        done = 0
        for job, fetched in self._pool.stream(fetch, jobs, lane=lane):
            entry = job[0]
            try:
                with self.lock(connector):
                    key = (connector.key, entry.id)
                    if fetched.ticket < self._applied.get(key, 0):
                        continue  # a newer fetch of this document was written meanwhile
                    self._applied[key] = fetched.ticket
                    rec = state.files.get(entry.id)
                    path = paths.get(entry.id) if rec is None or rec.type == "folder" else rec.path
                    self._store(connector, state, entry, fetched, report, path=path,
                                from_index=entry.id in (from_index or ()))
                    since_save += 1
                    if since_save >= SAVE_EVERY:
                        self._flush(connector)
                        since_save = 0
            finally:
                _discard([fetched])
            if report.changed != changed_before:
                changed_before = report.changed
                self._notify(connector, report)
            done += 1
            if progress:
                progress(done, total)

    def _store(self, connector, state: FolderState, entry: ydoc.Entry, fetched: _Fetched,
               report: SyncReport, *, path: str | None = None, from_index: bool = False) -> None:
        """Write one fetched document (or account for why it is not written).

        ``from_index``: the write comes from the folder document's change (a new entry,
        an attachment's new hash): its writers are credited when the document names nobody.
        """
        rec = state.files.get(entry.id)
        if path is None:
            path = rec.path if rec is not None and rec.type != "folder" else entry.path
        if fetched.error:
            log.warning("document skipped relay=%s folder=%s doc=%s path=%s reason=%s",
                        connector.relay_id, connector.folder_id, entry.id, path, fetched.error)
            (report.skipped if fetched.permanent else report.failed).append((path, fetched.error))
            return
        if fetched.skip:
            if fetched.skip == "unchanged":
                report.unchanged += 1
            else:
                report.skipped.append((path, fetched.skip))
            return
        assert fetched.data is not None or fetched.file is not None
        unchanged = report.unchanged
        try:
            written = self._write_file(connector, state, entry, path, fetched.data, report,
                                       staged=fetched.file)
            if written:
                fetched.file = None  # renamed into place: no longer ours to remove
        except OSError as exc:
            reason = f"cannot write: {exc.strerror or exc} ({IN_THE_WAY})"
            log.warning("document skipped relay=%s folder=%s doc=%s path=%s reason=%s",
                        connector.relay_id, connector.folder_id, entry.id, path, reason)
            report.skipped.append((path, reason))
            return
        finally:
            _discard([fetched])
        if self.attribution.applied(connector, state, entry.id, self._repo_path(connector, path),
                                    fetched.authorship, written=written, new=rec is None,
                                    settled=written or report.unchanged > unchanged,
                                    fallback=report.index_writers if from_index else None):
            report.index_credited.add(path)
        if fetched.update_sha:
            hashes = self.states.relay(connector.relay_id).doc_hashes
            hashes[compound_id(connector.relay_id, entry.id)] = fetched.update_sha

    def _credit_index(self, connector: Connector, state: FolderState, report: SyncReport,
                      paths: list[str]) -> None:
        """Credit dirty ``paths`` (deleted, renamed) to the folder document's writers, once each."""
        for path in paths:
            if path not in report.index_credited:
                report.index_credited.add(path)
                state.add_writers(self._repo_path(connector, path), report.index_writers)

    def _flush(self, connector: Connector) -> None:
        """Save the state describing the files written (each already fsync'd)."""
        self._save(connector)

    def _write_file(self, connector, state: FolderState, entry: ydoc.Entry, path: str,
                    data: bytes | None, report: SyncReport, *, staged: _Staged | None = None) -> bool:
        """Write ``data``, or move the ``staged`` download, to ``path``; True when placed.

        Never over something the service did not write: the file at ``path`` is ours
        when the record says we wrote it there, or when the path is claimed (see
        :meth:`_claim`). Anything else found there (a person's file, a link, a
        directory) skips the document with a reason, unless it already holds exactly
        these bytes.

        Raises:
            OSError: the write failed (something appeared in the way meanwhile).
        """
        repo_root = self.settings.repo_dir(connector)
        rel = self._repo_path(connector, path)
        # One walk to the parent directory for the look, the decision and the write: the
        # directories it holds cannot be swapped for links in between, and a folder of
        # 10,000 documents pays 10,000 walks, not 30,000. Missing parents are made here;
        # when nothing is at the path the document is always written, so none is made
        # for a document that is then skipped.
        try:
            with worktree.opened(repo_root, rel, create=True) as at:
                return self._write_at(connector, state, entry, path, rel, at, data, report, staged)
        except worktree.PathRefused as exc:
            self._refused(connector, path, exc, report)
            return False

    def _write_at(self, connector, state: FolderState, entry: ydoc.Entry, path: str, rel: str,
                  at: worktree.Held, data: bytes | None, report: SyncReport, staged: _Staged | None) -> bool:
        """:meth:`_write_file` in the held parent directory ``at``."""
        repo_root = self.settings.repo_dir(connector)
        st = at.lstat()
        if staged is not None:
            sha, size = staged.sha256, staged.size
        else:
            assert data is not None
            sha, size = _sha256(data), len(data)
        rec = state.files.get(entry.id)
        new = rec is None
        ours = self._owns(state, rec, path)
        regular = st is not None and stat.S_ISREG(st.st_mode)
        on_disk = None  # sha256 of the file there, read only when it decides something
        if regular and (not ours or (rec is not None and rec.sha256 == sha and st.st_size == size)):
            on_disk = _file_sha256(repo_root, rel)
        if ours and rec is not None and rec.path == path and on_disk == sha:
            rec.type, rec.hash = entry.type, entry.hash
            report.unchanged += 1
            return False
        if st is not None and stat.S_ISDIR(st.st_mode):
            report.skipped.append((path, f"a directory is in the way ({IN_THE_WAY})"))
            return False
        if st is not None and not ours:
            if on_disk != sha:
                log.warning("document skipped relay=%s folder=%s doc=%s path=%r reason=%s",
                            connector.relay_id, connector.folder_id, entry.id, path,
                            "a file the service did not write is there")
                report.skipped.append((path, f"a file is already at this path ({IN_THE_WAY})"))
                return False
            ours = True  # the very bytes we would write (a state rebuilt from scratch)
        # Dirty first: a save of this relay's state by another folder's thread may come
        # at any point, and must never record the new file without its pending commit.
        state.add_dirty([rel])
        # Not fsync'd: a power cut may lose or tear this file, and then the startup full
        # sync sees its bytes differ from the recorded checksum and rewrites it from the
        # Relay (drop_torn_writes keeps such a file out of the first commit meanwhile).
        if staged is not None:
            worktree.place_file(repo_root, staged.path, rel, mode=0o644, overwrite=ours)
        else:
            assert data is not None
            at.write(data, mode=0o644, overwrite=ours, fsync=False)
        state.files[entry.id] = FileRecord(path=path, type=entry.type, hash=entry.hash,
                                           sha256=sha, size=size)
        if new:
            report.created += 1
        else:
            report.updated += 1
        state.note("add" if new else "update", path)
        return True

    def drop_torn_writes(self, connector: Connector) -> int:
        """Before the first commit after a start: leave out files whose bytes are not
        what the state says we wrote, and have the next full sync rewrite them.

        Working-tree files are not fsync'd (they can always be rebuilt from the Relay
        Server), so after a power cut a file the state lists as changed may hold older
        or torn bytes. Committing those would push a bogus version; instead the record
        forgets its checksum (so the startup full sync rewrites the file from the Relay)
        and the path waits for that rewrite. Costs one read of each uncommitted file.
        """
        dropped = 0
        with self.lock(connector):
            state = self._folder_state(connector)
            if not state.dirty:
                return 0
            root = self._root(connector)
            by_path = {rec.path: rec for rec in state.files.values() if rec.type != "folder"}
            keep = []
            for repo_path in list(state.dirty):
                rel = repo_path[len(connector.prefix) + 1:] if connector.prefix else repo_path
                rec = by_path.get(rel)
                if rec is not None and rec.sha256:
                    try:
                        intact = _file_sha256(root / rel) == rec.sha256
                    except OSError:
                        intact = False
                    if not intact:
                        rec.sha256 = None
                        dropped += 1
                        log.warning("file differs from what was written before a restart, "
                                    "rewritten from the relay relay=%s folder=%s path=%s",
                                    connector.relay_id, connector.folder_id, rel)
                        continue
                keep.append(repo_path)
            if dropped:
                state.dirty = keep
                self._save(connector)
        return dropped

    # --- committing -----------------------------------------------------------------

    def refresh_index(self, connector: Connector) -> None:
        """Write the index entries that deferred commits left (see :meth:`commit`)."""
        with self.repo_lock(connector):
            pending = self._index_pending.pop(connector.key, None)
            if pending:
                gitrepo.refresh_index(self.repo(connector), pending)

    def left_out(self, connector: Connector) -> list[tuple[str, str]]:
        """Files the last commit left out, with the reason: ``(repo path, reason)``."""
        with self._meta_lock:
            return list(self._left_out.get(connector.key, {}).items())

    def _note_left_out(self, connector: Connector, left_out, report: SyncReport | None) -> set[str]:
        limit = self.settings.max_file_bytes
        reasons = {path: (f"{size} bytes is over the limit of {limit} bytes per file "
                          "(RELAY_GIT_MAX_FILE_BYTES): not committed until it is smaller or the limit is raised")
                   for path, size in left_out}
        with self._meta_lock:
            before = self._left_out.get(connector.key, {})
            self._left_out[connector.key] = reasons
        for path, reason in reasons.items():
            if before.get(path) != reason:
                log.warning("file left out of the commit relay=%s folder=%s path=%s reason=%s",
                            connector.relay_id, connector.folder_id, path, reason)
            if report is not None:
                report.skipped.append((path, reason))
        return set(reasons)

    def commit(self, connector: Connector, *, timestamp: int | None = None,
               report: SyncReport | None = None, defer_index: bool = False) -> str | None:
        """Commit the paths changed since the last commit; None when nothing changed.

        A file over ``max_file_bytes`` is left out and stays pending (committed once it
        fits); its reason goes to ``report.skipped`` and :meth:`left_out`.

        ``defer_index``: leave the index entries of the committed paths for
        :meth:`refresh_index` (the publisher writes them after the push: rewriting the
        index of a large folder would otherwise delay every push).
        """
        with self.lock(connector), self.repo_lock(connector):
            state = self._folder_state(connector)
            if not state.dirty:
                return None
            repo = self.repo(connector)
            paths = list(state.dirty)
            result = gitrepo.commit_parts(
                repo,
                self.attribution.commit_parts(connector, state, paths, describe_changes),
                branch=connector.branch,
                committer=self.settings.author,
                timestamp=timestamp,
                max_file_bytes=self.settings.max_file_bytes,
                refresh=False,
            )
            pending = self._index_pending.setdefault(connector.key, {})
            pending.update(result.index_updates)
            if not defer_index:
                self.refresh_index(connector)
            sha = result.commit
            held = self._note_left_out(connector, result.left_out, report)
            done = [p for p in paths if p not in held]
            if sha:
                self.attribution.committed(connector, state, done)
            if done or state.changes:
                state.clear_pending(done)
                state.changes = []
                self._save(connector)
            if sha:
                # Counting loose objects lists 256 directories: do it now and then only.
                made = self._commits_since_pack.get(connector.key, 0) + 1
                self._commits_since_pack[connector.key] = made
                if made >= PACK_CHECK_EVERY:
                    self._commits_since_pack[connector.key] = 0
                    gitrepo.pack_if_needed(repo)
        if sha:
            log.info("commit made relay=%s folder=%s commit=%s commits=%d paths=%d", connector.relay_id,
                     connector.folder_id, sha[:10], len(result.commits), len(paths))
        return sha
