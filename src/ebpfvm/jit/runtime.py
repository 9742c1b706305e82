"""A JIT-compiled program: executable code, its context, the helper
trampoline, and the Python side of every stop (faults become the same typed
errors the interpreter raises)."""

from __future__ import annotations

import array
import ctypes
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..cfg import MAX_CALL_DEPTH
from ..encoding import Insn
from ..errors import (
    BudgetExceeded,
    CallDepthExceeded,
    HelperFault,
    InvalidInstruction,
    JitError,
    MemoryFault,
    RunInterrupted,
    VmFault,
)
from ..helpers import NO_BUDGET, Helper, Unwind
from ..machine import Machine
from ..memory import (
    AddressSpace,
    Region,
    address_of,
)
from ..run import Busy, RunInput
from .buffers import BYTEARRAY_START, MEMORYVIEW_BUF, Pin
from .callbacks import NativeCallbacks
from .context import (
    BUDGET_SLICE,
    FAULT_INFO_SHIFT,
    IN_BYTEARRAY,
    Fault,
    JitContext,
    RegionEntry,
    field_offset,
)
from .execmem import ExecMemory
from .rtlink import link_runtime, native_fault
from .tailcall import tail_plan
from .translate import JitCode, translate

__all__ = ["BYTEARRAY_START", "MEMORYVIEW_BUF", "NO_BUDGET", "Busy", "JitProgram", "RunInput"]

M64 = (1 << 64) - 1
_REGION_CAPACITY = 16
_W_FAULT = field_offset("fault") // 8
"""Index of a JitContext field among its uint64 words (JitProgram._words)."""
_W_IN_PTR = field_offset("in_ptr") // 8
_W_IN_LEN = field_offset("in_len") // 8
_W_IN_FLAGS = field_offset("in_flags") // 8
_W_IN_BUDGET = field_offset("in_budget") // 8
_W_IN_RESERVE = field_offset("in_reserve") // 8
_W_LEFT = field_offset("budget_left") // 8
_W_RESERVE = field_offset("budget_reserve") // 8
_W_HELPER_PC = field_offset("helper_pc") // 8
_W_DEPTH = field_offset("depth") // 8
_W_TAIL_EXIT = field_offset("tail_exit") // 8
_TAIL_CALL = 12
"""bpf_tail_call's helper number: told the depth of its caller (tailcalls)."""
_U64_ZERO = array.array("Q", [0])
"""Repeated to make zeroed uint64 arrays: no zeroed bytes object to copy first."""
_IN_LAYOUT = struct.Struct("<10Q")
"""in_arg, in_len, in_wmask, in_r1, in_r2, in_flags, in_budget, in_reserve,
in_nregions, fault."""
assert _IN_LAYOUT.size == field_offset("s_lo")
_RUN_LAYOUT = struct.Struct("<6Q")
"""Its first six fields, which change from run to run: the rest (budget, region
count, no fault) stays as one run leaves it for the next, unless it stopped."""
assert _RUN_LAYOUT.size == field_offset("in_budget")
_SPAN_BYTES = 16
"""One (offset, length) pair of uint64s in a batch's span array."""
_TRAMPOLINES = frozenset({"_call_helper", "_poll"})


def _unraisable_hook(unraisable: Any) -> None:
    """sys.unraisablehook, chained to the one it replaced. A signal handler
    that raises at the entry of one of our trampolines (before its body) makes
    ctypes report the exception as unraisable and return garbage; the native
    code sees the mark the body did not clear and stops the run. Here the
    exception is kept, silently, for the JitProgram to raise. Every other
    unraisable exception goes to the previous hook."""
    owner = getattr(unraisable.object, "__self__", None)
    if isinstance(owner, JitProgram) and \
            getattr(unraisable.object, "__name__", "") in _TRAMPOLINES:
        owner._lost = unraisable.exc_value
        return
    _PREVIOUS_HOOK(unraisable)


_PREVIOUS_HOOK = sys.unraisablehook

_ENTRY = ctypes.PYFUNCTYPE(ctypes.c_uint64)
"""The entry keeps the GIL: no other thread can resize the input during a run."""
_REPEAT = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64)
_BATCH = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64,
                          ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64)
_TRAMPOLINE = ctypes.CFUNCTYPE(ctypes.c_uint64, *([ctypes.c_uint64] * 6))
_POLL = ctypes.CFUNCTYPE(None)
_Code = tuple[ExecMemory, Any, Any, Any]
"""Executable memory and its three entries (run, repeat, batch)."""


def _buffer_address(buffer: Any) -> int:
    return address_of(buffer) if len(buffer) else 0


_get_ident = threading.get_ident


class JitProgram:
    """Machine code for one program plus the context it runs with.

    `stack` is the VM's stack region for this program; `extra` lists the
    regions besides stack and input (mbuff, allowed memory) in the order the
    interpreter searches them.

    Interruption: the checked code polls Python between budget slices (see
    context.BUDGET_SLICE) and every helper call enters Python, so Ctrl-C
    stops a run with RunInterrupted; a batch also polls between runs (see
    drivers). Unchecked code runs with a budget through a second translation
    that charges it exactly as checked code does (`metered`), made at the
    first such run; without a budget (None) it charges nothing and can be
    interrupted only at its helper calls and between the runs of a batch."""

    # Slots: attribute reads on the per-call path stay fast however many
    # attributes there are (a plain instance dict slows down past about 30).
    __slots__ = (
        "_batch",
        "_batch_key",
        "_batch_memory",
        "_batching",
        "_block_at",
        "_callback_fault",
        "_callbacks",
        "_codes",
        "_ctx_bytes",
        "_entry",
        "_fault",
        "_input",
        "_link",
        "_lost",
        "_machine",
        "_pending",
        "_pin",
        "_poller",
        "_repeat",
        "_run_obj",
        "_settled",
        "_table",
        "_table_regions",
        "_tail",
        "_trampoline",
        "_unwound",
        "_words",
        "base_nregions",
        "busy",
        "checked",
        "ctx",
        "ctx_addr",
        "extra",
        "helpers",
        "insns",
        "jit",
        "memory",
        "metered",
        "serial",
        "stack",
    )

    def __init__(self, insns: Sequence[Insn], *, checked: bool, stack: Region,
                 helpers: dict[int, Helper], extra: Sequence[Region] = (),
                 fixed_mbuff: tuple[Region, int, int] | None = None,
                 busy: Busy | None = None) -> None:
        self.busy = busy if busy is not None else Busy()
        self._tail = tail_plan(helpers, insns, stack)  # tail calls as jumps (see tailcall)
        if self._tail is not None:
            insns, stack = self._tail.insns, self._tail.stack
        self.insns = tuple(insns)
        self._link = link_runtime(self.insns, helpers)  # native helpers (see rtlink)
        self.checked = checked
        self.helpers = helpers
        self.stack = stack
        self.ctx = JitContext()
        self.ctx_addr = ctypes.addressof(self.ctx)
        self._ctx_bytes = (ctypes.c_char * ctypes.sizeof(self.ctx)).from_address(self.ctx_addr)
        self._words = memoryview(self._ctx_bytes).cast("B").cast("Q")
        """The context as uint64 words (index _W_*): reads faster than ctypes fields."""
        self._fault = self._words[_W_FAULT:_W_FAULT + 1]
        """ctx.fault as a one-item view: the cheapest read, for run()."""
        self.jit: JitCode = translate(self.insns, checked=checked, context=self.ctx_addr,
                                     stack_clear=len(stack.view), tail=self._tail,
                                     link=self._link)
        self.memory = ExecMemory(self.jit.code)
        base = self.memory.address
        self._entry = _ENTRY(base + self.jit.entry)
        self._repeat = _REPEAT(base + self.jit.repeat_entry)
        self._batch = _BATCH(base + self.jit.batch_entry)
        self.metered = checked
        """Whether the code runs use now charges the budget (see _meter)."""
        self._codes: dict[bool, _Code] = {checked: (self.memory, self._entry, self._repeat,
                                                    self._batch)}
        """The code by `metered`: unchecked code gets its metered kind on demand."""
        entries = frozenset(self.jit.callbacks)
        self._callbacks = NativeCallbacks(self, entries) if entries else None
        """Runs the program's callbacks for helpers (None: it has none)."""
        if self._callbacks is not None:
            self._callbacks.add_code(checked, base, self.jit)
        self._callback_fault: tuple[BaseException, int] | None = None
        """A callback's fault on its way out through the helper, and its count."""
        self._trampoline = _TRAMPOLINE(self._call_helper)
        self._poller = _POLL(self._poll)
        self.ctx.helper_fn = ctypes.cast(self._trampoline, ctypes.c_void_p).value or 0
        self.ctx.poll_fn = ctypes.cast(self._poller, ctypes.c_void_p).value or 0
        self.ctx.s_lo = stack.start
        self.ctx.s_top = stack.end
        self.ctx.s_qwords = len(stack.view) // 8
        self.ctx.rt_env = self._link.env.address if self._link is not None else 0
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
        self._pin: Pin | None = None
        """The export that pins a fast-path input (a bytearray or memoryview the
        code reads through its object) once Python code runs during the run."""
        self._unwound = False
        self._machine: Machine | None = None
        self._pending: BaseException | None = None
        self._lost: BaseException | None = None
        """What a signal handler raised at a trampoline's entry (_unraisable_hook)."""
        self._batching = False
        self._batch_key: tuple[int, int, int] | None = None
        """During a batch: the input and region count the machine was last used with."""
        self._batch_memory: Region | None = None
        """During a batch over one buffer: all of it, so each run's input region
        is a slice of one view instead of a new mapping of its own."""
        self._block_at: dict[int, tuple[int, int]] | None = None
        """pc -> (length of its block, its index in the block), built at the first fault."""

    # -- region table -----------------------------------------------------------

    def pc_offsets(self) -> list[tuple[int, int]]:
        """(eBPF pc, offset of its first x86 byte) for each instruction, in
        order. Translation does not record them; this translates again."""
        again = translate(self.insns, checked=self.checked, context=self.ctx_addr,
                          stack_clear=len(self.stack.view), record=True, tail=self._tail,
                          link=self._link)
        if again.code != self.jit.code:
            raise JitError("translating again gave different code")
        return again.pc_offsets

    def set_extra(self, extra: Sequence[Region]) -> None:
        """Regions after the stack and the input (entry 0 and 1 of the table)."""
        self._settled = None
        self.extra = list(extra) + (self._link.regions if self._link is not None else [])
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
            budget: int | None, flags: int = 0, extra: Sequence[Region] | None = None) -> int:
        """One run on the input at `ptr` (`obj` is the buffer, kept for helpers).
        With IN_BYTEARRAY in `flags`, `ptr` is id(obj) of a bytearray or
        memoryview. `extra`, when given, replaces the regions after the input
        (see set_extra) once the run holds the VM. Raises the interpreter's
        typed errors; VmBusy while the VM is running."""
        busy = self.busy
        token = busy._token  # Busy.enter and leave, inlined: this is the per-call path
        try:
            token.pop()
        except IndexError:
            busy.enter()  # raises VmBusy
        busy.owner = _get_ident()
        try:
            if extra is not None:
                self.set_extra(extra)
            if self._link is not None:
                self._link.refresh()
            self._run_obj = obj
            self._unwound = False
            key = (ptr, size, writable, r1, r2, flags, budget)
            settled = self._settled
            if key != settled:  # else the context holds these inputs already
                if settled is not None and settled[6] == budget:
                    _RUN_LAYOUT.pack_into(self._ctx_bytes, 0, ptr, size, M64 if writable else 0,
                                          r1, r2, flags)
                else:
                    self._write_inputs(ptr, size, writable, r1, r2, flags, budget)
                self._settled = key
            result: int = self._entry()
            if self._fault[0]:
                self._settled = None
                return self._stopped()
            if self._machine is not None:
                self._machine.check_unlocked()
            return result
        finally:
            self._run_obj = None
            if self._machine is not None:
                self._release()
            elif self._link is not None and self._link.rings:
                self._link.finish()  # records native reserves left busy
            busy.owner = 0
            if not token:
                token.append(True)

    def _write_inputs(self, arg: int, size: int, writable: bool, r1: int, r2: int, flags: int,
                      budget: int | None) -> None:
        """Write the context's whole in_* block (no fault) for the runs to come."""
        if not self.checked and self.metered is (budget is None):
            self._meter(budget is not None)
        total = NO_BUDGET if budget is None else budget
        first = min(total, BUDGET_SLICE)
        _IN_LAYOUT.pack_into(self._ctx_bytes, 0, arg, size, M64 if writable else 0, r1, r2, flags,
                             first, total - first, self.base_nregions, 0)
        self._settled = None  # run() says otherwise when it wrote them

    def _meter(self, on: bool) -> None:
        """Unchecked code: switch to the translation that charges the budget
        (`on`, translated at the first run with a budget) or the one that does not."""
        code = self._codes.get(on)
        if code is None:
            jit = translate(self.insns, checked=False, metered=True, context=self.ctx_addr,
                            stack_clear=len(self.stack.view), tail=self._tail, link=self._link)
            memory = ExecMemory(jit.code)
            base = memory.address
            if self._callbacks is not None:
                self._callbacks.add_code(on, base, jit)
            code = self._codes[on] = (memory, _ENTRY(base + jit.entry),
                                      _REPEAT(base + jit.repeat_entry),
                                      _BATCH(base + jit.batch_entry))
        _memory, self._entry, self._repeat, self._batch = code
        self.metered = on

    def repeat(self, data: RunInput, r1: int, r2: int, budget: int | None, count: int) -> int:
        """Run `count` times in one native call; returns the last r0."""
        self.busy.enter()
        try:
            self._input = data
            self._unwound = False
            self._machine = None
            self._write_inputs(data.ptr, data.size, data.writable, r1, r2, 0, budget)
            if self._link is not None:
                self._link.refresh()
            self._batching = True  # each repetition gets a fresh helper machine
            result: int = self._repeat(self.ctx_addr, count)
            if self.ctx.fault:
                return self._stopped()
            return result
        finally:
            self._release()
            self.busy.leave()

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
        """Run once per (offset, length) pair of `spans` (a buffer of uint64s)
        on the memory at base + offset, in one native call; returns every r0.
        `owner` keeps the memory alive; `input_at(i)` describes input i for
        error reports."""
        view = memoryview(spans).cast("B")  # held: the pairs cannot move during the batch
        count = len(view) // _SPAN_BYTES
        results = _U64_ZERO * count  # bytes(8 * count) first would cost 6 ns per input
        spans_addr = _buffer_address(view)
        results_addr = _buffer_address(results)
        keep = r1 is not None
        self.busy.enter()
        try:
            self._write_inputs(0, 0, writable, r1 or 0, r2 or 0, 0, budget)
            if self._link is not None:
                self._link.refresh()
            self.ctx.batch_limit = limit
            self._machine = None
            self._unwound = False
            self._run_obj = owner
            self._batch_memory = (Region.of_address(base, limit, "batch", writable)
                                  if 0 < limit < M64 else None)
            self._batching = True
            done = 0
            while done < count:
                left = self._batch(self.ctx_addr, spans_addr + _SPAN_BYTES * done, count - done,
                                   results_addr + 8 * done, int(keep), base)
                if not self.ctx.fault:
                    break
                done = self._batch_stop(count - left, results, input_at)
            return results
        finally:
            self._release()
            self.busy.leave()

    def _batch_stop(self, index: int, results: array.array[int],
                    input_at: Callable[[int], RunInput]) -> int:
        """The batch stopped at input `index`: raise its fault, or keep the
        result a helper ended that run with; returns where the batch goes on."""
        if self.ctx.fault == Fault.BATCH:
            raise ValueError(f"span {index} lies outside the buffer")
        self._input = input_at(index)
        try:
            # Returns when a helper ended the run (HelperContext.stop):
            # that run's result; the batch goes on with the next input.
            results[index] = self._stopped() & M64
        except VmFault as error:
            error.batch_index = index
            error.batch_results = results[:index]  # type: ignore[attr-defined]
            raise
        self.ctx.fault = Fault.NONE
        self._input = None
        if self._machine is not None:
            self._machine.context.finish()
            self._machine = None
        return index + 1

    def _release(self) -> None:
        """Drop this run's buffer views and pin so callers may resize or close
        their buffers, and tell the run's helpers it has ended. The caller
        leaves `busy` after this."""
        self._batching = False
        self._batch_key = None
        self._batch_memory = None
        machine, self._machine = self._machine, None
        self._input = None
        self._run_obj = None
        self._pending = None
        self._lost = None
        self._table_regions = []  # held the run's input view (an export of its buffer)
        pin, self._pin = self._pin, None
        try:
            if machine is not None:
                machine.context.finish()
            if self._link is not None and self._link.rings:
                self._link.finish()  # records native reserves left busy
        finally:
            if pin is not None:
                pin.release()

    @property
    def registers(self) -> list[int]:
        """r0..r10 at the end of the last run; empty when it stopped early (a
        fault, or a helper ended it)."""
        return [] if self._unwound else list(self.ctx.regs_out)

    def instruction_count(self) -> int:
        """Instructions the last run executed (code that charges the budget
        only: checked code, unchecked code run with a budget): all of them
        when it returned; up to the one that stopped it, that one included,
        when it faulted (the budget, for BudgetExceeded). Helper work charged
        to the budget (HelperContext.charge) counts too."""
        if not self.metered:
            return 0
        words = self._words
        total = words[_W_IN_BUDGET] + words[_W_IN_RESERVE]
        return (total - words[_W_LEFT] - words[_W_RESERVE]) & M64

    # -- stops ------------------------------------------------------------------

    def _set_count(self, count: int) -> None:
        """Make instruction_count() report `count` for the run that stopped."""
        words = self._words
        total = words[_W_IN_BUDGET] + words[_W_IN_RESERVE]
        words[_W_LEFT] = (total - count - words[_W_RESERVE]) & M64

    def _count_at(self, pc: int) -> int:
        """Instructions run up to the one at `pc`, that one included: the
        budget register holds what was left after its block's charge."""
        if self._block_at is None:
            self._block_at = {insn.pc: (len(block), index) for block in self.jit.blocks
                              for index, insn in enumerate(block)}
        where = self._block_at.get(pc)
        if where is None:  # no block: an empty program
            return 0
        length, index = where
        words = self._words
        total = words[_W_IN_BUDGET] + words[_W_IN_RESERVE]
        return (total - words[_W_LEFT] - words[_W_RESERVE] - length + index + 1) & M64

    def _stopped(self) -> int:
        """_stop, or for code with tail calls its stops as the interpreter reports them."""
        if self._tail is not None:
            return self._tail.stopped(self, self._stop)
        return self._stop()

    def _stop(self) -> int:
        """The native code stopped early. Sets the instruction count, then
        raises the run's typed error, or returns the value a helper ended the
        run with (HelperContext.stop)."""
        ctx = self.ctx
        kind = Fault(ctx.fault)
        self._unwound = True  # regs_out still holds an earlier run's registers
        total = self._words[_W_IN_BUDGET] + self._words[_W_IN_RESERVE]
        if kind is Fault.BUDGET:
            block = [insn.pc for insn in self.jit.blocks[ctx.budget_block]]
            remaining = (ctx.budget_left + ctx.budget_reserve + len(block)) & M64
            self._set_count(total)
            raise BudgetExceeded(block[remaining], total)
        if kind is Fault.POLL:
            block = self.jit.blocks[ctx.budget_block]
            self._set_count(self._count_at(block[0].pc) - 1)  # none of the block ran
            raise self._interruption(block[0].pc)
        if kind is Fault.BATCH_POLL:  # between two runs of a batch: the next did not start
            self._set_count(0)
            raise self._interruption(0)
        if kind is Fault.INTERRUPT:
            self._set_count(self._count_at(ctx.helper_pc))
            raise self._interruption(ctx.helper_pc)
        if kind is Fault.HELPER:
            return self._helper_stopped()
        if kind is Fault.RT_BUDGET:  # a native helper's charge (jit/rtlink.py)
            self._set_count(total)
            raise BudgetExceeded(ctx.helper_pc, total)
        if kind is Fault.RT_MEMORY:  # a native helper's RT_CHECK: as HelperContext.read's
            access, size, pc = "store" if ctx.fault_info else "load", ctx.fault_size, ctx.helper_pc
            self._set_count(self._count_at(pc))
            raise native_fault(self.insns, self.helpers, pc, MemoryFault(
                pc, ctx.fault_addr, size, access,
                self._read_only_detail(ctx.fault_addr, size, access)))
        if kind is Fault.MEMORY:
            info = ctx.fault_info
            pc = info >> FAULT_INFO_SHIFT
            size = (info >> 1) & 0xF
            access = "store" if info & 1 else "load"
            self._set_count(self._count_at(pc))
            raise MemoryFault(pc, ctx.fault_addr, size, access, self._read_only_detail(
                ctx.fault_addr, size, access))
        pc = ctx.fault_pc
        self._set_count(self._count_at(pc))
        if kind is Fault.DEPTH:
            raise CallDepthExceeded(pc, MAX_CALL_DEPTH)
        opcode = next((insn.opcode for insn in self.insns if insn.pc == pc), 0)
        raise InvalidInstruction(pc, opcode, self.jit.invalid.get(pc, "invalid instruction"))

    def _helper_stopped(self) -> int:
        """The trampoline (or the poll) recorded an exception, or a helper
        ended the run: raise it as the run's error, or return that value."""
        pc = self.ctx.helper_pc
        pending, self._pending = self._pending, None
        carried, self._callback_fault = self._callback_fault, None
        if carried is not None and carried[0] is pending:  # a callback's fault: its count
            self._set_count(carried[1])
            raise pending
        if isinstance(pending, BudgetExceeded):  # a helper charged past the budget
            self._set_count(self._words[_W_IN_BUDGET] + self._words[_W_IN_RESERVE])
            raise pending
        self._set_count(self._count_at(pc))
        if isinstance(pending, Unwind):
            return pending.value
        if isinstance(pending, KeyboardInterrupt) or (
                isinstance(pending, HelperFault) and isinstance(pending.cause, KeyboardInterrupt)):
            raise RunInterrupted(pc) from pending
        assert pending is not None, "a helper stop records what stopped it"
        raise pending

    def _interruption(self, pc: int) -> BaseException:
        """The error for a trampoline or poll whose body never ran: what a
        signal handler raised at its entry, RunInterrupted for Ctrl-C (also
        when the hook that keeps it was replaced: nothing else stops a body
        before its first line)."""
        lost = self._lost if self._lost is not None else self._pending
        self._lost = self._pending = None
        if lost is None or isinstance(lost, KeyboardInterrupt):
            error = RunInterrupted(pc)
            error.__cause__ = lost
            return error
        return lost

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
            self._machine.context.run_callback = self._callbacks
            self._machine.context.on_packet = self._set_packet
            if self.metered:
                words = self._words
                self._machine.context.budget_total = words[_W_IN_BUDGET] + words[_W_IN_RESERVE]
            # Entries 0 and 2.. hold the stack and the extra regions since
            # set_extra; the entry code wrote the input's, entry 1. Only the
            # regions helpers add from here on need writing.
            self._table_regions = list(space.regions)
        return self._machine

    def _set_packet(self, view: memoryview) -> None:
        """HelperContext.set_packet: point the code's legacy packet loads at
        `view` (the helper context holds it for the rest of the run)."""
        ctx, size = self.ctx, len(view)
        ctx.k_ptr = address_of(view) if size else 0
        for index, access in enumerate((1, 2, 4, 8)):
            ctx.k_cnt[index] = max(size - access + 1, 0)

    def _pin_input(self, pc: int) -> None:
        """Pin a fast-path input (the code read its data pointer from the
        object at entry) before any other Python code runs in this run: a
        helper that resizes it, releases it or closes its mmap then gets
        BufferError instead of moving memory under the running code. A VmFault
        when it already moved (another thread, at the trampoline's entry)."""
        words = self._words
        try:
            pin = Pin(self._run_obj)
        except (BufferError, ValueError, TypeError) as exc:
            raise VmFault("the input buffer was released during the run", pc) from exc
        try:
            if pin.address != words[_W_IN_PTR] or pin.size != words[_W_IN_LEN]:
                raise VmFault("the input buffer was resized during the run", pc)
            self._get_machine()  # run() releases the pin with the machine
        except BaseException:
            pin.release()
            raise
        self._pin = pin

    def _set_budget(self, left: int, before: int) -> None:
        """Take back what a helper left of the budget (a helper only spends)."""
        if not self.metered:
            return
        left = min(max(left, 0), before)
        words = self._words
        words[_W_LEFT] = left  # the code takes the reserve off for its register
        words[_W_RESERVE] = left - min(left, BUDGET_SLICE)

    def _call_helper(self, helper_id: int, a: int, b: int, c: int, d: int, e: int) -> int:
        """The trampoline generated code calls. Never lets an exception out.
        Its first line clears the mark the code set before the call (see
        translate._emit_call): a signal handler that raised before it ran
        leaves the mark, and the code stops the run (Fault.INTERRUPT)."""
        try:
            words = self._words
            words[_W_FAULT] = 0
            pc = words[_W_HELPER_PC]
            if self._pin is None and words[_W_IN_FLAGS] & IN_BYTEARRAY:
                self._pin_input(pc)
            machine = self._get_machine()
            context = machine.context
            # The run's budget, for helpers that charge their work: the code
            # stored what is left (budget_total: see _get_machine).
            left = context.budget = words[_W_LEFT] if self.metered else NO_BUDGET
            before = len(machine.space.regions)
            if helper_id == _TAIL_CALL:  # in a bpf-to-bpf function or the program's own
                context.frame = (words[_W_DEPTH], 0)
                words[_W_TAIL_EXIT] = 0
            serial = getattr(self, "serial", None)  # set by capture_jobs' workers: a lock
            if serial is not None:
                serial.acquire()
            try:
                r0 = machine.call(helper_id, a, b, c, d, e, pc)
                if context.tail_exit:
                    context.tail_exit = False
                    words[_W_TAIL_EXIT] = 1
                return r0
            finally:
                if context.budget != left:
                    self._set_budget(context.budget, left)
                if len(machine.space.regions) != before:
                    self._update_table(machine.space.regions)
                    self.ctx.nregions = len(machine.space.regions)
                if self._batching:
                    ctx = self.ctx
                    self._batch_key = (ctx.in_ptr, ctx.in_len, ctx.nregions)
                if serial is not None:
                    serial.release()
        except BaseException as exc:  # recorded, re-raised by run() after the native code stops
            self._pending = exc
            self._fault[0] = Fault.HELPER
            return 0

    def _poll(self) -> None:
        """What the checked code calls between budget slices. Entering Python
        runs pending signal handlers: one that raises (Ctrl-C) does it before
        the first line, which then never clears the mark (Fault.POLL)."""
        fault = self._fault
        mark = fault[0]  # Fault.POLL, or Fault.BATCH_POLL between two runs of a batch
        try:
            fault[0] = 0
            if self._pin is None and self._words[_W_IN_FLAGS] & IN_BYTEARRAY:
                self._pin_input(self.jit.blocks[self.ctx.budget_block][0].pc)
        except BaseException as exc:
            self._pending = exc
            fault[0] = mark

    def close(self) -> None:
        """Free the executable memory; VmBusy while the VM is running."""
        self.busy.enter()
        try:
            self.free()
        finally:
            self.busy.leave()

    def free(self) -> None:
        """close() for a caller that holds `busy` already (the VM's close)."""
        for memory, *_entries in self._codes.values():
            memory.close()


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


sys.unraisablehook = _unraisable_hook
