"""x86-64 emitters, one per instruction form: what each eBPF instruction
becomes, written against :class:`~ebpfvm.jit.x86_64.X86Assembler` (no
machine-code bytes here). The translator (x86_codegen) calls them through
:data:`EMITTERS`; the register map and context operands are x86_stubs'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..alu import M32
from ..cfg import FRAME_SIZE, MAX_CALL_DEPTH, branch_target, callback_target, callback_value
from ..encoding import Insn
from ..isa import Form, Op, OpInfo
from .context import Fault
from .x86_64 import AluOp, Cond, Mem, ShiftOp
from .x86_64 import Reg as X
from .x86_rtcalls import emit_intrinsic, emit_linked_call
from .x86_stubs import (
    ADDR,
    BUDGET,
    HELPER_SAVED,
    LOCAL_CALL_SAVED,
    QWORD,
    REG_MAP,
    SIZE_INDEX,
    TMP,
    ctx_mem,
)

if TYPE_CHECKING:
    from .x86_codegen import X86Translator

__all__ = ["EMITTERS"]

_SIMPLE_ALU = {Op.ADD: AluOp.ADD, Op.SUB: AluOp.SUB, Op.OR: AluOp.OR, Op.AND: AluOp.AND,
               Op.XOR: AluOp.XOR}
_SHIFTS = {Op.LSH: ShiftOp.SHL, Op.RSH: ShiftOp.SHR, Op.ARSH: ShiftOp.SAR}
_ATOMIC_ALU = {Op.ADD: AluOp.ADD, Op.OR: AluOp.OR, Op.AND: AluOp.AND, Op.XOR: AluOp.XOR}
_FETCH_ALU = {Op.FETCH_OR: AluOp.OR, Op.FETCH_AND: AluOp.AND, Op.FETCH_XOR: AluOp.XOR}
_CONDITIONS = {
    Op.JEQ: Cond.E, Op.JNE: Cond.NE, Op.JSET: Cond.NE,
    Op.JGT: Cond.A, Op.JGE: Cond.AE, Op.JLT: Cond.B, Op.JLE: Cond.BE,
    Op.JSGT: Cond.G, Op.JSGE: Cond.GE, Op.JSLT: Cond.L, Op.JSLE: Cond.LE,
}


_TAIL_CALL = 12
"""bpf_tail_call's helper number (tailcalls.BPF_TAIL_CALL)."""


def _target(insn: Insn) -> int:
    target = branch_target(insn)
    assert target is not None, "jumps and local calls have a target"
    return target


def _emit_alu(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    a = t.asm
    w64 = row.width == 64
    d = REG_MAP[insn.dst]
    reg_src = row.form is Form.ALU_X
    s = REG_MAP[insn.src] if reg_src else X.RCX
    imm = insn.imm
    op = row.op
    if op in _SIMPLE_ALU:
        if reg_src:
            a.alu_rr(_SIMPLE_ALU[op], d, s, w64)
        else:
            a.alu_ri(_SIMPLE_ALU[op], d, imm, w64)
    elif op is Op.MOV:
        if reg_src:
            a.mov_rr(d, s, w64)
        else:
            a.mov_ri(d, imm, w64)
    elif op is Op.MOVSX:
        a.movsx_rr(d, s, (row.off or 0) // 8, w64)
    elif op is Op.MUL:
        if reg_src:
            a.imul_rr(d, s, w64)
        else:
            a.imul_rri(d, d, imm, w64)
    elif op in _SHIFTS:
        _emit_shift(t, insn, row, d, s if reg_src else None)
    elif op is Op.NEG:
        a.neg(d, w64)
    else:
        _emit_divmod(t, insn, row)


def _emit_shift(t: X86Translator, insn: Insn, row: OpInfo, d: X, s: X | None) -> None:
    a = t.asm
    w64 = row.width == 64
    if s is None:
        count = insn.imm & (row.width - 1)
        if count:
            a.shift_ri(_SHIFTS[row.op], d, count, w64)
        elif not w64:
            a.mov_rr(d, d, w64=False)  # a zero shift still zero-extends
        return
    a.mov_rr(TMP, s, w64=False)
    if not w64:
        a.mov_rr(d, d, w64=False)  # x86 may leave dst unwritten for a zero count
    a.shift_cl(_SHIFTS[row.op], d, w64)  # x86 masks the count to 5 or 6 bits, as eBPF does


def _emit_divmod(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    """div/mod/sdiv/smod: zero divisor and INT_MIN / -1 follow the ISA."""
    a = t.asm
    w64 = row.width == 64
    d = REG_MAP[insn.dst]
    signed = row.op in (Op.SDIV, Op.SMOD)
    remainder = row.op in (Op.MOD, Op.SMOD)
    zero, minus_one, done = a.new_label(), a.new_label(), a.new_label()
    if row.form is Form.ALU_X:
        a.mov_rr(TMP, REG_MAP[insn.src], w64)
        a.test_rr(TMP, TMP, w64)
        a.jcc(Cond.E, zero)
        if signed:
            a.alu_ri(AluOp.CMP, TMP, -1, w64)
            a.jcc(Cond.E, minus_one)
    else:
        if insn.imm == 0:
            _divide_by_zero(t, d, w64, remainder)
            return
        if signed and insn.imm == -1:
            _divide_by_minus_one(t, d, w64, remainder)
            return
        a.mov_ri(TMP, insn.imm, w64)
    a.push(X.RAX)
    a.push(X.RDX)
    a.mov_rr(X.RAX, d)
    if signed:
        if w64:
            a.cqo()
        else:
            a.cdq()
    else:
        a.xor_zero(X.RDX)
    a.div(TMP, w64, signed)
    a.mov_rr(ADDR, X.RDX if remainder else X.RAX, w64)
    a.pop(X.RDX)
    a.pop(X.RAX)
    a.mov_rr(d, ADDR)
    a.jmp(done)
    a.bind(zero)
    _divide_by_zero(t, d, w64, remainder)
    a.jmp(done)
    a.bind(minus_one)
    if signed:
        _divide_by_minus_one(t, d, w64, remainder)
    a.bind(done)


def _divide_by_zero(t: X86Translator, d: X, w64: bool, remainder: bool) -> None:
    if not remainder:
        t.asm.xor_zero(d)
    elif not w64:
        t.asm.mov_rr(d, d, w64=False)  # mod32 by zero keeps the low half only


def _divide_by_minus_one(t: X86Translator, d: X, w64: bool, remainder: bool) -> None:
    if remainder:
        t.asm.xor_zero(d)
    else:
        t.asm.neg(d, w64)  # INT_MIN / -1 wraps to INT_MIN, like neg


def _emit_endian(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    a = t.asm
    d = REG_MAP[insn.dst]
    swap = row.op is not Op.LE
    if row.width == 16:
        if swap:
            a.ror16_ri(d, 8)
        a.movzx_rr(d, d, 2)
    elif row.width == 32:
        if swap:
            a.bswap(d, w64=False)
        else:
            a.mov_rr(d, d, w64=False)
    elif swap:
        a.bswap(d, w64=True)


def _emit_lddw(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    target = callback_target(insn)
    if target is not None:  # lddw_func: the value the interpreter loads too
        if t.label(target) is None:
            t._to_invalid(insn, f"callback {target} is not an instruction")
        else:
            t.asm.mov_ri64(REG_MAP[insn.dst], callback_value(target))
        return
    if row.src_value:
        t._to_invalid(insn, f"lddw subtype {row.op} was not resolved by a loader")
        return
    a = t.asm
    d = REG_MAP[insn.dst]
    value = insn.imm
    if value < 1 << 32:
        a.mov_ri(d, value, w64=False)
    elif value >= (1 << 64) - (1 << 31):
        a.mov_ri(d, value - (1 << 64), w64=True)
    else:
        a.mov_ri64(d, value)


def _emit_ldx(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    mem = t._address(insn.src, insn.off, row.size, False, insn.pc)
    t.asm.load(REG_MAP[insn.dst], mem, row.size, signed=row.signed)


def _emit_st(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    mem = t._address(insn.dst, insn.off, row.size, True, insn.pc)
    t.asm.store_imm(mem, insn.imm, row.size)


def _emit_stx(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    mem = t._address(insn.dst, insn.off, row.size, True, insn.pc)
    t.asm.store(mem, REG_MAP[insn.src], row.size)


def _emit_atomic(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    a = t.asm
    w64 = row.width == 64
    a.lea(ADDR, t._address(insn.dst, insn.off, row.size, True, insn.pc))
    mem = Mem(ADDR, 0)  # the cmpxchg loop below may overwrite the base register
    s = REG_MAP[insn.src]
    op = row.op
    if op in _ATOMIC_ALU:
        a.lock_alu_mr(_ATOMIC_ALU[op], mem, s, w64)
    elif op is Op.FETCH_ADD:
        a.mov_rr(TMP, s, w64)
        a.lock_xadd(mem, TMP, w64)
        a.mov_rr(s, TMP, w64)
    elif op is Op.XCHG:
        a.mov_rr(TMP, s, w64)
        a.xchg_mr(mem, TMP, w64)
        a.mov_rr(s, TMP, w64)
    elif op is Op.CMPXCHG:
        a.lock_cmpxchg(mem, s, w64)
        if not w64:
            a.mov_rr(X.RAX, X.RAX, w64=False)  # r0 is zero-extended even on success
    else:  # fetch_or, fetch_and, fetch_xor: a compare-exchange loop
        retry = a.new_label()
        a.push(BUDGET)
        a.mov_rr(BUDGET, s)
        a.push(X.RAX)
        a.load(X.RAX, mem, row.size)
        a.bind(retry)
        a.mov_rr(TMP, X.RAX, w64)
        a.alu_rr(_FETCH_ALU[op], TMP, BUDGET, w64)
        a.lock_cmpxchg(mem, TMP, w64)
        a.jcc(Cond.NE, retry)
        a.mov_rr(TMP, X.RAX, w64)
        a.pop(X.RAX)
        a.pop(BUDGET)
        a.mov_rr(s, TMP, w64)


def _emit_ja(t: X86Translator, insn: Insn, _row: OpInfo) -> None:
    t.jump_to(insn, _target(insn), None)


def _emit_jcc(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    a = t.asm
    w64 = row.width == 64
    d = REG_MAP[insn.dst]
    if row.form is Form.JCC_X:
        s = REG_MAP[insn.src]
        if row.op is Op.JSET:
            a.test_rr(d, s, w64)
        else:
            a.alu_rr(AluOp.CMP, d, s, w64)
    elif row.op is Op.JSET:
        a.test_ri(d, insn.imm, w64)
    else:
        a.alu_ri(AluOp.CMP, d, insn.imm, w64)
    t.jump_to(insn, _target(insn), _CONDITIONS[row.op])


def _emit_call(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    """Helper call through the Python trampoline: tramp(id, r1, ..., r5); in
    a trusted unit an intrinsic, and a linked helper's call (x86_rtcalls)."""
    if t.trusted:
        emit_intrinsic(t, insn, call_trampoline)
        return
    if t.tail is not None and t.tail.emit(t, insn, row, _emit_call):  # a native tail call
        return
    if row.form is Form.CALL and insn.imm in t.rt_labels:
        emit_linked_call(t, insn)
        return
    a = t.asm
    if row.form is Form.CALLX:
        a.mov_rr(ADDR, REG_MAP[insn.dst])
    else:
        a.mov_ri(ADDR, insn.imm & M32, w64=False)
    a.store_imm(ctx_mem("helper_pc"), insn.pc, QWORD)
    if t.callbacks:  # the frame a callback the helper runs goes below
        a.store(ctx_mem("cb_r10"), REG_MAP[10], QWORD)
    call_trampoline(t)
    if row.form is Form.CALLX or insn.imm == _TAIL_CALL:
        # A tail call made in a bpf-to-bpf function replaced that function:
        # it returns the tail-called program's r0 to its caller (tailcalls).
        go_on = a.new_label()
        a.alu_mi(AluOp.CMP, ctx_mem("tail_exit"), 0)
        a.jcc(Cond.E, go_on)
        a.store_imm(ctx_mem("tail_exit"), 0, QWORD)
        _emit_exit(t, insn, row)
        a.bind(go_on)


def call_trampoline(t: X86Translator) -> None:
    """Call the trampoline for the helper whose id is in r11 (helper_pc set)."""
    a = t.asm
    if t.metered:  # the run's budget left (register + reserve), for the helper
        a.load(TMP, ctx_mem("budget_reserve"), QWORD)
        a.alu_rr(AluOp.ADD, TMP, BUDGET)
        a.store(ctx_mem("budget_left"), TMP, QWORD)
    # The trampoline clears this mark first thing: if a signal handler raised
    # at its entry, its body never ran (and its return value is garbage).
    a.store_imm(ctx_mem("fault"), Fault.INTERRUPT, QWORD)
    for reg in HELPER_SAVED:
        a.push(reg)
    # Arguments: rdi = id, rsi = r1, rdx = r2, rcx = r3, r8 = r4, r9 = r5.
    a.mov_rr(X.RCX, REG_MAP[3])
    a.mov_rr(X.RDX, REG_MAP[2])
    a.mov_rr(X.RSI, REG_MAP[1])
    a.mov_rr(X.RDI, ADDR)
    a.mov_rr(ADDR, X.R8)
    a.mov_rr(X.R8, X.R9)
    a.mov_rr(X.R9, ADDR)
    a.load(ADDR, ctx_mem("helper_fn"), QWORD)
    a.call_r(ADDR)
    for reg in reversed(HELPER_SAVED):
        a.pop(reg)
    if t.metered:  # what the helper left of it, less the reserve it may have cut
        a.load(BUDGET, ctx_mem("budget_left"), QWORD)
        a.alu_rm(AluOp.SUB, BUDGET, ctx_mem("budget_reserve"))
    a.alu_mi(AluOp.CMP, ctx_mem("fault"), 0)
    a.jcc(Cond.NE, t.fault_exit)


def _emit_call_local(t: X86Translator, insn: Insn, _row: OpInfo) -> None:
    a = t.asm
    target = t.label(_target(insn))
    if target is None:
        t._to_invalid(insn, f"local call to {_target(insn)}, which is not an instruction")
        return
    ok = a.new_label()
    a.alu_mi(AluOp.CMP, ctx_mem("depth"), MAX_CALL_DEPTH - 1)
    a.jcc(Cond.B, ok)
    a.mov_ri(TMP, insn.pc, w64=False)
    a.jmp(t.depth_fail)
    a.bind(ok)
    a.alu_mi(AluOp.ADD, ctx_mem("depth"), 1)
    for reg in LOCAL_CALL_SAVED:
        a.push(reg)
    a.alu_ri(AluOp.SUB, REG_MAP[10], FRAME_SIZE)
    a.call(target)
    for reg in reversed(LOCAL_CALL_SAVED):
        a.pop(reg)
    a.alu_mi(AluOp.SUB, ctx_mem("depth"), 1)


def _emit_call_runtime(t: X86Translator, insn: Insn, _row: OpInfo) -> None:
    t._to_invalid(insn, "calls by BTF id (kfuncs) are not supported")


def _emit_exit(t: X86Translator, _insn: Insn, _row: OpInfo) -> None:
    a = t.asm
    if t.trusted:  # a trusted unit returns to its call site (x86_rtcalls)
        a.ret()
        return
    a.alu_mi(AluOp.CMP, ctx_mem("depth"), 0)
    a.jcc(Cond.E, t.exit_main)
    a.ret()


def _emit_ld_packet(t: X86Translator, insn: Insn, row: OpInfo) -> None:
    """Legacy LD_ABS/LD_IND: big-endian load from the packet (k_ptr, k_cnt:
    the input, or what a helper made it) into r0; out of bounds ends the
    program with r0 = 0, as in the kernel."""
    a = t.asm
    size = row.size
    if row.form is Form.LD_ABS:
        a.mov_ri(TMP, insn.imm, w64=True)
    else:
        a.mov_rr(TMP, REG_MAP[insn.src])
        a.alu_ri(AluOp.ADD, TMP, insn.imm)
    out = a.new_label()
    a.alu_rm(AluOp.CMP, TMP, ctx_mem("k_cnt", SIZE_INDEX[size]))
    a.jcc(Cond.AE, out)
    a.load(ADDR, ctx_mem("k_ptr"), QWORD)
    a.alu_rr(AluOp.ADD, ADDR, TMP)
    a.load(X.RAX, Mem(ADDR, 0), size)
    if size == 2:
        a.ror16_ri(X.RAX, 8)
    elif size == 4:
        a.bswap(X.RAX, w64=False)

    def cold() -> None:
        a.bind(out)
        a.xor_zero(X.RAX)
        a.jmp(t.terminate)

    t.cold.append(cold)


EMITTERS: dict[Form, Callable[[X86Translator, Insn, OpInfo], None]] = {
    Form.ALU_K: _emit_alu,
    Form.ALU_X: _emit_alu,
    Form.NEG: _emit_alu,
    Form.ENDIAN: _emit_endian,
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

