"""Throughput of the work queue: durable puts (fsync, group commit) and gets.

Usage: python bench/bench_workqueue.py [--dir DIR] [--puts N]

Prints puts/s with a journal from 1 and 8 threads (and fsyncs per put, which shows
whether group commit shares syncs), merged puts/s, memory-only puts/s, and get+done/s.
The journal goes to DIR (default: a temporary directory; point it at the data disk to
measure the disk the service will use).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitsync.workqueue import WorkQueue  # noqa: E402


def timed_puts(queue: WorkQueue, threads: int, total: int, prefix: str) -> float:
    per_thread = total // threads
    barrier = threading.Barrier(threads + 1)

    def run(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            queue.put((prefix, f"{t}-{i}"))

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return per_thread * threads / (time.perf_counter() - start)


def bench_durable_puts(directory: Path, threads: int, total: int) -> None:
    path = directory / f"puts-{threads}.journal"
    queue = WorkQueue(path)
    try:
        before = queue.snapshot()["fsyncs"]
        rate = timed_puts(queue, threads, total, "relay")
        fsyncs = queue.snapshot()["fsyncs"] - before
        print(
            f"durable put, {threads} thread(s): {rate:10.0f} puts/s  "
            f"({fsyncs / (total // threads * threads):.2f} fsyncs/put)"
        )
    finally:
        queue.close()
        path.unlink(missing_ok=True)


def bench_merged_puts(directory: Path, total: int) -> None:
    path = directory / "merged.journal"
    queue = WorkQueue(path)
    try:
        queue.put(("relay", "hot"))
        start = time.perf_counter()
        for _ in range(total):
            queue.put(("relay", "hot"))
        rate = total / (time.perf_counter() - start)
        print(f"merged put (journal):       {rate:10.0f} puts/s")
    finally:
        queue.close()


def bench_memory_gets(total: int) -> None:
    queue = WorkQueue(None)
    try:
        start = time.perf_counter()
        for i in range(total):
            queue.put(("relay", str(i)))
        put_rate = total / (time.perf_counter() - start)
        start = time.perf_counter()
        while (key := queue.get(timeout=0)) is not None:
            queue.done(key)
        get_rate = total / (time.perf_counter() - start)
        print(f"memory put:                 {put_rate:10.0f} puts/s")
        print(f"get+done (memory):          {get_rate:10.0f} gets/s")
    finally:
        queue.close()


def bench_replay_and_gets(directory: Path, total: int) -> None:
    """Open a journal of ``total`` outstanding puts (as after a crash), then drain it."""
    path = directory / "replay.journal"
    path.write_text("".join(f'{{"op":"put","key":["relay","{i}"]}}\n' for i in range(total)))
    start = time.perf_counter()
    queue = WorkQueue(path)
    opened = time.perf_counter() - start
    try:
        start = time.perf_counter()
        while (key := queue.get(timeout=0)) is not None:
            queue.done(key)  # appends a done record (no fsync); compaction now and then
        get_rate = total / (time.perf_counter() - start)
        print(f"open+replay {total} keys:   {opened * 1000:10.1f} ms")
        print(f"get+done (journal):         {get_rate:10.0f} gets/s")
    finally:
        queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="directory for the journals")
    parser.add_argument("--puts", type=int, default=4000, help="durable puts per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        print(f"journal directory: {directory}")
        bench_durable_puts(directory, 1, args.puts)
        bench_durable_puts(directory, 8, args.puts)
        bench_durable_puts(directory, 32, args.puts)
        bench_merged_puts(directory, 100_000)
        bench_memory_gets(100_000)
        bench_replay_and_gets(directory, 100_000)


if __name__ == "__main__":
    main()
