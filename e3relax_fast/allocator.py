"""Process-wide tuning of glibc's allocator for long CPU prediction runs.

PyTorch allocates CPU tensors with ``malloc``. By default glibc serves blocks over a dynamic threshold
with fresh ``mmap`` pages and hands freed heap space back to the OS, so every large intermediate of
every batch is zero-filled and page-faulted in again: on this project's 2-core machine that was 15-20%
of a batch of the paper-size model. :func:`tune_cpu_allocator` raises the mmap threshold to glibc's
maximum (32 MiB) and stops heap trimming, so freed blocks are reused. The cost: the process keeps the
memory of its largest batch after it is done with it. ``e3relax predict`` calls it (``--no-tune-allocator``
skips it); library callers opt in. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

_log = logging.getLogger("e3relax_fast")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc refuses more on 64-bit (HEAP_MAX_SIZE / 2)
_TRIM_NEVER = 2**31 - 1  # mallopt takes an int


def tune_cpu_allocator() -> bool:
    """Keep freed CPU memory for reuse instead of returning it to the OS (process-wide, glibc only).
    Returns whether glibc accepted both settings."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _log.info("tune_cpu_allocator: no glibc mallopt here; allocator left as it is")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    accepted = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER))
    if not accepted:
        _log.info("tune_cpu_allocator: mallopt refused the settings; allocator left as it is")
    return accepted
