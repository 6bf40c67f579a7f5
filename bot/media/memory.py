"""Giving the memory of a burst of image work back to the system (glibc's allocator; elsewhere a no-op).

Decoding a phone photo takes tens of MB for a fraction of a second, in worker threads. glibc serves an
allocation of at least its *mmap threshold* straight from the system and returns it on free; smaller
ones come from per-thread heaps that keep their free memory. The threshold starts at 128 KiB but grows
to the size of every large block freed (up to 32 MiB), so after the first decode the multi-MB buffers
of later ones (downloads, decoded pixels) land in those heaps and the process stays at its peak
(issue #13: RSS 146 MiB after a burst, 66 MiB before). ``cap_mmap_threshold`` pins the threshold (and
the trim threshold, so a heap keeps some free pages for the next download), and
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
#: mallopt(3)'s M_TRIM_THRESHOLD: free memory at the top of a heap beyond this goes back to the system.
_M_TRIM_THRESHOLD = -1
#: Allocations of this size and above are mapped and unmapped on their own: the multi-MB pixel
#: buffers of a decode are (a 12 MP photo drafted to half size is 9 MB); a downloaded photo or a
#: 480p video (3.2 MB) is not. Mapped afresh, each such body costs a page fault and a zeroed page
#: per 4 KiB, then a munmap: measured (issue #13, 100 photo jobs, 1 MiB here): 110,000 page faults
#: in the bot's loop thread, 0.5 s of system time; 4 MiB with the trim threshold below: 12,000.
MMAP_THRESHOLD = 4 * 1024 * 1024
#: ... and a heap keeps up to this much free at its top for the next body instead of handing it back
#: and faulting it in again (glibc's default, 128 KiB, trims after nearly every video); a burst's
#: remainder goes back with ``release_free_memory``. Measured, 100 photo jobs: 8 MiB peaks at 130
#: MiB, 32 MiB at 147 MiB, for the same CPU.
TRIM_THRESHOLD = 8 * 1024 * 1024


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
def cap_mmap_threshold(threshold: int = MMAP_THRESHOLD, trim: int = TRIM_THRESHOLD) -> bool:
    """Pin glibc's mmap and trim thresholds (once per process). False where it is not glibc or the
    operator set ``MALLOC_MMAP_THRESHOLD_`` themselves (their ``MALLOC_TRIM_THRESHOLD_`` wins too)."""
    libc = _glibc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    done = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(threshold)))
    if done and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        done = bool(libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim)))
    logger.debug(
        "malloc thresholds %s at %d (mmap) and %d (trim) bytes", "pinned" if done else "left", threshold, trim
    )
    return done


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system (``malloc_trim(0)``; it takes a few ms, so call
    it off the event loop). True if it released any."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))
