"""A JIT-compiled program: executable code, its context, the helper
trampoline, and the Python side of every stop (faults become the same typed
errors the interpreter raises)."""

from __future__ import annotations

import array
import ctypes
import platform
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..cfg import MAX_CALL_DEPTH
from ..encoding import Insn
from ..errors import (
    BudgetExceeded,
    CallDepthExceeded,
    InvalidInstruction,
    JitError,
    MemoryFault,
    VmBusy,
    VmFault,
)
from ..helpers import Helper, Unwind
from ..interpreter import Machine
from ..memory import AddressSpace, Region, address_of
from .context import FAULT_INFO_SHIFT, Fault, JitContext, RegionEntry, field_offset
from .execmem import ExecMemory
from .translate import JitCode, translate

__all__ = ["BYTEARRAY_START", "MEMORYVIEW_BUF", "NO_BUDGET", "Busy", "JitProgram", "RunInput"]

NO_BUDGET = 1 << 63
"""Budget value that never runs out (2**63 instructions)."""
M64 = (1 << 64) - 1
_REGION_CAPACITY = 16
_FAULT_WORD = field_offset("fault") // 8
_U64_ZERO = array.array("Q", [0])
"""Repeated to make zeroed uint64 arrays: no zeroed bytes object to copy first."""
_IN_LAYOUT = struct.Struct("<9Q")
"""in_arg, in_len, in_wmask, in_r1, in_r2, in_flags, in_budget, in_nregions, fault."""
assert _IN_LAYOUT.size == field_offset("s_lo")
_RUN_LAYOUT = struct.Struct("<6Q")
"""Its first six fields, which change from run to run: the rest (budget, region
count, no fault) stays as one run leaves it for the next, unless it stopped."""
assert _RUN_LAYOUT.size == field_offset("in_budget")


def _data_pointer_offset(probe: Any) -> int:
    """Where CPython keeps `probe`'s data pointer inside the object (0: unknown)."""
    if platform.python_implementation() != "CPython":
        return 0
    pin = ctypes.c_char.from_buffer(probe)
    data = ctypes.addressof(pin)
    del pin
    for offset in range(16, 96, 8):
        if ctypes.c_void_p.from_address(id(probe) + offset).value == data:
            return offset
    return 0


BYTEARRAY_START = _data_pointer_offset(bytearray(64))
"""Nonzero when the JIT may be handed bytearray objects directly (the fast path)."""
MEMORYVIEW_BUF = _data_pointer_offset(memoryview(bytearray(64)))
"""The same for memoryview objects."""

_ENTRY = ctypes.PYFUNCTYPE(ctypes.c_uint64)
"""The entry keeps the GIL: no other thread can resize the input during a run."""
_REPEAT = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64)
_BATCH = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64,
                          ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)
_TRAMPOLINE = ctypes.CFUNCTYPE(ctypes.c_uint64, *([ctypes.c_uint64] * 6))


def _buffer_address(buffer: Any) -> int:
    return address_of(buffer) if len(buffer) else 0


class Busy:
    """Whether a VM is in the middle of a run. Shared by the VM's interpreter
    and JIT paths. `enter` is atomic (a lock taken without waiting), so a
    helper that calls back into the running VM, or a second thread using the
    same VM, gets VmBusy instead of clobbering the stack and context the run
    in progress is using."""

    __slots__ = ("_lock", "owner")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner = 0
        """threading.get_ident() of the thread running, while one is."""

    @property
    def on(self) -> bool:
        return self._lock.locked()

    def enter(self) -> None:
        """Mark the VM running; VmBusy when it already is."""
        if not self._lock.acquire(blocking=False):
            who = ("a helper called back into the VM that is running it"
                   if self.owner == threading.get_ident() else "another thread is running this VM")
            raise VmBusy(f"the VM is running: {who}")
        self.owner = threading.get_ident()

    def leave(self) -> None:
        """Mark the run ended (only the code that entered calls this)."""
        self.owner = 0
        if self._lock.locked():
            self._lock.release()


class RunInput:
    """One run's input memory as the JIT needs it: address, length, writability,
    and the object itself (kept so helpers can build a checked view lazily)."""

    __slots__ = ("obj", "ptr", "size", "writable")

    def __init__(self, obj: Any, ptr: int, size: int, writable: bool) -> None:
        self.obj = obj
        self.ptr = ptr
        self.size = size
        self.writable = writable


class JitProgram:
    """Machine code for one program plus the context it runs with.

    `stack` is the VM's stack region for this program; `extra` lists the
    regions besides stack and input (mbuff, allowed memory) in the order the
    interpreter searches them."""

    def __init__(self, insns: Sequence[Insn], *, checked: bool, stack: Region,
                 helpers: dict[int, Helper], extra: Sequence[Region] = (),
                 fixed_mbuff: tuple[Region, int, int] | None = None,
                 busy: Busy | None = None) -> None:
        self.busy = busy if busy is not None else Busy()
        self.insns = tuple(insns)
        self.checked = checked
        self.helpers = helpers
        self.stack = stack
        self.ctx = JitContext()
        self.ctx_addr = ctypes.addressof(self.ctx)
        self._ctx_bytes = (ctypes.c_char * ctypes.sizeof(self.ctx)).from_address(self.ctx_addr)
        self._fault = memoryview(self._ctx_bytes).cast("B").cast("Q")[_FAULT_WORD:_FAULT_WORD + 1]
        """ctx.fault as a one-item view: reads faster than the ctypes field."""
        self.jit: JitCode = translate(self.insns, checked=checked, context=self.ctx_addr,
                                     stack_clear=len(stack.view))
        self.memory = ExecMemory(self.jit.code)
        base = self.memory.address
        self._entry = _ENTRY(base + self.jit.entry)
        self._repeat = _REPEAT(base + self.jit.repeat_entry)
        self._batch = _BATCH(base + self.jit.batch_entry)
        self._trampoline = _TRAMPOLINE(self._call_helper)
        self.ctx.helper_fn = ctypes.cast(self._trampoline, ctypes.c_void_p).value or 0
        self.ctx.s_lo = stack.start
        self.ctx.s_top = stack.end
        self.ctx.s_qwords = len(stack.view) // 8
        if fixed_mbuff is not None:
            mbuff, data_off, data_end_off = fixed_mbuff
            self.ctx.mbuff = mbuff.start
            self.ctx.data_off = data_off
            self.ctx.data_end_off = data_end_off
        self._settled: tuple[int, int, bool, int, int, int, int | None] | None = None
        """The inputs, flags and budget the context's in_* block holds (with
        in_nregions = base_nregions and fault = 0), as the last run() wrote and
        left them: generated code only reads that block. None when anything
        else may have changed it since."""
        self.extra: list[Region] = list(extra)
        self._table_regions: list[Region] = []
        self._table = (RegionEntry * _REGION_CAPACITY)()
        self.set_extra(self.extra)
        self._input: RunInput | None = None
        self._run_obj: Any = None
        self._unwound = False
        self._machine: Machine | None = None
        self._pending: BaseException | None = None
        self._batching = False
        self._batch_key: tuple[int, int, int] | None = None
        """During a batch: the input and region count the machine was last used with."""
        self._batch_memory: Region | None = None
        """During a batch over one buffer: all of it, so each run's input region
        is a slice of one view instead of a new mapping of its own."""

    # -- region table -----------------------------------------------------------

    def pc_offsets(self) -> list[tuple[int, int]]:
        """(eBPF pc, offset of its first x86 byte) for each instruction, in
        order. Translation does not record them; this translates again."""
        again = translate(self.insns, checked=self.checked, context=self.ctx_addr,
                          stack_clear=len(self.stack.view), record=True)
        if again.code != self.jit.code:
            raise JitError("translating again gave different code")
        return again.pc_offsets

    def set_extra(self, extra: Sequence[Region]) -> None:
        """Regions after the stack and the input (entry 0 and 1 of the table)."""
        self._settled = None
        self.extra = list(extra)
        self._write_table([self.stack, Region(0, memoryview(b""), False, "input"), *self.extra])
        self.base_nregions = 2 + len(self.extra)

    def _write_table(self, regions: Sequence[Region], first: int = 0) -> None:
        """Write the table's entries from index `first` on (the ones before it
        already hold the same regions)."""
        if len(regions) > len(self._table):
            self._table = (RegionEntry * (2 * len(regions)))()
            first = 0
        for index in range(first, len(regions)):
            region = regions[index]
            entry = self._table[index]
            entry.start = region.start
            entry.size = len(region.view)
            entry.writable = M64 if region.writable else 0
        self.ctx.regions = ctypes.addressof(self._table)
        self._table_regions = list(regions)

    def _update_table(self, regions: Sequence[Region]) -> None:
        """After a helper added or dropped regions: rewrite from the first entry
        past the run's fixed ones (stack, input, extra) that changed."""
        old = self._table_regions
        first = self.base_nregions
        while first < len(regions) and first < len(old) and regions[first] is old[first]:
            first += 1
        self._write_table(regions, first)

    # -- running ----------------------------------------------------------------

    def run(self, obj: Any, ptr: int, size: int, writable: bool, r1: int, r2: int,
            budget: int | None, flags: int = 0) -> int:
        """One run on the input at `ptr` (`obj` is the buffer, kept for helpers).
        With IN_BYTEARRAY in `flags`, `ptr` is id(obj) of a bytearray. Raises
        the interpreter's typed errors."""
        busy = self.busy
        busy.enter()
        self._run_obj = obj
        self._unwound = False
        key = (ptr, size, writable, r1, r2, flags, budget)
        settled = self._settled
        if key != settled:  # else the context holds these inputs already
            if settled is not None and settled[6] == budget:
                _RUN_LAYOUT.pack_into(self._ctx_bytes, 0, ptr, size, M64 if writable else 0, r1,
                                      r2, flags)
            else:
                self._write_inputs(ptr, size, writable, r1, r2, flags, budget)
            self._settled = key
        try:
            result: int = self._entry()
        finally:
            busy.leave()
        if self._fault[0]:
            self._settled = None
            try:
                return self._stopped(budget)
            finally:
                self._release()
        self._run_obj = None
        if self._machine is not None:
            self._release()
        return result

    def _write_inputs(self, arg: int, size: int, writable: bool, r1: int, r2: int, flags: int,
                      budget: int | None) -> None:
        """Write the context's whole in_* block (no fault) for the runs to come."""
        _IN_LAYOUT.pack_into(self._ctx_bytes, 0, arg, size, M64 if writable else 0, r1, r2, flags,
                             NO_BUDGET if budget is None else budget, self.base_nregions, 0)
        self._settled = None  # run() says otherwise when it wrote them

    def repeat(self, data: RunInput, r1: int, r2: int, budget: int | None, count: int) -> int:
        """Run `count` times in one native call; returns the last r0."""
        self._input = data
        self._unwound = False
        self._machine = None
        self._write_inputs(data.ptr, data.size, data.writable, r1, r2, 0, budget)
        self.busy.enter()
        self._batching = True  # each repetition gets a fresh helper machine
        try:
            result: int = self._repeat(self.ctx_addr, count)
            if self.ctx.fault:
                return self._stopped(budget)
            return result
        finally:
            self._release()

    def batch(self, inputs: Sequence[RunInput], budget: int | None, r1: int | None,
              r2: int | None) -> list[int]:
        """Run once per input in one native call. With r1/r2 None, each run gets
        r1 = its input and r2 = its length (EbpfVmRaw); else the given values."""
        count = len(inputs)
        spans = _U64_ZERO * (2 * count)
        spans[0::2] = array.array("Q", [item.ptr for item in inputs])
        spans[1::2] = array.array("Q", [item.size for item in inputs])
        writable = all(item.writable for item in inputs)
        results = self.batch_spans(inputs, 0, M64, spans, writable, budget, r1, r2,
                                   lambda index: inputs[index])
        return results.tolist()

    def batch_spans(self, owner: Any, base: int, limit: int, spans: Any, writable: bool,
                    budget: int | None, r1: int | None, r2: int | None,
                    input_at: Callable[[int], RunInput]) -> array.array[int]:
        """Run once per (offset, length) pair of `spans` (uint64s) on the memory
        at base + offset, in one native call; returns every r0. `owner` keeps
        the memory alive; `input_at(i)` describes input i for error reports."""
        view = memoryview(spans).cast("B").cast("Q") if not isinstance(spans, array.array) else spans
        count = len(view) // 2
        results = _U64_ZERO * count  # bytes(8 * count) first would cost 6 ns per input
        spans_addr = _buffer_address(view)
        results_addr = _buffer_address(results)
        keep = r1 is not None
        self._write_inputs(0, 0, writable, r1 or 0, r2 or 0, 0, budget)
        self.ctx.batch_limit = limit
        self._machine = None
        self._unwound = False
        self._run_obj = owner
        self._batch_memory = (Region.of_address(base, limit, "batch", writable)
                              if 0 < limit < M64 else None)
        self.busy.enter()
        self._batching = True
        try:
            done = 0
            while done < count:
                left = self._batch(self.ctx_addr, spans_addr + 16 * done, count - done,
                                   results_addr + 8 * done, int(keep), base)
                if not self.ctx.fault:
                    break
                index = count - left
                if self.ctx.fault == Fault.BATCH:
                    raise ValueError(f"span {index} lies outside the buffer")
                self._input = input_at(index)
                try:
                    # Returns when a helper ended the run (HelperContext.stop):
                    # that run's result; the batch goes on with the next input.
                    results[index] = self._stopped(budget) & M64
                except VmFault as error:
                    error.batch_index = index
                    raise
                done = index + 1
                self.ctx.fault = Fault.NONE
                self._input = None
                if self._machine is not None:
                    self._machine.context.finish()
                    self._machine = None
            return results
        finally:
            self._release()

    def _release(self) -> None:
        """Drop this run's buffer views so callers may resize or close their
        buffers, and tell the run's helpers it has ended."""
        self.busy.leave()
        self._batching = False
        self._batch_key = None
        self._batch_memory = None
        if self._machine is not None:
            self._machine.context.finish()
        self._input = None
        self._run_obj = None
        self._machine = None
        self._pending = None

    @property
    def registers(self) -> list[int]:
        """r0..r10 at the end of the last run; empty when it stopped early (a
        fault, or a helper ended it)."""
        return [] if self._unwound else list(self.ctx.regs_out)

    def instruction_count(self, budget: int | None) -> int:
        """Instructions the last successful run executed (checked mode only)."""
        if not self.checked:
            return 0
        total = NO_BUDGET if budget is None else budget
        left: int = self.ctx.budget_left
        return total - left

    # -- stops ------------------------------------------------------------------

    def _stopped(self, budget: int | None) -> int:
        ctx = self.ctx
        kind = Fault(ctx.fault)
        self._unwound = True  # regs_out still holds an earlier run's registers
        if kind is Fault.HELPER:
            pending, self._pending = self._pending, None
            if isinstance(pending, Unwind):
                self._unwound = True
                return pending.value
            assert pending is not None
            raise pending
        if kind is Fault.MEMORY:
            info = ctx.fault_info
            pc = info >> FAULT_INFO_SHIFT
            size = (info >> 1) & 0xF
            access = "store" if info & 1 else "load"
            raise MemoryFault(pc, ctx.fault_addr, size, access, self._read_only_detail(
                ctx.fault_addr, size, access))
        if kind is Fault.BUDGET:
            total = NO_BUDGET if budget is None else budget
            block = [insn.pc for insn in self.jit.blocks[ctx.budget_block]]
            remaining = (ctx.budget_left + len(block)) & M64
            raise BudgetExceeded(block[remaining], total)
        if kind is Fault.DEPTH:
            raise CallDepthExceeded(ctx.fault_pc, MAX_CALL_DEPTH)
        pc = ctx.fault_pc
        opcode = next((insn.opcode for insn in self.insns if insn.pc == pc), 0)
        raise InvalidInstruction(pc, opcode, self.jit.invalid.get(pc, "invalid instruction"))

    def _read_only_detail(self, addr: int, size: int, access: str) -> str:
        if access != "store":
            return ""
        for region in self._current_regions():
            if region.start <= addr and addr + size <= region.end and not region.writable:
                return f"region {region.name} is read-only"
        return ""

    # -- helpers ----------------------------------------------------------------

    def _current_regions(self) -> list[Region]:
        data = self._input
        if data is None and self._run_obj is not None:
            # The input the native code set up for the current run (in a batch,
            # a span of the owner's memory).
            ctx = self.ctx
            data = RunInput(self._run_obj, ctx.in_ptr, ctx.in_len, bool(ctx.in_wmask))
        whole = self._batch_memory
        if data is None or not data.size:
            mem = Region(0, memoryview(b""), False, "mem")
        elif whole is not None and whole.start <= data.ptr <= whole.end - data.size:
            start = data.ptr - whole.start
            mem = Region(data.ptr, whole.view[start : start + data.size], data.writable, "mem")
        else:
            mem = _input_region(data)
        return [self.stack, mem, *self.extra]

    def _get_machine(self) -> Machine:
        if self._machine is not None and self._batching:
            ctx = self.ctx
            if self._batch_key != (ctx.in_ptr, ctx.in_len, ctx.nregions):
                # The batch has moved on to another run: its helpers start afresh.
                self._machine.context.finish()
                self._machine = None
        if self._machine is None:
            regions = self._current_regions()
            space = AddressSpace(regions)
            self._machine = Machine(space, self.stack, regions[1], self.helpers, regions[1].view)
            # Entries 0 and 2.. hold the stack and the extra regions since
            # set_extra; the entry code wrote the input's, entry 1. Only the
            # regions helpers add from here on need writing.
            self._table_regions = list(space.regions)
        return self._machine

    def _call_helper(self, helper_id: int, a: int, b: int, c: int, d: int, e: int) -> int:
        """The trampoline generated code calls. Never lets an exception out."""
        try:
            machine = self._get_machine()
            before = len(machine.space.regions)
            try:
                return machine.call(helper_id, a, b, c, d, e, self.ctx.helper_pc)
            finally:
                if len(machine.space.regions) != before:
                    self._update_table(machine.space.regions)
                    self.ctx.nregions = len(machine.space.regions)
                if self._batching:
                    ctx = self.ctx
                    self._batch_key = (ctx.in_ptr, ctx.in_len, ctx.nregions)
        except BaseException as exc:  # recorded, re-raised by run() after the native code stops
            self._pending = exc
            self.ctx.fault = Fault.HELPER
            return 0

    def close(self) -> None:
        """Free the executable memory."""
        self.memory.close()


def _input_region(data: RunInput) -> Region:
    """The run's input as a region: exactly ``[ptr, ptr + size)``, also when
    `obj` is a larger buffer holding it (a batch over spans) or no buffer."""
    try:
        region = Region.of_buffer(data.obj, "mem")
    except (TypeError, ValueError):
        region = None
    if region is not None and region.start == data.ptr and len(region.view) == data.size:
        return region
    return Region.of_address(data.ptr, data.size, "mem", data.writable)
