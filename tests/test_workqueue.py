"""WorkQueue: coalescing, exclusivity, order, deferral and the crash-safe journal.

Synchronization is by events and joins only; the few timeouts are upper bounds that a
healthy run never reaches, never assertions on elapsed time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from gitsync.workqueue import JournalError, Lane, QueueClosed, WorkQueue

ROOT = Path(__file__).resolve().parents[1]
LONG = 30.0  # generous upper bound for waits that should end at once


def key(i: int | str) -> tuple[str, str]:
    return ("relay", f"doc-{i}")


def start(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def drain(queue: WorkQueue) -> list:
    """Take and finish everything available right now."""
    out = []
    while (item := queue.get(timeout=0)) is not None:
        out.append(item)
        queue.done(item)
    return out


@pytest.fixture(params=["memory", "journal"])
def queue(request, tmp_path: Path):
    q = WorkQueue(tmp_path / "queue.journal" if request.param == "journal" else None)
    yield q
    q.close()


# ---------------------------------------------------------------- coalescing


def test_duplicates_of_a_pending_key_merge(queue: WorkQueue):
    results = [queue.put(key(1)) for _ in range(200)]
    assert results == [True] + [False] * 199
    assert queue.pending_count == 1
    assert drain(queue) == [key(1)]
    assert queue.snapshot()["merged"] == 199


def test_burst_while_processing_runs_twice_at_most(queue: WorkQueue):
    processing = threading.Event()
    release = threading.Event()
    runs: list = []

    def worker():
        while (item := queue.get(timeout=LONG)) is not None:
            runs.append(item)
            if len(runs) == 1:
                processing.set()
                assert release.wait(LONG)
            queue.done(item)
            if queue.pending_count == 0 and len(runs) >= 2:
                return

    queue.put(key(1))
    thread = start(worker)
    assert processing.wait(LONG)
    results = [queue.put(key(1)) for _ in range(199)]
    assert results == [True] + [False] * 198  # first one schedules the re-run
    release.set()
    thread.join(LONG)
    assert not thread.is_alive()
    assert runs == [key(1), key(1)]
    assert queue.get(timeout=0) is None


def test_put_while_in_progress_reruns_once_after_done(queue: WorkQueue):
    queue.put(key(1))
    queue.put(key(2))
    assert queue.get(timeout=0) == key(1)
    assert queue.put(key(1)) is True
    assert queue.put(key(1)) is False
    # not handed out again while in progress, even though it is scheduled
    assert queue.get(timeout=0) == key(2)
    assert queue.get(timeout=0) is None
    assert queue.in_progress_count == 2
    queue.done(key(1))
    assert queue.get(timeout=0) == key(1)
    queue.done(key(1))
    queue.done(key(2))
    assert queue.get(timeout=0) is None
    assert queue.snapshot()["in_progress"] == 0


def test_never_two_workers_on_one_key_and_no_lost_update(queue: WorkQueue):
    keys = [key(i) for i in range(5)]
    guard = threading.Lock()
    in_flight: Counter = Counter()
    worst: list[int] = [0]
    version: Counter = Counter()
    seen: dict = {}
    failures: list[str] = []

    def consumer():
        while (item := queue.get(timeout=LONG)) is not None:
            with guard:
                in_flight[item] += 1
                worst[0] = max(worst[0], in_flight[item])
                seen[item] = max(seen.get(item, 0), version[item])
            for _ in range(50):  # a little work, to widen the window for overlap
                pass
            with guard:
                in_flight[item] -= 1
            queue.done(item)

    def producer(offset: int):
        try:
            for n in range(300):
                k = keys[(n + offset) % len(keys)]
                with guard:
                    version[k] += 1
                queue.put(k)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(repr(exc))

    consumers = [start(consumer) for _ in range(6)]
    producers = [start(producer, i) for i in range(4)]
    for thread in producers:
        thread.join(LONG)
    assert queue.wait_idle(LONG)
    queue.close()
    for thread in consumers:
        thread.join(LONG)
        assert not thread.is_alive()
    assert not failures
    assert worst[0] == 1
    # every put was followed by a run that saw it: the last version of each key was seen
    assert seen == {k: version[k] for k in keys}


def test_fifo_order_and_merge_keeps_position(queue: WorkQueue):
    for i in range(5):
        queue.put(key(i))
    queue.put(key(0))  # merged: does not move to the back
    assert drain(queue) == [key(i) for i in range(5)]


def test_rerun_goes_to_the_back(queue: WorkQueue):
    queue.put(key(1))
    assert queue.get(timeout=0) == key(1)
    queue.put(key(1))
    queue.put(key(2))
    queue.done(key(1))
    assert drain(queue) == [key(2), key(1)]


# ---------------------------------------------------------------- blocking, close


def test_close_wakes_a_blocked_get(queue: WorkQueue):
    started = threading.Event()
    got: list = []

    def waiter():
        started.set()
        got.append(queue.get())

    thread = start(waiter)
    assert started.wait(LONG)
    queue.close()
    thread.join(LONG)
    assert not thread.is_alive()
    assert got == [None]


def test_put_wakes_a_blocked_get(queue: WorkQueue):
    got: list = []
    thread = start(lambda: got.append(queue.get(timeout=LONG)))
    queue.put(key(1))
    thread.join(LONG)
    assert got == [key(1)]


def test_get_timeout_returns_none(queue: WorkQueue):
    assert queue.get(timeout=0.01) is None


def test_after_close(queue: WorkQueue):
    queue.put(key(1))
    queue.close()
    queue.close()  # idempotent
    assert queue.get(timeout=0) is None
    with pytest.raises(QueueClosed):
        queue.put(key(2))
    with pytest.raises(QueueClosed):  # never reported as merged: nothing was scheduled
        queue.put_later(key(3), 1)
    with pytest.raises(QueueClosed):
        queue.put_later(key(1), 1)
    assert queue.snapshot()["closed"] is True


def test_done_of_a_key_not_in_progress_raises(queue: WorkQueue):
    queue.put(key(1))
    with pytest.raises(ValueError, match="not in progress"):
        queue.done(key(1))


def test_wait_idle(queue: WorkQueue):
    assert queue.wait_idle(0)
    queue.put(key(1))
    assert not queue.wait_idle(0)
    item = queue.get(timeout=0)
    idle: list = []
    thread = start(lambda: idle.append(queue.wait_idle(LONG)))
    queue.done(item)
    thread.join(LONG)
    assert idle == [True]


# ---------------------------------------------------------------- deferred retry


def test_put_later_becomes_available_later(queue: WorkQueue):
    assert queue.put_later(key(1), 0.05) is True
    assert queue.get(timeout=0) is None
    assert queue.snapshot()["deferred"] == 1
    assert queue.get(timeout=LONG) == key(1)
    queue.done(key(1))
    assert queue.snapshot()["deferred"] == 0


def test_put_later_wakes_a_getter_that_was_already_waiting(queue: WorkQueue):
    started = threading.Event()
    got: list = []

    def waiter():
        started.set()
        got.append(queue.get())  # no timeout: must still wake when the deferral is due

    thread = start(waiter)
    assert started.wait(LONG)
    queue.put_later(key(1), 0.01)
    thread.join(LONG)
    assert got == [key(1)]


def test_immediate_put_overrides_a_deferred_one(queue: WorkQueue):
    queue.put_later(key(1), 3600)
    assert queue.put(key(1)) is True
    assert queue.get(timeout=0) == key(1)
    queue.done(key(1))
    snap = queue.snapshot()
    assert snap["deferred"] == 0 and snap["pending"] == 0
    assert queue.put_later(key(2), 3600) is True
    assert queue.put_later(key(2), 7200) is False  # the earlier deferral stays
    queue.put(key(3))
    assert queue.put_later(key(3), 0) is False  # already pending


def test_put_later_while_in_progress_runs_after_done(queue: WorkQueue):
    queue.put(key(1))
    assert queue.get(timeout=0) == key(1)
    assert queue.put_later(key(1), 0.01) is True
    queue.done(key(1))
    assert queue.get(timeout=LONG) == key(1)
    queue.done(key(1))
    assert queue.get(timeout=0) is None


# ---------------------------------------------------------------- durability


def reopen(path: Path, **kwargs) -> list:
    """Open the journal at ``path``, return what it hands out in order, close it."""
    q = WorkQueue(path, **kwargs)
    try:
        out = []
        while (item := q.get(timeout=0)) is not None:
            out.append(item)
        return out
    finally:
        q.close()


def test_reopen_finds_pending_keys_in_order(tmp_path: Path):
    path = tmp_path / "data" / "queue.journal"
    q = WorkQueue(path)
    for i in range(20):
        q.put(key(i))
    q.put(key(3))  # merged
    crash_copy = tmp_path / "copy.journal"
    shutil.copyfile(path, crash_copy)  # the file as a crash would leave it
    q.close()
    assert reopen(crash_copy) == [key(i) for i in range(20)]
    assert reopen(path) == [key(i) for i in range(20)]


def test_done_keys_do_not_come_back_but_in_progress_ones_do(tmp_path: Path):
    path = tmp_path / "queue.journal"
    q = WorkQueue(path)
    for i in range(4):
        q.put(key(i))
    assert q.get(timeout=0) == key(0)
    q.done(key(0))
    assert q.get(timeout=0) == key(1)  # in progress at the "crash"
    assert q.get(timeout=0) == key(2)
    q.put(key(2))  # re-put while in progress
    q.done(key(2))  # re-queued, so still outstanding
    crash_copy = tmp_path / "copy.journal"
    shutil.copyfile(path, crash_copy)
    q.close()
    assert reopen(crash_copy) == [key(1), key(2), key(3)]
    assert reopen(path) == [key(1), key(2), key(3)]


def test_deferred_keys_survive_reopen_and_are_due_at_once(tmp_path: Path):
    path = tmp_path / "queue.journal"
    q = WorkQueue(path)
    q.put(key(1))
    assert q.get(timeout=0) == key(1)
    q.put_later(key(1), 3600)
    q.done(key(1))  # deferred: no done record
    q.put_later(key(2), 3600)
    q.close()
    assert reopen(path) == [key(1), key(2)]


@pytest.mark.parametrize("how", ["put", "put_later"])
def test_a_merged_put_returns_only_after_the_record_it_joins_is_synced(tmp_path, monkeypatch, how):
    """A 202 for a merged webhook promises durability too: the merged put must wait for
    the fsync of the record it merges into, which another thread may still be running."""
    import gitsync.workqueue as workqueue

    real_fsync = workqueue._fsync
    order: list[str] = []
    in_fsync = threading.Event()
    second_returned = threading.Event()

    def slow_fsync(fd: int) -> None:
        in_fsync.set()
        # Hold the first sync open until the merged put returns, or long enough for a
        # merged put that waits correctly to be blocked behind it.
        second_returned.wait(0.5)
        real_fsync(fd)
        order.append("synced")

    q = WorkQueue(tmp_path / "queue.journal")
    monkeypatch.setattr(workqueue, "_fsync", slow_fsync)

    def enqueue() -> None:
        q.put(key(1)) if how == "put" else q.put_later(key(1), 60)

    first = start(enqueue)
    assert in_fsync.wait(LONG)
    merged = start(lambda: (enqueue(), order.append("merged returned"), second_returned.set()))
    first.join(LONG)
    merged.join(LONG)
    monkeypatch.setattr(workqueue, "_fsync", real_fsync)
    q.close()
    assert order[:2] == ["synced", "merged returned"]


def test_merged_puts_write_no_record(tmp_path: Path):
    path = tmp_path / "queue.journal"
    q = WorkQueue(path)
    for _ in range(200):
        q.put(key(1))
    assert q.get(timeout=0) == key(1)
    for _ in range(200):
        q.put(key(1))
    assert q.snapshot()["journal_records"] == 1
    q.done(key(1))  # re-queued: no done record
    assert q.snapshot()["journal_records"] == 1
    q.close()
    assert len(path.read_bytes().splitlines()) == 1


def test_torn_final_line_and_corrupt_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = tmp_path / "queue.journal"
    lines = [
        json.dumps({"op": "put", "key": ["relay", "a"]}),
        "this is not json",
        json.dumps({"op": "put", "key": ["relay", "b"]}),
        json.dumps({"op": "frobnicate", "key": ["relay", "c"]}),
        json.dumps({"op": "put", "key": "not-a-list"}),
        json.dumps({"op": "put", "key": ["relay", 7]}),
        json.dumps({"op": "done", "key": ["relay", "a"]}),
        json.dumps({"op": "put", "key": ["relay", "d"]}),
    ]
    torn = '{"op":"put","key":["relay","e"'
    path.write_text("\n".join(lines) + "\n" + torn)
    with caplog.at_level(logging.WARNING, logger="gitsync.workqueue"):
        assert reopen(path) == [("relay", "b"), ("relay", "d")]
    assert "torn final line" in caplog.text
    assert caplog.text.count("corrupt line skipped") == 4
    # the rewrite at open dropped the torn tail: appends start on a fresh line
    assert path.read_bytes().endswith(b"\n")
    q = WorkQueue(path)
    q.put(("relay", "f"))
    q.close()
    assert reopen(path) == [("relay", "b"), ("relay", "d"), ("relay", "f")]


def test_compaction_keeps_only_outstanding_keys(tmp_path: Path):
    path = tmp_path / "queue.journal"
    q = WorkQueue(path, compact_every=50)
    q.put(key("keep-1"))
    q.put(key("keep-2"))
    assert q.get(timeout=0) == key("keep-1")  # in progress: must survive compaction
    assert q.get(timeout=0) == key("keep-2")
    for i in range(500):
        q.put(key(i))
        assert q.get(timeout=0) == key(i)
        q.done(key(i))
        assert len(path.read_bytes().splitlines()) <= 51
    q.put(key("keep-3"))
    snap = q.snapshot()
    assert snap["compactions"] >= 10
    assert snap["journal_outstanding"] == 3
    crash_copy = tmp_path / "copy.journal"
    shutil.copyfile(path, crash_copy)
    q.close()
    expected = [key("keep-1"), key("keep-2"), key("keep-3")]
    assert reopen(crash_copy) == expected
    assert reopen(path) == expected
    # open itself compacts
    assert len(path.read_bytes().splitlines()) == 3
    assert not path.with_name(path.name + ".tmp").exists()


def test_concurrent_puts_are_all_durable(tmp_path: Path):
    path = tmp_path / "queue.journal"
    q = WorkQueue(path)
    barrier = threading.Barrier(8)

    def putter(t: int):
        barrier.wait(LONG)
        for i in range(50):
            q.put(key(f"{t}-{i}"))

    threads = [start(putter, t) for t in range(8)]
    for thread in threads:
        thread.join(LONG)
    snap = q.snapshot()
    assert 1 <= snap["fsyncs"] <= snap["puts"] == 400
    q.close()
    got = reopen(path)
    assert sorted(got) == sorted(key(f"{t}-{i}") for t in range(8) for i in range(50))
    for t in range(8):  # per-thread order is kept
        mine = [k for k in got if k[1].startswith(f"doc-{t}-")]
        assert mine == [key(f"{t}-{i}") for i in range(50)]


def test_one_process_per_journal(tmp_path: Path):
    path = tmp_path / "queue.journal"
    q = WorkQueue(path)
    with pytest.raises(JournalError, match="in use"):
        WorkQueue(path)
    q.close()
    WorkQueue(path).close()


def test_journaled_keys_must_be_tuples_of_str(tmp_path: Path):
    q = WorkQueue(tmp_path / "queue.journal")
    try:
        with pytest.raises(TypeError):
            q.put("relay/doc")
        with pytest.raises(TypeError):
            q.put(("relay", 1))
        assert q.pending_count == 0
    finally:
        q.close()


def test_unusable_journal_path_raises(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(JournalError):
        WorkQueue(blocker / "queue.journal")


CHILD = """
import sys
from pathlib import Path
from gitsync.workqueue import WorkQueue

q = WorkQueue(Path(sys.argv[1]))
i = 0
while True:
    q.put(("relay", f"doc-{i}"))
    sys.stdout.write(f"{i}\\n")
    sys.stdout.flush()
    i += 1
"""


def test_sigkill_right_after_put_returns(tmp_path: Path):
    path = tmp_path / "queue.journal"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
        text=True,
    )
    try:
        acknowledged = []
        for line in child.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) == 200:
                child.send_signal(signal.SIGKILL)  # the child is mid-way through more puts
                break
    finally:
        child.kill()
        child.wait(LONG)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    got = reopen(path)
    assert len(acknowledged) == 200
    assert got[:200] == [key(i) for i in acknowledged]
    assert got == [key(i) for i in range(len(got))]


def test_expedite_makes_deferred_keys_due_now():
    q = WorkQueue()
    q.put_later(("r", "a"), 3600)
    q.put_later(("r", "b"), 3600)
    assert q.get(timeout=0) is None
    assert q.expedite() == 2
    assert {q.get(timeout=0), q.get(timeout=0)} == {("r", "a"), ("r", "b")}


def test_take_matching_takes_related_pending_keys_in_order():
    q = WorkQueue()
    for doc in ("a", "b", "c", "d"):
        q.put(("f1" if doc != "c" else "f2", doc))
    first = q.get(timeout=0)
    assert first == ("f1", "a")
    taken = q.take_matching(lambda k: k[0] == "f1", limit=1)
    assert taken == [("f1", "b")]
    assert q.take_matching(lambda k: k[0] == "f1", limit=10) == [("f1", "d")]
    assert q.in_progress_count == 3 and q.pending_count == 1
    q.put(("f1", "b"))  # re-put while in progress: runs again after done
    for key in (first, ("f1", "b"), ("f1", "d")):
        q.done(key)
    assert [q.get(timeout=0), q.get(timeout=0)] == [("f2", "c"), ("f1", "b")]


# ---------------------------------------------------------------- leading edge, spacing


class FakeClock:
    """Monotonic seconds that move only when the test says so (use get(timeout=0))."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "journal"])
def spaced(request, tmp_path: Path):
    clock = FakeClock()
    path = tmp_path / "queue.journal" if request.param == "journal" else None
    q = WorkQueue(path, min_interval=10.0, clock=clock)
    yield q, clock
    q.close()


def test_a_quiet_key_is_runnable_at_once(spaced):
    queue, clock = spaced
    assert queue.put(key(1)) is True
    assert queue.get(timeout=0) == key(1)  # no trailing debounce: the first put runs now
    queue.done(key(1))
    clock.now += 10.0  # quiet for a whole interval: the next put runs at once again
    assert queue.put(key(1)) is True
    assert queue.get(timeout=0) == key(1)


def test_a_burst_costs_one_run_now_and_exactly_one_more_after_the_interval(spaced):
    queue, clock = spaced
    assert queue.put(key(1)) is True
    results = [queue.put(key(1)) for _ in range(49)]  # merged into the pending run
    assert queue.get(timeout=0) == key(1)
    clock.now += 1.0
    results += [queue.put(key(1)) for _ in range(75)]  # while it runs: one re-run
    queue.done(key(1))
    clock.now += 2.0
    results += [queue.put(key(1)) for _ in range(75)]  # after it, within the interval
    assert results == [False] * 49 + [True] + [False] * 149
    assert queue.get(timeout=0) is None  # the re-run waits for the interval's end
    assert queue.snapshot()["deferred"] == 1
    clock.now += 7.0  # 10 s after the first start
    assert queue.get(timeout=0) == key(1)
    queue.done(key(1))
    assert queue.get(timeout=0) is None and queue.snapshot()["deferred"] == 0
    assert queue.snapshot()["gets"] == 2


def test_spacing_is_per_key(spaced):
    queue, clock = spaced
    queue.put(key(1))
    assert queue.get(timeout=0) == key(1)
    queue.done(key(1))
    queue.put(key(1))  # within the interval: deferred
    queue.put(key(2))  # another key is not held back
    assert queue.get(timeout=0) == key(2)
    assert queue.get(timeout=0) is None


def test_a_put_brings_a_later_retry_forward_but_not_before_the_interval(spaced):
    queue, clock = spaced
    queue.put(key(1))
    assert queue.get(timeout=0) == key(1)
    assert queue.put_later(key(1), 300) is True  # retry with backoff
    queue.done(key(1))
    assert queue.put(key(1)) is True  # a webhook: due at the interval's end, not in 300 s
    clock.now += 10.0
    assert queue.get(timeout=0) == key(1)


def test_expedite_drains_without_spacing(spaced):
    queue, clock = spaced
    queue.put(key(1))
    assert queue.get(timeout=0) == key(1)
    queue.put(key(1))
    queue.done(key(1))
    assert queue.get(timeout=0) is None
    assert queue.expedite() == 1
    assert queue.get(timeout=0) == key(1)
    queue.put(key(1))
    queue.done(key(1))
    assert queue.get(timeout=0) == key(1)  # spacing is off for the rest of the drain


def test_spaced_rerun_wakes_a_waiting_getter(tmp_path: Path):
    q = WorkQueue(tmp_path / "queue.journal", min_interval=0.05)
    try:
        q.put(key(1))
        assert q.get(timeout=0) == key(1)
        q.put(key(1))
        q.done(key(1))
        assert q.get(timeout=LONG) == key(1)  # real clock: due 50 ms after the first start
    finally:
        q.close()


def test_spaced_key_survives_reopen_as_pending(tmp_path: Path):
    path = tmp_path / "queue.journal"
    q = WorkQueue(path, min_interval=3600)
    q.put(key(1))
    assert q.get(timeout=0) == key(1)
    q.put(key(1))
    q.done(key(1))  # deferred by the interval, still outstanding
    q.close()
    assert reopen(path) == [key(1)]


# ---------------------------------------------------------------- lanes


def test_interactive_keys_are_taken_before_bulk_ones(queue: WorkQueue):
    for i in range(3):
        queue.put(key(f"bulk-{i}"), lane=Lane.BULK)
    queue.put(key("hook"))
    assert queue.snapshot()["pending_bulk"] == 3
    assert drain(queue) == [key("hook")] + [key(f"bulk-{i}") for i in range(3)]


def test_a_worker_can_ask_for_one_lane(queue: WorkQueue):
    queue.put(key("bulk"), lane=Lane.BULK)
    queue.put(key("hook"), lane=Lane.INTERACTIVE)
    assert queue.get(timeout=0, lanes=(Lane.BULK,)) == key("bulk")
    assert queue.get(timeout=0, lanes=(Lane.BULK,)) is None
    assert queue.get(timeout=0, lanes=[Lane.INTERACTIVE]) == key("hook")


def test_a_bulk_key_put_again_as_interactive_moves_up_and_never_down(queue: WorkQueue):
    queue.put(key("a"), lane=Lane.BULK)
    queue.put(key("b"), lane=Lane.BULK)
    assert queue.put(key("b"), lane=Lane.INTERACTIVE) is False  # merged, but promoted
    assert queue.put(key("b"), lane=Lane.BULK) is False  # never demoted
    assert queue.get(timeout=0, lanes=(Lane.INTERACTIVE,)) == key("b")
    queue.put(key("b"), lane=Lane.BULK)  # re-run while in progress, as bulk ...
    queue.put(key("b"))  # ... then a webhook: the re-run is interactive
    queue.done(key("b"))
    assert queue.get(timeout=0, lanes=(Lane.INTERACTIVE,)) == key("b")


def test_a_getter_waiting_on_one_lane_is_woken_for_it(queue: WorkQueue):
    got: list = []
    waiting = threading.Event()

    def interactive_worker():
        waiting.set()
        got.append(queue.get(timeout=LONG, lanes=(Lane.INTERACTIVE,)))

    thread = start(interactive_worker)
    assert waiting.wait(LONG)
    queue.put(key("bulk"), lane=Lane.BULK)  # not for it
    queue.put(key("hook"))
    thread.join(LONG)
    assert got == [key("hook")]


def test_take_matching_takes_interactive_keys_first():
    q = WorkQueue()
    q.put(("f1", "bulk"), lane=Lane.BULK)
    q.put(("f1", "hook"))
    assert q.take_matching(lambda k: k[0] == "f1", limit=1) == [("f1", "hook")]
    assert q.take_matching(lambda k: k[0] == "f1", limit=5, lanes=(Lane.INTERACTIVE,)) == []
    assert q.take_matching(lambda k: k[0] == "f1", limit=5) == [("f1", "bulk")]


def test_lanes_survive_reopen_and_compaction(tmp_path: Path):
    path = tmp_path / "queue.journal"
    q = WorkQueue(path, compact_every=5)
    q.put(key("bulk"), lane=Lane.BULK)
    q.put(key("hook"))
    for i in range(10):  # enough records to compact
        q.put(key(i))
    while (item := q.get(timeout=0, lanes=(Lane.INTERACTIVE,))) is not None:
        if item != key("hook"):  # held at the "crash"
            q.done(item)
    assert q.snapshot()["compactions"] >= 1
    q.close()
    q = WorkQueue(path)
    try:
        assert q.snapshot()["pending_bulk"] == 1
        assert q.get(timeout=0) == key("hook")
        assert q.get(timeout=0) == key("bulk")
    finally:
        q.close()
