"""Giving the memory of a burst of image work back to the system (glibc's allocator; elsewhere a no-op).

Decoding a phone photo takes tens of MB for a fraction of a second, in worker threads. glibc serves an
allocation of at least its *mmap threshold* straight from the system and returns it on free; smaller
ones come from per-thread heaps that keep their free memory. The threshold starts at 128 KiB but grows
to the size of every large block freed (up to 32 MiB), so after the first decode the multi-MB buffers
of later ones (downloads, decoded pixels) land in those heaps and the process stays at its peak
(issue #13: RSS 146 MiB after a burst, 66 MiB before). ``cap_mmap_threshold`` pins the threshold, and
``release_free_memory`` (``malloc_trim``) hands the heaps' free pages back after a burst. Both are
documented glibc calls (mallopt(3), malloc_trim(3)); an operator's ``MALLOC_MMAP_THRESHOLD_`` wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

#: mallopt(3)'s M_MMAP_THRESHOLD; setting it also turns off glibc's dynamic threshold.
_M_MMAP_THRESHOLD = -3
#: Allocations of this size and above are mapped and unmapped on their own: the multi-MB buffers of
#: a decode are; Python's objects and a download's chunks are not (mapping those would cost page
#: faults for nothing). Measured (issue #13, after bot/media/buffers.py removed the extra
#: copies): no CPU difference per photo job, and the 50-phone burst peaks at 141 MiB with it, 217
#: without it.
MMAP_THRESHOLD = 1024 * 1024


@functools.cache
def _glibc() -> Any:
    """glibc, or None (musl, macOS, Windows: they manage large blocks their own way)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    return libc


@functools.cache
def cap_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold (once per process). False where it is not glibc or the operator
    set ``MALLOC_MMAP_THRESHOLD_`` themselves."""
    libc = _glibc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(threshold)))
    logger.debug("malloc mmap threshold %s at %d bytes", "pinned" if done else "left", threshold)
    return done


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system (``malloc_trim(0)``; it takes a few ms, so call
    it off the event loop). True if it released any."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))
