"""Buffers the JIT reads through their objects (the fast path): where
CPython keeps a bytearray's or a memoryview's data pointer, and the pin that
holds an input in place once Python code runs during a run."""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Sequence
from typing import Any

from ..memory import _PyBuffer, _PyBuffer_Release, _PyObject_GetBuffer, address_of

__all__ = ["BYTEARRAY_START", "MEMORYVIEW_BUF", "Pin"]

_OBJECT_HEADER = 16
"""ob_refcnt and ob_type: no data pointer there."""
_POINTER = ctypes.sizeof(ctypes.c_void_p)


def _data_pointer_offset(kind: type, probes: Sequence[Any]) -> int:
    """Where CPython keeps the data pointer of a `kind` object (0: unknown).

    Each probe's data starts somewhere else relative to its allocation (a
    bytearray after ``del b[:k]`` keeps its allocation in ob_bytes and its data
    in ob_start; a memoryview slice points into its base). The offset is the
    one field inside the object that holds every probe's data address; when
    no field or more than one does, the fast path stays off."""
    if platform.python_implementation() != "CPython":
        return 0
    end = kind.__basicsize__ - _POINTER
    candidates = set(range(_OBJECT_HEADER, end + 1, _POINTER))
    for probe in probes:
        if type(probe) is not kind:
            return 0
        data = address_of(probe)
        candidates = {offset for offset in candidates
                      if ctypes.c_void_p.from_address(id(probe) + offset).value == data}
    return candidates.pop() if len(candidates) == 1 else 0


def _shifted_bytearray(size: int, shift: int) -> bytearray:
    """A bytearray whose data starts `shift` bytes into its allocation."""
    probe = bytearray(size + shift)
    del probe[:shift]
    return probe


_PROBE_SIZE = 64
_PROBE_SHIFTS = (8, 24)
BYTEARRAY_START = _data_pointer_offset(bytearray, [
    bytearray(_PROBE_SIZE), *(_shifted_bytearray(_PROBE_SIZE, n) for n in _PROBE_SHIFTS)])
"""Nonzero when the JIT may be handed bytearray objects directly (the fast path):
where a bytearray keeps the address its data starts at (ob_start)."""
MEMORYVIEW_BUF = _data_pointer_offset(memoryview, [
    memoryview(bytearray(_PROBE_SIZE)), memoryview(bytearray(_PROBE_SIZE))[_PROBE_SHIFTS[0]:],
    memoryview(bytes(_PROBE_SIZE))[_PROBE_SHIFTS[1]:]])
"""The same for memoryview objects (view.buf)."""


class Pin:
    """A buffer export held on an object (PyObject_GetBuffer) until release():
    meanwhile a bytearray cannot be resized, a memoryview cannot be released
    and an mmap cannot be closed (each raises BufferError)."""

    __slots__ = ("_buffer", "address", "size")

    def __init__(self, obj: Any) -> None:
        buffer = _PyBuffer()
        _PyObject_GetBuffer(obj, ctypes.byref(buffer), 0)  # PyBUF_SIMPLE
        self._buffer: _PyBuffer | None = buffer
        self.address: int = buffer.buf or 0
        self.size: int = buffer.len

    def release(self) -> None:
        """Give the export back (once)."""
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            _PyBuffer_Release(ctypes.byref(buffer))


