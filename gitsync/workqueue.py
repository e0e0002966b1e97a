"""Durable coalescing work queue of keys such as ``(relay_id, doc_uuid)``.

Why it exists: the Relay Server fires one webhook per edit and never retries a refused
delivery. The web thread must answer fast, a burst for one document must cost one or two
fetches, and an answer of 2xx must survive a crash (docs/architecture.md, invariant 1). So:

- a key already pending is merged, not queued twice;
- a key put while a worker holds it is re-queued once after :meth:`WorkQueue.done`
  (no lost update) and is never handed to two workers at once;
- leading edge, at most once per interval: with ``min_interval``, a quiet key is
  runnable at once, and a key that started less than ``min_interval`` seconds ago
  waits until that much time has passed since its last start. A burst of puts
  therefore costs one run at once and at most one more per interval;
- two lanes: :attr:`Lane.INTERACTIVE` (webhooks: someone is waiting) and
  :attr:`Lane.BULK` (startup and reconcile syncs). :meth:`WorkQueue.get` takes
  interactive keys first, or only the lanes a worker asks for; a key put in both lanes
  runs once, as interactive;
- with a journal, :meth:`WorkQueue.put` returns only after its record is fsync'd
  (concurrent puts share one fsync: group commit);
- :meth:`WorkQueue.done` appends a done record without fsync: all work is idempotent,
  so a done record lost in a crash only means the work runs once more.

Journal format: one JSON object per line, ``{"op": "put"|"done", "key": [str, ...]}``,
with ``"lane": "bulk"`` on a bulk key's put record (absent: interactive).
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
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["JournalError", "Lane", "QueueClosed", "WorkQueue"]

log = logging.getLogger(__name__)

Key = Hashable

_fsync = getattr(os, "fdatasync", os.fsync)


class JournalError(OSError):
    """The journal could not be opened, written or synced; the put was not made durable."""


class QueueClosed(RuntimeError):
    """The queue was closed; nothing more is accepted."""


class Lane(StrEnum):
    """Which work a key is: someone waits for it (interactive) or it is catching up."""

    INTERACTIVE = "interactive"
    BULK = "bulk"


_BOTH_LANES = (Lane.INTERACTIVE, Lane.BULK)


class WorkQueue:
    """Thread-safe coalescing FIFO of hashable keys, optionally journaled to disk.

    Args:
        journal_path: file of the on-disk journal (its directory is created), or ``None``
            for a memory-only queue. A sibling ``<name>.lock`` file holds an exclusive
            ``flock`` so that two processes never share one journal.
        compact_every: rewrite the journal once it holds more than this many records
            (and more than twice the outstanding keys).
        min_interval: seconds that must pass between two starts (:meth:`get`,
            :meth:`take_matching`) of one key; puts within it merge into one run at its
            end. 0 runs every re-put as soon as the key is free.
        clock: monotonic seconds; tests pass a fake one to step through intervals.

    Raises:
        JournalError: the journal is locked by another process or cannot be read/written.
    """

    def __init__(
        self,
        journal_path: Path | str | None = None,
        *,
        compact_every: int = 10_000,
        min_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # work available / idle / closed
        self._sync_cond = threading.Condition(self._lock)  # a group fsync finished
        # Runnable keys per lane, oldest first; never holds in-progress keys.
        self._pending: dict[Lane, OrderedDict[Key, None]] = {lane: OrderedDict() for lane in Lane}
        self._in_progress: set[Key] = set()
        self._again: dict[Key, Lane] = {}  # in progress and re-put: re-queue after done
        self._deferred: dict[Key, tuple[float, int, Lane]] = {}  # key -> (due, seq, lane)
        self._heap: list[tuple[float, int, Key]] = []  # lazy: stale entries skipped
        self._seq = itertools.count()
        self._clock = clock
        self._min_interval = max(0.0, float(min_interval))
        self._last_start: dict[Key, float] = {}  # keys started within min_interval
        self._starts: deque[tuple[float, Key]] = deque()  # (start, key), oldest first
        self._since: dict[Key, float] = {}  # outstanding key -> when it was first put (monotonic)
        self._closed = False
        self._stats = {"puts": 0, "merged": 0, "gets": 0, "done": 0, "fsyncs": 0, "compactions": 0}

        self._path = Path(journal_path) if journal_path is not None else None
        self._compact_every = max(1, int(compact_every))
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._journaled: dict[Key, int] = {}  # outstanding key -> lsn of its put record, in order
        self._journaled_bulk: set[Key] = set()  # outstanding keys recorded in the bulk lane
        self._records = 0  # records in the current journal file
        self._written_lsn = 0
        self._synced_lsn = 0
        self._syncing = False
        self._needs_rewrite = False
        if self._path is not None:
            self._open_journal()

    # ------------------------------------------------------------------ public API

    def put(self, key: Key, lane: Lane = Lane.INTERACTIVE) -> bool:
        """Queue ``key`` for work; durable (fsync'd) before returning when journaled.

        The key is runnable at once unless it started less than ``min_interval`` ago
        (then at the end of that interval) or a worker holds it (then after its
        :meth:`done`). Also when it merges, the call returns only once the put record it
        relies on is on disk.

        Args:
            key: what to work on; a journaled queue accepts tuples of str.
            lane: :attr:`Lane.INTERACTIVE` (default) or :attr:`Lane.BULK`. A key already
                scheduled in the bulk lane moves to the interactive one, never back.

        Returns:
            ``True`` if this put created work (a new pending or deferred entry, a
            deferred retry brought forward, or a re-run of a key being processed);
            ``False`` if it merged into work already scheduled.

        Raises:
            QueueClosed: after :meth:`close`.
            JournalError: the record could not be written or synced (answer 5xx).
            TypeError: journaled queues accept only tuples of str.
        """
        lane = Lane(lane)
        with self._lock:
            if self._closed:
                raise QueueClosed("work queue is closed")
            self._stats["puts"] += 1
            lsn = self._journal_put(key, lane)
            self._since.setdefault(key, time.monotonic())
            created = self._schedule(key, lane, self._clock())
            if not created:
                self._stats["merged"] += 1
            if lsn is not None:
                self._wait_durable(lsn)
            return created

    def put_later(self, key: Key, delay: float, lane: Lane = Lane.INTERACTIVE) -> bool:
        """Make ``key`` available after ``delay`` seconds (deferred retry).

        An immediate :meth:`put` of the same key wins over the deferral; of two deferrals
        the earlier one wins; ``min_interval`` still applies. Journaled like :meth:`put`
        (a crash makes it pending at once on reopen), and like :meth:`put` it returns
        only once the key's put record is on disk, also when it merges into a record
        another thread is still syncing. Safe to call from a worker that still holds
        ``key``, before or after its :meth:`done`; calling it before ``done`` keeps the
        key outstanding throughout.

        Returns:
            ``False`` if an earlier run is already scheduled (merged).

        Raises:
            QueueClosed: after :meth:`close` (nothing was scheduled).
            JournalError: the record could not be written or synced.
            TypeError: journaled queues accept only tuples of str.
        """
        lane = Lane(lane)
        with self._lock:
            if self._closed:
                raise QueueClosed("work queue is closed")
            now = self._clock()
            due = max(now + max(0.0, float(delay)), self._earliest_start(key, now))
            current = self._deferred.get(key)
            if (key in self._again or self._pending_lane(key) is not None
                    or (current is not None and current[0] <= due)):
                self._raise_lane(key, lane)
                self._wait_merged_durable(key)
                return False
            lsn = self._journal_put(key, lane)
            self._since.setdefault(key, time.monotonic())
            self._defer(key, due, lane)
            if lsn is not None:
                self._wait_durable(lsn)
            return True

    def get(self, timeout: float | None = None, *, lanes: Iterable[Lane] = _BOTH_LANES) -> Key | None:
        """Take the oldest pending key of the first lane that has one; mark it in progress.

        Args:
            timeout: seconds to wait for work; ``None`` waits until work or :meth:`close`.
            lanes: the lanes to take from, in order of preference (default: interactive,
                then bulk). A worker reserved for webhooks passes ``(Lane.INTERACTIVE,)``.

        Returns:
            The key, or ``None`` on timeout or once the queue is closed.
        """
        lanes = tuple(Lane(lane) for lane in lanes)
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            while True:
                if self._closed:
                    return None
                now = self._clock()
                self._promote_due(now)
                for lane in lanes:
                    pending = self._pending[lane]
                    if pending:
                        key, _ = pending.popitem(last=False)
                        self._start(key, now)
                        return key
                wait = None if deadline is None else deadline - now
                if wait is not None and wait <= 0:
                    return None
                due = self._next_due()
                if due is not None:
                    until_due = max(0.0, due - now)
                    wait = until_due if wait is None else min(wait, until_due)
                self._cond.wait(wait)

    def take_matching(
        self,
        predicate: Callable[[Key], bool],
        limit: int,
        *,
        lanes: Iterable[Lane] = _BOTH_LANES,
    ) -> list[Key]:
        """Also take pending keys that ``predicate`` accepts (oldest first, at most ``limit``).

        Lets a worker handle related keys in one batch (documents of one folder). Each
        key taken is in progress and needs its own :meth:`done`. Lanes are searched in
        the order given, like :meth:`get`. ``predicate`` runs with the queue lock held:
        keep it cheap and never call the queue from it.
        """
        taken: list[Key] = []
        with self._lock:
            if self._closed:
                return taken
            now = self._clock()
            self._promote_due(now)
            for lane in (Lane(lane) for lane in lanes):
                pending = self._pending[lane]
                matched = []
                for key in pending:  # no copy: thousands may be pending
                    if len(taken) + len(matched) >= limit:
                        break
                    if predicate(key):
                        matched.append(key)
                for key in matched:
                    del pending[key]
                    self._start(key, now)
                taken.extend(matched)
        return taken

    def done(self, key: Key) -> None:
        """Finish ``key``: re-queue it once if it was put meanwhile, else forget it.

        A re-queued key is runnable at once, or at the end of ``min_interval`` after the
        start that just finished. Call it only after the work's effects are durable
        elsewhere: the done record is what stops the key coming back after a crash.
        After :meth:`close` nothing is written (the key simply runs again next start).

        Raises:
            ValueError: ``key`` is not in progress.
        """
        with self._lock:
            if key not in self._in_progress:
                raise ValueError(f"key is not in progress: {_fmt(key)}")
            self._in_progress.discard(key)
            self._stats["done"] += 1
            lane = self._again.pop(key, None)
            if lane is not None:
                # still outstanding in the journal
                now = self._clock()
                earliest = self._earliest_start(key, now)
                if earliest <= now:
                    self._make_pending(key, lane)
                else:
                    self._defer(key, earliest, lane)
            elif key not in self._deferred:
                self._journal_done(key)
                self._since.pop(key, None)
            if not self._in_progress and not any(self._pending.values()):
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
        """Make every deferred key due now and stop spacing runs from now on.

        For a shutdown that drains: work waiting for a retry or for ``min_interval`` runs
        at once, and so does every re-run from here on.

        Returns:
            How many keys were deferred.
        """
        with self._lock:
            self._min_interval = 0.0
            self._last_start.clear()
            self._starts.clear()
            deferred = list(self._deferred.items())
            self._deferred.clear()
            self._heap.clear()
            for key, (_, _, lane) in deferred:
                if key in self._in_progress:
                    self._again[key] = min(self._again.get(key, lane), lane, key=_BOTH_LANES.index)
                else:
                    self._make_pending(key, lane)
            if deferred:
                self._cond.notify_all()
            return len(deferred)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending or in progress (deferred keys do not count).

        Returns:
            ``True`` when idle, ``False`` on timeout or close.
        """
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            while True:
                self._promote_due(self._clock())
                if not any(self._pending.values()) and not self._in_progress:
                    return True
                if self._closed:
                    return False
                wait = None if deadline is None else deadline - self._clock()
                if wait is not None and wait <= 0:
                    return False
                due = self._next_due()
                if due is not None:
                    until_due = max(0.0, due - self._clock())
                    wait = until_due if wait is None else min(wait, until_due)
                self._cond.wait(wait)

    @property
    def pending_count(self) -> int:
        """Keys waiting for a worker, both lanes (deferred keys that are due included)."""
        with self._lock:
            self._promote_due(self._clock())
            return sum(len(pending) for pending in self._pending.values())

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
            self._promote_due(self._clock())
            return {
                "pending": sum(len(pending) for pending in self._pending.values()),
                "pending_bulk": len(self._pending[Lane.BULK]),
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
            f"pending={sum(map(len, self._pending.values()))}, "
            f"in_progress={len(self._in_progress)})"
        )

    # ------------------------------------------------------------------ scheduling

    def _schedule(self, key: Key, lane: Lane, now: float) -> bool:
        """Make ``key`` runnable as soon as allowed (lock held). True if new work."""
        if self._pending_lane(key) is not None or key in self._again:
            self._raise_lane(key, lane)
            return False
        if key in self._in_progress:
            self._deferred.pop(key, None)  # the re-run after done covers a deferred retry
            self._again[key] = lane
            return True
        earliest = self._earliest_start(key, now)
        current = self._deferred.get(key)
        if current is not None and current[0] <= earliest:
            self._raise_lane(key, lane)
            return False  # already due as early as allowed
        if earliest <= now:
            self._deferred.pop(key, None)  # an immediate put wins; the heap entry goes stale
            self._make_pending(key, lane)
        else:
            self._defer(key, earliest, lane)
        return True

    def _pending_lane(self, key: Key) -> Lane | None:
        for lane, pending in self._pending.items():
            if key in pending:
                return lane
        return None

    def _raise_lane(self, key: Key, lane: Lane) -> None:
        """Move scheduled work for ``key`` to the interactive lane if ``lane`` is it."""
        if lane is not Lane.INTERACTIVE:
            return
        self._journaled_bulk.discard(key)
        if key in self._pending[Lane.BULK]:
            del self._pending[Lane.BULK][key]
            self._pending[Lane.INTERACTIVE][key] = None
            self._cond.notify_all()
        elif key in self._again:
            self._again[key] = lane
        elif key in self._deferred:
            due, seq, _ = self._deferred[key]
            self._deferred[key] = (due, seq, lane)

    def _make_pending(self, key: Key, lane: Lane) -> None:
        if self._pending_lane(key) is None:
            self._pending[lane][key] = None
            # Every waiter re-checks: getters may be waiting on different lanes.
            self._cond.notify_all()
        else:
            self._raise_lane(key, lane)

    def _defer(self, key: Key, due: float, lane: Lane) -> None:
        entry = (due, next(self._seq), lane)
        self._deferred[key] = entry
        heapq.heappush(self._heap, (due, entry[1], key))
        self._cond.notify_all()  # blocked getters recompute their wake-up time

    def _start(self, key: Key, now: float) -> None:
        """Mark ``key`` taken by a worker at ``now`` (lock held)."""
        self._in_progress.add(key)
        self._stats["gets"] += 1
        if self._min_interval > 0:
            self._last_start[key] = now
            self._starts.append((now, key))

    def _earliest_start(self, key: Key, now: float) -> float:
        """When ``key`` may start again under ``min_interval`` (lock held)."""
        if self._min_interval <= 0:
            return now
        starts, horizon = self._starts, now - self._min_interval
        while starts and starts[0][0] <= horizon:  # forget starts that no longer matter
            started, old = starts.popleft()
            if self._last_start.get(old) == started:
                del self._last_start[old]
        last = self._last_start.get(key)
        return now if last is None else max(now, last + self._min_interval)

    def _promote_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, seq, key = heapq.heappop(heap)
            entry = self._deferred.get(key)
            if entry is None or entry[:2] != (due, seq):
                continue  # stale: overridden by a put or an earlier deferral
            del self._deferred[key]
            lane = entry[2]
            if key in self._in_progress:
                self._again[key] = min(self._again.get(key, lane), lane, key=_BOTH_LANES.index)
            else:
                self._make_pending(key, lane)

    def _next_due(self) -> float | None:
        heap = self._heap
        while heap and (self._deferred.get(heap[0][2]) or (None, None))[:2] != heap[0][:2]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # ------------------------------------------------------------------ journal

    def _journal_put(self, key: Key, lane: Lane) -> int | None:
        """Append a put record unless ``key`` is already outstanding; return the lsn to
        wait for (lock held). ``None`` for a memory-only queue."""
        if self._path is None:
            return None
        _check_key(key)
        lsn = self._journaled.get(key)
        if lsn is not None:
            return lsn  # merged: the earlier record (maybe still syncing) covers it
        lsn = self._append(_put_record(key, lane))
        self._journaled[key] = lsn
        if lane is Lane.BULK:
            self._journaled_bulk.add(key)
        return lsn

    def _journal_done(self, key: Key) -> None:
        if self._path is None or self._fd is None:
            return
        if self._journaled.pop(key, None) is None:
            return
        self._journaled_bulk.discard(key)
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

    def _wait_merged_durable(self, key: Key) -> None:
        """Wait for the put record that a merged ``key`` relies on (lock held)."""
        if self._path is None:
            return
        _check_key(key)
        lsn = self._journaled.get(key)
        if lsn is not None:
            self._wait_durable(lsn)

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
        bulk = self._journaled_bulk
        data = b"".join(
            (json.dumps(_put_record(k, Lane.BULK if k in bulk else Lane.INTERACTIVE),
                        separators=(",", ":")) + "\n").encode()
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
            for key, lane in outstanding.items():
                self._since[key] = opened
                self._written_lsn += 1
                self._journaled[key] = self._written_lsn
                if lane is Lane.BULK:
                    self._journaled_bulk.add(key)
                self._pending[lane][key] = None
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
    def _replay(path: Path) -> dict[tuple[str, ...], Lane]:
        """Outstanding keys of the journal at ``path`` with their lane, in order of their
        put record."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        if tail:
            log.warning("journal torn final line ignored path=%s bytes=%d", path, len(tail))
        outstanding: OrderedDict[tuple[str, ...], Lane] = OrderedDict()
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
                lane = Lane(record.get("lane", Lane.INTERACTIVE))
            except (ValueError, KeyError, TypeError) as exc:
                skipped += 1
                log.warning(
                    "journal corrupt line skipped path=%s line=%d error=%s", path, number, exc
                )
                continue
            if op == "put":
                outstanding.setdefault(key, lane)
            else:
                outstanding.pop(key, None)
        if skipped:
            log.warning("journal replayed with skipped lines path=%s skipped=%d", path, skipped)
        return dict(outstanding)


def _put_record(key: Key, lane: Lane) -> dict[str, Any]:
    record: dict[str, Any] = {"op": "put", "key": list(key)}  # type: ignore[call-overload]
    if lane is Lane.BULK:
        record["lane"] = Lane.BULK.value
    return record


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
