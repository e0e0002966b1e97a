"""Durable coalescing work queue of keys such as ``(relay_id, doc_uuid)``.

Why it exists: the Relay Server fires one webhook per edit and never retries a refused
delivery. The web thread must answer fast, a burst for one document must cost one or two
fetches, and an answer of 2xx must survive a crash (DESIGN.md invariant 1). So:

- a key already pending is merged, not queued twice;
- a key put while a worker holds it is re-queued once after :meth:`WorkQueue.done`
  (no lost update) and is never handed to two workers at once;
- with a journal, :meth:`WorkQueue.put` returns only after its record is fsync'd
  (concurrent puts share one fsync: group commit);
- :meth:`WorkQueue.done` appends a done record without fsync: all work is idempotent,
  so a done record lost in a crash only means the work runs once more.

Journal format: one JSON object per line, ``{"op": "put"|"done", "key": [str, ...]}``.
A key is *outstanding* when its last record is a put. On open the journal is replayed
(every outstanding key is pending again, in order of its put), a torn final line is
ignored, corrupt lines are skipped with a warning, and the file is rewritten atomically
with only the outstanding keys; it is rewritten again whenever it grows past
``compact_every`` records.

Crash behaviour: a key a worker held when the process died has no done record (the
caller writes done only once the work's effects are durable elsewhere), so it comes
back on reopen. :meth:`WorkQueue.close` writes no done records either, so a graceful
stop keeps unfinished keys for the next start.
"""

from __future__ import annotations

import fcntl
import heapq
import itertools
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

__all__ = ["WorkQueue", "QueueClosed", "JournalError"]

log = logging.getLogger(__name__)

Key = Hashable

_fsync = getattr(os, "fdatasync", os.fsync)


class JournalError(OSError):
    """The journal could not be opened, written or synced; the put was not made durable."""


class QueueClosed(RuntimeError):
    """The queue was closed; nothing more is accepted."""


class WorkQueue:
    """Thread-safe coalescing FIFO of hashable keys, optionally journaled to disk.

    Args:
        journal_path: file of the on-disk journal (its directory is created), or ``None``
            for a memory-only queue. A sibling ``<name>.lock`` file holds an exclusive
            ``flock`` so that two processes never share one journal.
        compact_every: rewrite the journal once it holds more than this many records
            (and more than twice the outstanding keys).

    Raises:
        JournalError: the journal is locked by another process or cannot be read/written.
    """

    def __init__(self, journal_path: Path | str | None = None, *, compact_every: int = 10_000):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # work available / idle / closed
        self._sync_cond = threading.Condition(self._lock)  # a group fsync finished
        self._pending: OrderedDict[Key, None] = OrderedDict()  # never holds in-progress keys
        self._in_progress: set[Key] = set()
        self._again: set[Key] = set()  # in progress and re-put: re-queue after done
        self._deferred: dict[Key, tuple[float, int]] = {}  # key -> (due, seq)
        self._heap: list[tuple[float, int, Key]] = []  # lazy: stale entries skipped
        self._seq = itertools.count()
        self._since: dict[Key, float] = {}  # outstanding key -> when it was first put (monotonic)
        self._closed = False
        self._stats = {"puts": 0, "merged": 0, "gets": 0, "done": 0, "fsyncs": 0, "compactions": 0}

        self._path = Path(journal_path) if journal_path is not None else None
        self._compact_every = max(1, int(compact_every))
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._journaled: dict[Key, int] = {}  # outstanding key -> lsn of its put record, in order
        self._records = 0  # records in the current journal file
        self._written_lsn = 0
        self._synced_lsn = 0
        self._syncing = False
        self._needs_rewrite = False
        if self._path is not None:
            self._open_journal()

    # ------------------------------------------------------------------ public API

    def put(self, key: Key) -> bool:
        """Queue ``key`` for work; durable (fsync'd) before returning when journaled.

        Returns:
            ``True`` if this put created work (a new pending entry, or a re-run of a key
            being processed); ``False`` if it merged into work already scheduled.

        Raises:
            QueueClosed: after :meth:`close`.
            JournalError: the record could not be written or synced (answer 5xx).
            TypeError: journaled queues accept only tuples of str.
        """
        with self._lock:
            if self._closed:
                raise QueueClosed("work queue is closed")
            self._stats["puts"] += 1
            lsn = self._journal_put(key)
            self._since.setdefault(key, time.monotonic())
            created = self._schedule_now(key)
            if not created:
                self._stats["merged"] += 1
            if lsn is not None:
                self._wait_durable(lsn)
            return created

    def put_later(self, key: Key, delay: float) -> bool:
        """Make ``key`` available after ``delay`` seconds (deferred retry).

        An immediate :meth:`put` of the same key wins over the deferral; of two deferrals
        the earlier one wins. Journaled like :meth:`put` (a crash makes it pending at once
        on reopen). Safe to call from a worker that still holds ``key``, before or after
        its :meth:`done`; calling it before ``done`` keeps the key outstanding throughout.

        Returns:
            ``False`` if an earlier run is already scheduled or the queue is closed.
        """
        with self._lock:
            if self._closed:
                log.debug("put_later after close ignored key=%s", _fmt(key))
                return False
            if key in self._pending or key in self._again:
                return False
            due = time.monotonic() + max(0.0, float(delay))
            current = self._deferred.get(key)
            if current is not None and current[0] <= due:
                return False
            lsn = self._journal_put(key)
            self._since.setdefault(key, time.monotonic())
            entry = (due, next(self._seq))
            self._deferred[key] = entry
            heapq.heappush(self._heap, (entry[0], entry[1], key))
            self._cond.notify_all()  # blocked getters recompute their wake-up time
            if lsn is not None:
                self._wait_durable(lsn)
            return True

    def get(self, timeout: float | None = None) -> Key | None:
        """Take the oldest pending key and mark it in progress.

        Args:
            timeout: seconds to wait for work; ``None`` waits until work or :meth:`close`.

        Returns:
            The key, or ``None`` on timeout or once the queue is closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                self._promote_due(now)
                if self._pending:
                    key, _ = self._pending.popitem(last=False)
                    self._in_progress.add(key)
                    self._stats["gets"] += 1
                    return key
                wait = None if deadline is None else deadline - now
                if wait is not None and wait <= 0:
                    return None
                due = self._next_due()
                if due is not None:
                    until_due = max(0.0, due - now)
                    wait = until_due if wait is None else min(wait, until_due)
                self._cond.wait(wait)

    def take_matching(self, predicate: Callable[[Key], bool], limit: int) -> list[Key]:
        """Also take pending keys that ``predicate`` accepts (oldest first, at most ``limit``).

        Lets a worker handle related keys in one batch (documents of one folder). Each
        key taken is in progress and needs its own :meth:`done`. ``predicate`` runs with
        the queue lock held: keep it cheap and never call the queue from it.
        """
        taken: list[Key] = []
        with self._lock:
            if self._closed:
                return taken
            self._promote_due(time.monotonic())
            for key in list(self._pending):
                if len(taken) >= limit:
                    break
                if predicate(key):
                    del self._pending[key]
                    self._in_progress.add(key)
                    self._stats["gets"] += 1
                    taken.append(key)
        return taken

    def done(self, key: Key) -> None:
        """Finish ``key``: re-queue it once if it was put meanwhile, else forget it.

        Call it only after the work's effects are durable elsewhere: the done record is
        what stops the key coming back after a crash. After :meth:`close` nothing is
        written (the key simply runs again next start).

        Raises:
            ValueError: ``key`` is not in progress.
        """
        with self._lock:
            if key not in self._in_progress:
                raise ValueError(f"key is not in progress: {_fmt(key)}")
            self._in_progress.discard(key)
            self._stats["done"] += 1
            if key in self._again:
                self._again.discard(key)
                self._pending[key] = None  # still outstanding in the journal
                self._cond.notify()
            elif key not in self._deferred:
                self._journal_done(key)
                self._since.pop(key, None)
            if not self._pending and not self._in_progress:
                self._cond.notify_all()  # wait_idle

    def close(self) -> None:
        """Stop handing out work, wake every waiter and close the journal.

        Unfinished keys (pending, deferred, in progress) stay outstanding in the journal
        and come back on the next open. Idempotent.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            while self._syncing:
                self._sync_cond.wait()
            if self._fd is not None and self._written_lsn > self._synced_lsn:
                try:  # let putters still waiting for their fsync return normally
                    _fsync(self._fd)
                    self._synced_lsn = self._written_lsn
                except OSError as exc:
                    log.warning("journal sync at close failed path=%s error=%s", self._path, exc)
            self._sync_cond.notify_all()
            for name in ("_fd", "_lock_fd"):
                fd = getattr(self, name)
                if fd is not None:
                    setattr(self, name, None)
                    try:
                        os.close(fd)
                    except OSError as exc:  # pragma: no cover - nothing left to do
                        log.warning("journal close failed path=%s error=%s", self._path, exc)

    def expedite(self) -> int:
        """Make every deferred key due now (a shutdown drains debounced work too).

        Returns:
            How many keys were deferred.
        """
        with self._lock:
            keys = list(self._deferred)
            self._deferred.clear()
            self._heap.clear()
            for key in keys:
                if key in self._in_progress:
                    self._again.add(key)
                elif key not in self._pending:
                    self._pending[key] = None
            if keys:
                self._cond.notify_all()
            return len(keys)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending or in progress (deferred keys do not count).

        Returns:
            ``True`` when idle, ``False`` on timeout or close.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                self._promote_due(time.monotonic())
                if not self._pending and not self._in_progress:
                    return True
                if self._closed:
                    return False
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return False
                due = self._next_due()
                if due is not None:
                    until_due = max(0.0, due - time.monotonic())
                    wait = until_due if wait is None else min(wait, until_due)
                self._cond.wait(wait)

    @property
    def pending_count(self) -> int:
        """Keys waiting for a worker (deferred keys that are due included)."""
        with self._lock:
            self._promote_due(time.monotonic())
            return len(self._pending)

    @property
    def in_progress_count(self) -> int:
        """Keys held by workers."""
        with self._lock:
            return len(self._in_progress)

    def oldest_age(self) -> float:
        """Seconds since the oldest outstanding key (pending, deferred or in progress) was
        first put; 0 when none is. A key retried with backoff keeps its first time."""
        with self._lock:
            if not self._since:
                return 0.0
            return max(0.0, time.monotonic() - min(self._since.values()))

    @property
    def closed(self) -> bool:
        return self._closed

    def snapshot(self) -> dict[str, Any]:
        """Counts for ``/api/status``: queue sizes, journal size and lifetime counters."""
        with self._lock:
            self._promote_due(time.monotonic())
            return {
                "pending": len(self._pending),
                "in_progress": len(self._in_progress),
                "rerun_after_done": len(self._again),
                "deferred": len(self._deferred),
                "closed": self._closed,
                "journal": str(self._path) if self._path is not None else None,
                "journal_records": self._records,
                "journal_outstanding": len(self._journaled),
                **self._stats,
            }

    def __repr__(self) -> str:
        return (
            f"WorkQueue(journal={str(self._path) if self._path else None!r}, "
            f"pending={len(self._pending)}, in_progress={len(self._in_progress)})"
        )

    # ------------------------------------------------------------------ scheduling

    def _schedule_now(self, key: Key) -> bool:
        """Make ``key`` runnable as soon as possible (lock held). True if new work."""
        if key in self._pending:
            return False
        self._deferred.pop(key, None)  # an immediate put wins; the heap entry goes stale
        if key in self._in_progress:
            if key in self._again:
                return False
            self._again.add(key)
            return True
        self._pending[key] = None
        self._cond.notify()
        return True

    def _promote_due(self, now: float) -> None:
        heap = self._heap
        promoted = 0
        while heap and heap[0][0] <= now:
            due, seq, key = heapq.heappop(heap)
            if self._deferred.get(key) != (due, seq):
                continue  # stale: overridden by a put or an earlier deferral
            del self._deferred[key]
            if key in self._in_progress:
                self._again.add(key)
            elif key not in self._pending:
                self._pending[key] = None
                promoted += 1
        if promoted > 1:
            self._cond.notify(promoted - 1)  # the caller itself may take one

    def _next_due(self) -> float | None:
        heap = self._heap
        while heap and self._deferred.get(heap[0][2]) != (heap[0][0], heap[0][1]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # ------------------------------------------------------------------ journal

    def _journal_put(self, key: Key) -> int | None:
        """Append a put record unless ``key`` is already outstanding; return the lsn to
        wait for (lock held). ``None`` for a memory-only queue."""
        if self._path is None:
            return None
        _check_key(key)
        lsn = self._journaled.get(key)
        if lsn is not None:
            return lsn  # merged: the earlier record (maybe still syncing) covers it
        lsn = self._append({"op": "put", "key": list(key)})
        self._journaled[key] = lsn
        return lsn

    def _journal_done(self, key: Key) -> None:
        if self._path is None or self._fd is None:
            return
        if self._journaled.pop(key, None) is None:
            return
        try:
            self._append({"op": "done", "key": list(key)})
        except JournalError as exc:
            # Harmless: without the done record the key runs once more after a restart.
            log.warning("journal done record not written key=%s error=%s", _fmt(key), exc)
        self._maybe_compact()

    def _append(self, record: dict[str, Any]) -> int:
        """Write one record line (lock held); return its lsn. No fsync here."""
        if self._fd is None:
            raise QueueClosed("work queue is closed")
        if self._needs_rewrite:
            self._rewrite_or_raise()
        data = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write {written} of {len(data)} bytes")
        except OSError as exc:
            # A partial line would glue itself to the next record: rewrite before reuse.
            self._needs_rewrite = True
            raise JournalError(f"cannot append to work journal path={self._path}: {exc}") from exc
        self._records += 1
        self._written_lsn += 1
        return self._written_lsn

    def _wait_durable(self, lsn: int) -> None:
        """Return once record ``lsn`` is on disk (lock held; released while syncing).

        Group commit: the first waiter syncs everything written so far while later
        putters wait; those written meanwhile are covered by the next sync.
        """
        while self._synced_lsn < lsn:
            if self._fd is None:
                raise QueueClosed("work queue closed before the put was made durable")
            if self._syncing:
                self._sync_cond.wait()
                continue
            self._syncing = True
            target = self._written_lsn
            fd = self._fd
            error: OSError | None = None
            self._lock.release()
            try:
                _fsync(fd)
            except OSError as exc:
                error = exc
            finally:
                self._lock.acquire()
                self._syncing = False
                self._sync_cond.notify_all()
            if error is not None:
                raise JournalError(
                    f"cannot sync work journal path={self._path}: {error}"
                ) from error
            self._stats["fsyncs"] += 1
            self._synced_lsn = max(self._synced_lsn, target)
            self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._syncing or self._fd is None:
            return  # never swap the file under a running fsync
        if self._records > self._compact_every and self._records > 2 * len(self._journaled):
            try:
                self._rewrite()
            except OSError as exc:
                log.warning("journal compaction failed path=%s error=%s", self._path, exc)

    def _rewrite_or_raise(self) -> None:
        while self._syncing:
            self._sync_cond.wait()
        if self._fd is None:
            raise QueueClosed("work queue is closed")
        try:
            self._rewrite()
        except OSError as exc:
            raise JournalError(f"cannot rewrite work journal path={self._path}: {exc}") from exc

    def _rewrite(self) -> None:
        """Atomically replace the journal with one put record per outstanding key (lock
        held, no fsync running). Crash-safe: temp file, fsync, rename, fsync directory."""
        assert self._path is not None
        path = self._path
        tmp = path.with_name(path.name + ".tmp")
        data = b"".join(
            (json.dumps({"op": "put", "key": list(k)}, separators=(",", ":")) + "\n").encode()
            for k in self._journaled
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        new_fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        old_fd, self._fd = self._fd, new_fd
        if old_fd is not None:
            os.close(old_fd)
        self._records = len(self._journaled)
        self._synced_lsn = self._written_lsn  # everything outstanding is now on disk
        self._needs_rewrite = False
        self._stats["compactions"] += 1

    def _open_journal(self) -> None:
        assert self._path is not None
        path = self._path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(
                path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644
            )
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise JournalError(f"work journal in use by another process path={path}") from exc
            outstanding = self._replay(path)
            opened = time.monotonic()
            for key in outstanding:
                self._since[key] = opened
                self._written_lsn += 1
                self._journaled[key] = self._written_lsn
                self._pending[key] = None
            self._rewrite()
        except JournalError:
            raise
        except OSError as exc:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise JournalError(f"cannot open work journal path={path}: {exc}") from exc
        log.info("work journal opened path=%s outstanding=%d", path, len(self._journaled))

    @staticmethod
    def _replay(path: Path) -> list[tuple[str, ...]]:
        """Outstanding keys of the journal at ``path``, in order of their put record."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        if tail:
            log.warning("journal torn final line ignored path=%s bytes=%d", path, len(tail))
        outstanding: OrderedDict[tuple[str, ...], None] = OrderedDict()
        skipped = 0
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                op = record["op"]
                key = record["key"]
                if op not in ("put", "done") or not isinstance(key, list):
                    raise ValueError("bad record shape")
                key = tuple(key)
                _check_key(key)
            except (ValueError, KeyError, TypeError) as exc:
                skipped += 1
                log.warning(
                    "journal corrupt line skipped path=%s line=%d error=%s", path, number, exc
                )
                continue
            if op == "put":
                outstanding.setdefault(key, None)
            else:
                outstanding.pop(key, None)
        if skipped:
            log.warning("journal replayed with skipped lines path=%s skipped=%d", path, skipped)
        return list(outstanding)


def _check_key(key: object) -> None:
    if not isinstance(key, tuple) or not all(isinstance(part, str) for part in key):
        raise TypeError(f"journaled keys must be tuples of str, got {type(key).__name__}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fmt(key: object) -> str:
    if isinstance(key, tuple):
        return "/".join(str(part) for part in key)
    return str(key)
