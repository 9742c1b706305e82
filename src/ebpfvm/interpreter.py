"""The reference interpreter: eBPF translated once into a Python function.

The program is split into basic blocks, and each block becomes straight-line
Python inside one generated function: registers are local variables, a
balanced ``if pc < N`` tree dispatches between blocks, and the semantics of
every ALU op and jump condition are pasted in from :mod:`ebpfvm.alu`. The
whole program runs in one Python frame, with no call per instruction.

Safety: every load and store goes through a bounds check of the whole access
``[addr, addr + size)``. The check for the stack and the input memory is
inlined; anything else goes to :class:`~ebpfvm.memory.AddressSpace`.

Instruction budget: checked when a basic block starts. A block that would take
the run past the budget is not started, and :class:`BudgetExceeded` names the
pc of the first instruction beyond the budget and the budget itself. So a
program that runs exactly `budget` instructions succeeds, and one that would
run more stops at the same pc in every engine.

Helpers and the budget: before each helper call the generated code writes
what is left of the budget into ``HelperContext.budget`` and takes back what
the helper left, so helper work (``HelperContext.charge``) and tail-called
programs draw on the same budget as the program's own instructions.

Host memory: compiling one Python function costs about 23 KB of peak memory
per instruction slot, so a program of more than ``CHUNK_SLOTS`` slots is
translated in chunks, one function per chunk, with a small dispatch loop that
moves between them; and a program of more than ``MAX_TRANSLATED_SLOTS`` slots
(configurable per VM: ``vm.interpreter_slot_limit``) is refused with
:class:`ResourceLimit` instead of growing without bound.

A fault sets ``Machine.count`` to the instructions that ran, the faulting one
included (the budget for :class:`BudgetExceeded`), and a KeyboardInterrupt
during a run becomes :class:`RunInterrupted` at the pc being run.

Tracing compiles a second function that calls ``trace(pc, regs)`` before
every instruction; the fast function has no trace hook at all.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from . import alu
from .cfg import (
    CALLBACK_BASE,
    CALLBACK_SCALE,
    FRAME_SIZE,
    MAX_CALL_DEPTH,
    branch_target,
    callback_target,
    callback_value,
    register_problem,
)
from .encoding import Insn
from .errors import (
    BudgetExceeded,
    CallDepthExceeded,
    InvalidInstruction,
    ResourceLimit,
    RunInterrupted,
    VmFault,
)
from .helpers import NO_BUDGET, BadCallback, CallbackFault, HelperContext, Unwind
from .isa import MAX_REG, Form, Op, OpInfo, Reg
from .machine import Machine
from .program import ProgramImage

__all__ = [
    "CHUNK_SLOTS",
    "FRAME_SIZE",
    "MAX_CALL_DEPTH",
    "MAX_TRANSLATED_SLOTS",
    "STACK_SIZE",
    "CompiledProgram",
    "Machine",
    "TraceFn",
    "compile_program",
]

STACK_SIZE = FRAME_SIZE * MAX_CALL_DEPTH
"""The stack buffer a VM owns; a call-free program uses only its top frame."""

M64 = alu.M64
_NO_BUDGET = NO_BUDGET

MAX_TRANSLATED_SLOTS = 32_768
"""The default bound on the instruction slots the interpreter translates
(``vm.interpreter_slot_limit``; None lifts it). Translation keeps about 1 KB
of code per slot and takes 0.1 to 0.25 ms per slot (on a loaded 2-core
machine), so a program at the bound costs about 35 MB and 3 to 8 seconds;
a longer one gets ResourceLimit at its first interpreted run, at once (the
JIT is not bound by it)."""
CHUNK_SLOTS = 2048
"""Programs longer than this are translated one chunk of blocks at a time,
each chunk a function of its own: peak memory while compiling stays that of
one chunk (about 23 KB per slot) instead of growing with the program."""
_TAIL_CALL = 12
"""bpf_tail_call's helper number (tailcalls.BPF_TAIL_CALL)."""
_GUEST_FILE = "<ebpf>"
"""The file name of generated code, how a traceback's guest frames are found."""

TraceFn = Callable[[int, tuple[int, ...]], None]
"""Called before each instruction with its pc and the registers r0..r10."""



def _budget_error(block_pcs: Sequence[int], count_before: int, budget: int) -> BudgetExceeded:
    # A helper may leave less budget than the block already started needs.
    return BudgetExceeded(block_pcs[max(0, budget - count_before)], budget)


@dataclass(frozen=True, slots=True)
class CompiledProgram:
    """A program translated to Python. `run(machine, regs, budget, trace)`.

    `source` is the generated code of a program translated as one function
    (empty for one translated in chunks). `block_pcs` lists the pcs of each
    basic block; `unit_block` maps the first pc of every piece of code the
    dispatch can reach to its block's index."""

    insns: tuple[Insn, ...]
    source: str
    fn: Callable[..., int]
    stack_size: int
    block_pcs: list[list[int]] = field(default_factory=list)
    unit_block: dict[int, int] = field(default_factory=dict)
    callbacks: frozenset[int] = frozenset()

    def run(
        self,
        machine: Machine,
        regs: Sequence[int],
        budget: int | None,
        trace: TraceFn | None = None,
    ) -> int:
        """Run the program; sets machine.count also when the run faults."""
        limit = _NO_BUDGET if budget is None else budget
        ctx = machine.context
        ctx.budget = ctx.budget_total = limit
        if self.callbacks:
            ctx.run_callback = self._callback_runner(machine, limit, trace)
        try:
            return self.fn(machine, list(regs), limit, trace)
        except Unwind as unwind:
            machine.count = limit - ctx.budget
            return unwind.value
        except VmFault as fault:
            machine.count = self._count_at(fault, fault.__traceback__, limit, ctx)
            raise
        except KeyboardInterrupt as interrupt:
            pc, _ = _guest_position(interrupt.__traceback__)
            stop = RunInterrupted(pc)
            machine.count = self._count_at(stop, interrupt.__traceback__, limit, ctx)
            raise stop from None

    def _callback_runner(self, machine: Machine, limit: int,
                         trace: TraceFn | None) -> Callable[[int, tuple[int, ...]], int]:
        """HelperContext.run_callback for one run: the generated function
        entered at the callback's pc, in a frame below its caller's, with the
        count so far; it returns at the callback's exit."""
        entries = self.callbacks
        fn = self.fn

        def run_callback(value: int, args: tuple[int, ...]) -> int:
            ctx = machine.context
            pc, rest = divmod(value - CALLBACK_BASE, CALLBACK_SCALE)
            if rest or pc not in entries:
                raise BadCallback(f"{value:#x} is not a callback entry of this program")
            caller_pc, frame = ctx.pc, ctx.frame
            depth, r10 = frame
            saved = machine.fb, machine.entry
            machine.fb = depth + 1
            machine.entry = (pc, limit - ctx.budget)
            try:
                if depth + 1 >= MAX_CALL_DEPTH:
                    raise CallDepthExceeded(caller_pc, MAX_CALL_DEPTH)
                r0 = fn(machine, [0, *args, 0, 0, 0, 0, r10 - FRAME_SIZE], limit, trace)
            except VmFault as fault:
                raise CallbackFault(fault) from None
            finally:
                machine.fb, machine.entry = saved
                ctx.pc, ctx.frame = caller_pc, frame
            ctx.budget = limit - machine.count
            return r0

        return run_callback

    def _count_at(self, fault: VmFault, tb: TracebackType | None, limit: int,
                  ctx: HelperContext) -> int:
        """Instructions that ran up to `fault`, the faulting one included: the
        count at the start of its block plus its place in the block, or what
        the helpers it called took (the budget left after a helper call)."""
        if isinstance(fault, BudgetExceeded):
            return limit
        start, n = _guest_position(tb)
        exact = n
        index = self.unit_block.get(start)
        if index is not None:
            pcs = self.block_pcs[index]
            if fault.pc in pcs:
                exact = n - len(pcs) + pcs.index(fault.pc) + 1
        return max(exact, limit - ctx.budget)


def _guest_position(tb: TracebackType | None) -> tuple[int, int]:
    """(pc, n) of the innermost generated frame in the traceback: the first
    pc of the piece of code it was running and the instructions counted."""
    pc, n = 0, 0
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename == _GUEST_FILE:
            values = frame.f_locals
            pc, n = values.get("pc", pc), values.get("n", n)
        tb = tb.tb_next
    return pc, n


@dataclass(frozen=True, slots=True)
class _Unit:
    """A piece of one basic block that the dispatch can reach: the whole block,
    or a part of a block longer than a chunk. Only a block's first piece
    charges the budget, for the whole block, as in every engine."""

    block: int
    insns: Sequence[Insn]
    first: bool
    last: bool

    @property
    def pc(self) -> int:
        return self.insns[0].pc


def _units(blocks: Sequence[Sequence[Insn]], most: int) -> list[_Unit]:
    """The blocks cut into pieces of at most `most` instructions."""
    units = []
    for index, block in enumerate(blocks):
        for start in range(0, len(block), most):
            units.append(_Unit(index, block[start : start + most], start == 0,
                               start + most >= len(block)))
    return units


def _chunks(units: list[_Unit], most: int) -> list[list[_Unit]]:
    """Consecutive units grouped into chunks of at most `most` instructions."""
    chunks: list[list[_Unit]] = []
    size = most
    for unit in units:
        if size + len(unit.insns) > most:
            chunks.append([])
            size = 0
        chunks[-1].append(unit)
        size += len(unit.insns)
    return chunks


class _Translator:
    """Builds the Python source of one program, as one function or per chunk."""

    def __init__(self, insns: Sequence[Insn], nslots: int, trace: bool,
                 blocks: Sequence[Sequence[Insn]], callbacks: bool = False) -> None:
        self.callbacks = callbacks
        """Whether the program refers to callbacks: its code then starts at
        M.entry and tells helpers its frame (else it has no such code)."""
        self.insns = list(insns)
        self.nslots = nslots
        self.trace = trace
        self.by_pc = {insn.pc: insn for insn in self.insns}
        self.lines: list[str] = []
        self.block_pcs: list[list[int]] = [[insn.pc for insn in block] for block in blocks]

    # -- emission --------------------------------------------------------

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def translate(self, name: str, units: list[_Unit], bounds: tuple[int, int] | None) -> str:
        """The source of function `name` running `units`: the whole program
        (`bounds` None), or one chunk, which returns its state to the
        dispatch loop when pc leaves ``[low, high)``."""
        self.lines = []
        emit = self.emit
        if bounds is None:
            emit(0, f"def {name}(M, regs, B, TRACE):")
            for line in _CALLBACK_ENTRY if self.callbacks else _ENTRY:
                emit(1, line)
        else:
            emit(0, f"def {name}(M, st, B, TRACE):")
            emit(1, f"{_REGS}, pc, n, frames = st")
        for line in _PROLOGUE:
            emit(1, line)
        if self.callbacks:
            emit(1, "FB = M.fb")
        emit(1, "while True:")
        if bounds is not None:
            emit(2, f"if pc < {bounds[0]} or pc >= {bounds[1]}:")
            emit(3, f"return ({_REGS}, pc, n, frames)")
        if not units:  # an empty program (unverified): pc 0 is already past the end
            emit(2, f"raise INVALID(0, 0, {_FALLS_OFF!r})")
        self._tree(units, 2)
        return "\n".join(self.lines) + "\n"

    def _tree(self, units: list[_Unit], indent: int) -> None:
        if len(units) <= 3:
            for i, unit in enumerate(units):
                if i == len(units) - 1:
                    self.emit(indent, "else:" if i else "if True:")
                else:
                    self.emit(indent, f"{'if' if i == 0 else 'elif'} pc == {unit.pc}:")
                self._block(unit, indent + 1)
            return
        mid = len(units) // 2
        self.emit(indent, f"if pc < {units[mid].pc}:")
        self._tree(units[:mid], indent + 1)
        self.emit(indent, "else:")
        self._tree(units[mid:], indent + 1)

    def _block(self, unit: _Unit, indent: int) -> None:
        if unit.first:
            index = unit.block
            n = len(self.block_pcs[index])
            self.emit(indent, f"n += {n}")
            self.emit(indent, f"if n > B: raise BUDGET(BLOCK_PCS[{index}], n - {n}, B)")
        for insn in unit.insns:
            if self.trace:
                self.emit(indent, f"TRACE({insn.pc}, ({_REGS}))")
            self._insn(insn, indent)
        last = unit.insns[-1]
        if not unit.last:
            self.emit(indent, f"pc = {last.pc + last.slots}")
            self.emit(indent, "continue")
            return
        if last.row is None or not _ENDS_OWN_CODE[last.row.form]:
            nxt = last.pc + last.slots
            if nxt in self.by_pc:
                self.emit(indent, f"pc = {nxt}")
                self.emit(indent, "continue")
            else:
                self._invalid(indent, last, _FALLS_OFF)

    def _invalid(self, indent: int, insn: Insn, reason: str) -> None:
        self.emit(indent, f"raise INVALID({insn.pc}, {insn.opcode}, {reason!r})")

    def _jump(self, indent: int, insn: Insn, target: int, cond: str | None) -> None:
        fallthrough = insn.pc + 1
        if target not in self.by_pc:
            what = "outside the program" if not 0 <= target < self.nslots else "into an lddw"
            if cond is None:
                self._invalid(indent, insn, f"jump to {target} {what}")
                return
            self.emit(indent, f"if {cond}: raise INVALID({insn.pc}, {insn.opcode}, 'jump {what}')")
            target = fallthrough
        if fallthrough not in self.by_pc and cond is not None:
            self.emit(indent, f"if not {cond}: raise INVALID({insn.pc}, {insn.opcode}, "
                      "'execution falls off the end of the program')")
            fallthrough = target
        if cond is None or target == fallthrough:
            self.emit(indent, f"pc = {target}")
        else:
            self.emit(indent, f"pc = {target} if {cond} else {fallthrough}")
        self.emit(indent, "continue")

    def _insn(self, insn: Insn, indent: int) -> None:
        row = insn.row
        if row is None:
            self._invalid(indent, insn, "no such instruction")
            return
        bad = register_problem(row, insn)
        if bad:
            self._invalid(indent, insn, bad)
            return
        _EMITTERS[row.form](self, indent, insn, row)


def _src(row: OpInfo, insn: Insn) -> str:
    """The source operand: a register name, or the widened immediate literal."""
    if row.form in (Form.ALU_X, Form.JCC_X):
        return f"r{insn.src}"
    return hex(alu.widen_imm(row, insn.imm))


def _emit_alu(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    d = f"r{insn.dst}"
    t.emit(indent, f"{d} = {alu.alu_expr(row, d, _src(row, insn))}")


def _emit_lddw(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    target = callback_target(insn)
    if target is not None:
        if target not in t.by_pc:
            t._invalid(indent, insn, f"callback {target} is not an instruction")
        else:
            t.emit(indent, f"r{insn.dst} = {callback_value(target):#x}")
        return
    if row.src_value != 0:
        t._invalid(indent, insn, f"lddw subtype {row.op} was not resolved by a loader")
        return
    t.emit(indent, f"r{insn.dst} = {insn.imm:#x}")


def _address(t: _Translator, indent: int, base: int, off: int) -> None:
    if off:
        t.emit(indent, f"a = (r{base} + {off & M64:#x}) & 0xFFFFFFFFFFFFFFFF")
    else:
        t.emit(indent, f"a = r{base}")


def _region_order(base: int) -> tuple[str, str]:
    """Stack accesses are usually based on r10; try that region first."""
    return ("S", "P") if base == MAX_REG else ("P", "S")


def _emit_load(t: _Translator, indent: int, base: int, off: int, size: int, target: str,
               pc: int) -> None:
    _address(t, indent, base, off)
    first, second = _region_order(base)
    for i, region in enumerate((first, second)):
        keyword = "if" if i == 0 else "elif"
        t.emit(indent, f"{keyword} 0 <= (o := a - {region}_lo) <= {region}_l{size}:")
        read = f"{region}_v[o]" if size == 1 else f"U{size}({region}_v, o)[0]"
        t.emit(indent + 1, f"{target} = {read}")
    t.emit(indent, "else:")
    t.emit(indent + 1, f"{target} = LOAD(a, {size}, {pc})")


def _emit_ldx(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    d = f"r{insn.dst}"
    _emit_load(t, indent, insn.src, insn.off, row.size, d, insn.pc)
    if row.signed:
        sign = 1 << (row.width - 1)
        t.emit(indent, f"{d} = (({d} ^ {sign:#x}) - {sign:#x}) & 0xFFFFFFFFFFFFFFFF")


def _emit_store_value(t: _Translator, indent: int, insn: Insn, size: int, value: str) -> None:
    _address(t, indent, insn.dst, insn.off)
    first, second = _region_order(insn.dst)
    limit = {"S": "S_l", "P": "P_w"}
    for i, region in enumerate((first, second)):
        keyword = "if" if i == 0 else "elif"
        t.emit(indent, f"{keyword} 0 <= (o := a - {region}_lo) <= {limit[region]}{size}:")
        if size == 1:
            t.emit(indent + 1, f"{region}_v[o] = {value}")
        else:
            t.emit(indent + 1, f"P{size}({region}_v, o, {value})")
    t.emit(indent, "else:")
    t.emit(indent + 1, f"STORE(a, {size}, {value}, {insn.pc})")


def _emit_st(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    value = (insn.imm & M64) & ((1 << row.width) - 1)
    _emit_store_value(t, indent, insn, row.size, hex(value))


def _emit_stx(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    mask = (1 << row.width) - 1
    value = f"r{insn.src}" if row.width == 64 else f"(r{insn.src} & {mask:#x})"
    _emit_store_value(t, indent, insn, row.size, value)


def _emit_atomic(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    _address(t, indent, insn.dst, insn.off)
    src = f"r{insn.src}"
    value = src if row.width == 64 else f"({src} & 0xFFFFFFFF)"
    if row.op is Op.CMPXCHG:
        t.emit(indent, f"r0 = CMPXCHG(a, {row.size}, r0, {value}, {insn.pc})")
    elif row.src is Reg.WRITE:
        t.emit(indent, f"{src} = ATOMIC({row.op.value!r}, a, {row.size}, {value}, {insn.pc})")
    else:
        t.emit(indent, f"ATOMIC({row.op.value!r}, a, {row.size}, {value}, {insn.pc})")


def _target(insn: Insn) -> int:
    target = branch_target(insn)
    assert target is not None, "jumps and local calls have a target"
    return target


def _emit_ja(t: _Translator, indent: int, insn: Insn, _row: OpInfo) -> None:
    t._jump(indent, insn, _target(insn), None)


def _emit_jcc(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    cond = alu.condition_expr(row, f"r{insn.dst}", _src(row, insn))
    t._jump(indent, insn, _target(insn), cond)


def _emit_call(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    helper = str(insn.imm & 0xFFFFFFFF) if row.form is Form.CALL else f"r{insn.dst}"
    # The budget protocol: a call ends its block, so B - n is exactly what is
    # left; the helper may charge work or run tail-called programs from it.
    t.emit(indent, "CTX.budget = B - n")
    if t.callbacks:  # where a callback this helper runs gets its frame
        t.emit(indent, "CTX.frame = (len(frames), r10)")
    tail = row.form is Form.CALLX or insn.imm == _TAIL_CALL
    if tail and not t.callbacks:  # the tail-call helper needs the frame: see tailcalls
        t.emit(indent, "CTX.frame = (len(frames), r10)")
    t.emit(indent, f"r0 = CALL({helper}, r1, r2, r3, r4, r5, {insn.pc})")
    t.emit(indent, "n = B - CTX.budget")
    if tail:
        # A tail call from a bpf-to-bpf function replaced that function: its
        # caller goes on with the tail-called program's r0, as in the kernel.
        t.emit(indent, "if CTX.tail_exit:")
        t.emit(indent + 1, "CTX.tail_exit = False")
        _emit_exit(t, indent + 1, insn, row)


def _emit_call_local(t: _Translator, indent: int, insn: Insn, _row: OpInfo) -> None:
    target = _target(insn)
    if target not in t.by_pc:
        t._invalid(indent, insn, f"local call to {target}, which is not an instruction")
        return
    t.emit(indent, f"if len(frames) >= {MAX_CALL_DEPTH - 1}: "
           f"raise DEPTH({insn.pc}, {MAX_CALL_DEPTH})")
    t.emit(indent, f"frames.append(({insn.pc + 1}, r6, r7, r8, r9, r10))")
    t.emit(indent, f"r10 = r10 - {FRAME_SIZE}")
    t.emit(indent, f"pc = {target}")
    t.emit(indent, "continue")


def _emit_call_runtime(t: _Translator, indent: int, insn: Insn, _row: OpInfo) -> None:
    t._invalid(indent, insn, "calls by BTF id (kfuncs) are not supported")


def _emit_exit(t: _Translator, indent: int, _insn: Insn, _row: OpInfo) -> None:
    t.emit(indent, "if len(frames) > FB:" if t.callbacks else "if frames:")
    t.emit(indent + 1, "pc, r6, r7, r8, r9, r10 = frames.pop()")
    t.emit(indent + 1, "continue")
    t.emit(indent, f"M.regs_out = [{_REGS}]")
    t.emit(indent, "M.count = n")
    t.emit(indent, "return r0")


def _emit_ld_packet(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    """Legacy LD_ABS/LD_IND: a big-endian load from the packet (the input
    memory, or what a helper made it) into r0; out of bounds ends the program
    with r0 = 0, as in the kernel."""
    imm = insn.imm & M64
    if row.form is Form.LD_ABS:
        t.emit(indent, f"o = {imm:#x}")
    else:
        t.emit(indent, f"o = (r{insn.src} + {imm:#x}) & 0xFFFFFFFFFFFFFFFF")
    size = row.size
    t.emit(indent, "K_v = CTX.packet")  # what a frame-changing helper made it (set_packet)
    t.emit(indent, "if K_v is None: K_v = M.packet")
    t.emit(indent, f"if o <= len(K_v) - {size}:")
    t.emit(indent + 1, f"r0 = int.from_bytes(K_v[o:o + {size}], 'big')")
    t.emit(indent, "else:")
    t.emit(indent + 1, "M.regs_out = [0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10]")
    t.emit(indent + 1, "M.count = n")
    t.emit(indent + 1, "return 0")


_EMITTERS: dict[Form, Callable[[_Translator, int, Insn, OpInfo], None]] = {
    Form.ALU_K: _emit_alu,
    Form.ALU_X: _emit_alu,
    Form.NEG: _emit_alu,
    Form.ENDIAN: _emit_alu,
    Form.LDDW: _emit_lddw,
    Form.LDX: _emit_ldx,
    Form.ST: _emit_st,
    Form.STX: _emit_stx,
    Form.ATOMIC: _emit_atomic,
    Form.JA: _emit_ja,
    Form.JA32: _emit_ja,
    Form.JCC_K: _emit_jcc,
    Form.JCC_X: _emit_jcc,
    Form.CALL: _emit_call,
    Form.CALLX: _emit_call,
    Form.CALL_LOCAL: _emit_call_local,
    Form.CALL_RUNTIME: _emit_call_runtime,
    Form.EXIT: _emit_exit,
    Form.LD_ABS: _emit_ld_packet,
    Form.LD_IND: _emit_ld_packet,
}
"""One emitter per form; the completeness test checks every form has one."""

_FALLS_OFF = "execution falls off the end of the program"
_ENDS_OWN_CODE = {form: form.has_branch_target or not form.falls_through for form in Form}
"""Forms whose emitted code never runs on into the next pc: it jumps (a
branch's emitter also handles its fall-through, a local call resumes through
the frame stack) or exits."""
_REGS = "r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10"
_ENTRY = (
    f"{_REGS} = regs",
    "frames = []",
    "n = 0",
    "pc = 0",
)
"""The start of a whole-program function; a chunk gets these from its caller."""
_CALLBACK_ENTRY = (
    f"{_REGS} = regs",
    "frames = [None] * M.fb",
    "pc, n = M.entry",
)
"""The start of a program that refers to callbacks: a callback starts at its
pc, with frames below it that its exit does not pop."""
_PROLOGUE = (
    "S_v = M.s_view; S_lo = M.s_lo",
    "S_l1, S_l2, S_l4, S_l8 = M.s_lim",
    "P_v = M.p_view; P_lo = M.p_lo",
    "P_l1, P_l2, P_l4, P_l8 = M.p_lim",
    "P_w1, P_w2, P_w4, P_w8 = M.p_wlim",
    "LOAD = M.load; STORE = M.store; CALL = M.call",
    "ATOMIC = M.atomic; CMPXCHG = M.cmpxchg",
    "CTX = M.context",
)

_GLOBALS_BASE: dict[str, Any] = {
    **alu.RUNTIME,
    "U2": struct.Struct("<H").unpack_from,
    "U4": struct.Struct("<I").unpack_from,
    "U8": struct.Struct("<Q").unpack_from,
    "P2": struct.Struct("<H").pack_into,
    "P4": struct.Struct("<I").pack_into,
    "P8": struct.Struct("<Q").pack_into,
    "INVALID": InvalidInstruction,
    "DEPTH": CallDepthExceeded,
    "BUDGET": _budget_error,
}


def compile_program(code: bytes | ProgramImage, *, trace: bool = False,
                    max_slots: int | None = MAX_TRANSLATED_SLOTS,
                    chunk_slots: int = CHUNK_SLOTS) -> CompiledProgram:
    """Translate a program into Python: its program value (whose instructions
    and blocks, decoded once, are used as they are) or its bytes (made into
    one). Never fails on a decodable program of at most `max_slots` slots
    (None: no bound): an invalid instruction becomes code that raises when
    reached. A longer program raises ResourceLimit. Programs of more than
    `chunk_slots` slots are translated chunk by chunk."""
    image = code if isinstance(code, ProgramImage) else ProgramImage(bytes(code))
    nslots = image.slots
    if max_slots is not None and nslots > max_slots:
        raise ResourceLimit("interpreter translation", max_slots, nslots,
                            "instruction slots; raise vm.interpreter_slot_limit to run it")
    insns = image.insns
    blocks = image.blocks
    translator = _Translator(insns, nslots, trace, blocks, bool(image.callbacks))
    units = _units(blocks, max(1, chunk_slots))
    namespace = dict(_GLOBALS_BASE)
    namespace["BLOCK_PCS"] = translator.block_pcs
    unit_block = {unit.pc: unit.block for unit in units}
    chunks = _chunks(units, max(1, chunk_slots))
    if len(chunks) <= 1:
        source = translator.translate("run", units, None)
        exec(compile(source, _GUEST_FILE, "exec"), namespace)
        return CompiledProgram(insns, source, namespace["run"], image.stack_size,
                               translator.block_pcs, unit_block, image.callbacks)
    starts = [chunk[0].pc for chunk in chunks]
    functions = []
    for index, chunk in enumerate(chunks):
        high = starts[index + 1] if index + 1 < len(chunks) else nslots + 1
        name = f"chunk{index}"
        source = translator.translate(name, chunk, (starts[index], high))
        exec(compile(source, _GUEST_FILE, "exec"), namespace)
        functions.append(namespace.pop(name))
    del source
    translator.lines = []
    return CompiledProgram(insns, "", _dispatch(functions, starts), image.stack_size,
                           translator.block_pcs, unit_block, image.callbacks)


_STATE_PC = MAX_REG + 1
"""Where pc sits in a chunk's state: after r0..r10."""


def _dispatch(functions: list[Callable[..., Any]], starts: list[int]) -> Callable[..., int]:
    """The run function of a chunked program: calls the chunk holding pc until
    one returns r0 (an int) instead of the state to go on with."""

    def run(machine: Machine, regs: list[int], budget: int, trace: TraceFn | None) -> int:
        pc, n = machine.entry  # (0, 0) but for a callback
        state: Any = (*regs, pc, n, [None] * machine.fb)
        while True:
            state = functions[bisect_right(starts, state[_STATE_PC]) - 1](machine, state, budget, trace)
            if state.__class__ is int:
                return int(state)

    return run
