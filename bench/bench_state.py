#!/usr/bin/env python3
"""Cost of saving a relay's state files (done once per sync batch), by vault size.

    python bench/bench_state.py
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gitsync.state import FileRecord, RelayState  # noqa: E402


def main() -> None:
    for files in (1_000, 10_000, 50_000):
        with tempfile.TemporaryDirectory() as tmp:
            state = RelayState(Path(tmp))
            folder = state.folder("folder")
            for i in range(files):
                doc = str(uuid.uuid4())
                folder.files[doc] = FileRecord(path=f"d{i % 50}/note {i}.md", type="markdown",
                                               sha256=hashlib.sha256(doc.encode()).hexdigest(), size=120)
                state.doc_hashes[f"relay-{doc}"] = hashlib.sha256(doc.encode()[::-1]).hexdigest()
            state.save()
            runs = []
            for n in range(5):
                folder.dirty.append(f"changed-{n}.md")
                state.doc_hashes[f"relay-extra-{n}"] = "0" * 64
                t0 = time.perf_counter()
                state.save()
                runs.append(time.perf_counter() - t0)
            size = sum(p.stat().st_size for p in Path(tmp).iterdir())
            print(f"{files:>6} files: save after a change {sorted(runs)[2] * 1000:6.1f} ms (median of 5), "
                  f"{size / 1e6:.1f} MB on disk")


if __name__ == "__main__":
    main()
