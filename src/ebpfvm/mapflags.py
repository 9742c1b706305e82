"""Map flags (``map_flags`` of BPF_MAP_CREATE) and the kernel's checks of them.

Each map type accepts a set of flags, as the kernel's ``map_alloc_check`` of
that type does; a flag outside it, or a combination the kernel refuses, is a
:class:`MapFlagError` naming the flag. Accepted flags change nothing in
ebpfvm but ``BPF_F_RDONLY_PROG``, which makes the map's values read-only for
programs (a store is a MemoryFault), and ``BPF_F_NO_PREALLOC`` (hash maps
allocate lazily here anyway).
"""

from __future__ import annotations

from enum import IntFlag

from .errors import MapError
from .mapbase import MapSpec, MapType

__all__ = ["MapFlag", "MapFlagError", "MapFrozen", "check_flags"]


class MapFlag(IntFlag):
    """BPF_F_* map flags (include/uapi/linux/bpf.h)."""

    NO_PREALLOC = 1 << 0
    NO_COMMON_LRU = 1 << 1
    NUMA_NODE = 1 << 2
    RDONLY = 1 << 3
    WRONLY = 1 << 4
    STACK_BUILD_ID = 1 << 5
    ZERO_SEED = 1 << 6
    RDONLY_PROG = 1 << 7
    WRONLY_PROG = 1 << 8
    CLONE = 1 << 9
    MMAPABLE = 1 << 10
    PRESERVE_ELEMS = 1 << 11
    INNER_MAP = 1 << 12


class MapFlagError(MapError):
    """A map flag the kernel refuses for this map type (EINVAL). `map_name`,
    `flag` (the BPF_F_* name) and `reason` are fields."""

    def __init__(self, map_name: str, flag: str, reason: str) -> None:
        super().__init__(f"map {map_name!r}: {flag} {reason}")
        self.map_name = map_name
        self.flag = flag
        self.reason = reason


_ACCESS = MapFlag.RDONLY | MapFlag.WRONLY | MapFlag.RDONLY_PROG | MapFlag.WRONLY_PROG
_HASHES = (MapType.HASH, MapType.PERCPU_HASH, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
_LRUS = (MapType.LRU_HASH, MapType.LRU_PERCPU_HASH)
_PERCPU = (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH)
_ALLOWED: dict[int, MapFlag] = {
    MapType.ARRAY: MapFlag.NUMA_NODE | MapFlag.MMAPABLE | _ACCESS | MapFlag.INNER_MAP,
    MapType.PERCPU_ARRAY: MapFlag.NUMA_NODE | _ACCESS,
    MapType.PROG_ARRAY: MapFlag.NUMA_NODE | MapFlag.RDONLY | MapFlag.WRONLY,
    MapType.QUEUE: MapFlag.NUMA_NODE | _ACCESS,
    MapType.STACK: MapFlag.NUMA_NODE | _ACCESS,
    MapType.RINGBUF: MapFlag.NUMA_NODE,
    MapType.USER_RINGBUF: MapFlag.NUMA_NODE,  # uringbuf
    MapType.BLOOM_FILTER: MapFlag.NUMA_NODE | MapFlag.ZERO_SEED | _ACCESS,
    **{number: MapFlag.NO_PREALLOC | MapFlag.NO_COMMON_LRU | MapFlag.NUMA_NODE | _ACCESS
       | MapFlag.ZERO_SEED for number in _HASHES},
}
"""The flags each type accepts (its kernel map_alloc_check's CREATE_FLAG_MASK)."""


def _name(flags: int) -> str:
    """The BPF_F_* name of the lowest flag in `flags` (or its number)."""
    low = flags & -flags
    try:
        return f"BPF_F_{MapFlag(low).name}"
    except ValueError:
        return f"flag {low:#x}"


def check_flags(spec: MapSpec) -> None:
    """MapFlagError for flags the kernel refuses for `spec`'s map type.
    Types not listed here take any flags."""
    allowed = _ALLOWED.get(spec.type)
    if allowed is None:
        return
    flags = spec.flags
    extra = flags & ~allowed
    if extra:
        kind = MapType(spec.type).name.lower()
        raise MapFlagError(spec.name, _name(extra), f"is not allowed for {kind} maps")
    if flags & MapFlag.RDONLY and flags & MapFlag.WRONLY:
        raise MapFlagError(spec.name, "BPF_F_RDONLY", "and BPF_F_WRONLY exclude each other")
    if flags & MapFlag.RDONLY_PROG and flags & MapFlag.WRONLY_PROG:
        raise MapFlagError(spec.name, "BPF_F_RDONLY_PROG",
                           "and BPF_F_WRONLY_PROG exclude each other")
    if flags & MapFlag.NO_COMMON_LRU and spec.type not in _LRUS:
        raise MapFlagError(spec.name, "BPF_F_NO_COMMON_LRU", "is only for LRU maps")
    if flags & MapFlag.NO_PREALLOC and spec.type in _LRUS:
        raise MapFlagError(spec.name, "BPF_F_NO_PREALLOC", "is not supported by LRU maps")
    if flags & MapFlag.NUMA_NODE and spec.type in _PERCPU:
        raise MapFlagError(spec.name, "BPF_F_NUMA_NODE", "is not allowed for per-CPU maps")


class MapFrozen(MapError):
    """A write from Python to a frozen map: a ``.rodata`` section (or any
    global-data map with BPF_F_RDONLY_PROG) after its object was loaded for
    running, as libbpf freezes it. `map_name` and `variable` (the variable
    written, or None for the whole value) are fields."""

    def __init__(self, map_name: str, variable: str | None = None) -> None:
        what = f"variable {variable!r} of " if variable else ""
        super().__init__(f"cannot write {what}map {map_name!r}: it is frozen (read-only "
                         "once the object's first VM or runner is built)")
        self.map_name = map_name
        self.variable = variable
