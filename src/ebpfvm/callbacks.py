"""The helpers that call back into the program: ``bpf_loop`` and
``bpf_for_each_map_elem`` (Impl.CALLBACKS in ebpfvm.helper_table).

A callback is a function of the program whose value an ``lddw_func`` (lddw
src 4, BPF_PSEUDO_FUNC, RFC 9669 section 5.4) loaded. The helper hands that
value to :meth:`HelperContext.call`, and the engine runs the function as a
bpf-to-bpf call of the same program (RFC 9669 section 4.3.1: its own frame,
the run's call depth and budget) after checking that the value is one of the
program's callback entries, so a program cannot forge a call into the middle
of its code. Each call of the callback costs CALLBACK_CALL_UNITS of the
run's budget besides the callback's own instructions, so that even 2**23
empty iterations stay bounded by the budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from .errors import MapError
from .helpers import HELPER_CALL_UNITS, Helper, HelperContext, numbered
from .mapbase import BpfMap
from .maps import Map
from .memory import Region
from .userringbuf import user_ringbuf_helpers

__all__ = ["BPF_MAX_LOOPS", "CALLBACK_CALL_UNITS", "callback_helpers"]

BPF_MAX_LOOPS = 1 << 23
"""The most iterations bpf_loop runs (the kernel's BPF_MAX_LOOPS)."""
CALLBACK_CALL_UNITS = HELPER_CALL_UNITS
"""Budget each call of a callback costs on top of its instructions: a call
from Python into the program costs what a helper call does."""
EINVAL = 22
E2BIG = 7
_M64 = (1 << 64) - 1
_STOP = 0
"""A callback returns 0 to go on; the kernel's loops stop on any other value
(its verifier only lets 0 and 1 through)."""


def _loop(ctx: HelperContext, nr_loops: int, function: int, data: int, flags: int,
          _e: int) -> int:
    """bpf_loop: call function(index, data) for index 0..nr_loops-1 until it
    returns nonzero; the number of calls made. -E2BIG over BPF_MAX_LOOPS
    iterations, -EINVAL for nonzero flags."""
    nr_loops &= 0xFFFF_FFFF  # a u32 argument
    if flags:
        return -EINVAL & _M64
    if nr_loops > BPF_MAX_LOOPS:
        return -E2BIG & _M64
    call = ctx.call
    charge = ctx.charge
    for index in range(nr_loops):
        charge(CALLBACK_CALL_UNITS)
        if call(function, index, data, 0, 0, 0) != _STOP:
            return index + 1
    return nr_loops


class _ForEach:
    """bpf_for_each_map_elem over one handle -> map table. Keys are handed
    to the callback in read-only buffers, one per map and nesting level
    (a callback may walk the map it is called for)."""

    __slots__ = ("_keys", "_levels", "maps")

    def __init__(self, maps: dict[int, BpfMap]) -> None:
        self.maps = maps
        self._keys: dict[tuple[int, int], tuple[bytearray, Region]] = {}
        self._levels: dict[int, int] = {}

    def __call__(self, ctx: HelperContext, handle: int, function: int, data: int,
                 flags: int, _e: int) -> int:
        found = self.maps.get(handle)
        if found is None or found.kind != "keyed":
            raise MapError(f"no array or hash map has handle {handle:#x}")
        target = cast(Map, found)
        if flags:
            return -EINVAL & _M64
        level = self._levels.get(handle, 0)
        self._levels[handle] = level + 1
        try:
            return self._walk(ctx, handle, target, function, data, level)
        finally:
            self._levels[handle] = level

    def _key_buffer(self, ctx: HelperContext, handle: int, target: Map,
                    level: int) -> tuple[bytearray, int]:
        """The key buffer of this map and level, and its address (made
        readable to the program for the rest of the run)."""
        entry = self._keys.get((handle, level))
        if entry is None or len(entry[0]) != target.key_size:
            buffer = bytearray(target.key_size)
            entry = self._keys[handle, level] = (buffer, Region.of_buffer(
                buffer, f"map {target.name} key", writable=False))
        ctx.space.add_once(entry[1])
        return entry[0], entry[1].start

    def _walk(self, ctx: HelperContext, handle: int, target: Map, function: int,
              data: int, level: int) -> int:
        """Call the callback for each element in order (array index order;
        for hashes, the map's iteration order) until it returns
        nonzero; the number of elements visited."""
        key_buffer, key_address = self._key_buffer(ctx, handle, target, level)
        ctx.space.add_once(target.region)
        visited = 0
        keys: Iterable[tuple[bytes, int]]
        if target.is_array:
            keys = ((index.to_bytes(4, "little"), index) for index in range(target.max_entries))
        else:
            keys = [(key, target._slot(key) or 0) for key in target]  # the callback may delete
        for key, slot in keys:
            if not target.is_array and target._slot(key) != slot:
                continue  # deleted by an earlier call of the callback
            ctx.charge(CALLBACK_CALL_UNITS)
            key_buffer[:] = key
            visited += 1
            # lookup_elem gives the value the program would see (per-CPU maps:
            # this CPU's); an LRU map's order is not touched, as in the kernel.
            value = (target.base + slot * target.value_size if target._lru
                     else target.lookup_elem(key))
            if ctx.call(function, handle, key_address, value, data, 0) != _STOP:
                break
        return visited


def callback_helpers(maps: dict[int, BpfMap] | None = None) -> dict[int, Helper]:
    """bpf_loop, and bpf_for_each_map_elem over `maps` (keyed by the handle
    programs pass in r1), for a VM whose program refers to callbacks. The
    table is shared, not copied: the inner maps a map-of-maps lookup adds to
    the map helpers' table (the same dict) can be walked too."""
    return numbered([
        Helper(_loop, "bpf_loop", context=True),
        Helper(_ForEach(maps if maps is not None else {}), "bpf_for_each_map_elem",
               context=True),
    ]) | user_ringbuf_helpers(maps if maps is not None else {})  # uringbuf
