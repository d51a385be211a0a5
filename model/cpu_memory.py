"""Keep freed memory in the process instead of handing it back to the kernel after every step.

glibc's malloc serves every block above 32 MB with its own mmap and unmaps it on free. A training
step's conv activations are such blocks (352 chunks x 32 channels x 62 x 128 in bf16: 180 MB), so
every step the kernel zero-fills them page by page again: measured on 2 cores, half of a CPU training
step was those page faults (docs/training.md, "A faster epoch"). With mmap off and trimming raised,
freed blocks stay in the heap and the next step reuses them: the process keeps its peak memory.

That holds for the main thread's arena only. A second thread (Ray runs a trial in one) gets an arena
of its own, whose heaps are 64 MB at most: larger blocks are mmapped whatever M_MMAP_MAX says. Only a
single arena for the whole process helps, and glibc reads that limit (`GLIBC_TUNABLES`) when the
process starts: `mallopt(M_ARENA_MAX, 1)` later is ignored once other threads hold arenas, as a Ray
worker's threads do. `worker_environment()` is what a process that trains in a thread must start with.

Nothing here runs on import or when a Trainer is built: the entry points (the CLI, a trial's set-up)
call `keep_freed_blocks_in_malloc()`. `DEEPEMOCLUSTER_MALLOC=system` leaves malloc as it is.
"""
from __future__ import annotations

import ctypes
import os

from model.errors import UserError

OPT_OUT = "DEEPEMOCLUSTER_MALLOC"
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4    # glibc's mallopt parameters (malloc.h)
TRIM_THRESHOLD = 2**31 - 1               # only a free run of 2 GB at the heap's top is returned
TUNABLES = "GLIBC_TUNABLES"              # read by glibc at process start: name=value pairs joined by ':'
ARENA_MAX = "glibc.malloc.arena_max"

_applied: bool | None = None


def setting() -> str:
    """The value of DEEPEMOCLUSTER_MALLOC: keep (the default) or system; anything else is refused."""
    value = os.environ.get(OPT_OUT, "keep").strip() or "keep"
    if value not in ("keep", "system"):
        raise UserError(f"{OPT_OUT}={value!r}: expected keep (the default) or system (leave malloc as it is)")
    return value


def keep_freed_blocks_in_malloc() -> bool:
    """Make glibc's malloc keep freed blocks for reuse (once per process); False where it is not glibc or opted out."""
    global _applied
    if _applied is None:   # an invalid setting raises every time it is asked
        _applied = _apply()
    return _applied


def worker_environment() -> dict[str, str]:
    """Environment variables for a process that will train in a thread (a Ray worker): the opt-out
    setting, and unless opted out, one malloc arena for all its threads (GLIBC_TUNABLES keeps the
    driver's other tunables; an arena_max of the driver's own is kept as it is)."""
    value = setting()
    if value == "system":
        return {OPT_OUT: value}
    tunables = [t for t in os.environ.get(TUNABLES, "").split(":") if t]
    if not any(t.startswith(ARENA_MAX + "=") for t in tunables):
        tunables.append(f"{ARENA_MAX}=1")
    return {OPT_OUT: value, TUNABLES: ":".join(tunables)}


def _apply() -> bool:
    if setting() == "system" or not _is_glibc():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):   # not a POSIX system that knows the name
        return False
