"""A JitProgram as an :class:`~ebpfvm.engine.Executable`: the input fast
paths (a bytearray's or memoryview's data pointer read by the code itself)
as flags the VM passes to ``run`` without knowing the JIT's layout."""

from __future__ import annotations

from typing import Any

from .buffers import BYTEARRAY_START, MEMORYVIEW_BUF
from .context import IN_BYTEARRAY, IN_OFFSET_SHIFT, IN_R1_IS_INPUT
from .runtime import JitProgram

__all__ = ["JitExecutable"]


def _raw_flags(offset: int) -> int:
    """run() flags: the code reads the data pointer at `offset` in the object
    whose id is `ptr`, and r1 is the input (0: no such layout here)."""
    return offset << IN_OFFSET_SHIFT | IN_BYTEARRAY | IN_R1_IS_INPUT if offset else 0


_RAW_BYTEARRAY = _raw_flags(BYTEARRAY_START)
_RAW_MEMORYVIEW = _raw_flags(MEMORYVIEW_BUF)


class JitExecutable(JitProgram):
    """JitProgram with the Executable protocol's fast-path flags. They are
    slots, set per instance: the VM reads one per call, and a slot read is
    cheaper than a class attribute read through the instance."""

    __slots__ = ("raw_bytearray_flags", "raw_memoryview_flags")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_bytearray_flags = _RAW_BYTEARRAY
        self.raw_memoryview_flags = _RAW_MEMORYVIEW
