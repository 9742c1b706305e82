"""Queue and stack maps laid out in native memory (issue 15).

BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK keep their values in one block of
native memory that Python (:class:`NativeQueue`, under ebpfvm.maps.QueueMap)
and the native runtime (``src/ebpfvm/native/rt_queue.h``; RFC 9669 section
5.3: programs reach maps through helper calls) both read and write. The
block is a ring of ``max_entries + 1`` value slots, as the kernel keeps a
queue or stack (one slot always stays free, so head == tail means empty)::

    0   struct rt_map     handle, type (22 queue, 23 stack), key_size 0,
                          value_size, max_entries, flags, ncpus 1,
                          slab (the address of the first slot: block + 64)
    40  u32 head          the next push goes to this slot
    44  u32 tail          the oldest value's slot
    48  u32 size          max_entries + 1
    52  u32 reserved
    56  u64 reserved
    64  size slots of value_size bytes

A push when full fails with E2BIG, or with BPF_EXIST first drops the oldest
value (tail moves on), as the kernel's; a queue pops the oldest (tail), a
stack the newest (the slot before head). A head or tail at or past `size`
(a corrupted block) reads as an empty map, and the next push starts the ring
again from slot 0, so neither Python nor the runtime reads outside the block.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

from .memory import Region, address_of

__all__ = ["QUEUE_HEADER", "NativeQueue"]

QUEUE_HEADER: Final = 64
"""The descriptor and the ring's fields; the slots follow."""
_STACK = 23
_HEAD, _TAIL = 40, 44
E2BIG, ENOENT = 7, 2
BPF_EXIST = 2
_PREFIX = struct.Struct("<QIIIIIIQ")
_RING = struct.Struct("<II")


class NativeQueue:
    """The native block of one queue or stack map."""

    def __init__(self, map_type: int, value_size: int, max_entries: int, flags: int) -> None:
        self.stack = map_type == _STACK
        self.value_size = value_size
        self.size = max_entries + 1
        self.mem = bytearray(QUEUE_HEADER + self.size * value_size)
        self._view = memoryview(self.mem)  # pins the block: it never moves
        self.address = address_of(self.mem)
        """The address of the block, the map's ``struct rt_map``."""
        self.region = Region(self.address, self._view, True, "queue map layout")
        _PREFIX.pack_into(self.mem, 0, 0, map_type, 0, value_size, max_entries,
                          flags & 0xFFFF_FFFF, 1, self.address + QUEUE_HEADER)
        struct.pack_into("<I", self.mem, 48, self.size)

    def set_handle(self, handle: int) -> None:
        """Record the map's handle (the runtime finds the map by it)."""
        struct.pack_into("<Q", self.mem, 0, handle & (1 << 64) - 1)

    def _ends(self) -> tuple[int, int]:
        """(head, tail); (0, 0) when either is out of the ring."""
        head, tail = _RING.unpack_from(self.mem, _HEAD)
        return (head, tail) if head < self.size and tail < self.size else (0, 0)

    def _slot(self, index: int) -> bytes:
        start = QUEUE_HEADER + index * self.value_size
        return bytes(self.mem[start : start + self.value_size])

    def __len__(self) -> int:
        head, tail = self._ends()
        return (head - tail) % self.size

    def push(self, value: bytes, flags: int) -> int:
        """Push a value of value_size bytes (flags checked by the caller):
        0, or -E2BIG when full without BPF_EXIST."""
        head, tail = self._ends()
        after = (head + 1) % self.size
        if after == tail:
            if flags != BPF_EXIST:
                return -E2BIG
            tail = (tail + 1) % self.size
        start = QUEUE_HEADER + head * self.value_size
        self.mem[start : start + self.value_size] = value
        _RING.pack_into(self.mem, _HEAD, after, tail)
        return 0

    def _next_out(self) -> int | None:
        head, tail = self._ends()
        if head == tail:
            return None
        return (head - 1) % self.size if self.stack else tail

    def peek(self) -> bytes | None:
        """The next value out, or None when empty."""
        index = self._next_out()
        return None if index is None else self._slot(index)

    def pop(self) -> bytes | None:
        """Take the next value out, or None when empty."""
        index = self._next_out()
        if index is None:
            return None
        head, tail = self._ends()
        if self.stack:
            head = index
        else:
            tail = (tail + 1) % self.size
        _RING.pack_into(self.mem, _HEAD, head, tail)
        return self._slot(index)

    def oldest_first(self) -> list[bytes]:
        """The values in the order they were pushed."""
        head, tail = self._ends()
        return [self._slot((tail + i) % self.size) for i in range((head - tail) % self.size)]

    def __iter__(self) -> Iterator[bytes]:
        """The values, next out first."""
        values = self.oldest_first()
        return iter(values[::-1] if self.stack else values)
