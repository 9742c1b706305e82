"""A run's ``struct rt_env`` and the maps' ``struct rt_map`` descriptors, as
the Python side keeps them (rt.h is the layout, abi.py its mirror).

:class:`RtEnvBlock` is native memory the Python side owns: the kernel
helpers of a VM (ebpfvm.kernel) make one, so bpf_get_prandom_u32 in Python
and in native code step the same state (one truth: the sequence does not
change with the engine); the linker fills its maps table with the
descriptors of the maps whose native helpers a program uses, and a run
refreshes the CPU, the NUMA node and the clock from the KernelEnv first.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from ..mapbase import MapType
from ..timers import timer_offset
from .abi import RT_ENV_VERSION, RT_MAX_MAPS, RtEnv, RtMap

__all__ = ["NATIVE_MAP_TYPES", "RtEnvBlock", "descriptor", "prandom_seed", "prandom_step"]

M32 = 0xFFFF_FFFF
M64 = (1 << 64) - 1
NATIVE_MAP_TYPES = frozenset({MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.HASH,
                              MapType.PERCPU_HASH, MapType.QUEUE, MapType.STACK,
                              MapType.RINGBUF, MapType.LRU_HASH, MapType.LRU_PERCPU_HASH})
"""Map types the runtime's map helpers work on (rtcore.c; rt_hash.h, rt_lru.h
and rt_queue.h for the hash, LRU and queue types, rtring.c and rt_ring.h for
ring buffers: their native block is their descriptor; LRU maps' updates and
deletes go to Python)."""
_TAUS = ((0xFFFFFFFE, 6, 13, 18), (0xFFFFFFF8, 2, 27, 2), (0xFFFFFFF0, 13, 21, 7),
         (0xFFFFFF80, 3, 12, 13))
"""L'Ecuyer's lfsr113 components: (mask, a, b, d) of s' = ((s & mask) << d) ^ (((s << a) ^ s) >> b)."""
_TAUS_MIN = (2, 8, 16, 128)
"""Each component's state must be at least this (else it degenerates)."""
_WARMUP = 10


def prandom_step(state: Any) -> int:
    """One bpf_get_prandom_u32 over `state` (four u64 words, low 32 bits
    used), updated in place: rtcore.c's rt_get_prandom_u32 in Python."""
    result = 0
    for index, (mask, a, b, d) in enumerate(_TAUS):
        s = state[index] & M32
        s = (((s & mask) << d) & M32) ^ ((((s << a) & M32) ^ s) >> b)
        state[index] = s
        result ^= s
    return result


def prandom_seed(state: Any, seed: int) -> None:
    """Seed `state` from a 64-bit `seed` as the kernel's prandom_seed_state
    does (a 32-bit mix of the seed, each component raised to its minimum),
    then run the generator a few steps to mix it."""
    seed &= M64
    mixed = ((seed >> 32) ^ (seed << 10) ^ seed) & M32
    for index, low in enumerate(_TAUS_MIN):
        state[index] = mixed + low if mixed < low else mixed
    for _ in range(_WARMUP):
        prandom_step(state)


def descriptor(target: Any, handle: int | None = None) -> RtMap:
    """The struct rt_map of an array or per-CPU array map, made once per
    map and brought up to date (its slab moves when its CPU count changes).
    `handle`: what programs pass for it (default: its own)."""
    found: RtMap | None = target.__dict__.get("_rt_map")
    if found is None:
        found = RtMap()
        target.__dict__["_rt_map"] = found
    found.handle = target.handle if handle is None else handle
    found.type = int(target.type)
    found.key_size = target.key_size
    found.value_size = target.value_size
    found.max_entries = target.max_entries
    found.flags = int(target.flags)
    found.ncpus = getattr(target, "ncpus", 1)
    found.slab = target.base
    return found


def _native_ok(handle: int, target: Any) -> bool:
    """Whether the runtime may work on `target` (passed as `handle`): a map
    of a native type, without a bpf_timer in its values (the timers free an
    element's timer on each update and delete: Python does those), and, for
    the types whose native block records the map's own handle, that handle."""
    if getattr(target, "kind", None) not in ("keyed", "queue", "ringbuf") or \
            getattr(target, "type", None) not in NATIVE_MAP_TYPES:
        return False
    if getattr(target, "on_free", None) is not None or \
            timer_offset(getattr(target, "value_codec", None)) is not None:
        return False
    block = _block_of(target)
    return block is None or handle == target.handle


def _block_of(target: Any) -> Any:
    """A hash, queue or ring buffer map's native block (its descriptor), else None."""
    for name in ("native_hash", "native_queue", "native_ring"):
        block = getattr(target, name, None)
        if block is not None:  # a block may be empty (falsy)
            return block
    return None


def _descriptor_of(target: Any, handle: int) -> Any:
    """What the maps table points at for `target`: its native block, or an
    array map's struct rt_map."""
    block = _block_of(target)
    return block if block is not None else descriptor(target, handle)


class RtEnvBlock:
    """One struct rt_env (see the module docstring). `kenv` is the
    ebpfvm.kernel.KernelEnv it mirrors (None: CPU 0, node 0, Python's clock)."""

    __slots__ = ("_cpu", "_descriptors", "_node", "_now", "address", "env", "kenv")

    def __init__(self, kenv: Any = None, seed: int = 0, ncpus: int = 1) -> None:
        self.env = RtEnv()
        self.address = ctypes.addressof(self.env)
        self.kenv = kenv
        self.env.version = RT_ENV_VERSION
        self.env.ncpus = ncpus
        prandom_seed(self.env.prandom_state, seed)
        self._descriptors: list[Any] = []
        self._cpu = self._node = self._now = 0  # what env holds (all 0 when new)
        self.refresh()

    @property
    def descriptors(self) -> list[Any]:
        """The descriptors the maps table points at."""
        return list(self._descriptors)

    def prandom_u32(self) -> int:
        """bpf_get_prandom_u32 in Python, over the same state native code steps."""
        return prandom_step(self.env.prandom_state)

    def refresh(self, cpu: Callable[[], int] | None = None) -> None:
        """Before a run: the CPU, the NUMA node and, when the clock stands
        still (a FixedClock with step 0), its reading (else 0: native ktime
        asks Python, which reads the clock). Writes only what changed: this
        runs before every run of a program with native helpers."""
        kenv = self.kenv
        if kenv is None:
            now_cpu, node, now = cpu() if cpu is not None else 0, 0, 0
        else:
            now_cpu, node, clock = kenv.cpu, kenv.numa_node, kenv.clock
            now = clock.now & M64 if clock is not None and getattr(clock, "step", 1) == 0 else 0
        if now_cpu != self._cpu or node != self._node or now != self._now:
            env = self.env
            env.cpu, env.numa_node, env.ktime_ns = now_cpu, node, now
            self._cpu, self._node, self._now = now_cpu, node, now

    def set_maps(self, maps: Mapping[int, Any] | Iterable[Any]) -> list[Any]:
        """Make the maps table hold the descriptors of `maps` (by the handle
        programs pass, as the map helpers' table is, or maps with their own
        handles; array and per-CPU array maps only, others are left to
        RT_PYTHON); returns the maps it holds."""
        pairs: Iterable[tuple[int, Any]]
        if isinstance(maps, Mapping):
            pairs = maps.items()
        else:
            pairs = ((target.handle, target) for target in cast(Iterable[Any], maps))
        chosen = [(handle, target) for handle, target in pairs
                  if _native_ok(handle, target)][:RT_MAX_MAPS]
        held = [target for _handle, target in chosen]
        self._descriptors = [_descriptor_of(target, handle) for handle, target in chosen]
        for index, found in enumerate(self._descriptors):
            self.env.maps[index] = ctypes.addressof(found) if isinstance(found, RtMap) \
                else found.address
        self.env.nmaps = len(self._descriptors)
        return held
