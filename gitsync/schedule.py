"""When each folder commits next: leading edge, at most once per interval.

A folder that has not committed within the last interval commits as soon as a change
is applied (the first edit after a quiet spell reaches the remote at once); changes
that follow within the interval wait for the interval's end and go into one commit.
So a folder never makes more than one commit per interval, and a steady stream of
edits costs one commit per interval, not one per edit.

The interval runs from when a commit starts, not from when its push ends: a change
written while a folder's commit is pushed is due one interval after that commit, so a
slow push (a large commit while a startup sync runs) does not stretch the interval.

Each folder has its own due time: a folder that is busy (its lock held by a long
sync) is tried again shortly, without delaying any other folder. Pure bookkeeping
with an injectable clock; the publisher thread does the waiting.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Hashable

__all__ = ["CommitSchedule"]


class CommitSchedule:
    """Due times of folders with uncommitted changes; thread-safe."""

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._due: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = 0
        self._last_commit: dict[Hashable, float] = {}
        self._claimed: set[Hashable] = set()
        self._started: dict[Hashable, float] = {}  # claimed folder -> when its commit started
        self._after_claim: set[Hashable] = set()  # due while claimed: due once released
        self._cond = threading.Condition()

    def changed(self, key: Hashable) -> None:
        """A change was applied to ``key``'s folder: schedule its commit."""
        with self._cond:
            if key in self._due:
                return  # already scheduled: the change joins that commit
            now = self._clock()
            if key in self._claimed:
                # a commit of this folder is being made now and counts as its last one
                when = max(now, self._started.get(key, now) + self.interval)
            else:
                last = self._last_commit.get(key)
                when = now if last is None else max(now, last + self.interval)
            self._push(key, when)

    def retry(self, key: Hashable, delay: float) -> None:
        """Try ``key`` again after ``delay`` seconds (its folder was busy, or a commit failed)."""
        with self._cond:
            self._release(key)
            self._push(key, self._clock() + delay)

    def started(self, key: Hashable) -> None:
        """The claimed ``key``'s commit starts now: its interval counts from here."""
        with self._cond:
            if key in self._claimed:
                self._started[key] = self._clock()

    def committed(self, key: Hashable, *, made: bool = True) -> None:
        """The claimed ``key`` was handled (committed and pushed); ``made`` when a
        commit was actually written."""
        with self._cond:
            start = self._release(key)
            if made:
                self._last_commit[key] = start if start is not None else self._clock()
            self._cond.notify_all()

    def _release(self, key: Hashable) -> float | None:
        """Unclaim ``key``; returns when its commit started (None: it did not)."""
        self._claimed.discard(key)
        if key in self._after_claim:
            self._after_claim.discard(key)
            heapq.heappush(self._heap, (self._due[key], self._next_seq(), key))
            self._cond.notify_all()
        return self._started.pop(key, None)

    def take_due(self) -> list[Hashable]:
        """Claim every folder due now; a claimed folder is not handed out again until
        :meth:`committed` or :meth:`retry` releases it."""
        with self._cond:
            now = self._clock()
            taken = []
            while self._heap and self._heap[0][0] <= now:
                when, _, key = heapq.heappop(self._heap)
                if self._due.get(key) != when:
                    continue  # superseded entry
                if key in self._claimed:
                    # being committed right now: this change comes one interval after
                    # that commit started, and never before it is handled
                    self._due[key] = self._started.get(key, now) + self.interval
                    if self._due[key] > now:
                        heapq.heappush(self._heap, (self._due[key], self._next_seq(), key))
                    else:
                        self._after_claim.add(key)
                    continue
                del self._due[key]
                self._claimed.add(key)
                taken.append(key)
            return taken

    def seconds_to_next(self) -> float | None:
        """Seconds until the earliest due folder (0 when one is due); None when none is."""
        with self._cond:
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                heapq.heappop(self._heap)
            if not self._heap:
                return None
            return max(0.0, self._heap[0][0] - self._clock())

    def wait(self, timeout: float) -> None:
        """Sleep until something may be due, a change is scheduled, or ``timeout``."""
        with self._cond:
            self._cond.wait(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> list[Hashable]:
        with self._cond:
            return list(self._due)

    def _push(self, key: Hashable, when: float) -> None:
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, self._next_seq(), key))
        self._cond.notify_all()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq
