"""Keep freed memory in the process instead of handing it back to the kernel after every step.

glibc's malloc serves every block above 32 MB with its own mmap and unmaps it on free. A training
step's conv activations are such blocks (352 chunks x 32 channels x 62 x 128 in bf16: 180 MB), so
every step the kernel zero-fills them page by page again: measured on 2 cores, half of a CPU training
step was those page faults (docs/training.md, "A faster epoch"). With mmap off and trimming raised,
freed blocks stay in the heap and the next step reuses them: the process keeps its peak memory.

`DEEPEMOCLUSTER_MALLOC=system` leaves malloc as it is.
"""
from __future__ import annotations

import ctypes
import os

from model.errors import UserError

OPT_OUT = "DEEPEMOCLUSTER_MALLOC"
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4    # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 2**31 - 1               # only a free run of 2 GB at the heap's top is returned

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks for reuse (once per process); False where it is not glibc or opted out."""
    global _applied
    if _applied is None:   # an invalid setting raises every time it is asked
        _applied = _apply()
    return _applied


def _apply() -> bool:
    setting = os.environ.get(OPT_OUT, "keep").strip() or "keep"
    if setting not in ("keep", "system"):
        raise UserError(f"{OPT_OUT}={setting!r}: expected keep (the default) or system (leave malloc as it is)")
    if setting == "system" or not _is_glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):   # not a POSIX system that knows the name
        return False
