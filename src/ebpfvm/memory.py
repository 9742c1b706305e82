"""Address-space regions and bounds checks.

Guest addresses are the real host addresses of the buffers a program was
given, so pointers stored in memory (rbpf's mbuff, the xdp32 layout) work as
they do in the kernel. Every access ``[addr, addr + size)`` must lie inside
one region; stores also need a writable region.
"""

from __future__ import annotations

import ctypes
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import MemoryFault

__all__ = [
    "AddressSpace",
    "Region",
    "address_of",
    "as_view",
    "coalesce_addresses",
    "merge_runs",
]

_UNPACK = {
    1: struct.Struct("<B").unpack_from,
    2: struct.Struct("<H").unpack_from,
    4: struct.Struct("<I").unpack_from,
    8: struct.Struct("<Q").unpack_from,
}
_PACK = {
    1: struct.Struct("<B").pack_into,
    2: struct.Struct("<H").pack_into,
    4: struct.Struct("<I").pack_into,
    8: struct.Struct("<Q").pack_into,
}
_SIZE_MASK = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFF_FFFF, 8: 0xFFFF_FFFF_FFFF_FFFF}
_NUL = re.compile(b"\\0")
"""Finds a NUL in a buffer without copying it (re searches any buffer)."""


class _PyBuffer(ctypes.Structure):
    """CPython's Py_buffer (Include/pybuffer.h)."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_PyObject_GetBuffer = ctypes.pythonapi.PyObject_GetBuffer
_PyObject_GetBuffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_PyObject_GetBuffer.restype = ctypes.c_int
_PyBuffer_Release = ctypes.pythonapi.PyBuffer_Release
_PyBuffer_Release.argtypes = [ctypes.POINTER(_PyBuffer)]
_PyBuffer_Release.restype = None
_PYBUF_SIMPLE = 0


def as_view(obj: Any) -> memoryview:
    """A flat unsigned-byte memoryview of any C-contiguous buffer object
    (bytes, bytearray, memoryview, mmap, array, numpy array...)."""
    view = obj if isinstance(obj, memoryview) else memoryview(obj)
    if view.format != "B" or view.ndim != 1:
        if not view.c_contiguous:
            raise ValueError("buffer must be C-contiguous")
        view = view.cast("B")
    return view


def address_of(obj: Any) -> int:
    """The host address of the first byte of a buffer object.

    The address stays valid while the object is alive and not resized; hold a
    memoryview of it to pin it (a bytearray cannot be resized while exported).
    """
    if isinstance(obj, Region):
        return obj.start
    buf = _PyBuffer()
    _PyObject_GetBuffer(obj, ctypes.byref(buf), _PYBUF_SIMPLE)
    try:
        return buf.buf or 0
    finally:
        _PyBuffer_Release(ctypes.byref(buf))


@dataclass(frozen=True, slots=True)
class Region:
    """A range of guest-visible memory, ``[start, start + len(view))``."""

    start: int
    view: memoryview
    writable: bool
    name: str

    @property
    def end(self) -> int:
        return self.start + len(self.view)

    @classmethod
    def of_buffer(cls, obj: Any, name: str, writable: bool | None = None) -> Region:
        """Wrap a buffer object; read-only buffers (bytes) give read-only regions."""
        view = as_view(obj)
        can_write = not view.readonly
        if writable and not can_write:
            raise ValueError(f"region {name}: buffer is read-only")
        start = address_of(view) if len(view) else 0
        return cls(start, view, can_write if writable is None else writable, name)

    @classmethod
    def of_address(cls, start: int, size: int, name: str, writable: bool = True) -> Region:
        """Wrap raw host memory given by address. The caller vouches for it."""
        array = (ctypes.c_ubyte * size).from_address(start)
        return cls(start, memoryview(array).cast("B"), writable, name)


def coalesce_addresses(addresses: Iterable[int]) -> list[tuple[int, int]]:
    """rbpf's allowed-memory form (a set of single byte addresses) as
    ``(start, size)`` runs of consecutive addresses."""
    runs: list[tuple[int, int]] = []
    for addr in sorted(set(addresses)):
        if runs and runs[-1][0] + runs[-1][1] == addr:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((addr, 1))
    return runs


def merge_runs(runs: Iterable[tuple[int, int, bool]]) -> list[tuple[int, int, bool]]:
    """Merge overlapping or touching ``(start, size, writable)`` runs that have
    the same writability, so an access spanning two registrations is allowed."""
    merged: list[tuple[int, int, bool]] = []
    for start, size, writable in sorted(runs):
        if merged:
            last_start, last_size, last_writable = merged[-1]
            if last_writable == writable and start <= last_start + last_size:
                end = max(last_start + last_size, start + size)
                merged[-1] = (last_start, end - last_start, writable)
                continue
        merged.append((start, size, writable))
    return merged


class AddressSpace:
    """The regions one run may touch, searched in order.

    `load` and `store` are the slow path of every engine; the interpreter
    inlines the check for the two hottest regions (stack and input memory).
    Helpers that hand a program memory it may already have (a map's values,
    a ring buffer) register it with :meth:`add_once`, so the list stays as
    short as the set of distinct buffers a run uses."""

    __slots__ = ("_once", "regions")

    def __init__(self, regions: Sequence[Region] = ()) -> None:
        self.regions: list[Region] = list(regions)
        self._once: dict[int, Region] = {}

    def add(self, region: Region) -> None:
        """Append `region` (an empty one is ignored)."""
        if len(region.view):
            self.regions.append(region)

    def add_once(self, region: Region) -> bool:
        """Append `region` unless this very object was added with add_once
        before (O(1)); True when it was appended now."""
        key = id(region)
        if key in self._once:
            return False
        self._once[key] = region  # held, so its id is not reused
        self.add(region)
        return True

    def find(self, addr: int, size: int, access: str, pc: int) -> tuple[Region, int]:
        """The first region holding the whole access (a writable one for a
        store), and the offset in it."""
        end = addr + size
        read_only: Region | None = None
        for region in self.regions:
            start = region.start
            if start <= addr and end <= start + len(region.view):
                if access == "store" and not region.writable:
                    read_only = region
                    continue
                return region, addr - start
        detail = f"region {read_only.name} is read-only" if read_only is not None else ""
        raise MemoryFault(pc, addr, size, access, detail)

    def load(self, addr: int, size: int, pc: int) -> int:
        """Read an unsigned little-endian value of `size` bytes."""
        region, offset = self.find(addr, size, "load", pc)
        value: int = _UNPACK[size](region.view, offset)[0]
        return value

    def store(self, addr: int, size: int, value: int, pc: int) -> None:
        """Write the low `size` bytes of `value`, little-endian."""
        region, offset = self.find(addr, size, "store", pc)
        _PACK[size](region.view, offset, value & _SIZE_MASK[size])

    def read_bytes(self, addr: int, size: int, pc: int) -> bytes:
        """Checked read of `size` raw bytes (for helpers)."""
        if size == 0:
            return b""
        region, offset = self.find(addr, size, "load", pc)
        return bytes(region.view[offset : offset + size])

    def write_bytes(self, addr: int, data: bytes, pc: int) -> None:
        """Checked write of raw bytes (for helpers)."""
        if not data:
            return
        region, offset = self.find(addr, len(data), "store", pc)
        region.view[offset : offset + len(data)] = data

    def read_cstring(self, addr: int, pc: int, limit: int = 1 << 16) -> bytes:
        """Checked read of a NUL-terminated string (without the NUL); a
        MemoryFault when no NUL comes within `limit` bytes."""
        data, terminated = self.read_string(addr, limit, pc)
        if not terminated:
            raise MemoryFault(pc, addr, limit, "load", "string is not NUL-terminated")
        return data

    def read_string(self, addr: int, limit: int, pc: int) -> tuple[bytes, bool]:
        """Checked read of the bytes before the first NUL at `addr`, at most
        `limit` of them, and whether a NUL ended them. A MemoryFault names
        the first byte it needed that no region holds. The work is one
        region search and one NUL search per region the string touches."""
        parts: list[bytes] = []
        done = 0
        while done < limit:
            region, offset = self.find(addr + done, 1, "load", pc)
            end = min(len(region.view), offset + limit - done)
            found = _NUL.search(region.view, offset, end)
            if found is not None:
                parts.append(bytes(region.view[offset : found.start()]))
                return b"".join(parts), True
            parts.append(bytes(region.view[offset:end]))
            done += end - offset
        return b"".join(parts), False
