"""The Python mirror of ``rt.h``: layouts and numbers both sides agree on.
Change them only with rt.h (and rebuild the objects)."""

from __future__ import annotations

import ctypes

__all__ = ["RT_CHARGE_ID", "RT_CHECK_ID", "RT_ENV_ID", "RT_ENV_VERSION", "RT_MAX_MAPS",
           "RT_PYTHON_BASE", "RtEnv", "RtMap", "is_intrinsic"]

RT_ENV_ID = 0x7E000000
"""RT_ENV(): the address of the run's struct rt_env."""
RT_CHECK_ID = 0x7E000001
"""RT_CHECK(ptr, size, write): ptr, or the run's MemoryFault."""
RT_CHARGE_ID = 0x7E000002
"""RT_CHARGE(n): n instructions off the run's budget."""
RT_PYTHON_BASE = 0x7E000100
"""RT_PYTHON(N) is the call of RT_PYTHON_BASE + N: kernel helper N in Python."""
RT_PYTHON_END = RT_PYTHON_BASE + 0x10000
RT_ENV_VERSION = 1
RT_MAX_MAPS = 64

U32 = ctypes.c_uint32
U64 = ctypes.c_uint64


class RtEnv(ctypes.Structure):
    """struct rt_env (rt.h): what runtime code reads of the run."""

    _fields_ = [
        ("version", U64),
        ("cpu", U64),
        ("ncpus", U64),
        ("prandom_state", U64 * 4),
        ("ktime_ns", U64),
        ("numa_node", U64),
        ("nmaps", U64),
        ("maps", U64 * RT_MAX_MAPS),
    ]


class RtMap(ctypes.Structure):
    """struct rt_map (rt.h): the common prefix of a native map's descriptor."""

    _fields_ = [
        ("handle", U64),
        ("type", U32),
        ("key_size", U32),
        ("value_size", U32),
        ("max_entries", U32),
        ("flags", U32),
        ("ncpus", U32),
        ("slab", U64),
    ]


def is_intrinsic(helper_id: int) -> bool:
    """Whether a call's id is an intrinsic (never a kernel helper)."""
    return RT_ENV_ID <= helper_id <= RT_CHARGE_ID or RT_PYTHON_BASE <= helper_id < RT_PYTHON_END
