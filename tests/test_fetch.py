"""The fetch pool: interactive work is never queued behind bulk work; streams are bounded."""

from __future__ import annotations

import threading

import pytest

from gitsync.fetch import FetchPool, Lane, PoolClosed


@pytest.fixture
def pool():
    p = FetchPool(4, bulk_limit=2)
    yield p
    p.close()


def test_interactive_runs_while_bulk_saturates_its_threads(pool):
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow_bulk(_):
        started.release()
        release.wait(10)
        return "bulk"

    bulk = [pool.submit(slow_bulk, i, lane=Lane.BULK) for i in range(20)]
    for _ in range(2):
        assert started.acquire(timeout=5)
    # Both bulk threads are blocked and 18 bulk jobs are queued ahead; an interactive
    # job still runs at once on a thread bulk work may not take.
    assert pool.submit(lambda: "edit").result(timeout=5) == "edit"
    assert pool.queued["bulk"] == 18
    release.set()
    assert [f.result(timeout=10) for f in bulk] == ["bulk"] * 20


def test_bulk_never_uses_more_than_its_limit(pool):
    running, peak, lock = [0], [0], threading.Lock()

    def job(_):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        threading.Event().wait(0.002)
        with lock:
            running[0] -= 1

    for _ in pool.stream(job, range(100), lane=Lane.BULK):
        pass
    assert peak[0] <= 2


def test_stream_yields_every_item_and_bounds_in_flight(pool):
    in_flight, peak, lock = [0], [0], threading.Lock()
    consumed = []

    def job(n):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        return n * n

    for item, result in pool.stream(job, range(200), lane=Lane.INTERACTIVE, window=5):
        with lock:
            in_flight[0] -= 1  # counted as in flight until the consumer took it
        consumed.append((item, result))
    assert sorted(consumed) == [(n, n * n) for n in range(200)]
    assert peak[0] <= 5


def test_stream_propagates_errors_and_stops_starting_work(pool):
    started = []

    def job(n):
        started.append(n)
        if n == 3:
            raise ValueError("bad doc")
        return n

    with pytest.raises(ValueError, match="bad doc"):
        for _ in pool.stream(job, range(1000), lane=Lane.BULK, window=4):
            pass
    assert len(started) < 1000


def test_closed_pool_refuses_work():
    pool = FetchPool(2, bulk_limit=1)
    pool.close()
    with pytest.raises(PoolClosed):
        pool.submit(lambda: None)


def test_pool_needs_a_thread_for_interactive_work():
    with pytest.raises(ValueError):
        FetchPool(2, bulk_limit=2)
