"""The user ring buffer map (BPF_MAP_TYPE_USER_RINGBUF) and
bpf_user_ringbuf_drain (uringbuf, issue 13 point 3).

User space produces, the program consumes. The map is laid out as the
kernel's: a consumer position (only the kernel moves it), a producer position
(user space moves it) and a data area of `max_entries` bytes, a power of two
and a multiple of 4096. Each record is an 8-byte header (a u32 length whose
bit 31 is BUSY, reserved and not yet submitted, and bit 30 DISCARD, then a
u32 the kernel does not read) and the sample, the whole rounded up to 8
bytes. The kernel maps the data pages twice so that a record wrapping past
the end is contiguous; here the slab is twice the ring, and every write from
user space is made to both copies.

The Python producer follows libbpf's ``user_ring_buffer``: :meth:`reserve`
(a writable view of the sample, its header BUSY), :meth:`submit`,
:meth:`discard`, and :meth:`push` for reserve, copy and submit at once. The
positions and the data area can also be written as raw user space can
(:attr:`producer_pos`, :meth:`write`): what the drain makes of a bogus header
or position is the kernel's answer (an errno), never a read outside the ring.

bpf_user_ringbuf_drain hands each sample to a callback of the program (RFC
9669 section 4.3.1's helper and local calls) through a read-only 16-byte
local dynptr (ebpfvm.dynptr's layout), with the program's context argument.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from .errors import MapError, count_of
from .helpers import HELPER_CALL_UNITS, Helper, HelperContext, numbered
from .mapbase import MAX_MAP_BYTES, BpfMap, MapSpec, MapType, register
from .mapbase import as_bytes as _as_bytes
from .mapbase import as_int as _as_int
from .mapbase import check_size as _check_size
from .memory import Region, address_of

__all__ = ["MAX_SAMPLES", "RB_FORCE_WAKEUP", "RB_NO_WAKEUP", "ReserveError", "UserRingBuf",
           "user_ringbuf_helpers"]

HEADER = 8
"""BPF_RINGBUF_HDR_SZ."""
BUSY, DISCARD = 1 << 31, 1 << 30
"""The header's BPF_RINGBUF_BUSY_BIT and BPF_RINGBUF_DISCARD_BIT."""
MAX_SAMPLES = 128 * 1024
"""BPF_MAX_USER_RINGBUF_SAMPLES: the most records one drain call looks at
(discarded ones count)."""
RB_NO_WAKEUP, RB_FORCE_WAKEUP = 1, 2
"""The flags bpf_user_ringbuf_drain accepts."""
_DYNPTR_MAX = (1 << 24) - 1
"""The largest sample a dynptr can hold (its size field is 24 bits)."""
_DYNPTR_LOCAL = 1 << 28
"""The size word's type bits of a local dynptr (ebpfvm.dynptr.DYNPTR_LOCAL << 28)."""
E2BIG, EAGAIN, EBUSY, EINVAL, ENOSPC, ENODATA = 7, 11, 16, 22, 28, 61
_M64 = (1 << 64) - 1
_NUMA_NODE = 4
"""BPF_F_NUMA_NODE, the one flag the kernel takes for ring buffers."""
DISCARD_UNITS = 1
"""Budget a discarded record costs a drain (a callback costs HELPER_CALL_UNITS)."""


def _total(length: int) -> int:
    """A record's bytes: header and sample, rounded up to 8."""
    return (length + HEADER + 7) & ~7


class ReserveError(MapError):
    """:meth:`UserRingBuf.reserve` refused: `errno` is libbpf's (E2BIG: the
    record can never fit; ENOSPC: not now, the program has not drained
    enough). `map_name` and `size` are fields."""

    def __init__(self, map_name: str, size: int, errno: int) -> None:
        why = "is larger than the ring" if errno == E2BIG else "does not fit in the free space"
        super().__init__(f"map {map_name!r}: a {size}-byte sample {why}")
        self.map_name = map_name
        self.size = size
        self.errno = errno


class UserRingBuf(BpfMap):
    """A user ring buffer: Python produces records, programs drain them with
    bpf_user_ringbuf_drain (see the module's docstring for the layout)."""

    kind = "user_ringbuf"

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """No key or value size, only BPF_F_NUMA_NODE (the kernel: EINVAL)."""
        if spec.key_size or spec.value_size:
            raise MapError(f"map {spec.name!r}: user ring buffers have no key or value size")
        if spec.flags & ~_NUMA_NODE:
            raise MapError(f"map {spec.name!r}: flags {spec.flags:#x} are not allowed for "
                           "a user ring buffer")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """The double-size data area."""
        return 2 * spec.max_entries

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> UserRingBuf:
        """A new, empty user ring buffer of `max_entries` bytes."""
        return cls(spec.name, spec.max_entries, spec.flags, max_bytes)

    def __init__(self, name: str, size: int, flags: int = 0,
                 max_bytes: int = MAX_MAP_BYTES) -> None:
        if size <= 0 or size & (size - 1) or size % 4096:
            raise MapError(f"map {name!r}: ring size {size} must be a power of 2 "
                           "and a multiple of 4096")
        _check_size(name, MapType.USER_RINGBUF, 0, 0, size, max_bytes)
        self._init_shape(name, MapType.USER_RINGBUF, 0, 0, size, flags)
        self.handle = 0
        self.slab = bytearray(2 * size)
        self.base = address_of(self.slab)
        self.region = Region(self.base, memoryview(self.slab), True, f"user ringbuf {name}")
        """The data area (both copies): what a sample's dynptr points into."""
        self._dynptr = bytearray(16)
        self.dynptr_region = Region(address_of(self._dynptr), memoryview(self._dynptr), False,
                                    f"user ringbuf {name} dynptr")
        """The read-only dynptr a drain's callback gets (one per ring: a
        drain of a ring that is being drained is refused)."""
        self._consumer = 0
        self._producer = 0
        self._reserved: dict[int, tuple[memoryview, int]] = {}
        self.busy = False
        """Set while a drain runs (a nested drain of this ring gets -EBUSY)."""
        self.wakeups = 0
        """How many drains would have woken a waiting producer (the kernel's
        irq_work: after a drain that took a sample, unless BPF_RB_NO_WAKEUP;
        always with BPF_RB_FORCE_WAKEUP)."""

    # -- the positions --------------------------------------------------------------

    @property
    def consumer_pos(self) -> int:
        """How far the programs have drained (bytes since the ring was made);
        user space cannot write it (the kernel maps its page read-only)."""
        return self._consumer

    @property
    def producer_pos(self) -> int:
        """How far user space has produced (bytes since the ring was made)."""
        return self._producer

    @producer_pos.setter
    def producer_pos(self, value: int) -> None:
        self._producer = _as_int(self.name, "producer_pos", value) & _M64

    def __len__(self) -> int:
        """Bytes produced and not yet drained (records and headers)."""
        return max(self._producer - self._consumer, 0)

    # -- user space's writes ----------------------------------------------------------

    def _sync(self, start: int, length: int) -> None:
        """Make both copies of ring bytes [start, start + length) equal, from
        the copy they were written to (`start` below the ring size, the write
        contiguous from there, as through the kernel's double mapping)."""
        size = self.max_entries
        end = start + length
        first = min(end, size)
        if first > start:
            self.slab[start + size : first + size] = self.slab[start:first]
        if end > size:
            self.slab[0 : end - size] = self.slab[size:end]

    def write(self, position: int, data: bytes) -> None:
        """Write raw bytes at ring `position` (taken modulo the size), as a
        user-space producer may write anything in the data pages it maps."""
        data = _as_bytes(self.name, "data", data)
        if len(data) > self.max_entries:
            raise MapError(f"map {self.name!r}: {len(data)} bytes do not fit in the ring")
        start = _as_int(self.name, "position", position) & (self.max_entries - 1)
        self.slab[start : start + len(data)] = data
        self._sync(start, len(data))

    def reserve(self, size: int) -> memoryview:
        """A writable view of a new sample of `size` bytes, its header BUSY
        (a drain stops there) until :meth:`submit` or :meth:`discard`. The
        producer position moves on now, as libbpf's. ReserveError: E2BIG for
        a sample that can never fit, ENOSPC while there is no room."""
        size = _as_int(self.name, "size", size)
        total = _total(size)
        if size < 0 or size & (BUSY | DISCARD) or total > self.max_entries:
            raise ReserveError(self.name, size, E2BIG)
        if self.max_entries - (self._producer - self._consumer) < total:
            raise ReserveError(self.name, size, ENOSPC)
        mask = self.max_entries - 1
        self.write(self._producer, (size | BUSY).to_bytes(4, "little") + bytes(4))
        start = (self._producer + HEADER) & mask
        sample = memoryview(self.slab)[start : start + size]
        self._reserved[id(sample)] = (sample, self._producer)
        self._producer = (self._producer + total) & _M64
        return sample

    def _commit(self, sample: memoryview, discard: bool) -> None:
        found = self._reserved.pop(id(sample), None)
        if found is None or found[0] is not sample:
            raise MapError(f"map {self.name!r}: not a sample reserved from this ring")
        position = found[1]
        start = position & (self.max_entries - 1)
        self._sync((start + HEADER) & (self.max_entries - 1), len(sample))
        header = int.from_bytes(self.slab[start : start + 4], "little") & ~BUSY
        self.write(position, (header | (DISCARD if discard else 0)).to_bytes(4, "little"))

    def submit(self, sample: memoryview) -> None:
        """Hand a reserved sample to the programs (its BUSY bit cleared)."""
        self._commit(sample, False)

    def discard(self, sample: memoryview) -> None:
        """Give a reserved sample up: the drain skips it (DISCARD set)."""
        self._commit(sample, True)

    def push(self, data: bytes) -> None:
        """Reserve, copy `data` and submit (ReserveError as :meth:`reserve`)."""
        data = _as_bytes(self.name, "data", data)
        sample = self.reserve(len(data))
        sample[:] = data
        self.submit(sample)

    # -- the kernel's side ----------------------------------------------------------

    def peek(self) -> tuple[int, int]:
        """The next sample for a drain, checked as the kernel checks it:
        (its offset in the slab, its length), or (-errno, 0): -ENODATA when
        there is none or it is BUSY, -EAGAIN after skipping a discarded one,
        -EINVAL for a producer position not 8-aligned or a header length
        past it, -E2BIG for a length past the ring. Reads stay in the slab:
        a length is used only once it fits in the ring."""
        producer, consumer = self._producer, self._consumer
        if producer % 8:
            return -EINVAL, 0
        if consumer >= producer:
            return -ENODATA, 0
        mask = self.max_entries - 1
        start = consumer & mask
        header = int.from_bytes(self.slab[start : start + 4], "little")
        length = header & ~(BUSY | DISCARD)
        total = _total(length)
        if total > producer - consumer:
            return -EINVAL, 0
        if total > self.max_entries or length > _DYNPTR_MAX:
            return -E2BIG, 0
        if header & DISCARD:
            self._consumer += total
            return -EAGAIN, 0
        if header & BUSY:
            return -ENODATA, 0
        return (consumer + HEADER) & mask, length

    def release(self, length: int) -> None:
        """The drained sample of `length` bytes is given back: the consumer
        position moves past it."""
        self._consumer += _total(length)

    def copy_to_kernel(self, fd: int) -> None:
        """Produce the records not yet drained into a new kernel user ring
        buffer of the same size (`fd`), through its mmap'ed producer and data
        pages as libbpf does (the kernel diff: both sides start alike)."""
        import mmap

        page = mmap.PAGESIZE
        pending = bytes(self.slab[self._consumer & (self.max_entries - 1):][:len(self)])
        pages = mmap.mmap(fd, page + 2 * self.max_entries, mmap.MAP_SHARED,
                          mmap.PROT_READ | mmap.PROT_WRITE, offset=page)
        try:
            pages[page : page + len(pending)] = pending
            pages[0:8] = len(pending).to_bytes(8, "little")
        finally:
            pages.close()

    # -- what ebpfvm shows ------------------------------------------------------------

    def preload_entry(self, _key: Any, value: Any, _programs: Collection[str] | None) -> None:
        """The CLI's --map: push `value` (a hex string) as one record; the
        pairs' keys only order them."""
        if not isinstance(value, str):
            raise MapError(f"map {self.name}: a user ring buffer record is a hex string")
        try:
            data = bytes.fromhex(value)
        except ValueError as exc:
            raise MapError(f"map {self.name}: {value!r} is not hex") from exc
        self.push(data)

    def describe(self) -> str:
        """Name and size."""
        return f"{self.name}: user_ringbuf, {count_of(self.max_entries, 'byte')}"

    def entries_text(self, limit: int) -> list[str]:
        """How much is waiting to be drained."""
        waiting = (f"{len(self)} of {self.max_entries} bytes produced and not drained "
                   "(records and their headers)")
        return [waiting][:limit]

    def __repr__(self) -> str:
        return f"UserRingBuf({self.name!r}, size={self.max_entries})"


class _Drain:
    """bpf_user_ringbuf_drain over one handle -> map table."""

    __slots__ = ("maps",)

    def __init__(self, maps: dict[int, Any]) -> None:
        self.maps = maps

    def __call__(self, ctx: HelperContext, handle: int, function: int, data: int,
                 flags: int, _e: int) -> int:
        found = self.maps.get(handle)
        if found is None or found.kind != "user_ringbuf":
            raise MapError(f"no user ring buffer has handle {handle:#x}")
        ring = cast(UserRingBuf, found)
        if flags & ~(RB_NO_WAKEUP | RB_FORCE_WAKEUP):
            return -EINVAL & _M64
        if ring.busy:
            return -EBUSY & _M64
        ring.busy = True
        samples = 0
        try:
            samples, result = self._drain(ctx, ring, function, data)
        finally:
            ring.busy = False
            if flags & RB_FORCE_WAKEUP or (not flags & RB_NO_WAKEUP and samples):
                ring.wakeups += 1
        return result & _M64

    @staticmethod
    def _drain(ctx: HelperContext, ring: UserRingBuf, function: int,
               data: int) -> tuple[int, int]:
        """(samples looked at, the helper's result): the samples handed to
        the callback, or the first error of a bad record (the samples before
        it stay drained, as in the kernel)."""
        ctx.space.add_once(ring.region)
        ctx.space.add_once(ring.dynptr_region)
        samples = discarded = 0
        stop = 0
        while samples < MAX_SAMPLES and not stop:
            offset, length = ring.peek()
            if offset == -ENODATA:
                break
            if offset < 0 and offset != -EAGAIN:
                return samples, offset
            samples += 1
            if offset == -EAGAIN:
                ctx.charge(DISCARD_UNITS)
                discarded += 1
                continue
            ctx.charge(HELPER_CALL_UNITS)  # what a callback call costs (ebpfvm.callbacks)
            ring._dynptr[:] = ((ring.base + offset).to_bytes(8, "little")
                               + (length | _DYNPTR_LOCAL).to_bytes(4, "little") + bytes(4))
            stop = ctx.call(function, ring.dynptr_region.start, data, 0, 0, 0)
            ring.release(length)
        return samples, samples - discarded


def user_ringbuf_helpers(maps: dict[int, Any]) -> dict[int, Helper]:
    """bpf_user_ringbuf_drain over `maps` (handle -> map), part of
    ebpfvm.callbacks.callback_helpers (Impl.CALLBACKS)."""
    return numbered([Helper(_Drain(maps), "bpf_user_ringbuf_drain", context=True)])


register(MapType.USER_RINGBUF, UserRingBuf)
