"""The reference engine: the interpreter (:mod:`ebpfvm.interpreter`) behind
the :class:`~ebpfvm.engine.Engine` protocol. It runs everywhere, checks every
access and traces; it has no native batch, so ``repeat`` and ``batch`` loop
in Python."""

from __future__ import annotations

import array
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ArgumentError
from .interpreter import STACK_SIZE, CompiledProgram, TraceFn, compile_program
from .machine import Machine
from .memory import AddressSpace, Region
from .run import Busy, RunInput

if TYPE_CHECKING:
    from .engine import CompileSettings
    from .program import ProgramImage

__all__ = ["InterpEngine", "InterpExecutable"]

_ZERO_STACK = bytes(STACK_SIZE)
_U64 = struct.Struct("<Q")
_SPAN_WORDS = 2
_M64 = (1 << 64) - 1


class InterpEngine:
    """The interpreter as an engine (registered as ``interp``)."""

    name = "interp"
    title = "the interpreter"
    checked = True
    batches = False
    tracing = True
    reference = True
    platforms: tuple[str, ...] = ("any",)

    def unavailable(self) -> str | None:
        """None: the interpreter runs wherever Python does."""
        return None

    def compile(self, program: ProgramImage, settings: CompileSettings) -> InterpExecutable:
        """The program translated to Python from the image's instructions
        (kept on the image: a translation is a pure function of the bytes),
        bound to the VM's settings."""
        key = (InterpEngine, settings.trace)
        compiled = program.cache.get(key)
        if compiled is None or (settings.max_slots is not None
                                and program.slots > settings.max_slots):
            compiled = compile_program(program, trace=settings.trace,
                                       max_slots=settings.max_slots)
            program.cache[key] = compiled
        return InterpExecutable(compiled, settings.stack_for(program.run_stack), settings)


class InterpExecutable:
    """A translated program bound to one VM's stack, helpers and memory."""

    __slots__ = ("_count", "_registers", "busy", "compiled", "extra", "fixed_mbuff",
                 "helpers", "stack")

    checked = True
    raw_bytearray_flags = 0
    raw_memoryview_flags = 0

    def __init__(self, compiled: CompiledProgram, stack: Region,
                 settings: CompileSettings) -> None:
        self.compiled = compiled
        self.stack = stack
        self.helpers = settings.helpers
        self.extra: list[Region] = list(settings.extra)
        self.fixed_mbuff = settings.fixed_mbuff
        self.busy = settings.busy if settings.busy is not None else Busy()
        self._registers: list[int] = []
        self._count = 0

    @property
    def registers(self) -> list[int]:
        """r0..r10 when the last run ended (empty when it stopped early)."""
        return self._registers

    def instruction_count(self) -> int:
        """Instructions the last run executed, the faulting one included."""
        return self._count

    def set_extra(self, extra: Sequence[Region]) -> None:
        """Replace the regions after stack and input."""
        self.extra = list(extra)

    def execute(self, mem: Region | None, extra: Iterable[Region], r1: int, r2: int,
                budget: int | None, trace: TraceFn | None) -> int:
        """One run on `mem` (the caller holds the busy flag); returns r0."""
        stack = self.stack
        size = len(stack.view)
        stack.view[:] = _ZERO_STACK[:size]
        space = AddressSpace([stack])
        if mem is not None:
            space.add(mem)
        for region in extra:
            space.add(region)
        for region in self.extra:
            space.add(region)
        packet = mem.view if mem is not None else None
        machine = Machine(space, stack, mem, self.helpers, packet)
        regs = [0, r1, r2, 0, 0, 0, 0, 0, 0, 0, stack.end]
        self._registers = []  # stays empty when the run stops early
        try:
            result = self.compiled.run(machine, regs, budget, trace)
            machine.check_unlocked()
        finally:
            # After a fault too: the instructions that ran, the faulting one included.
            self._count = machine.count
            machine.context.finish()
        self._registers = machine.regs_out
        return result

    def run(self, obj: Any, ptr: int, size: int, writable: bool, r1: int, r2: int,
            budget: int | None, flags: int = 0,  # noqa: ARG002  # no fast paths: always 0
            extra: Sequence[Region] | None = None) -> int:
        """One run on the input at `ptr` (see Executable.run; no fast paths)."""
        busy = self.busy
        busy.enter()
        try:
            if extra is not None:
                self.extra = list(extra)
            return self._run_input(RunInput(obj, ptr, size, writable), r1, r2, budget)
        finally:
            busy.leave()

    def _run_input(self, data: RunInput, r1: int, r2: int, budget: int | None) -> int:
        mem = Region.of_address(data.ptr, data.size, "mem", data.writable) if data.size else None
        if self.fixed_mbuff is not None:
            mbuff, data_off, data_end_off = self.fixed_mbuff
            _U64.pack_into(mbuff.view, data_off, data.ptr)
            _U64.pack_into(mbuff.view, data_end_off, data.ptr + data.size)
        return self.execute(mem, (), r1, r2, budget, None)

    def repeat(self, data: RunInput, r1: int, r2: int, budget: int | None, count: int) -> int:
        """`count` runs on one input; returns the last r0."""
        if count < 1:
            raise ArgumentError("repeat", count, "at least 1")
        self.busy.enter()
        try:
            result = 0
            for _ in range(count):
                result = self._run_input(data, r1, r2, budget)
            return result
        finally:
            self.busy.leave()

    def batch(self, inputs: Sequence[RunInput], budget: int | None, r1: int | None,
              r2: int | None) -> list[int]:
        """One run per input (r1/r2 None: r1 = the input, r2 = its size)."""
        self.busy.enter()
        try:
            return [self._run_input(item, item.ptr if r1 is None else r1,
                                    item.size if r2 is None else r2, budget)
                    for item in inputs]
        finally:
            self.busy.leave()

    def batch_spans(self, owner: Any, base: int, limit: int,  # noqa: ARG002
                    spans: Any, writable: bool,  # noqa: ARG002  # input_at gives both
                    budget: int | None, r1: int | None, r2: int | None,
                    input_at: Callable[[int], RunInput]) -> array.array[int]:
        """One run per (offset, length) pair of `spans` on the memory at base +
        offset (`input_at(i)` describes each run's input)."""
        words = memoryview(spans).cast("B").cast("Q")
        count = len(words) // _SPAN_WORDS
        for index in range(count):
            offset, size = words[2 * index], words[2 * index + 1]
            if offset + size > limit:
                raise ValueError(f"span {index} lies outside the buffer")
        inputs = [input_at(index) for index in range(count)]
        return array.array("Q", [value & _M64 for value in self.batch(inputs, budget, r1, r2)])

    def close(self) -> None:
        """Nothing to free: the translation is Python code."""

    def free(self) -> None:
        """Nothing to free."""
