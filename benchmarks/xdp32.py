"""The "xdp32" memory layout of shared/bench (see its README.md).

One buffer below 4 GiB (mmap with MAP_32BIT) that holds a 64-byte xdp_md-like
context followed by the packet:

    region[0:4]  = u32(address of region + 64)             # xdp_md.data
    region[4:8]  = u32(address of region + 64 + len(MEM))  # xdp_md.data_end
    region[8:64] = 0
    region[64:]  = MEM

A program runs with r1 = address of region, r2 = 64 + len(MEM).
"""

from __future__ import annotations

import mmap
import struct

from ebpfvm.vm import buffer_address

__all__ = ["CTX_SIZE", "MAP_32BIT", "xdp32_region", "xdp32_regions"]

MAP_32BIT = 0x40
"""Linux x86-64 mmap flag: map in the first 2 GiB of the address space."""

CTX_SIZE = 64
"""Bytes before MEM: the context with data (u32) and data_end (u32)."""

_HEADER = struct.Struct("<II")
_ALIGN = 64


def _map_low(size: int) -> mmap.mmap:
    return mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_32BIT)


def xdp32_region(mem: bytes) -> tuple[mmap.mmap, memoryview]:
    """One xdp32 region holding `mem`: (the mapping, a view of exactly the region).

    Keep the mapping alive as long as the view is used."""
    size = CTX_SIZE + len(mem)
    region = _map_low(size)
    base = buffer_address(region)
    if base + size > 1 << 32:
        raise OSError(f"MAP_32BIT mapping at {base:#x} is not below 4 GiB")
    _HEADER.pack_into(region, 0, base + CTX_SIZE, base + size)
    region[CTX_SIZE:size] = mem
    return region, memoryview(region)[:size]


def xdp32_regions(mem: bytes, count: int) -> tuple[mmap.mmap, list[memoryview]]:
    """`count` independent xdp32 regions holding `mem`, 64-byte aligned, in one
    mapping below 4 GiB: (the mapping, one view per region)."""
    size = CTX_SIZE + len(mem)
    stride = (size + _ALIGN - 1) // _ALIGN * _ALIGN
    whole = _map_low(stride * count)
    base = buffer_address(whole)
    if base + stride * count > 1 << 32:
        raise OSError(f"MAP_32BIT mapping at {base:#x} is not below 4 GiB")
    view = memoryview(whole)
    views: list[memoryview] = []
    for index in range(count):
        offset = index * stride
        start = base + offset
        _HEADER.pack_into(whole, offset, start + CTX_SIZE, start + size)
        whole[offset + CTX_SIZE : offset + size] = mem
        views.append(view[offset : offset + size])
    return whole, views
