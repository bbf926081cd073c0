"""Keeps a long-running server's resident memory flat on glibc.

gRPC's C core allocates from several threads; glibc then gives each thread
its own malloc arena and rarely hands freed pages back, so RSS creeps up under
steady load although nothing leaks. Capping the arenas (before the first
thread starts) and trimming the heap now and then is the usual remedy. Both
are no-ops where glibc is not the C library."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("wsi.memory")

M_ARENA_MAX = -8  # glibc's mallopt parameter number
DEFAULT_ARENAS = 2
TRIM_INTERVAL_S = 30.0


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 -- glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def limit_malloc_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Call before gRPC starts its threads. True if glibc accepted it."""
    return bool(_LIBC is not None and _LIBC.mallopt(M_ARENA_MAX, arenas))


def trim() -> None:
    """Returns the heap's free pages to the operating system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
