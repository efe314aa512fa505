"""glibc's allocator setting of reference §8, applied at run time by the commands."""

from __future__ import annotations

import ctypes
import logging
import os
import platform

__all__ = ["ALLOCATOR_VARS", "keep_freed_memory"]

log = logging.getLogger(__name__)
ALLOCATOR_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
# mallopt parameter ids from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of unmapping every large tensor.

    The run-time equivalent of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<2 GiB>
    MALLOC_TOP_PAD_=1073741824`` (reference §8): without it, every batch above glibc's mmap
    threshold is mapped fresh and page-faulted in, which makes CPU training and
    ``erase_batch`` up to 2x slower. Every ``python -m`` command of the project calls this at
    start; a process that sets any of the three variables itself keeps its own choice.
    Returns whether the setting was applied (False off glibc, or when the environment decides).
    """
    if platform.libc_ver()[0] != "glibc" or any(v in os.environ for v in ALLOCATOR_VARS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _INT_MAX), (_M_TOP_PAD, 1 << 30)))
    if not applied:
        log.debug("glibc refused the allocator setting of reference §8")
    return applied
