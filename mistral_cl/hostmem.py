"""Host allocator settings for training on CPU.

XLA:CPU allocates the temporaries of a step as one block of a few hundred MB. glibc serves blocks that
large with a fresh `mmap` and unmaps them when freed, so every step pays the kernel for zero-filling
the same memory again, page by page (about 88k page faults per train step of the tiny model, roughly a
third of its time). Keeping freed memory inside the process removes that cost; a training process
reuses the same sizes every step, so the memory it keeps is memory it needs again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
    """Tells glibc to use one arena, never `mmap` a block and never give freed memory back.

    Returns False where the C library is not glibc. Takes effect for allocations made after the call,
    so call it before the first step. `mistral-cl` calls it through `configure`.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)


def configure() -> bool:
    """`keep_freed_memory()` unless the environment says MISTRAL_CL_MALLOC=default (the opt-out)."""
    return os.environ.get("MISTRAL_CL_MALLOC") != "default" and keep_freed_memory()
