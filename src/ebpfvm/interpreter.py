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

Tracing compiles a second function that calls ``trace(pc, regs)`` before
every instruction; the fast function has no trace hook at all.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import alu
from .cfg import FRAME_SIZE, MAX_CALL_DEPTH, basic_blocks, register_problem, stack_size
from .encoding import Insn, decode
from .errors import (
    BudgetExceeded,
    CallDepthExceeded,
    HelperFault,
    InvalidInstruction,
)
from .helpers import Helper, HelperContext, Unwind
from .isa import MAX_REG, Form, OpInfo, Reg
from .memory import AddressSpace, Region

__all__ = [
    "FRAME_SIZE",
    "MAX_CALL_DEPTH",
    "STACK_SIZE",
    "CompiledProgram",
    "Machine",
    "TraceFn",
    "compile_program",
]

STACK_SIZE = FRAME_SIZE * MAX_CALL_DEPTH
"""The stack buffer a VM owns; a call-free program uses only its top frame."""

M64 = alu.M64
_NO_BUDGET = 1 << 62

TraceFn = Callable[[int, tuple[int, ...]], None]
"""Called before each instruction with its pc and the registers r0..r10."""

_NO_REGION = Region(0, memoryview(b""), False, "none")


class Machine:
    """The run-time state one execution needs besides the program: the address
    space, the two inlined regions, helpers, and the packet for legacy loads.

    The generated function reads the attributes below into locals on entry."""

    def __init__(
        self,
        space: AddressSpace,
        stack: Region,
        primary: Region | None,
        helpers: dict[int, Helper],
        packet: memoryview | None = None,
    ) -> None:
        self.space = space
        self.helpers = helpers
        self.context = HelperContext(space)
        self.load = space.load
        self.store = space.store
        self.regs_out: list[int] = []
        self.count = 0
        self.s_view = stack.view
        self.s_lo = stack.start
        size = len(stack.view)
        self.s_lim = (size - 1, size - 2, size - 4, size - 8)
        if primary is None:
            primary = _NO_REGION
        self.p_view = primary.view
        self.p_lo = primary.start
        size = len(primary.view)
        self.p_lim = (size - 1, size - 2, size - 4, size - 8)
        self.p_wlim = self.p_lim if primary.writable else (-1, -1, -1, -1)
        self.packet = packet if packet is not None else _NO_REGION.view

    def call(self, helper_id: int, a: int, b: int, c: int, d: int, e: int, pc: int) -> int:
        """Run helper `helper_id`; any exception becomes a HelperFault."""
        helper = self.helpers.get(helper_id)
        if helper is None:
            raise HelperFault(pc, helper_id, "no helper registered with this id")
        ctx = self.context
        ctx.pc = pc
        try:
            if helper.context:
                result = helper.fn(ctx, a, b, c, d, e)
            else:
                result = helper.fn(a, b, c, d, e)
        except Unwind:
            raise
        except Exception as exc:
            fault = HelperFault(pc, helper_id, f"raised {exc!r}", helper.name)
            fault.cause = exc
            raise fault from exc
        if not isinstance(result, int):
            raise HelperFault(pc, helper_id, f"returned {type(result).__name__}, not int", helper.name)
        return result & M64

    def atomic(self, op: str, addr: int, size: int, value: int, pc: int) -> int:
        """Read-modify-write for the simple atomics and xchg; returns the old value.
        An atomic needs writable memory even when it ends up writing nothing."""
        region, offset = self.space.find(addr, size, "store", pc)
        old = int.from_bytes(region.view[offset : offset + size], "little")
        base = op.removeprefix("fetch_")
        if base == "add":
            new = old + value
        elif base == "or":
            new = old | value
        elif base == "and":
            new = old & value
        elif base == "xor":
            new = old ^ value
        else:  # xchg
            new = value
        region.view[offset : offset + size] = (new & ((1 << (size * 8)) - 1)).to_bytes(size, "little")
        return old

    def cmpxchg(self, addr: int, size: int, expected: int, value: int, pc: int) -> int:
        """Compare-and-exchange against the low `size` bytes of r0; returns the old value."""
        region, offset = self.space.find(addr, size, "store", pc)
        old = int.from_bytes(region.view[offset : offset + size], "little")
        mask = (1 << (size * 8)) - 1
        if old == expected & mask:
            region.view[offset : offset + size] = (value & mask).to_bytes(size, "little")
        return old


def _budget_error(block_pcs: Sequence[int], count_before: int, budget: int) -> BudgetExceeded:
    return BudgetExceeded(block_pcs[budget - count_before], budget)


@dataclass(frozen=True, slots=True)
class CompiledProgram:
    """A program translated to Python. `run(machine, regs, budget, trace)`."""

    insns: tuple[Insn, ...]
    source: str
    fn: Callable[..., int]
    stack_size: int

    def run(
        self,
        machine: Machine,
        regs: Sequence[int],
        budget: int | None,
        trace: TraceFn | None = None,
    ) -> int:
        limit = _NO_BUDGET if budget is None else budget
        try:
            return self.fn(machine, list(regs), limit, trace)
        except Unwind as unwind:
            return unwind.value


class _Translator:
    """Builds the Python source of one program."""

    def __init__(self, insns: Sequence[Insn], nslots: int, trace: bool) -> None:
        self.insns = list(insns)
        self.nslots = nslots
        self.trace = trace
        self.by_pc = {insn.pc: insn for insn in self.insns}
        self.lines: list[str] = []
        self.block_pcs: list[list[int]] = []

    # -- emission --------------------------------------------------------

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def translate(self) -> str:
        emit = self.emit
        emit(0, "def run(M, regs, B, TRACE):")
        for line in _PROLOGUE:
            emit(1, line)
        emit(1, "while True:")
        blocks = basic_blocks(self.insns)
        if not blocks:  # an empty program (unverified): pc 0 is already past the end
            emit(2, f"raise INVALID(0, 0, {_FALLS_OFF!r})")
        self._tree(blocks, 2)
        return "\n".join(self.lines) + "\n"

    def _tree(self, blocks: list[list[Insn]], indent: int) -> None:
        if len(blocks) <= 3:
            for i, block in enumerate(blocks):
                if i == len(blocks) - 1:
                    self.emit(indent, "else:" if i else "if True:")
                else:
                    self.emit(indent, f"{'if' if i == 0 else 'elif'} pc == {block[0].pc}:")
                self._block(block, indent + 1)
            return
        mid = len(blocks) // 2
        self.emit(indent, f"if pc < {blocks[mid][0].pc}:")
        self._tree(blocks[:mid], indent + 1)
        self.emit(indent, "else:")
        self._tree(blocks[mid:], indent + 1)

    def _block(self, block: list[Insn], indent: int) -> None:
        index = len(self.block_pcs)
        self.block_pcs.append([insn.pc for insn in block])
        n = len(block)
        self.emit(indent, f"n += {n}")
        self.emit(indent, f"if n > B: raise BUDGET(BLOCK_PCS[{index}], n - {n}, B)")
        for insn in block:
            if self.trace:
                self.emit(indent, f"TRACE({insn.pc}, (r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10))")
            self._insn(insn, indent)
        last = block[-1]
        if last.row is None or not (last.row.is_jump or last.row.form in _TERMINATORS):
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
    if row.op == "cmpxchg":
        t.emit(indent, f"r0 = CMPXCHG(a, {row.size}, r0, {value}, {insn.pc})")
    elif row.src is Reg.WRITE:
        t.emit(indent, f"{src} = ATOMIC({row.op!r}, a, {row.size}, {value}, {insn.pc})")
    else:
        t.emit(indent, f"ATOMIC({row.op!r}, a, {row.size}, {value}, {insn.pc})")


def _emit_ja(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    delta = insn.imm if row.form is Form.JA32 else insn.off
    t._jump(indent, insn, insn.pc + 1 + delta, None)


def _emit_jcc(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    cond = alu.condition_expr(row, f"r{insn.dst}", _src(row, insn))
    t._jump(indent, insn, insn.pc + 1 + insn.off, cond)


def _emit_call(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    helper = str(insn.imm & 0xFFFFFFFF) if row.form is Form.CALL else f"r{insn.dst}"
    t.emit(indent, f"r0 = CALL({helper}, r1, r2, r3, r4, r5, {insn.pc})")


def _emit_call_local(t: _Translator, indent: int, insn: Insn, _row: OpInfo) -> None:
    target = insn.pc + 1 + insn.imm
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
    t.emit(indent, "if frames:")
    t.emit(indent + 1, "pc, r6, r7, r8, r9, r10 = frames.pop()")
    t.emit(indent + 1, "continue")
    t.emit(indent, "M.regs_out = [r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10]")
    t.emit(indent, "M.count = n")
    t.emit(indent, "return r0")


def _emit_ld_packet(t: _Translator, indent: int, insn: Insn, row: OpInfo) -> None:
    """Legacy LD_ABS/LD_IND: a big-endian load from the input memory into r0;
    out of bounds ends the program with r0 = 0, as in the kernel."""
    imm = insn.imm & M64
    if row.form is Form.LD_ABS:
        t.emit(indent, f"o = {imm:#x}")
    else:
        t.emit(indent, f"o = (r{insn.src} + {imm:#x}) & 0xFFFFFFFFFFFFFFFF")
    size = row.size
    t.emit(indent, f"if o <= K_len - {size}:")
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
_TERMINATORS = frozenset({Form.EXIT, Form.CALL_LOCAL})
"""Forms after which the block's own code never falls through to the next pc."""
_PROLOGUE = (
    "r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10 = regs",
    "S_v = M.s_view; S_lo = M.s_lo",
    "S_l1, S_l2, S_l4, S_l8 = M.s_lim",
    "P_v = M.p_view; P_lo = M.p_lo",
    "P_l1, P_l2, P_l4, P_l8 = M.p_lim",
    "P_w1, P_w2, P_w4, P_w8 = M.p_wlim",
    "K_v = M.packet; K_len = len(K_v)",
    "LOAD = M.load; STORE = M.store; CALL = M.call",
    "ATOMIC = M.atomic; CMPXCHG = M.cmpxchg",
    "frames = []",
    "n = 0",
    "pc = 0",
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


def compile_program(code: bytes, *, trace: bool = False) -> CompiledProgram:
    """Translate `code` into a Python function. Never fails on a decodable
    program: an invalid instruction becomes code that raises when reached."""
    insns = decode(code)
    translator = _Translator(insns, len(code) // 8, trace)
    source = translator.translate()
    namespace = dict(_GLOBALS_BASE)
    namespace["BLOCK_PCS"] = translator.block_pcs
    exec(compile(source, "<ebpf>", "exec"), namespace)
    return CompiledProgram(tuple(insns), source, namespace["run"], stack_size(insns))

