"""Freed heap memory goes back to the system after a large transient decode."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gitsync.heap import release_free_heap

ROOT = Path(__file__).resolve().parents[1]

# Many blocks of 1 KB (too large for the interpreter's own small-object allocator, so
# from malloc) freed among survivors, as a decoded folder document leaves the heap:
# glibc keeps the free pages resident until it is asked to give them back.
PROBE = textwrap.dedent("""
    from gitsync.heap import release_free_heap

    def rss_kib():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])

    blocks = [bytes(1000) + i.to_bytes(4, "little") for i in range(80_000)]
    kept = blocks[::64]
    del blocks
    before = rss_kib()
    asked = release_free_heap()
    after = rss_kib()
    print(int(asked), before - after, len(kept))
""")


def test_release_free_heap_is_safe_to_call_repeatedly():
    first = release_free_heap()
    assert release_free_heap() is first


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_freed_blocks_leave_the_resident_set():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    asked, released_kib, _ = (int(x) for x in out.stdout.split())
    if not asked:
        pytest.skip("the C library has no malloc_trim")
    assert released_kib > 20 * 1024  # of about 75 MiB freed
