"""Fetching with priority lanes: interactive work never waits behind bulk work.

A webhook or websocket event is *interactive*: someone just typed, and the edit should
reach the remote within a second. A startup sync or a reconcile is *bulk*: thousands of
documents, no one waiting on any single one. Both share one pool of fetch threads, but

- a free thread always takes interactive work first, and
- bulk work may occupy at most ``bulk_limit`` threads at once, so ``workers -
  bulk_limit`` threads are always free for an interactive fetch the moment it arrives.

:meth:`FetchPool.stream` runs a function over many items and yields each result as soon
as it is ready, keeping at most ``window`` items in flight: a folder of 10,000 documents
costs the memory of ``window`` decoded documents, not of the folder.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from enum import StrEnum
from typing import Any, TypeVar

__all__ = ["Lane", "FetchPool", "PoolClosed"]

T = TypeVar("T")
R = TypeVar("R")


class Lane(StrEnum):
    INTERACTIVE = "interactive"
    BULK = "bulk"


class PoolClosed(RuntimeError):
    """Work submitted after :meth:`FetchPool.close`."""


class _Task:
    __slots__ = ("fn", "args", "future", "lane")

    def __init__(self, fn: Callable[..., Any], args: tuple, lane: Lane):
        self.fn, self.args, self.lane = fn, args, lane
        self.future: Future = Future()


class FetchPool:
    """Threads that run fetch jobs, interactive lane first, bulk lane capped."""

    def __init__(self, workers: int = 8, *, bulk_limit: int | None = None,
                 name: str = "fetch"):
        if workers < 2:
            raise ValueError("a fetch pool needs at least 2 threads (one kept for interactive work)")
        self.workers = workers
        self.bulk_limit = bulk_limit if bulk_limit is not None else max(1, workers - 2)
        if not 1 <= self.bulk_limit < workers:
            raise ValueError("bulk_limit must leave at least one thread for interactive work")
        self._queues: dict[Lane, deque[_Task]] = {Lane.INTERACTIVE: deque(), Lane.BULK: deque()}
        self._cond = threading.Condition()
        self._bulk_running = 0
        self._idle = 0  # threads waiting for work
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
            for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def __repr__(self) -> str:
        return f"FetchPool(workers={self.workers}, bulk_limit={self.bulk_limit})"

    def submit(self, fn: Callable[..., R], *args: Any, lane: Lane = Lane.INTERACTIVE) -> Future:
        """Run ``fn(*args)`` on the pool in ``lane``; the future carries its result.

        Raises:
            PoolClosed: the pool was closed.
        """
        task = _Task(fn, args, lane)
        with self._cond:
            if self._closed:
                raise PoolClosed("fetch pool is closed")
            self._queues[lane].append(task)
            # Wake a thread only when one is idle and may take this task: bulk work past
            # the cap waits for a bulk thread, which takes it as it finishes. A wake-up
            # that finds nothing to do costs two thread switches, per document.
            if self._idle and (lane is Lane.INTERACTIVE or self._bulk_running < self.bulk_limit):
                self._cond.notify()
        return task.future

    def stream(self, fn: Callable[[T], R], items: Iterable[T], *, lane: Lane,
               window: int | None = None) -> Iterator[tuple[T, R]]:
        """Yield ``(item, fn(item))`` in completion order, at most ``window`` in flight.

        Exceptions raised by ``fn`` propagate when their item's turn comes; the items
        not yet started are then not started at all. Closing the generator early
        cancels what has not started.
        """
        window = window or 2 * self.workers
        pending: set[Future] = set()
        done_cond = threading.Condition()
        finished: deque[tuple[T, Future]] = deque()

        def on_done(item: T, fut: Future) -> None:
            with done_cond:
                finished.append((item, fut))
                done_cond.notify()

        source = iter(items)
        exhausted = False
        in_flight = 0
        try:
            while True:
                while not exhausted and in_flight < window:
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    fut = self.submit(fn, item, lane=lane)
                    in_flight += 1
                    pending.add(fut)
                    fut.add_done_callback(lambda f, item=item: on_done(item, f))
                if in_flight == 0:
                    return
                with done_cond:
                    while not finished:
                        done_cond.wait()
                    item, fut = finished.popleft()
                pending.discard(fut)
                in_flight -= 1
                yield item, fut.result()
        finally:
            for fut in pending:
                fut.cancel()

    def close(self, wait: bool = True) -> None:
        """Stop taking work; queued jobs are cancelled, running ones finish."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for queue in self._queues.values():
                while queue:
                    queue.popleft().future.cancel()
            self._cond.notify_all()
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()

    @property
    def queued(self) -> dict[str, int]:
        with self._cond:
            return {lane.value: len(q) for lane, q in self._queues.items()}

    def _take(self, finished: _Task | None) -> _Task | None:
        """The next task for this thread; ``finished`` is the one it just ran."""
        with self._cond:
            if finished is not None and finished.lane is Lane.BULK:
                self._bulk_running -= 1
            while True:
                if self._queues[Lane.INTERACTIVE]:
                    task = self._queues[Lane.INTERACTIVE].popleft()
                    if (finished is not None and finished.lane is Lane.BULK and self._idle
                            and self._queues[Lane.BULK]):
                        self._cond.notify()  # the bulk slot this thread freed goes to another
                    return task
                if self._queues[Lane.BULK] and self._bulk_running < self.bulk_limit:
                    self._bulk_running += 1
                    return self._queues[Lane.BULK].popleft()
                if self._closed:
                    return None
                self._idle += 1
                try:
                    self._cond.wait()
                finally:
                    self._idle -= 1

    def _run(self) -> None:
        task: _Task | None = None
        while True:
            task = self._take(task)
            if task is None:
                return
            if task.future.set_running_or_notify_cancel():
                try:
                    result = task.fn(*task.args)
                except BaseException as exc:  # delivered to the caller, never lost
                    task.future.set_exception(exc)
                else:
                    task.future.set_result(result)
