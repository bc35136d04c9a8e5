"""Process memory settings for long-running servers.

CPython's allocations from many threads (the web thread pool, the indexer, background jobs) make
glibc open up to 8 malloc arenas per core; freed memory then stays spread over arenas the OS never gets
back, and a server's RSS creeps far above what it uses. Two arenas keep it close to the live size
(the same cure as ``MALLOC_ARENA_MAX=2``, applied from inside so ``condavault serve`` needs no wrapper).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_ARENA_MAX = -8  # glibc's mallopt parameter number


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (``find_library`` runs ``ldconfig`` in a subprocess each call)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for threads started from now on; False where there is no glibc."""
    libc = _libc()
    try:
        return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas))
    except AttributeError:
        return False


def trim() -> None:
    """Hand freed heap memory back to the OS (after a big transient allocation such as a full index)."""
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
    except AttributeError:
        pass
