"""The kernel's map helpers over one object's maps: lookup, update, delete,
push, pop, peek and the ring buffer's (Impl.MAPS in ebpfvm.helper_table),
keyed by the handle programs pass in r1. The maps themselves are in
ebpfvm.maps; native versions of these helpers are in ebpfvm.native."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from . import cgroup_storage as _cgroup
from . import dynptr as _dynptr
from . import perf as _perf
from .errors import MapError, MemoryFault
from .helpers import Helper, HelperContext, numbered
from .mapflags import MapFlag
from .maps import ENOENT, EOPNOTSUPP, AnyMap, Map, QueueMap, RingBuf
from .native.binding import native_version

if TYPE_CHECKING:
    from .bloom import BloomFilter
    from .mapinmap import MapOfMaps
    from .percpu import PerCpuMap

__all__ = ["map_helpers"]

_M64 = (1 << 64) - 1


class _MapHelpers:
    """The map helpers over one handle -> map table, one method per helper
    (bound methods cost a helper call what closures did)."""

    __slots__ = ("cpu", "maps")

    def __init__(self, maps: dict[int, AnyMap], cpu: Callable[[], int]) -> None:
        self.maps = maps
        self.cpu = cpu

    def find(self, handle: int) -> Map:
        """The keyed map with `handle` (MapError for any other)."""
        found = self.maps.get(handle)
        if found is None or found.kind != "keyed":
            raise MapError(f"no keyed map has handle {handle:#x}")
        return cast(Map, found)

    def find_queue(self, handle: int) -> QueueMap:
        """The queue or stack map with `handle` (or a bloom filter, which takes
        push and peek too: ebpfvm.bloom); MapError for any other."""
        found = self.maps.get(handle)
        if found is None or found.kind not in ("queue", "bloom"):
            raise MapError(f"no queue or stack map has handle {handle:#x}")
        return cast(QueueMap, found)

    def find_ring(self, handle: int) -> RingBuf:
        """The ring buffer with `handle` (MapError for any other)."""
        found = self.maps.get(handle)
        if found is None or found.kind != "ringbuf":
            raise MapError(f"no ring buffer has handle {handle:#x}")
        return cast(RingBuf, found)

    @native_version
    def lookup(self, ctx: HelperContext, handle: int, key: int, _c: int, _d: int,
               _e: int) -> int:
        """The value's address; the program may then touch the map's slab
        (one region, registered once per run)."""
        outer = self.maps.get(handle)
        if outer is not None and outer.kind == "map_of_maps":  # the inner map's handle
            ctx.charge_bytes(outer.key_size)
            return cast("MapOfMaps", outer).lookup_map(ctx.read(key, outer.key_size), self.maps)
        if outer is not None and outer.kind == "redirect":  # devmap, xskmap (devmaps.py)
            ctx.charge_bytes(outer.key_size)
            return int(cast(Any, outer).program_lookup(ctx.read(key, outer.key_size)))
        target = self.find(handle)
        ctx.charge_bytes(target.key_size)
        if target.percpu:
            address = cast("PerCpuMap", target).lookup_cpu(ctx.read(key, target.key_size),
                                                            self.cpu())
        else:
            address = target.lookup_elem(ctx.read(key, target.key_size))
        if address:
            ctx.space.add_once(target.region)
        return address

    @native_version
    def lookup_percpu(self, ctx: HelperContext, handle: int, key: int, cpu: int, _d: int,
                      _e: int) -> int:
        """bpf_map_lookup_percpu_elem: `cpu`'s value, or 0 past the possible CPUs."""
        target = self.find(handle)
        if not target.percpu:
            raise MapError(f"map {target.name!r} is not a per-CPU map")
        ctx.charge_bytes(target.key_size)
        found = cast("PerCpuMap", target)
        if cpu >= found.ncpus:
            return 0
        address = found.lookup_cpu(ctx.read(key, target.key_size), cpu)
        if address:
            ctx.space.add_once(target.region)
        return address

    @native_version
    def update(self, ctx: HelperContext, handle: int, key: int, value: int, flags: int,
               _e: int) -> int:
        """bpf_map_update_elem."""
        target = self.find(handle)
        if target.flags & MapFlag.RDONLY_PROG:
            raise MemoryFault(ctx.pc, value, target.value_size, "store",
                              f"map {target.name} is read-only for programs")
        ctx.charge_bytes(target.key_size + target.value_size)
        key_bytes = ctx.read(key, target.key_size)
        value_bytes = ctx.read(value, target.value_size)
        if target.percpu:
            result = cast("PerCpuMap", target).update_cpu(key_bytes, value_bytes, flags,
                                                           self.cpu())
        else:
            result = target.update_elem(key_bytes, value_bytes, flags, self.cpu())
        return result & _M64

    @native_version
    def delete(self, ctx: HelperContext, handle: int, key: int, _c: int, _d: int,
               _e: int) -> int:
        """bpf_map_delete_elem."""
        target = self.find(handle)
        ctx.charge_bytes(target.key_size)
        return target.delete_elem(ctx.read(key, target.key_size)) & _M64

    @native_version
    def push(self, ctx: HelperContext, handle: int, value: int, flags: int, _d: int,
             _e: int) -> int:
        """bpf_map_push_elem (a bloom filter's add)."""
        target = self.find_queue(handle)
        ctx.charge_bytes(target.value_size)
        return target.push_elem(ctx.read(value, target.value_size), flags) & _M64

    def take(self, ctx: HelperContext, handle: int, value: int, remove: bool) -> int:
        """peek or pop: the value is written first, and only a written value
        leaves the map (a bad pointer faults with the map unchanged)."""
        target = self.find_queue(handle)
        ctx.charge_bytes(target.value_size)
        if target.kind == "bloom":  # peek tests the value; pop is not supported
            if remove:
                return -EOPNOTSUPP & _M64
            return cast("BloomFilter", target).test_elem(ctx.read(value, target.value_size)) & _M64
        item = target.peek_elem()
        if item is None:
            return -ENOENT & _M64
        ctx.write(value, item)
        if remove:
            target.pop_elem()
        return 0

    @native_version
    def pop(self, ctx: HelperContext, handle: int, value: int, *_rest: int) -> int:
        """bpf_map_pop_elem."""
        return self.take(ctx, handle, value, True)

    @native_version
    def peek(self, ctx: HelperContext, handle: int, value: int, *_rest: int) -> int:
        """bpf_map_peek_elem."""
        return self.take(ctx, handle, value, False)

    @native_version
    def ring_output(self, ctx: HelperContext, handle: int, data: int, size: int, _f: int,
                    _e: int) -> int:
        """bpf_ringbuf_output."""
        ring = self.find_ring(handle)
        ctx.charge_bytes(size)
        return ring.output(ctx.read(data, size)) & _M64

    @native_version
    def ring_reserve(self, ctx: HelperContext, handle: int, size: int, *_rest: int) -> int:
        """The record's address; the program may then write the ring's data
        area (one region for the whole run)."""
        ring = self.find_ring(handle)
        address = ring.reserve(size, owner=ctx)
        if address and ctx.space.add_once(ring.region):
            # Records the run neither submits nor discards (it faulted, or it
            # was not verified) are discarded when the run ends, or they would
            # block the ring for every later record.
            ctx.at_exit(lambda: ring.discard_owned(ctx))
        return address

    def ring_commit(self, address: int, discard: bool) -> int:
        """Submit or discard the reserved record at `address`."""
        for ring in self.maps.values():
            if ring.kind == "ringbuf" and cast(RingBuf, ring).commit(address, discard):
                return 0
        raise MapError(f"{address:#x} is not a reserved ring buffer record")

    @native_version
    def ring_submit(self, address: int, *_rest: int) -> int:
        """bpf_ringbuf_submit."""
        return self.ring_commit(address, False)

    @native_version
    def ring_discard(self, address: int, *_rest: int) -> int:
        """bpf_ringbuf_discard."""
        return self.ring_commit(address, True)


def map_helpers(maps: dict[int, AnyMap],
                cpu: Callable[[], int] | None = None) -> dict[int, Helper]:
    """The kernel's map helpers (lookup, update, delete, push, pop, peek and
    the ring buffer's; Impl.MAPS in ebpfvm.helper_table) over `maps`, keyed
    by the handle programs pass in r1. `cpu` tells the run's CPU (per-CPU
    maps; CPU 0 when None)."""
    table = _MapHelpers(maps, cpu if cpu is not None else (lambda: 0))
    found = _cgroup.cgroup_helpers(maps)  # cgroup storage and spin locks (issue 13)
    found |= _perf.perf_helpers(maps, table.cpu)  # bpf_perf_event_output (issue 13)
    found |= _dynptr.dynptr_helpers(maps)  # helpers4: ringbuf_query, dynptrs
    return found | numbered([
        Helper(table.lookup, "bpf_map_lookup_elem", context=True),
        Helper(table.update, "bpf_map_update_elem", context=True),
        Helper(table.delete, "bpf_map_delete_elem", context=True),
        Helper(table.lookup_percpu, "bpf_map_lookup_percpu_elem", context=True),
        Helper(table.push, "bpf_map_push_elem", context=True),
        Helper(table.pop, "bpf_map_pop_elem", context=True),
        Helper(table.peek, "bpf_map_peek_elem", context=True),
        Helper(table.ring_output, "bpf_ringbuf_output", context=True),
        Helper(table.ring_reserve, "bpf_ringbuf_reserve", context=True),
        Helper(table.ring_submit, "bpf_ringbuf_submit"),
        Helper(table.ring_discard, "bpf_ringbuf_discard"),
    ])
