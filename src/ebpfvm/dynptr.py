"""Ring buffer queries and dynamic pointers (helpers4, issue 13 point 3).

bpf_ringbuf_query reports a ring buffer's positions. A dynptr is a 16-byte
``struct bpf_dynptr`` in the program's stack, laid out as the kernel's
``bpf_dynptr_kern``: the data's address (u64), then a u32 holding the size
(low 24 bits), the type (bits 28-30: 1 local, 2 ring buffer) and the
read-only bit (31), then a u32 offset into the data. The program never reads
it directly (the kernel's verifier forbids it); the helpers read it back
through HelperContext.read, so a corrupted one is at worst a bad guest
pointer, which the same checks refuse. Helpers are called by number
(RFC 9669 section 4.3.1's "helper functions")."""

from __future__ import annotations

import struct
from typing import Any, cast

from .errors import MapError
from .helpers import Helper, HelperContext, numbered
from .native.binding import native_version
from .ringbuf import RingBuf

__all__ = ["DYNPTR_LOCAL", "DYNPTR_RINGBUF", "DYNPTR_SIZE", "dynptr_helpers"]

DYNPTR_SIZE = 16
"""sizeof(struct bpf_dynptr)."""
DYNPTR_LOCAL, DYNPTR_RINGBUF = 1, 2
"""The kernel's BPF_DYNPTR_TYPE_LOCAL and BPF_DYNPTR_TYPE_RINGBUF."""
_TYPE_SHIFT = 28
_SIZE_MASK = 0xFFFFFF
_RDONLY = 1 << 31
_MAX_SIZE = _SIZE_MASK
"""The largest size a dynptr holds (the upper 8 bits of its size word are
its type and flags)."""
E2BIG, EINVAL = 7, 22
_M64 = (1 << 64) - 1
RB_AVAIL_DATA, RB_RING_SIZE, RB_CONS_POS, RB_PROD_POS = 0, 1, 2, 3
"""bpf_ringbuf_query's flags (BPF_RB_*)."""


def _err(errno: int) -> int:
    return -errno & _M64


def _check(ctx: HelperContext, address: int, size: int, access: str) -> None:
    """MemoryFault unless the program may `access` `size` bytes at `address`
    (without copying them)."""
    if size:
        ctx.space.find(address, size, access, ctx.pc)


def _u32(value: int) -> int:
    return value & 0xFFFF_FFFF


class _Dynptrs:
    """The helpers over one VM's maps (handle -> map)."""

    def __init__(self, maps: dict[int, Any]) -> None:
        self.maps = maps

    def _ring(self, handle: int) -> RingBuf:
        found = self.maps.get(handle)
        if found is None or found.kind != "ringbuf":
            raise MapError(f"no ring buffer has handle {handle:#x}")
        return cast(RingBuf, found)

    @native_version
    def ringbuf_query(self, handle: int, flags: int, *_rest: int) -> int:
        """bpf_ringbuf_query: bytes produced and not consumed, the ring's
        size, the consumer or the producer position; 0 for other flags."""
        ring = self._ring(handle)
        answers = {RB_AVAIL_DATA: ring.producer - ring.consumer, RB_RING_SIZE: ring.max_entries,
                   RB_CONS_POS: ring.consumer, RB_PROD_POS: ring.producer}
        return answers.get(flags, 0) & _M64

    # -- the struct -------------------------------------------------------------------

    @staticmethod
    def _set(ctx: HelperContext, ptr: int, data: int, kind: int, size: int) -> None:
        ctx.write(ptr, struct.pack("<QII", data, size | kind << _TYPE_SHIFT, 0))

    @staticmethod
    def _null(ctx: HelperContext, ptr: int) -> None:
        ctx.write(ptr, bytes(DYNPTR_SIZE))

    @staticmethod
    def _get(ctx: HelperContext, ptr: int) -> tuple[int, int, int, int]:
        """(data with the offset added, size, type, read-only bit)."""
        data, word, offset = struct.unpack("<QII", ctx.read(ptr, DYNPTR_SIZE))
        kind = (word & ~_RDONLY) >> _TYPE_SHIFT
        return (data + offset) & _M64 if data else 0, word & _SIZE_MASK, kind, word & _RDONLY

    @staticmethod
    def _fits(size: int, offset: int, length: int) -> bool:
        return length <= size and offset <= size - length

    # -- local dynptrs -----------------------------------------------------------------

    def dynptr_from_mem(self, ctx: HelperContext, data: int, size: int, flags: int,
                        ptr: int, *_rest: int) -> int:
        """bpf_dynptr_from_mem: a local dynptr over `size` bytes at `data`;
        -E2BIG past 2**24 - 1 bytes, -EINVAL for any flag (the dynptr then
        null)."""
        size = _u32(size)
        if size > _MAX_SIZE or flags:
            self._null(ctx, ptr)
            return _err(E2BIG if size > _MAX_SIZE else EINVAL)
        _check(ctx, data, size, "store")  # the memory must be the program's, writable
        self._set(ctx, ptr, data, DYNPTR_LOCAL, size)
        return 0

    def dynptr_read(self, ctx: HelperContext, dst: int, length: int, src: int, offset: int,
                    flags: int) -> int:
        """bpf_dynptr_read: `length` bytes from `offset` in the dynptr;
        -EINVAL for a null dynptr or flags, -E2BIG past its end."""
        data, size, _kind, _rdonly = self._get(ctx, src)
        length, offset = _u32(length), _u32(offset)
        if not data or flags:
            return _err(EINVAL)
        if not self._fits(size, offset, length):
            return _err(E2BIG)
        ctx.charge_bytes(length)
        ctx.write(dst, ctx.read(data + offset, length))
        return 0

    def dynptr_write(self, ctx: HelperContext, dst: int, offset: int, src: int, length: int,
                     flags: int) -> int:
        """bpf_dynptr_write: `length` bytes into the dynptr at `offset`;
        -EINVAL for a null or read-only dynptr or flags, -E2BIG past its end."""
        data, size, _kind, rdonly = self._get(ctx, dst)
        length, offset = _u32(length), _u32(offset)
        if not data or rdonly:
            return _err(EINVAL)
        if not self._fits(size, offset, length):
            return _err(E2BIG)
        if flags:
            return _err(EINVAL)
        ctx.charge_bytes(length)
        ctx.write(data + offset, ctx.read(src, length))
        return 0

    def dynptr_data(self, ctx: HelperContext, ptr: int, offset: int, length: int,
                    *_rest: int) -> int:
        """bpf_dynptr_data: the address of `length` bytes at `offset`, or 0
        (NULL) for a null or read-only dynptr or a range past its end."""
        data, size, _kind, rdonly = self._get(ctx, ptr)
        length, offset = _u32(length), _u32(offset)
        if not data or not self._fits(size, offset, length) or rdonly:
            return 0
        _check(ctx, data + offset, length, "load")  # still the program's memory
        return data + offset

    # -- ring buffer dynptrs --------------------------------------------------------------

    def ringbuf_reserve_dynptr(self, ctx: HelperContext, handle: int, size: int, flags: int,
                               ptr: int, *_rest: int) -> int:
        """bpf_ringbuf_reserve_dynptr: a record of `size` bytes behind a
        ring buffer dynptr; -EINVAL for flags or a full ring, -E2BIG past
        2**24 - 1 bytes (the dynptr then null)."""
        ring = self._ring(handle)
        size = _u32(size)
        if flags or size > _MAX_SIZE:
            self._null(ctx, ptr)
            return _err(EINVAL if flags else E2BIG)
        address = ring.reserve(size, owner=ctx, empty_ok=True)
        if not address:
            self._null(ctx, ptr)
            return _err(EINVAL)
        if ctx.space.add_once(ring.region):
            ctx.at_exit(lambda: ring.discard_owned(ctx))
        self._set(ctx, ptr, address, DYNPTR_RINGBUF, size)
        return 0

    def _commit(self, ctx: HelperContext, ptr: int, discard: bool) -> int:
        data, _size, _kind, _rdonly = self._get(ctx, ptr)
        if not data:
            return 0
        for ring in self.maps.values():
            if ring.kind == "ringbuf" and cast(RingBuf, ring).commit(data, discard):
                self._null(ctx, ptr)
                return 0
        raise MapError(f"{data:#x} is not a reserved ring buffer record")

    def ringbuf_submit_dynptr(self, ctx: HelperContext, ptr: int, *_rest: int) -> int:
        """bpf_ringbuf_submit_dynptr: submit the record; the dynptr is null
        after (a null one: nothing)."""
        return self._commit(ctx, ptr, False)

    def ringbuf_discard_dynptr(self, ctx: HelperContext, ptr: int, *_rest: int) -> int:
        """bpf_ringbuf_discard_dynptr: discard the record; the dynptr is null
        after (a null one: nothing)."""
        return self._commit(ctx, ptr, True)


def dynptr_helpers(maps: dict[int, Any]) -> dict[int, Helper]:
    """bpf_ringbuf_query and the dynptr helpers over `maps` (handle -> map),
    part of ebpfvm.maps.map_helpers (Impl.MAPS)."""
    table = _Dynptrs(maps)
    return numbered([Helper(table.ringbuf_query, "bpf_ringbuf_query")] + [
        Helper(getattr(table, name), "bpf_" + name, context=True)
        for name in ("dynptr_from_mem", "dynptr_read", "dynptr_write", "dynptr_data",
                     "ringbuf_reserve_dynptr", "ringbuf_submit_dynptr",
                     "ringbuf_discard_dynptr")])
