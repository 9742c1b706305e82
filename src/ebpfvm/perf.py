"""The perf event array (BPF_MAP_TYPE_PERF_EVENT_ARRAY) and
``bpf_perf_event_output``: a program sends records to a per-CPU buffer that
user space reads (RFC 9669 section 5.3: programs reach maps through helper
calls).

A slot of the array is one CPU's perf buffer, as libbpf's ``perf_buffer``
sets it up (slot `i` holds the BPF-output event opened on CPU `i`): by
default every slot has a buffer (:meth:`PerfEventArray.close_slot` takes one
away, as closing its event does). ``bpf_perf_event_output(ctx, map, flags,
data, size)`` appends `size` bytes to the buffer of slot ``flags & 0xffffffff``
(``BPF_F_CURRENT_CPU``, 0xffffffff, is the CPU the run is on), as the kernel
does: -EINVAL for flags outside the index and the context-length bits, -E2BIG
for an index past max_entries, -ENOENT for a slot without a buffer,
-EOPNOTSUPP when the slot's CPU is not the run's (a perf event takes output
only on its own CPU), -ENOSPC (and one more lost record) when the buffer is
full. A record takes what it takes in a kernel buffer: an 8-byte header, a
u32 size and the data, padded to 8 bytes; a buffer holds
:attr:`PerfEventArray.buffer_bytes` (8 pages by default, libbpf's usual
page count) until Python consumes its records.

For XDP and ``__sk_buff`` programs (an XdpRunner or SkbRunner gives the
helper its packet: :func:`with_packet`), the flags' context length (bits
32-51, ``BPF_F_CTXLEN_MASK``) appends that many bytes of the packet, from
``data``, after the record's data, as the kernel's skb and XDP event output
do; more than the packet's length is -EFAULT (checked before the slot). A
program with no packet context asking for packet bytes is a HelperFault.

From Python: ``m.records(cpu=None)`` lists the waiting records, in the order
they were written, as ``PerfRecord(cpu, data)``; ``m.consume(cpu=None)``
returns and removes them; ``m.lost`` counts the records lost to full
buffers (``m.lost_by_cpu`` per slot). A map of max_entries 0 (a BTF map that
does not set it) gets one slot per possible CPU, as libbpf gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, cast

from .errors import MapError, count_of
from .helpers import Helper, HelperContext, numbered
from .mapbase import BpfMap, MapSpec, MapType, as_bytes, as_int, register
from .percpu import POSSIBLE_CPUS

__all__ = ["BPF_F_CTXLEN_MASK", "BPF_F_CURRENT_CPU", "DEFAULT_BUFFER_BYTES", "PacketOf",
           "PerfEventArray", "PerfRecord", "perf_helpers", "record_bytes", "with_packet"]

BPF_F_CURRENT_CPU = 0xFFFFFFFF
BPF_F_INDEX_MASK = 0xFFFFFFFF
BPF_F_CTXLEN_MASK = 0xFFFFF << 32
DEFAULT_BUFFER_BYTES = 8 * 4096
"""One slot's buffer: 8 pages."""
MAX_RECORD = 0xFFFF
"""A perf record's size is a u16 (struct perf_event_header)."""
E2BIG, ENOENT, ENOSPC, EINVAL, EOPNOTSUPP, EFAULT = 7, 2, 28, 22, 95, 14
_M64 = (1 << 64) - 1


def record_bytes(size: int) -> int:
    """The buffer space of a record of `size` data bytes: the header, the
    raw size and the data, padded to 8 bytes."""
    return 8 + ((size + 4 + 7) & ~7)


class PerfRecord(NamedTuple):
    """One record: the slot (CPU) whose buffer holds it, and its data."""

    cpu: int
    data: bytes


class PerfEventArray(BpfMap):
    """A perf event array: one output buffer per slot (CPU)."""

    kind = "perf_event_array"

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """4-byte keys and values (the kernel's fd arrays; EINVAL otherwise)."""
        if spec.key_size != 4 or spec.value_size != 4:
            raise MapError(f"map {spec.name!r}: a perf event array has 4-byte keys and values, "
                           f"not {spec.key_size} and {spec.value_size}")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """Every slot's buffer."""
        return DEFAULT_BUFFER_BYTES * (spec.max_entries or POSSIBLE_CPUS)

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> PerfEventArray:
        """A new array with a buffer in every slot."""
        del max_bytes  # create_map checked memory_bytes
        return cls(spec.name, spec.max_entries or POSSIBLE_CPUS, spec.flags)

    def __init__(self, name: str, max_entries: int, flags: int = 0,
                 buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        if max_entries <= 0:
            raise MapError(f"map {name!r}: a perf event array needs max_entries above 0")
        self.name = name
        self.type = MapType.PERF_EVENT_ARRAY
        self.key_size = self.value_size = 4
        self.max_entries = max_entries
        self.flags = flags
        self.handle = 0
        self.buffer_bytes = buffer_bytes
        self.opened = set(range(max_entries))
        """The slots that have a buffer."""
        self._records: list[PerfRecord] = []
        self._used = [0] * max_entries
        self.lost_by_cpu = [0] * max_entries

    def close_slot(self, index: int) -> None:
        """Take slot `index`'s buffer away (its waiting records stay readable)."""
        self.opened.discard(index)

    def open_slot(self, index: int) -> None:
        """Give slot `index` a buffer again."""
        if not 0 <= as_int(self.name, "slot", index) < self.max_entries:
            raise MapError(f"map {self.name!r}: no slot {index}")
        self.opened.add(index)

    @property
    def lost(self) -> int:
        """Records lost to full buffers, in all."""
        return sum(self.lost_by_cpu)

    def output(self, flags: int, data: bytes, cpu: int) -> int:
        """bpf_perf_event_output's work on CPU `cpu`: 0 or a negative errno."""
        flags, cpu = as_int(self.name, "flags", flags), as_int(self.name, "cpu", cpu)
        data = as_bytes(self.name, "data", data)
        if flags & ~(BPF_F_INDEX_MASK | BPF_F_CTXLEN_MASK):
            return -EINVAL
        if flags & BPF_F_CTXLEN_MASK:
            raise MapError(f"map {self.name!r}: perf output of packet bytes (context length "
                           f"{(flags & BPF_F_CTXLEN_MASK) >> 32}) needs a program's packet: "
                           "only bpf_perf_event_output in an XdpRunner or SkbRunner appends them")
        index = flags & BPF_F_INDEX_MASK
        if index == BPF_F_CURRENT_CPU:
            index = cpu
        if index >= self.max_entries:
            return -E2BIG
        if index not in self.opened:
            return -ENOENT
        if index != cpu:
            return -EOPNOTSUPP
        size = record_bytes(len(data))
        if size > MAX_RECORD:
            return -E2BIG
        if self._used[index] + size > self.buffer_bytes:
            self.lost_by_cpu[index] += 1
            return -ENOSPC
        self._used[index] += size
        self._records.append(PerfRecord(index, bytes(data)))
        return 0

    def records(self, cpu: int | None = None) -> list[PerfRecord]:
        """The waiting records (of slot `cpu` only, when given), oldest first."""
        return [record for record in self._records if cpu is None or record.cpu == cpu]

    def consume(self, cpu: int | None = None) -> list[PerfRecord]:
        """The waiting records (of slot `cpu` only, when given), which leave
        their buffers (making room for more)."""
        taken = self.records(cpu)
        self._records = [record for record in self._records
                         if cpu is not None and record.cpu != cpu]
        for record in taken:
            self._used[record.cpu] -= record_bytes(len(record.data))
        return taken

    def describe(self) -> str:
        """Name, kind, slots, buffer size."""
        return (f"{self.name}: perf_event_array, {count_of(self.max_entries, 'slot')} of "
                f"{count_of(self.buffer_bytes, 'byte')}")

    def entries_text(self, limit: int) -> list[str]:
        """The waiting records, one a line."""
        lines = [f"cpu {record.cpu}: {record.data.hex()}" for record in self._records[:limit]]
        if self.lost and len(lines) < limit:
            lines.append(f"{self.lost} record(s) lost")
        return lines

    def __repr__(self) -> str:
        return f"PerfEventArray({self.name!r}, max_entries={self.max_entries})"


PacketOf = Callable[[HelperContext, int], tuple[int, int]]
"""(address, length) of the packet from ``data``, for the context pointer
the program passed: what a runner tells bpf_perf_event_output."""


class _PerfHelpers:
    """bpf_perf_event_output over one handle -> map table (and the packet of
    the runner's program, when it has one)."""

    __slots__ = ("cpu", "maps", "packet")

    def __init__(self, maps: dict[int, Any], cpu: Callable[[], int],
                 packet: PacketOf | None = None) -> None:
        self.maps = maps
        self.cpu = cpu
        self.packet = packet

    def output(self, ctx: HelperContext, context: int, handle: int, flags: int, data: int,
               size: int) -> int:
        """bpf_perf_event_output(ctx, map, flags, data, size)."""
        found = self.maps.get(handle)
        if found is None or found.kind != "perf_event_array":
            raise MapError(f"no perf event array has handle {handle:#x}")
        ctx.charge_bytes(size)
        record = ctx.read(data, size)
        wanted = (flags & BPF_F_CTXLEN_MASK) >> 32
        if wanted and not flags & ~(BPF_F_INDEX_MASK | BPF_F_CTXLEN_MASK):
            if self.packet is None:
                raise MapError(f"perf output of {count_of(wanted, 'packet byte')} needs a "
                               "packet: run the program in an XdpRunner or SkbRunner")
            start, length = self.packet(ctx, context)
            if wanted > length:
                return -EFAULT & _M64
            ctx.charge_bytes(wanted)
            record += ctx.read(start, wanted)
            flags &= ~BPF_F_CTXLEN_MASK
        return cast(PerfEventArray, found).output(flags, record, self.cpu()) & _M64


def perf_helpers(maps: dict[int, Any], cpu: Callable[[], int]) -> dict[int, Helper]:
    """bpf_perf_event_output over `maps` (handle -> map), part of
    ebpfvm.maps.map_helpers; `cpu` tells the run's CPU."""
    return numbered([Helper(_PerfHelpers(maps, cpu).output, "bpf_perf_event_output",
                            context=True)])


def with_packet(helper: Helper, packet: PacketOf) -> Helper | None:
    """The bpf_perf_event_output `helper` (as perf_helpers made it) for a
    program with a packet context, which appends the packet bytes the flags'
    context length asks for; None when `helper` is another function."""
    owner = getattr(helper.fn, "__self__", None)
    if not isinstance(owner, _PerfHelpers):
        return None
    return Helper(_PerfHelpers(owner.maps, owner.cpu, packet).output, helper.name, context=True)


register(MapType.PERF_EVENT_ARRAY, PerfEventArray)
