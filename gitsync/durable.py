"""Small filesystem helpers for writes that must survive a power cut.

A rename is only durable once the directory holding the new name is flushed too; a
file's own ``fsync`` does not cover its directory entry on every filesystem.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["fsync_dirs", "replace_private_file"]


def fsync_dirs(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Flush each directory (its entries: names created, renamed or removed) to disk.

    Missing directories are skipped: there is nothing of theirs to make durable.
    """
    for path in dict.fromkeys(os.fspath(p) for p in paths):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_private_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, readable by its owner only (0600).

    The parent directory is created 0700 when missing. Readers see the old or the new
    content, never a mix; both the file and the rename are flushed before returning.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp creates the file 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dirs([path.parent])
