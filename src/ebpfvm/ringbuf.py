"""The ring buffer map (BPF_MAP_TYPE_RINGBUF), with the kernel's record framing."""

from __future__ import annotations

from collections.abc import Iterator

from .errors import MapError, count_of
from .mapbase import MAX_MAP_BYTES, BpfMap, MapSpec, MapType
from .mapbase import as_bytes as _as_bytes
from .mapbase import as_int as _as_int
from .mapbase import check_size as _check_size
from .memory import Region, address_of
from .nativehash import handle_property
from .nativering import NativeRing

__all__ = ["RINGBUF_BUSY", "RINGBUF_DISCARD", "RINGBUF_HEADER", "RingBuf"]

RINGBUF_BUSY = 1 << 31
"""Record header bit: reserved, not yet submitted or discarded."""
RINGBUF_DISCARD = 1 << 30
"""Record header bit: discarded; consumers skip it."""
RINGBUF_HEADER = 8
EAGAIN = 11


class RingBuf(BpfMap):
    """A ring buffer map with the kernel's record framing: an 8-byte header
    (length, BUSY and DISCARD bits) before each record, records 8-byte aligned.

    The data area is mapped twice in the kernel so records never wrap; here the
    slab is twice the ring size for the same effect. Python consumes with
    :meth:`consume`, which yields each submitted record once.

    A program that reserves a record may touch the whole slab (one region,
    registered once per run), so it can scribble on record headers: the ring
    keeps which records are reserved itself, and consume() trusts a header's
    length only when it fits in what was produced."""

    kind = "ringbuf"
    handle = handle_property("native_ring")  # the block's descriptor records it too

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """Ring buffers have no key or value size."""
        if spec.key_size or spec.value_size:
            raise MapError(f"map {spec.name!r}: ring buffers have no key or value size")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """The double-size data area, and the native block's table of busy
        records (one u64 per 8-byte ring position: ebpfvm.nativering)."""
        return 2 * spec.max_entries + spec.max_entries

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> RingBuf:
        """A new ring buffer of `max_entries` bytes."""
        return cls(spec.name, spec.max_entries, spec.flags, max_bytes)

    def describe(self) -> str:
        """Name and size."""
        return f"{self.name}: ringbuf, {count_of(self.max_entries, 'byte')}"

    def entries_text(self, limit: int) -> list[str]:
        """How much is waiting."""
        waiting = f"{len(self)} of {self.max_entries} bytes waiting (records and their headers)"
        return [waiting][:limit]

    def __init__(self, name: str, size: int, flags: int = 0,
                 max_bytes: int = MAX_MAP_BYTES) -> None:
        if size <= 0 or size & (size - 1) or size % 4096:
            raise MapError(f"map {name!r}: ring size {size} must be a power of 2 "
                           "and a multiple of 4096")
        _check_size(name, MapType.RINGBUF, 0, 0, size, max_bytes)
        self._init_shape(name, MapType.RINGBUF, 0, 0, size, flags)
        self.slab = bytearray(2 * size)
        self._pin = memoryview(self.slab)
        self.base = address_of(self.slab)
        self.region = Region(self.base, memoryview(self.slab), True, f"ringbuf {name}")
        """The data area, the one region programs get for the records they reserve."""
        self.native_ring = NativeRing(size, flags, self.base)
        """The positions, counts and reserved records (ebpfvm.nativering),
        which the native runtime reads and writes too."""
        self.handle = 0
        self._owners: dict[int, object] = {}
        """Who reserved the records Python reserved: header offset -> the
        run (the block says whether the record is still busy)."""

    @property
    def producer(self) -> int:
        """Bytes produced (the next header at producer % max_entries)."""
        return self.native_ring.producer

    @producer.setter
    def producer(self, value: int) -> None:
        self.native_ring.producer = value

    @property
    def consumer(self) -> int:
        """Bytes consumed."""
        return self.native_ring.consumer

    @consumer.setter
    def consumer(self, value: int) -> None:
        self.native_ring.consumer = value

    @property
    def discarded(self) -> int:
        """How many records were discarded (bpf_ringbuf_discard, or reserved
        by a run that ended without giving them back) since the ring was made
        or the user last set it to 0."""
        return self.native_ring.discarded

    @discarded.setter
    def discarded(self, value: int) -> None:
        self.native_ring.discarded = value

    def reserve(self, size: int, owner: object = None, empty_ok: bool = False) -> int:
        """Address of `size` bytes in a new busy record, or 0 when full.
        `owner` names the run reserving it (see :meth:`discard_owned`);
        `empty_ok` allows a record of 0 bytes (bpf_ringbuf_reserve_dynptr's)."""
        size = _as_int(self.name, "size", size)
        total = (RINGBUF_HEADER + size + 7) & ~7
        if size < (0 if empty_ok else 1) or size >= RINGBUF_DISCARD or \
                self.producer - self.consumer + total >= self.max_entries:
            return 0  # the kernel keeps the producer less than a ring ahead
        offset = self.producer % self.max_entries
        self.slab[offset : offset + RINGBUF_HEADER] = (size | RINGBUF_BUSY).to_bytes(4, "little") \
            + offset.to_bytes(4, "little")
        self.producer += total
        self.native_ring.mark(offset, size, 0)
        self._owners[offset] = owner
        return self.base + offset + RINGBUF_HEADER

    def commit(self, address: int, discard: bool) -> bool:
        """Submit or discard the record whose data starts at `address`;
        False when no reserved record starts there."""
        address = _as_int(self.name, "address", address)
        offset = address - self.base - RINGBUF_HEADER
        found = self.native_ring.busy(offset)
        if found is None:
            return False
        self.native_ring.clear(offset)
        self._owners.pop(offset, None)
        header = found[0] | (RINGBUF_DISCARD if discard else 0)
        self.discarded += discard
        self.slab[offset : offset + 4] = header.to_bytes(4, "little")
        return True

    def discard_owned(self, owner: object) -> None:
        """Discard every record `owner` reserved and did not submit (a run
        that ended, returned or faulted, without giving them back)."""
        for offset, who in list(self._owners.items()):
            found = self.native_ring.busy(offset)
            if found is None or found[1]:
                del self._owners[offset]  # given back, natively too
            elif who is owner:
                self.commit(self.base + offset + RINGBUF_HEADER, discard=True)

    def discard_tagged(self, tag: int) -> None:
        """Discard every record the native runs with owner tag `tag` reserved
        and did not submit (their run ended: ebpfvm.jit.rtlink)."""
        for offset in self.native_ring.tagged(tag):
            self.commit(self.base + offset + RINGBUF_HEADER, discard=True)

    def output(self, data: bytes) -> int:
        """bpf_ringbuf_output: reserve, copy, submit; 0 or -EAGAIN."""
        data = _as_bytes(self.name, "data", data)
        address = self.reserve(len(data))
        if not address:
            return -EAGAIN
        start = address - self.base
        self.slab[start : start + len(data)] = data
        self.commit(address, discard=False)
        return 0

    def take_discarded(self) -> int:
        """The discarded count, set back to 0 (what BPF_PROG_TEST_RUN
        harnesses read after each run)."""
        count, self.discarded = self.discarded, 0
        return count

    def consume(self) -> Iterator[bytes]:
        """Yield submitted records in order (as they were reserved), up to
        the first busy one.

        A header a program overwrote with a length past what was produced is
        a MapError; the ring then drops what was left to read, so the next
        consume() starts clean. Each step moves on by at least one header,
        and no read leaves the slab."""
        while self.consumer < self.producer:
            offset = self.consumer % self.max_entries
            if self.native_ring.busy(offset) is not None:
                return
            header = int.from_bytes(self.slab[offset : offset + 4], "little")
            size = header & (RINGBUF_DISCARD - 1)
            total = (RINGBUF_HEADER + size + 7) & ~7
            if total > self.producer - self.consumer:
                self.consumer = self.producer
                raise MapError(f"map {self.name!r}: record header at offset {offset} was "
                               f"overwritten (length {size}); the unread records are dropped")
            self.consumer += total
            if not header & RINGBUF_DISCARD:
                yield bytes(self.slab[offset + RINGBUF_HEADER : offset + RINGBUF_HEADER + size])

    def __len__(self) -> int:
        """Bytes produced and not yet consumed (records and headers)."""
        return self.producer - self.consumer

    def __repr__(self) -> str:
        return f"RingBuf({self.name!r}, size={self.max_entries})"
