"""The engine seam: what an engine is, what it compiles a program into, and
the registry the VM, the runners, capture runs, the CLI and the tests go
through. No module chooses an engine by comparing its name: they ask the
registry, then the engine's capabilities.

An :class:`Engine` compiles a :class:`~ebpfvm.program.ProgramImage` with
:class:`CompileSettings` (the VM's stack, helpers and memory) into an
:class:`Executable`, which runs it: ``run`` once, ``repeat`` the same run,
``batch`` over many inputs (or ``batch_spans`` over spans of one buffer), and
``close``. After a run, ``registers`` and ``instruction_count()`` describe it.

Three engines are registered: ``interp`` (the reference interpreter, the one
``execute_program`` runs), ``jit`` (checked x86-64 code) and
``jit-unchecked`` (x86-64 code without memory checks: UNSAFE)."""

from __future__ import annotations

import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from .errors import ArgumentError, JitUnsupported
from .helpers import Helper
from .interpreter import MAX_TRANSLATED_SLOTS, TraceFn
from .memory import Region
from .program import ProgramImage
from .run import Busy, RunInput

__all__ = [
    "CHECKED_NATIVE",
    "REFERENCE",
    "UNCHECKED_NATIVE",
    "CompileSettings",
    "Engine",
    "EngineInfo",
    "Executable",
    "TracingExecutable",
    "engine_names",
    "engines",
    "find_engine",
    "get_engine",
    "register_engine",
    "unregister_engine",
]

REFERENCE = "interp"
"""The engine ``execute_program`` runs (rbpf's interpreter): it traces."""
CHECKED_NATIVE = "jit"
"""What ``jit_compile()`` compiles with by default."""
UNCHECKED_NATIVE = "jit-unchecked"
"""What ``jit_compile(unchecked=True)`` compiles with."""


@dataclass(slots=True)
class CompileSettings:
    """What an engine compiles a program for: the VM's stack (`stack_for(n)`
    is the region of its top n bytes: pass the program's ``run_stack``, the
    bytes each run clears), its helpers (the VM's live table), the
    regions after stack and input (`extra`: mbuff, allowed memory, in the
    order runs search them), EbpfVmFixedMbuff's (mbuff, data offset, data
    end offset), the VM's busy flag, whether to call a trace function per
    instruction, and the interpreter's translation bound (None: none)."""

    stack_for: Callable[[int], Region]
    helpers: dict[int, Helper]
    extra: Sequence[Region] = ()
    fixed_mbuff: tuple[Region, int, int] | None = None
    busy: Busy | None = None
    trace: bool = False
    max_slots: int | None = MAX_TRANSLATED_SLOTS


class Executable(Protocol):
    """A compiled program, bound to one VM's stack, helpers and memory.

    `run` takes the input as ``(obj, ptr, size, writable)`` (see
    :class:`~ebpfvm.run.RunInput`), the registers r1 and r2 and the budget
    (None: none). With ``flags = raw_bytearray_flags`` (or
    ``raw_memoryview_flags``), `ptr` is ``id(obj)`` of a bytearray (or
    memoryview) the code reads its data pointer from, r1 = the input and r2 =
    its size; 0 means the executable has no such fast path. `extra` replaces
    the regions after the input for this run and the next ones. Every method
    raises the typed errors of :mod:`ebpfvm.errors` and VmBusy while the VM
    is running."""

    checked: bool
    raw_bytearray_flags: int
    raw_memoryview_flags: int

    def run(self, obj: Any, ptr: int, size: int, writable: bool, r1: int, r2: int,
            budget: int | None, flags: int = 0, extra: Sequence[Region] | None = None) -> int:
        """One run; returns r0."""
        ...

    def repeat(self, data: RunInput, r1: int, r2: int, budget: int | None, count: int) -> int:
        """`count` runs on one input; returns the last r0."""
        ...

    def batch(self, inputs: Sequence[RunInput], budget: int | None, r1: int | None,
              r2: int | None) -> list[int]:
        """One run per input (r1/r2 None: r1 = the input, r2 = its size); every r0."""
        ...

    def batch_spans(self, owner: Any, base: int, limit: int, spans: Any, writable: bool,
                    budget: int | None, r1: int | None, r2: int | None,
                    input_at: Callable[[int], RunInput]) -> array.array[int]:
        """One run per (offset, length) pair of `spans` (uint64s) on the memory
        at base + offset; `owner` keeps it alive, `input_at(i)` describes input
        i for error reports. Every r0."""
        ...

    def set_extra(self, extra: Sequence[Region]) -> None:
        """Replace the regions after stack and input (allowed memory changed)."""
        ...

    @property
    def registers(self) -> list[int]:
        """r0..r10 when the last run ended (empty when it stopped early)."""
        ...

    def instruction_count(self) -> int:
        """Instructions the last run executed (0 when the code does not count)."""
        ...

    def close(self) -> None:
        """Free what the executable holds (VmBusy while the VM is running)."""
        ...

    def free(self) -> None:
        """close() for a caller that holds the VM's busy flag already."""
        ...


class TracingExecutable(Executable, Protocol):
    """An executable of a tracing engine, which the VM's ``execute_program``
    runs on regions it builds itself (the caller holds the busy flag)."""

    def execute(self, mem: Region | None, extra: Iterable[Region], r1: int, r2: int,
                budget: int | None, trace: TraceFn | None) -> int:
        """One run with `mem` as input and `extra` before the allowed memory;
        `trace(pc, regs)` before each instruction when given."""
        ...


class Engine(Protocol):
    """An engine: its capabilities, whether it can run here, and its compiler.

    `checked`: bad programs stop with a typed error (unchecked code may crash
    the process). `batches`: it runs batches and repeats in one native call.
    `tracing`: it calls a trace function before each instruction.
    `reference`: the VM's ``execute_program`` path (no ``jit_compile``).
    `platforms`: where it runs (``"any"``, or ``"linux-x86_64"``). `title`:
    how messages name it ("the interpreter")."""

    name: str
    title: str
    checked: bool
    batches: bool
    tracing: bool
    reference: bool
    platforms: tuple[str, ...]

    def unavailable(self) -> str | None:
        """None when the engine can run here, else the reason it cannot."""
        ...

    def compile(self, program: ProgramImage, settings: CompileSettings) -> Executable:
        """Compile `program` for one VM (see CompileSettings)."""
        ...


class EngineInfo(NamedTuple):
    """One engine as ``ebpfvm.engines()`` lists it."""

    name: str
    checked: bool
    batches: bool
    tracing: bool
    platforms: tuple[str, ...]
    unavailable: str | None
    """Why it cannot run here, or None when it can."""


_REGISTRY: dict[str, Engine] = {}


def register_engine(engine: Engine, *, replace: bool = False) -> Engine:
    """Add `engine` to the registry under its name (ArgumentError when the
    name is taken, unless `replace`); returns it."""
    if not replace and engine.name in _REGISTRY:
        raise ArgumentError("engine name", engine.name, "a name no engine has yet")
    _REGISTRY[engine.name] = engine
    return engine


def unregister_engine(name: str) -> None:
    """Remove the engine `name` from the registry (ArgumentError when unknown)."""
    find_engine(name)
    del _REGISTRY[name]


def engine_names() -> tuple[str, ...]:
    """The registered engines' names, in registration order."""
    return tuple(_REGISTRY)


def find_engine(name: str) -> Engine:
    """The engine called `name`, whether or not it can run here;
    ArgumentError listing the names for an unknown one."""
    engine = _REGISTRY.get(name) if isinstance(name, str) else None
    if engine is None:
        raise ArgumentError("engine", name, f"one of {', '.join(_REGISTRY)}")
    return engine


def get_engine(name: str) -> Engine:
    """The engine called `name`, ready to compile: ArgumentError listing the
    names for an unknown one, JitUnsupported (a JitError) with the reason
    when it cannot run here."""
    engine = find_engine(name)
    reason = engine.unavailable()
    if reason is not None:
        raise JitUnsupported(name, reason)
    return engine


def engines() -> list[EngineInfo]:
    """Every registered engine with its capabilities, and the reason when it
    cannot run here."""
    return [EngineInfo(e.name, e.checked, e.batches, e.tracing, e.platforms, e.unavailable())
            for e in _REGISTRY.values()]


def _register_builtins() -> None:
    from .interp_engine import InterpEngine
    from .jit.engine import JitEngine

    register_engine(InterpEngine())
    register_engine(JitEngine(CHECKED_NATIVE, checked=True))
    register_engine(JitEngine(UNCHECKED_NATIVE, checked=False))


_register_builtins()
