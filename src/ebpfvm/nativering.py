"""The ring buffer's bookkeeping in native memory (issue 15).

BPF_MAP_TYPE_RINGBUF keeps its records in the map's slab with the kernel's
framing (ebpfvm.ringbuf), and its positions and the table of reserved
records in one block of native memory that Python (:class:`NativeRing`,
under ebpfvm.ringbuf.RingBuf) and the native runtime
(``src/ebpfvm/native/rt_ring.h``; RFC 9669 section 5.3: programs reach maps
through helper calls) both read and write: one truth::

    0   struct rt_map     handle, type 27, key_size 0, value_size 0,
                          max_entries (the ring size), flags, ncpus 1,
                          slab (the data area's address)
    40  u32 nslots        max_entries / 8
    48  u64 producer      bytes produced
    56  u64 consumer      bytes consumed
    64  u64 discarded     records discarded
    72  u64 pending       busy records
    96  u64 busy[nslots]  per 8-byte ring position: 0, or the record
                          reserved there: length | BUSY (low 32 bits) and
                          who reserved it (high 32 bits: 0 a Python run,
                          else the tag of the native runs' rt_env)

Programs never get the block, so a program scribbling on record headers
cannot make a record busy or change a reserved record's length.
"""

from __future__ import annotations

import struct
from typing import Final

from .memory import address_of

__all__ = ["RING_HEADER", "NativeRing", "env_tag"]

RING_HEADER: Final = 96
"""The descriptor, the positions and counts; the busy table follows."""
_RINGBUF = 27
_BUSY = 1 << 31
_LENGTH = (1 << 30) - 1
_PREFIX = struct.Struct("<QIIIIIIQ")
_U64 = struct.Struct("<Q")
_PRODUCER, _CONSUMER, _DISCARDED, _PENDING = 48, 56, 64, 72
M64 = (1 << 64) - 1


def env_tag(address: int) -> int:
    """The owner tag native runs with the rt_env at `address` give the
    records they reserve (rt_ring.h's RT_RING_TAG)."""
    return ((address >> 3) & 0xFFFF_FFFF) | 1


class NativeRing:
    """The native block of one ring buffer map over its data area at `slab`."""

    def __init__(self, size: int, flags: int, slab: int) -> None:
        self.nslots = size // 8
        self.mem = bytearray(RING_HEADER + 8 * self.nslots)
        self._view = memoryview(self.mem)  # pins the block: it never moves
        self.address = address_of(self.mem)
        """The address of the block, the map's ``struct rt_map``."""
        _PREFIX.pack_into(self.mem, 0, 0, _RINGBUF, 0, 0, size, flags & 0xFFFF_FFFF, 1, slab)
        struct.pack_into("<I", self.mem, 40, self.nslots)

    def set_handle(self, handle: int) -> None:
        """Record the map's handle (the runtime finds the ring by it)."""
        _U64.pack_into(self.mem, 0, handle & M64)

    def _get(self, offset: int) -> int:
        value: int = _U64.unpack_from(self.mem, offset)[0]
        return value

    def _set(self, offset: int, value: int) -> None:
        _U64.pack_into(self.mem, offset, value & M64)

    @property
    def producer(self) -> int:
        """Bytes produced."""
        return self._get(_PRODUCER)

    @producer.setter
    def producer(self, value: int) -> None:
        self._set(_PRODUCER, value)

    @property
    def consumer(self) -> int:
        """Bytes consumed."""
        return self._get(_CONSUMER)

    @consumer.setter
    def consumer(self, value: int) -> None:
        self._set(_CONSUMER, value)

    @property
    def discarded(self) -> int:
        """Records discarded."""
        return self._get(_DISCARDED)

    @discarded.setter
    def discarded(self, value: int) -> None:
        self._set(_DISCARDED, value)

    @property
    def pending(self) -> int:
        """Busy records."""
        return self._get(_PENDING)

    def busy(self, offset: int) -> tuple[int, int] | None:
        """(length, owner tag) of the busy record at ring offset `offset`, or None."""
        if offset < 0 or offset & 7 or offset // 8 >= self.nslots:
            return None
        entry = self._get(RING_HEADER + offset)
        if not entry & _BUSY:
            return None
        return entry & _LENGTH, entry >> 32

    def mark(self, offset: int, size: int, tag: int) -> None:
        """Record a busy record of `size` bytes at `offset`."""
        self._set(RING_HEADER + offset, (size | _BUSY) | (tag & 0xFFFF_FFFF) << 32)
        self._set(_PENDING, self.pending + 1)

    def clear(self, offset: int) -> None:
        """The record at `offset` is busy no more."""
        self._set(RING_HEADER + offset, 0)
        self._set(_PENDING, self.pending - 1)

    def tagged(self, tag: int) -> list[int]:
        """The offsets of the busy records with owner tag `tag`."""
        if not self.pending:
            return []
        table = memoryview(self.mem)[RING_HEADER:].cast("Q")
        return [8 * index for index, entry in enumerate(table)
                if entry & _BUSY and entry >> 32 == tag]
