"""Giving the memory of a burst of image work back to the system (glibc's allocator; elsewhere a no-op).

Decoding a phone photo takes tens of MB for a fraction of a second, in worker threads; glibc keeps what
they free in its heaps, so after a burst the process stays near its peak (issue #13: 146 MiB after 50
phone photos, 66 MiB before). ``release_free_memory`` (``malloc_trim``, malloc_trim(3)) hands the free
pages back. Pinning glibc's mmap threshold (mallopt(3)) lowered the burst's peak further (50 phone
photos 182 -> 154 MiB) but cost ~5 ms of CPU per photo command in page faults, so it is not done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)


@functools.cache
def _glibc() -> Any:
    """glibc, or None (musl, macOS, Windows: no malloc_trim)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim"):
        return None
    return libc


def release_free_memory() -> bool:
    """Return the allocator's free pages to the system (``malloc_trim(0)``; it takes a few ms, so call
    it off the event loop). True if it released any."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.malloc_trim(ctypes.c_size_t(0)))
