#!/usr/bin/env python3
"""Planner cost for deep paths and for a large ordinary folder.

    python bench/bench_plan.py            # every case
    python bench/bench_plan.py --quick    # skip the 32 KB path (slow on a quadratic planner)

Each line is the median of a few runs of ``plan.diff_folders`` alone (no I/O), in CPU
time of this process (the machine is shared: wall time would measure the neighbours).
Run it on two commits to compare.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitsync.plan import Tracked, diff_folders  # noqa: E402
from gitsync.ydoc import Entry  # noqa: E402


def deep_path(total_bytes: int, segments: int, leaf: str = "note.md") -> str:
    """A path of about ``total_bytes`` bytes in ``segments`` segments (the last is ``leaf``)."""
    width = max(1, (total_bytes - len(leaf)) // (segments - 1) - 1)
    return "/".join(["d" * width] * (segments - 1) + [leaf])


def with_parents(path: str, doc: str) -> dict[str, Entry]:
    """The index the Relay keeps for one file: a folder entry per ancestor, then the file."""
    parts = path.split("/")
    index = {}
    for i in range(1, len(parts)):
        sub = "/".join(parts[:i])
        index["/" + sub] = Entry(path=sub, id=f"f{i}", type="folder")
    index["/" + path] = Entry(path=path, id=doc, type="markdown")
    return index


def timed(fn: Callable[[], object], runs: int = 3) -> tuple[float, object]:
    results, result = [], None
    for _ in range(runs):
        t0 = time.process_time()
        result = fn()
        results.append(time.process_time() - t0)
    return sorted(results)[len(results) // 2], result


def tracked(index: dict[str, Entry]) -> dict[str, Tracked]:
    return {e.id: Tracked(e.path, e.type) for e in index.values()}


def main() -> None:
    quick = "--quick" in sys.argv
    deep = deep_path(4000, 250)
    print(f"deep path: {len(deep.encode())} bytes, {deep.count('/') + 1} segments")

    single = {"/" + deep: Entry(path=deep, id="d1", type="markdown")}
    secs, plan = timed(lambda: diff_folders({}, single))
    print(f"  initial plan, file entry only          {secs * 1000:9.2f} ms  ops={len(plan.ops)}")

    full = with_parents(deep, "d1")
    secs, plan = timed(lambda: diff_folders({}, full))
    print(f"  initial plan, with 249 folder entries  {secs * 1000:9.2f} ms  ops={len(plan.ops)}")

    renamed = with_parents(deep.rpartition("/")[0] + "/renamed.md", "d1")
    secs, plan = timed(lambda: diff_folders(tracked(full), renamed))
    print(f"  rename of the leaf                     {secs * 1000:9.2f} ms  ops={len(plan.ops)}")

    secs, plan = timed(lambda: diff_folders(tracked(full), {"/other.md": Entry("other.md", "d2", "markdown")}))
    print(f"  delete of the whole tree               {secs * 1000:9.2f} ms  ops={len(plan.ops)}")

    if not quick:
        huge = "/".join(["a"] * 16_000) + "/x.md"  # 32 KB, the worst case of the old planner
        index = {"/" + huge: Entry(path=huge, id="d1", type="markdown")}
        secs, plan = timed(lambda: diff_folders({}, index), runs=1)
        what = f"rejected: {plan.rejected[0][1]}" if plan.rejected else f"planned, ops={len(plan.ops)}"
        print(f"32 KB path (16,001 segments)             {secs * 1000:9.2f} ms  {what}")

    normal = {}
    for i in range(10_000):
        path = f"area {i % 20}/topic {i % 200}/note {i}.md"
        normal["/" + path] = Entry(path=path, id=str(uuid.UUID(int=i)), type="markdown")
    secs, plan = timed(lambda: diff_folders({}, normal))
    print(f"10,000 ordinary paths, initial plan      {secs * 1000:9.2f} ms  ops={len(plan.ops)}")
    previous = tracked(normal)
    secs, plan = timed(lambda: diff_folders(previous, normal))
    print(f"10,000 ordinary paths, nothing changed   {secs * 1000:9.2f} ms  ops={len(plan.ops)}")
    moved = {}
    for entry in normal.values():
        path = "archive/" + entry.path
        moved["/" + path] = Entry(path=path, id=entry.id, type="markdown")
    secs, plan = timed(lambda: diff_folders(previous, moved))
    print(f"10,000 ordinary paths, all moved         {secs * 1000:9.2f} ms  ops={len(plan.ops)}")


if __name__ == "__main__":
    main()
