"""The C allocator's settings, the same for every contender in a process.

glibc's malloc returns large blocks to the system (mmap threshold, trim threshold), so
each fresh (batch, d) buffer page-faults on first touch; which buffers do depends on
the history of the heap. Raising both thresholds once, at the start of every measuring
process, makes large buffers come from a heap that stays mapped, for every library
alike; the settings go into meta.json.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# glibc caps the mmap threshold at 32 MiB on 64-bit systems
SETTINGS = {"M_MMAP_THRESHOLD": 32 << 20, "M_TRIM_THRESHOLD": 1 << 30}


def tune() -> dict:
    """Sets :data:`SETTINGS` with ``mallopt``; returns what was set (and whether it took)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return {"allocator": "not glibc: left at its defaults"}
    applied = {
        k: bool(mallopt({"M_MMAP_THRESHOLD": M_MMAP_THRESHOLD, "M_TRIM_THRESHOLD": M_TRIM_THRESHOLD}[k], v))
        for k, v in SETTINGS.items()
    }
    return {"allocator": "glibc mallopt", **{k: SETTINGS[k] for k in SETTINGS}, "applied": all(applied.values())}
