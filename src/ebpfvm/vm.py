"""The four VM kinds of rbpf, with rbpf's methods and semantics.

* :class:`EbpfVmMbuff`: ``execute_program(mem, mbuff)``; r1 = mbuff (or mem
  when mbuff is empty). The program follows pointers stored in mbuff.
* :class:`EbpfVmFixedMbuff`: ``execute_program(mem)``; the VM owns the mbuff
  and writes mem's start and end addresses at the offsets given at creation.
* :class:`EbpfVmRaw`: ``execute_program(mem)``; r1 = mem, r2 = len(mem) (uBPF).
* :class:`EbpfVmNoData`: ``execute_program()``; no memory but the stack.

Addresses are real host addresses. A run may touch its stack, mem, mbuff,
memory registered with :meth:`register_allowed_memory` and regions that
helpers add, nothing else. `mem` may be any buffer; a read-only one (bytes)
makes stores into it fail with :class:`~ebpfvm.errors.MemoryFault`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from .encoding import Insn
from .helpers import Helper, as_helper
from .interpreter import STACK_SIZE, CompiledProgram, Machine, TraceFn, compile_program
from .memory import AddressSpace, Region, address_of, coalesce_addresses, merge_runs
from .verifier import Verifier, verify

__all__ = [
    "DEFAULT_BUDGET",
    "EbpfVmFixedMbuff",
    "EbpfVmMbuff",
    "EbpfVmNoData",
    "EbpfVmRaw",
    "Verifier",
]

DEFAULT_BUDGET = 10_000_000
"""Instructions a run may execute unless the VM is told otherwise."""


_U64 = struct.Struct("<Q")
_EMPTY = b""
_ZERO_STACK = bytes(STACK_SIZE)


class _VmBase:
    """What every VM kind shares: program, verifier, helpers, allowed memory."""

    def __init__(self, prog: bytes | bytearray | memoryview | None = None, *,
                 budget: int | None = DEFAULT_BUDGET) -> None:
        self._verifier: Verifier = verify
        self._prog: bytes | None = None
        self._compiled: CompiledProgram | None = None
        self._traced: CompiledProgram | None = None
        self._helpers: dict[int, Helper] = {}
        self._allowed_buffers: list[Region] = []
        self._allowed_runs: list[tuple[int, int, bool]] = []
        self._allowed_raw: list[Region] = []
        self._stack = bytearray(STACK_SIZE)
        self._stack_region = Region.of_buffer(self._stack, "stack")
        self._stack_regions: dict[int, Region] = {}
        self.budget = budget
        self.last_registers: list[int] = []
        self.last_instruction_count = 0
        if prog is not None:
            self.set_program(prog)

    # -- rbpf API ---------------------------------------------------------

    def set_program(self, prog: bytes | bytearray | memoryview) -> None:
        """Load a program, after the verifier accepts it."""
        code = bytes(prog)
        self._verifier(code)
        self._prog = code
        self._compiled = None
        self._traced = None

    def set_verifier(self, verifier: Verifier) -> None:
        """Replace the verifier; it runs at once on an already loaded program."""
        if self._prog is not None:
            verifier(self._prog)
        self._verifier = verifier

    def register_helper(self, key: int, fn: Callable[..., int] | Helper, *,
                        name: str | None = None, context: bool = False) -> None:
        """Make `fn` callable as ``call key``. A plain fn takes five ints and
        returns an int; with ``context=True`` it first takes a HelperContext."""
        self._helpers[key] = as_helper(fn, name, context)

    def register_allowed_memory(self, memory: Any, *, writable: bool = True) -> None:
        """Let programs access more memory: a buffer object, a ``range`` of
        addresses, or rbpf's form, an iterable of single byte addresses
        (consecutive ones are merged). Every byte of an access must be allowed."""
        if isinstance(memory, range):
            if memory.step != 1:
                raise ValueError("allowed memory ranges must have step 1")
            runs = [(memory.start, len(memory))]
        elif _is_buffer(memory):
            self._allowed_buffers.append(Region.of_buffer(memory, "allowed", writable or None))
            return
        else:
            runs = coalesce_addresses(memory)
        merged = merge_runs([*self._allowed_runs, *((s, n, writable) for s, n in runs if n)])
        self._allowed_runs = merged
        self._allowed_raw = [Region.of_address(s, n, "allowed", w) for s, n, w in merged]

    @property
    def program(self) -> bytes | None:
        return self._prog

    def decoded(self) -> tuple[Insn, ...]:
        """The loaded program's decoded instructions."""
        return self._program(False).insns

    # -- running ----------------------------------------------------------

    def _program(self, trace: bool) -> CompiledProgram:
        if self._prog is None:
            raise ValueError("no program loaded: call set_program() first")
        if trace:
            if self._traced is None:
                self._traced = compile_program(self._prog, trace=True)
            return self._traced
        if self._compiled is None:
            self._compiled = compile_program(self._prog)
        return self._compiled

    def _stack_for(self, size: int) -> Region:
        """The top `size` bytes of the VM's stack buffer, as one region."""
        region = self._stack_regions.get(size)
        if region is None:
            whole = self._stack_region
            view = whole.view[STACK_SIZE - size :]
            region = Region(whole.start + STACK_SIZE - size, view, True, "stack")
            self._stack_regions[size] = region
        return region

    def _run(self, mem: Region | None, extra: Iterable[Region], r1: int, r2: int,
             trace: TraceFn | None) -> int:
        program = self._program(trace is not None)
        stack = self._stack_for(program.stack_size)
        stack.view[:] = _ZERO_STACK[: program.stack_size]
        space = AddressSpace([stack])
        if mem is not None:
            space.add(mem)
        for region in extra:
            space.add(region)
        for region in self._allowed_buffers:
            space.add(region)
        for region in self._allowed_raw:
            space.add(region)
        packet = mem.view if mem is not None else None
        machine = Machine(space, stack, mem, self._helpers, packet)
        regs = [0, r1, r2, 0, 0, 0, 0, 0, 0, 0, stack.end]
        result = program.run(machine, regs, self.budget, trace)
        self.last_registers = machine.regs_out
        self.last_instruction_count = machine.count
        return result


def _is_buffer(obj: Any) -> bool:
    try:
        memoryview(obj)
    except TypeError:
        return False
    return True


def _mem_region(mem: Any) -> Region | None:
    if mem is None:
        return None
    return Region.of_buffer(mem, "mem")


class EbpfVmMbuff(_VmBase):
    """A VM for programs that read packet pointers from a metadata buffer."""

    def execute_program(self, mem: Any = _EMPTY, mbuff: Any = _EMPTY, *,
                        trace: TraceFn | None = None) -> int:
        """Run with r1 = mbuff's address (mem's when mbuff is empty)."""
        mem_region = _mem_region(mem)
        mbuff_region = Region.of_buffer(mbuff, "mbuff")
        if len(mbuff_region.view):
            r1 = mbuff_region.start
        elif mem_region is not None and len(mem_region.view):
            r1 = mem_region.start
        else:
            r1 = 0
        return self._run(mem_region, [mbuff_region], r1, 0, trace)


class EbpfVmFixedMbuff(_VmBase):
    """A VM that owns the metadata buffer: before each run it writes mem's
    start address at `data_offset` and end address at `data_end_offset`."""

    def __init__(self, prog: bytes | bytearray | memoryview | None = None,
                 data_offset: int = 0, data_end_offset: int = 0, *,
                 budget: int | None = DEFAULT_BUDGET) -> None:
        if data_offset < 0 or data_end_offset < 0:
            raise ValueError("mbuff offsets must be non-negative")
        self.data_offset = data_offset
        self.data_end_offset = data_end_offset
        self._mbuff = bytearray(max(data_offset, data_end_offset) + 8)
        self._mbuff_region = Region.of_buffer(self._mbuff, "mbuff")
        super().__init__(prog, budget=budget)

    def execute_program(self, mem: Any = _EMPTY, *, trace: TraceFn | None = None) -> int:
        """Run with r1 = the internal mbuff, which points at mem."""
        mem_region = _mem_region(mem)
        start = mem_region.start if mem_region is not None and len(mem_region.view) else 0
        end = start + (len(mem_region.view) if mem_region is not None else 0)
        _U64.pack_into(self._mbuff, self.data_offset, start)
        _U64.pack_into(self._mbuff, self.data_end_offset, end)
        return self._run(mem_region, [self._mbuff_region], self._mbuff_region.start, 0, trace)


class EbpfVmRaw(_VmBase):
    """A VM for programs that work on one memory area: r1 = mem, r2 = len(mem)."""

    def execute_program(self, mem: Any = _EMPTY, *, trace: TraceFn | None = None) -> int:
        mem_region = _mem_region(mem)
        size = len(mem_region.view) if mem_region is not None else 0
        r1 = mem_region.start if mem_region is not None and size else 0
        return self._run(mem_region, [], r1, size, trace)


class EbpfVmNoData(_VmBase):
    """A VM for programs that use no memory but their stack."""

    def execute_program(self, *, trace: TraceFn | None = None) -> int:
        return self._run(None, [], 0, 0, trace)


def buffer_address(obj: Any) -> int:
    """The host address of a buffer, as a program running on it sees it."""
    return address_of(obj)
