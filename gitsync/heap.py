"""Give freed heap memory back to the operating system after a large transient decode.

Decoding a big folder document (pycrdt builds the whole Yjs document in native memory,
then we keep only the entries) frees tens of megabytes in small pieces among objects
that stay alive. glibc keeps such free memory in its arenas, so the process's resident
size stays at the high-water mark of the decode through the rest of the sync and adds
to the commit's own peak. ``malloc_trim`` returns the free pages; elsewhere (musl,
macOS) there is nothing to call and nothing is done.
"""

from __future__ import annotations

import ctypes
import functools

__all__ = ["release_free_heap"]


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None when the C library has none.

    Looked up in the symbols the interpreter already has loaded (``CDLL(None)``), not by
    ``ctypes.util.find_library``, which runs ``ldconfig`` in a subprocess.
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return free heap pages to the system; True when the C library could be asked.

    Costs a few milliseconds (a walk of the free lists): call it after a large
    transient allocation, never per document.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
