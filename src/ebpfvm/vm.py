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

import array
import contextlib
import operator
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .encoding import SLOT, Insn
from .engine import (
    CHECKED_NATIVE,
    REFERENCE,
    UNCHECKED_NATIVE,
    CompileSettings,
    Engine,
    Executable,
    TracingExecutable,
    find_engine,
    get_engine,
)
from .errors import ArgumentError, ArgumentTypeError, JitError, check_int, count_of
from .helpers import Helper, as_helper
from .interpreter import MAX_TRANSLATED_SLOTS, STACK_SIZE, TraceFn
from .memory import Region, address_of, as_view, coalesce_addresses, merge_runs
from .program import ProgramImage
from .run import NO_INPUT, Busy, RunInput, run_input
from .verifier import Verifier, verify

__all__ = [
    "DEFAULT_BUDGET",
    "MAX_BUDGET",
    "MAX_HELPER_ID",
    "EbpfVmFixedMbuff",
    "EbpfVmMbuff",
    "EbpfVmNoData",
    "EbpfVmRaw",
    "Verifier",
]

DEFAULT_BUDGET = 10_000_000
"""Instructions a run may execute unless the VM is told otherwise."""
MAX_BUDGET = (1 << 63) - 1
"""The largest budget (as the CLI's --budget). From helpers.NO_BUDGET (2**62)
up a budget is, in practice, unlimited: a run would take centuries."""
MAX_MBUFF_OFFSET = (1 << 20) - 8
"""The largest EbpfVmFixedMbuff offset: the VM allocates its mbuff up to the
pointer at it (1 MiB, far more than any context structure)."""
MAX_HELPER_ID = 0xFFFF_FFFF
"""Helper ids are the u32 immediate of ``call imm``."""


_U64 = struct.Struct("<Q")
_EMPTY = b""


_Vm = TypeVar("_Vm", bound="_VmBase")


def _run_verifier(verifier: Verifier, image: ProgramImage) -> None:
    """The built-in verifier checks the program value (it decodes nothing);
    any other verifier gets the bytes, as rbpf's do."""
    if verifier is verify:
        verify(image)
    else:
        verifier(image.code)


class _VmBase:
    """What every VM kind shares: program, verifier, helpers, allowed memory."""

    def __init__(self, prog: bytes | bytearray | memoryview | None = None, *,
                 budget: int | None = DEFAULT_BUDGET) -> None:
        self._verifier: Verifier = verify
        self._prog: bytes | None = None
        self._image: ProgramImage | None = None
        self._interp: TracingExecutable | None = None
        self._traced: TracingExecutable | None = None
        self._helpers: dict[int, Helper] = {}
        self._allowed_buffers: list[Region] = []
        self._allowed_runs: list[tuple[int, int, bool]] = []
        self._allowed_raw: list[Region] = []
        self._stack = bytearray(STACK_SIZE)
        self._stack_region = Region.of_buffer(self._stack, "stack")
        self._stack_regions: dict[int, Region] = {}
        self._budget: int | None = check_budget(budget)
        self._slot_limit: int | None = MAX_TRANSLATED_SLOTS
        self._jit: Executable | None = None
        """What jit_compile() made (execute_program_jit, test_run, batches)."""
        self._jit_engine: Engine | None = None
        self._jit_freed = False
        self._busy = Busy()
        self._last_jit: Executable | None = None
        """The executable the last run used (None: the reference one, below)."""
        self._last_ref: Executable | None = None
        self._last_registers: list[int] = []
        self._last_count = 0
        self._before_first_run: Callable[[], None] | None = None
        """Called once, as the VM's first run starts (a loaded object's VMs
        freeze its ``.rodata`` there, as libbpf's load does before any run)."""
        if prog is not None:
            self.set_program(prog)

    def _first_run(self) -> None:
        """Call the first-run hook, once (the run paths call this while it is set)."""
        hook, self._before_first_run = self._before_first_run, None
        if hook is not None:
            hook()

    # -- rbpf API ---------------------------------------------------------

    @contextlib.contextmanager
    def _idle(self) -> Iterator[None]:
        """Hold the VM as a run does: VmBusy while a run is in progress (a
        helper of the run calling this, or another thread), and no run starts
        until the block ends. What would pull the program, its code or its
        memory from under a run (set_program, jit_compile, close...) runs here."""
        self._busy.enter()
        try:
            yield
        finally:
            self._busy.leave()

    def set_program(self, prog: bytes | bytearray | memoryview) -> None:
        """Load a program, after the verifier accepts it (VmBusy during a run).
        `prog` is bytecode in a bytes-like object (ArgumentTypeError, a
        TypeError, for anything else: an int or a str is not bytecode)."""
        if isinstance(prog, (int, str)) or not _is_buffer(prog):
            raise ArgumentTypeError("program", prog, "bytes-like bytecode")
        code = bytes(prog)
        image = ProgramImage(code)
        with self._idle():
            self._verify(image)
            self._prog = code
            self._image = image
            self._interp = self._traced = None
            self._drop_jit()

    def set_verifier(self, verifier: Verifier) -> None:
        """Replace the verifier; it runs at once on an already loaded program
        (VmBusy during a run). As in rbpf, a verifier takes the program's
        bytes; the built-in :func:`~ebpfvm.verifier.verify` alone is handed
        the program value instead (the one every engine then compiles)."""
        with self._idle():
            if self._image is not None:
                _run_verifier(verifier, self._image)
            self._verifier = verifier

    def _verify(self, image: ProgramImage) -> None:
        """Run the VM's verifier on `image` (see set_verifier)."""
        _run_verifier(self._verifier, image)

    @property
    def budget(self) -> int | None:
        """Instructions a run may execute (helper work included), or None for
        no bound. Set it to None or an int from 0 to MAX_BUDGET: anything else
        raises ArgumentTypeError (a TypeError) or ArgumentError (a ValueError)
        at once. 0 lets no instruction run."""
        return self._budget

    @budget.setter
    def budget(self, value: int | None) -> None:
        self._budget = check_budget(value)

    @property
    def interpreter_slot_limit(self) -> int | None:
        """Longest program (in slots) the interpreter translates; a longer one
        raises ResourceLimit at its first interpreted run. None: no bound.
        Set it to None or an int of at least 1 (ArgumentError, a ValueError,
        or ArgumentTypeError, a TypeError, otherwise: checked when given)."""
        return self._slot_limit

    @interpreter_slot_limit.setter
    def interpreter_slot_limit(self, value: int | None) -> None:
        self._slot_limit = None if value is None else check_int(
            "interpreter_slot_limit", value, 1)

    def register_helper(self, key: int, fn: Callable[..., int] | Helper, *,
                        name: str | None = None, context: bool = False) -> None:
        """Make `fn` callable as ``call key``. A plain fn takes five ints and
        returns an int; with ``context=True`` it first takes a HelperContext.

        `key` must be an int from 0 to MAX_HELPER_ID (ArgumentError, a
        ValueError, otherwise; ArgumentTypeError, a TypeError, for a non-int)
        and `fn` a callable or a Helper (ArgumentTypeError)."""
        if isinstance(key, bool) or not isinstance(key, int):
            raise ArgumentTypeError("helper id", key, "an int")
        if not 0 <= key <= MAX_HELPER_ID:
            raise ArgumentError("helper id", key, f"from 0 to {MAX_HELPER_ID:#x} (a u32)")
        if not isinstance(fn, Helper) and not callable(fn):
            raise ArgumentTypeError("helper", fn, "callable")
        self._helpers[key] = as_helper(fn, name, context)

    def register_allowed_memory(self, memory: Any, *, writable: bool = True) -> None:
        """Let programs access more memory: a buffer object, a ``range`` of
        addresses, or rbpf's form, an iterable of single byte addresses
        (consecutive ones are merged). Every byte of an access must be allowed.
        VmBusy during a run."""
        with self._idle():
            self._allow(memory, writable)

    def _allow(self, memory: Any, writable: bool) -> None:
        if isinstance(memory, range):
            if memory.step != 1:
                raise ArgumentError("allowed memory range step", memory.step, "1")
            if memory and not 0 <= memory.start < memory.stop <= _M64 + 1:
                raise ArgumentError("allowed memory range", memory, "within 0..2**64-1")
            runs = [(memory.start, len(memory))]
        elif _is_buffer(memory):
            # writable=True means "if the buffer allows it"; False forces read-only.
            # A view of our own: releasing the caller's memoryview cannot free
            # the memory under JIT code that holds its address.
            self._allowed_buffers.append(
                Region.of_buffer(memoryview(memory), "allowed", None if writable else False))
            self._refresh_extra()
            return
        else:
            runs = coalesce_addresses(_addresses(memory))
        merged = merge_runs([*self._allowed_runs, *((s, n, writable) for s, n in runs if n)])
        self._allowed_runs = merged
        self._allowed_raw = [Region.of_address(s, n, "allowed", w) for s, n, w in merged]
        self._refresh_extra()

    def _refresh_extra(self) -> None:
        """Tell the executables the allowed memory changed."""
        for executable in (self._interp, self._traced):
            if executable is not None:
                executable.set_extra(self._jit_extra(None))
        if self._jit is not None:
            self._jit.set_extra(self._jit_extra(self._jit_mbuff()))

    @property
    def program(self) -> bytes | None:
        """The loaded program's bytecode, or None before set_program()."""
        return self._prog

    @property
    def image(self) -> ProgramImage:
        """The loaded program as a value: instructions, blocks, stack use,
        helpers called and call graph (ValueError before set_program())."""
        if self._image is None:
            raise ValueError("no program loaded: call set_program() first")
        return self._image

    def decoded(self) -> tuple[Insn, ...]:
        """The loaded program's decoded instructions."""
        return self.image.insns

    def _share_image(self, other: _VmBase) -> None:
        """Use `other`'s program value when both hold the same program: what
        engines derive from it (the interpreter's translation) is shared."""
        if (self._image is not other._image and other._image is not None
                and self._prog == other._prog and self._interp is None):
            self._image = other._image

    # -- JIT ------------------------------------------------------------------

    def jit_compile(self, *, unchecked: bool = False, engine: str | None = None) -> None:
        """Compile the loaded program to x86-64 code (Linux/x86-64 only).

        By default the code checks every memory access, the budget and the
        call depth exactly as the interpreter does. ``unchecked=True`` drops
        the memory and budget checks for speed: UNSAFE, a wild pointer in the
        program can then crash the process.

        `engine` names a registered engine (see ``ebpfvm.engines()``) to
        compile with instead: ``unchecked=True`` is ``engine="jit-unchecked"``.
        ArgumentError for an unknown name (or a checked engine asked for with
        unchecked=True), JitUnsupported (a JitError) for one that cannot run
        here.

        Ctrl-C stops a checked run with RunInterrupted (also with budget=None:
        the code polls between slices of the budget). Unchecked code honours
        the budget when the VM has one (it then counts and polls as checked
        code does); with budget=None it charges nothing, so it can be
        interrupted only at its helper calls: a loop without one runs until it
        ends. VmBusy during a run."""
        if engine is None:
            engine = UNCHECKED_NATIVE if unchecked else CHECKED_NATIVE
        chosen = find_engine(engine)
        if unchecked and chosen.checked:
            raise ArgumentError("engine", engine, "an unchecked engine with unchecked=True")
        image = self.image
        chosen = get_engine(engine)
        with self._idle():  # VmBusy during a run: its code stays mapped
            self._drop_jit()
            self._jit = chosen.compile(image, self._settings(self._jit_mbuff()))
            self._jit_engine = chosen

    def _settings(self, mbuff: Region | None, trace: bool = False) -> CompileSettings:
        return CompileSettings(self._stack_for, self._helpers, self._jit_extra(mbuff),
                               self._fixed_mbuff(), self._busy, trace,
                               self.interpreter_slot_limit)

    @property
    def jit_ready(self) -> bool:
        """Whether jit_compile() has produced code for the loaded program."""
        return self._jit is not None

    @property
    def jit_unchecked(self) -> bool:
        """Whether the compiled code is the unchecked (unsafe) kind."""
        return self._jit is not None and not self._jit.checked

    @property
    def jit_engine(self) -> str | None:
        """The name of the engine jit_compile() compiled with (None: no code)."""
        return self._jit_engine.name if self._jit is not None and self._jit_engine else None

    def jit_code(self) -> Any:
        """The compiled program (a JitProgram for the JIT engines, for dumps);
        raises JitError before jit_compile()."""
        return self._code()

    def _code(self) -> Executable:
        """What jit_compile() made; JitError before it."""
        if self._jit is None:
            if self._jit_freed:
                raise JitError("no JIT code: close() freed it (jit_compile() makes it again)")
            raise JitError("no JIT code: call jit_compile() first")
        return self._jit

    def close(self) -> None:
        """Free the JIT code. The VM still interprets; jit_compile() again to JIT.
        VmBusy during a run (a helper of the run cannot unmap its code)."""
        with self._idle():
            if self._jit is not None:
                self._jit_freed = True
            self._drop_jit()

    def __enter__(self: _Vm) -> _Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        prog = getattr(self, "_prog", None)
        size = "no program" if prog is None else count_of(len(prog) // SLOT, "slot")
        engine = getattr(self, "_jit_engine", None)
        code = "" if getattr(self, "_jit", None) is None or engine is None else f", {engine.name}"
        return f"<{type(self).__name__} {size}, budget={getattr(self, '_budget', None)}{code}>"

    def _drop_jit(self) -> None:
        """Free the JIT code (the caller holds the VM: see _idle)."""
        if getattr(self, "_jit", None) is not None:
            assert self._jit is not None
            self._jit.free()
        self._jit = None

    def _jit_mbuff(self) -> Region | None:
        return None

    def _fixed_mbuff(self) -> tuple[Region, int, int] | None:
        return None

    def _jit_extra(self, mbuff: Region | None) -> list[Region]:
        extra = [] if mbuff is None else [mbuff]
        return [*extra, *self._allowed_buffers, *self._allowed_raw]

    def _run_jit(self, data: RunInput, r1: int, r2: int) -> int:
        jit = self._code()
        if self._before_first_run is not None:
            self._first_run()
        self._last_jit = jit
        return jit.run(data.obj, data.ptr, data.size, data.writable, r1, r2, self._budget)

    @property
    def last_registers(self) -> list[int]:
        """r0..r10 when the last run ended (empty when it stopped early)."""
        last = self._last_jit or self._last_ref
        if last is not None:
            return last.registers
        return self._last_registers

    @last_registers.setter
    def last_registers(self, value: list[int]) -> None:
        self._last_jit = self._last_ref = None
        self._last_registers = value

    @property
    def last_instruction_count(self) -> int:
        """Instructions the last run executed (0 for unchecked JIT code run
        with budget=None)."""
        last = self._last_jit or self._last_ref
        if last is not None:
            return last.instruction_count()
        return self._last_count

    @last_instruction_count.setter
    def last_instruction_count(self, value: int) -> None:
        self._last_registers = self.last_registers
        self._last_jit = self._last_ref = None
        self._last_count = value

    # -- running ----------------------------------------------------------

    def _reference(self, trace: bool) -> TracingExecutable:
        """The executable execute_program runs (the reference engine's)."""
        image = self.image
        executable: Any = get_engine(REFERENCE).compile(image, self._settings(None, trace))
        if trace:
            self._traced = executable
        else:
            self._interp = executable
        return executable  # type: ignore[no-any-return]

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
        if self._before_first_run is not None:
            self._first_run()
        executable = self._traced if trace is not None else self._interp
        if executable is None:
            executable = self._reference(trace is not None)
        self._busy.enter()  # VmBusy: do not clear the stack of the run in progress
        try:
            self._last_jit = None
            self._last_ref = executable
            return executable.execute(mem, extra, r1, r2, self._budget, trace)
        finally:
            self._busy.leave()


def check_budget(value: object) -> int | None:
    """`value` as a budget: None, or an int from 0 to MAX_BUDGET (bool is not
    one). ArgumentTypeError (a TypeError) or ArgumentError (a ValueError)
    otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ArgumentTypeError("budget", value, "None or an int")
    try:
        number = operator.index(value)  # type: ignore[arg-type]  # int, numpy's ints...
    except TypeError:
        raise ArgumentTypeError("budget", value, "None or an int") from None
    if not 0 <= number <= MAX_BUDGET:
        raise ArgumentError("budget", value, f"from 0 to {MAX_BUDGET} instructions, or None")
    return number


def _addresses(memory: Any) -> list[int]:
    """rbpf's iterable of single byte addresses, checked: ArgumentTypeError for
    what is not an iterable of ints, ArgumentError for an address outside
    0..2**64-1."""
    try:
        addresses = list(memory)
    except TypeError:
        raise ArgumentTypeError("allowed memory", memory,
                                "a buffer, a range or an iterable of addresses") from None
    for address in addresses:
        if isinstance(address, bool) or not isinstance(address, int):
            raise ArgumentTypeError("allowed memory address", address, "an int")
        if not 0 <= address <= _M64:
            raise ArgumentError("allowed memory address", address, "from 0 to 2**64 - 1")
    return addresses


_M64 = (1 << 64) - 1


def _is_buffer(obj: Any) -> bool:
    try:
        memoryview(obj)
    except TypeError:
        return False
    return True


_run_input = run_input


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

    def execute_program_jit(self, mem: Any = _EMPTY, mbuff: Any = _EMPTY) -> int:
        """execute_program() in JIT code (after jit_compile())."""
        jit = self._code()
        if self._before_first_run is not None:
            self._first_run()
        data = _run_input(mem)
        mbuff_region = Region.of_buffer(memoryview(mbuff), "mbuff")  # our own view: pinned
        r1 = mbuff_region.start if len(mbuff_region.view) else data.ptr
        self._last_jit = jit
        # The run sets the mbuff region once it holds the VM (not under a run
        # in progress: a helper calling this gets VmBusy, the table stays).
        return jit.run(data.obj, data.ptr, data.size, data.writable, r1, 0, self._budget,
                       extra=self._jit_extra(mbuff_region))


class EbpfVmFixedMbuff(_VmBase):
    """A VM that owns the metadata buffer: before each run it writes mem's
    start address at `data_offset` and end address at `data_end_offset`."""

    def __init__(self, prog: bytes | bytearray | memoryview | None = None,
                 data_offset: int = 0, data_end_offset: int = 0, *,
                 budget: int | None = DEFAULT_BUDGET) -> None:
        for argument, offset in (("data_offset", data_offset),
                                 ("data_end_offset", data_end_offset)):
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise ArgumentTypeError(argument, offset, "an int")
            if not 0 <= offset <= MAX_MBUFF_OFFSET:
                raise ArgumentError(argument, offset, f"from 0 to {MAX_MBUFF_OFFSET}")
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

    def execute_program_jit(self, mem: Any = _EMPTY) -> int:
        """execute_program() in JIT code; the code writes the mbuff pointers itself."""
        return self._run_jit(_run_input(mem), self._mbuff_region.start, 0)

    def test_run(self, mem: Any = _EMPTY, repeat: int = 1) -> tuple[int, float]:
        """Like the kernel's BPF_PROG_TEST_RUN: `repeat` runs in one native call.
        Returns (r0, mean nanoseconds per run)."""
        return _test_run(self, _run_input(mem), self._mbuff_region.start, 0, repeat)

    def execute_batch(self, inputs: Iterable[Any]) -> list[int]:
        """execute_program_jit over many inputs in one native call; every r0."""
        jit = self._code()
        if self._before_first_run is not None:
            self._first_run()
        return jit.batch([_run_input(item) for item in inputs], self._budget,
                         self._mbuff_region.start, 0)

    def execute_spans(self, buffer: Any, spans: Any) -> array.array[int]:
        """execute_batch over (offset, length) spans of one buffer (see EbpfVmRaw)."""
        return _execute_spans(self, buffer, spans, self._mbuff_region.start, 0)

    def _jit_mbuff(self) -> Region | None:
        return self._mbuff_region

    def _fixed_mbuff(self) -> tuple[Region, int, int] | None:
        return self._mbuff_region, self.data_offset, self.data_end_offset


class EbpfVmRaw(_VmBase):
    """A VM for programs that work on one memory area: r1 = mem, r2 = len(mem)."""

    def execute_program(self, mem: Any = _EMPTY, *, trace: TraceFn | None = None) -> int:
        """Run in the interpreter with r1 = mem's address and r2 = its length;
        returns r0. `trace` is called before each instruction."""
        mem_region = _mem_region(mem)
        size = len(mem_region.view) if mem_region is not None else 0
        r1 = mem_region.start if mem_region is not None and size else 0
        return self._run(mem_region, [], r1, size, trace)

    def execute_program_jit(self, mem: Any = _EMPTY) -> int:
        """execute_program() in JIT code (after jit_compile())."""
        jit = self._jit
        if self._before_first_run is not None:
            self._first_run()
        if jit is not None:
            # Fast paths: the code reads the buffer object's data pointer itself.
            kind = type(mem)
            if kind is bytearray and mem:
                flags = jit.raw_bytearray_flags
                if flags:
                    self._last_jit = jit
                    size = len(mem)
                    return jit.run(mem, id(mem), size, True, 0, size, self._budget, flags)
            elif kind is memoryview and mem.c_contiguous:
                flags = jit.raw_memoryview_flags
                size = mem.nbytes
                if flags and size:
                    self._last_jit = jit
                    return jit.run(mem, id(mem), size, not mem.readonly, 0, size, self._budget,
                                   flags)
        data = _run_input(mem)
        return self._run_jit(data, data.ptr, data.size)

    def test_run(self, mem: Any = _EMPTY, repeat: int = 1) -> tuple[int, float]:
        """Like the kernel's BPF_PROG_TEST_RUN: `repeat` runs in one native call.
        Returns (r0, mean nanoseconds per run)."""
        data = _run_input(mem)
        return _test_run(self, data, data.ptr, data.size, repeat)

    def execute_batch(self, inputs: Iterable[Any]) -> list[int]:
        """execute_program_jit over many inputs in one native call (r1 = each
        input, r2 = its length); returns every r0."""
        jit = self._code()
        if self._before_first_run is not None:
            self._first_run()
        return jit.batch([_run_input(item) for item in inputs], self._budget, None, None)

    def execute_spans(self, buffer: Any, spans: Any) -> array.array[int]:
        """The fastest way over many packets: one buffer holding them all and
        `spans`, (offset, length) pairs as a flat uint64 sequence (array('Q'),
        a numpy uint64 array, or a list of pairs). Each run gets r1 = buffer +
        offset, r2 = length, and may touch only its own span. Returns every r0."""
        return _execute_spans(self, buffer, spans, None, None)


class EbpfVmNoData(_VmBase):
    """A VM for programs that use no memory but their stack."""

    def execute_program(self, *, trace: TraceFn | None = None) -> int:
        """Run in the interpreter with no input (r1 = r2 = 0); returns r0."""
        return self._run(None, [], 0, 0, trace)

    def execute_program_jit(self) -> int:
        """execute_program() in JIT code (after jit_compile())."""
        return self._run_jit(_NO_INPUT, 0, 0)

    def test_run(self, repeat: int = 1) -> tuple[int, float]:
        """`repeat` runs in one native call; returns (r0, mean ns per run)."""
        return _test_run(self, _NO_INPUT, 0, 0, repeat)


_NO_INPUT = NO_INPUT


def _test_run(vm: _VmBase, data: RunInput, r1: int, r2: int, repeat: int) -> tuple[int, float]:
    if repeat < 1:
        raise ArgumentError("repeat", repeat, "at least 1")
    jit = vm._code()
    if vm._before_first_run is not None:
        vm._first_run()
    start = time.perf_counter_ns()
    result = jit.repeat(data, r1, r2, vm._budget, repeat)
    elapsed = time.perf_counter_ns() - start
    vm._last_jit = jit
    return result, elapsed / repeat


def _span_words(spans: Any) -> memoryview:
    """`spans` as a flat memoryview of uint64s: a list of (offset, length)
    pairs, or a buffer of 8-byte unsigned items (array 'Q', or 'L' where that
    is 8 bytes; a numpy uint64 array). Anything else: TypeError or ValueError,
    before any run (the native loop reads 16 bytes per pair)."""
    if isinstance(spans, list | tuple):
        if any(not isinstance(pair, list | tuple) or len(pair) != 2 for pair in spans):
            raise ValueError("spans must be (offset, length) pairs")
        try:
            spans = array.array("Q", [value for pair in spans for value in pair])
        except OverflowError as exc:
            raise ValueError("span offsets and lengths must fit in 64 unsigned bits") from exc
    try:
        view = memoryview(spans)
    except TypeError:
        raise TypeError(f"spans must be a list of pairs or a uint64 buffer, "
                        f"not {type(spans).__name__}") from None
    if view.itemsize != _SPAN_ITEM or view.format.lstrip("@=<") not in _SPAN_FORMATS:
        raise TypeError(f"spans must hold 8-byte unsigned items, not format {view.format!r} "
                        f"of {count_of(view.itemsize, 'byte')}")
    if not view.c_contiguous:
        raise ValueError("spans must be C-contiguous")
    words = view.cast("B").cast("Q")
    if len(words) % 2:
        raise ValueError("spans must hold (offset, length) pairs")
    return words


_SPAN_ITEM = 8
_SPAN_FORMATS = ("Q", "L")


def _execute_spans(vm: _VmBase, buffer: Any, spans: Any, r1: int | None,
                   r2: int | None) -> array.array[int]:
    jit = vm._code()
    if vm._before_first_run is not None:
        vm._first_run()
    view = _span_words(spans)
    data = _run_input(buffer)

    def input_at(index: int) -> RunInput:
        offset, size = view[2 * index], view[2 * index + 1]
        sub = as_view(buffer)[offset : offset + size]
        return RunInput(sub, data.ptr + offset, size, data.writable)

    return jit.batch_spans(data, data.ptr, data.size, view, data.writable, vm._budget, r1, r2,
                           input_at)


def buffer_address(obj: Any) -> int:
    """The host address of a buffer, as a program running on it sees it."""
    return address_of(obj)
