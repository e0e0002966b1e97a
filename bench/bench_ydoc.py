#!/usr/bin/env python3
"""Cost of the depth check (gitsync.ycheck) that runs before pycrdt decodes a document.

    python bench/bench_ydoc.py

Times each reader with the check and with it switched off, on documents built with
pycrdt: a 1 MB note pasted at once, a 1 MB note typed in 20-character chunks and then
edited (2,000 inserts, 5,000 deletes: many structs), 10,000 small notes (read as the
engine reads them: ``is_never_written`` then ``read_text``), and folder documents with
10,000 entries (plain objects; Y.Maps, a tenth of them overwritten).
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pycrdt import Doc, Map, Text  # noqa: E402

from gitsync import ycheck, ydoc  # noqa: E402

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards vex jumbo graphs "
         "[link] {tag} naïve café 中文 emoji 😀").split()


def sentence(rnd: random.Random, words: int) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(words))


def pasted_note(size: int) -> bytes:
    doc = Doc()
    text = "\n".join(sentence(random.Random(i), 12) for i in range(size // 70))
    doc.get("contents", type=Text).insert(0, text[:size])
    return doc.get_update()


def typed_note(size: int, inserts: int, deletes: int) -> bytes:
    rnd = random.Random(2)
    doc = Doc()
    text = doc.get("contents", type=Text)
    length = 0
    while length < size:
        chunk = sentence(rnd, 4).encode("ascii", "ignore").decode()[:20] or "x"
        text += chunk
        length += len(chunk)
    for _ in range(inserts):
        text.insert(rnd.randrange(length), "edit")
        length += 4
    for _ in range(deletes):
        at = rnd.randrange(length - 3)
        del text[at : at + 3]
        length -= 3
    return doc.get_update()


def small_notes(count: int) -> list[bytes]:
    rnd = random.Random(3)
    notes = []
    for _ in range(count):
        doc = Doc()
        text = doc.get("contents", type=Text)
        text += "# " + sentence(rnd, 4) + "\n\n"
        for _ in range(rnd.randint(1, 6)):
            text += sentence(rnd, rnd.randint(5, 60)) + "\n"
        notes.append(doc.get_update())
    return notes


def folder(entries: int, *, y_maps: bool) -> bytes:
    doc = Doc()
    meta = doc.get("filemeta_v0", type=Map)
    for i in range(entries):
        value = {"id": str(uuid.UUID(int=i + 1, version=4)), "type": "markdown", "version": 0}
        meta[f"/notes/dir{i % 50}/note {i}.md"] = Map(value) if y_maps else value
    if y_maps:
        for i in range(0, entries, 10):  # overwritten values inherit their parent via origins
            meta[f"/notes/dir{i % 50}/note {i}.md"] = Map({"id": str(uuid.uuid4()), "type": "markdown"})
    return doc.get_update()


def fresh(reader: Callable[[bytes], object], data: bytes) -> object:
    """Read as if for the first time (ydoc remembers the last update it checked)."""
    ydoc._last_checked.data = None
    return reader(data)


def timed(fn: Callable[[], object], runs: int) -> float:
    """Least CPU time of ``runs`` calls: on a shared machine, wall time and even the
    median mostly measure the other processes."""
    samples = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return min(samples)


def compare(label: str, fn: Callable[[], object], runs: int, unit: float = 1e3, per: int = 1) -> None:
    """Time ``fn`` with and without the check, alternating so drift hits both alike."""
    real = ydoc.check_update
    checked = unchecked = float("inf")
    for _ in range(runs):
        checked = min(checked, timed(fn, 1))
        ydoc.check_update = lambda data, **_: None  # type: ignore[assignment]
        try:
            unchecked = min(unchecked, timed(fn, 1))
        finally:
            ydoc.check_update = real
    name = "ms" if unit == 1e3 else "us"
    print(f"{label:<58} {unchecked / per * unit:9.2f} {checked / per * unit:9.2f} {name}"
          f"  {100 * (checked - unchecked) / unchecked:+6.1f}%")


def main() -> None:
    print("building documents ...", flush=True)
    pasted = pasted_note(1_000_000)
    typed = typed_note(1_000_000, inserts=2_000, deletes=5_000)
    notes = small_notes(10_000)
    plain_folder = folder(10_000, y_maps=False)
    map_folder = folder(10_000, y_maps=True)
    print(f"pasted note {len(pasted) / 1e6:.2f} MB, typed note {len(typed) / 1e6:.2f} MB, "
          f"10,000 notes {sum(map(len, notes)) / 1e6:.1f} MB, folders {len(plain_folder) / 1e6:.2f} / "
          f"{len(map_folder) / 1e6:.2f} MB\n")
    print(f"{'document (least CPU time)':<58} {'no check':>9} {'checked':>9}")
    compare("1 MB note, pasted: read_text", lambda: fresh(ydoc.read_text, pasted), 15)
    compare("1 MB note, typed + 7,000 edits: read_text", lambda: fresh(ydoc.read_text, typed), 15)
    compare("10,000 small notes, is_never_written + read_text, per note",
            lambda: [ydoc.is_never_written(n) or ydoc.read_text(n) for n in notes], 3, unit=1e6, per=len(notes))
    compare("folder, 10,000 plain entries: read_folder", lambda: fresh(ydoc.read_folder, plain_folder), 7)
    compare("folder, 10,000 Y.Map entries (1,000 overwritten)", lambda: fresh(ydoc.read_folder, map_folder), 7)
    print()
    alone = {name: timed(lambda data=data: ycheck.check_update(data), 9) * 1e3
             for name, data in (("pasted note", pasted), ("typed note", typed), ("plain folder", plain_folder),
                                ("Y.Map folder", map_folder))}
    per_note = timed(lambda: [ycheck.check_update(n) for n in notes], 5) / len(notes) * 1e6
    print("check alone: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in alone.items())
          + f", a small note {per_note:.1f} us")


if __name__ == "__main__":
    main()
