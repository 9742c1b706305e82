"""The native loops around a program's entry: `repeat` (one input, n runs)
and `batch` (one run per span of a buffer). Both are part of the runtime code
every program shares (see x86_stubs.X86Stubs._runtime).

The batch loop keeps Ctrl-C prompt however short its runs are: it counts the
instructions its runs charge, plus :data:`BATCH_RUN_UNITS` per run, and calls
the poll between two runs when that passes one budget slice (see
context.BUDGET_SLICE). A run that charges nothing (unchecked code without a
budget) still counts its units, so a batch of them is interruptible too.
"""

from __future__ import annotations

from .context import BUDGET_SLICE, Fault, field_offset
from .x86_64 import AluOp, Cond, Label, Mem, X86Assembler
from .x86_64 import Reg as X

__all__ = ["BATCH_RUN_UNITS", "batch_driver", "repeat_driver"]

QWORD = 8
BATCH_RUN_UNITS = 64
"""What one run of a batch counts toward the poll besides its instructions:
about the cost of the entry and exit code, in instructions. At most
BUDGET_SLICE / BATCH_RUN_UNITS runs go by between two polls."""


def _ctx(name: str) -> Mem:
    return Mem(X.R12, field_offset(name))


def repeat_driver(a: X86Assembler, program: Label) -> None:
    """repeat(ctx, n): run the program n times; stop at the first fault.
    Returns the last r0."""
    saved = (X.RBX, X.R12, X.R13)  # three pushes keep the stack 16-byte aligned
    loop, done = a.new_label(), a.new_label()
    for reg in saved:
        a.push(reg)
    a.mov_rr(X.R12, X.RDI)
    a.mov_rr(X.RBX, X.RSI)
    a.xor_zero(X.R13)
    a.bind(loop)
    a.test_rr(X.RBX, X.RBX)
    a.jcc(Cond.E, done)
    a.mov_rr(X.RDI, X.R12)
    a.call(program)
    a.mov_rr(X.R13, X.RAX)
    a.alu_mi(AluOp.CMP, _ctx("fault"), 0)
    a.jcc(Cond.NE, done)
    a.alu_ri(AluOp.SUB, X.RBX, 1)
    a.jmp(loop)
    a.bind(done)
    a.mov_rr(X.RAX, X.R13)
    for reg in reversed(saved):
        a.pop(reg)
    a.ret()


def batch_driver(a: X86Assembler, program: Label) -> None:
    """batch(ctx, spans, n, results, keep_regs, base): run once per (offset,
    length) pair of `spans`, on the input at base + offset, storing each r0
    in `results`. Unless keep_regs, r1 = the input (0 when empty) and r2 =
    its length, as EbpfVmRaw does. Returns how many inputs were left when a
    fault stopped it: Fault.BATCH_POLL when the poll between two runs was
    interrupted (the input it returns the index of did not run)."""
    saved = (X.RBX, X.R12, X.R13, X.R14, X.R15)  # five pushes keep the alignment
    loop, done, regs_set, nonempty, bad_span, spent = (a.new_label() for _ in range(6))
    slice_left = Mem(X.RSP, 0)  # instructions until the next poll (signed)
    for reg in saved:
        a.push(reg)
    a.mov_rr(X.R12, X.RDI)
    a.mov_rr(X.R13, X.RSI)
    a.mov_rr(X.R14, X.RDX)
    a.mov_rr(X.R15, X.RCX)
    a.mov_rr(X.RBX, X.R8)
    a.push(X.R9)  # base, at [rsp + 8]; seven slots in all keep the call alignment
    a.alu_ri(AluOp.SUB, X.RSP, QWORD)
    a.store_imm(slice_left, BUDGET_SLICE, QWORD)
    a.bind(loop)
    a.test_rr(X.R14, X.R14)
    a.jcc(Cond.E, done)
    a.load(X.RAX, Mem(X.R13, 0), QWORD)
    a.load(X.RDX, Mem(X.R13, QWORD), QWORD)
    # The span must lie in the buffer: offset <= limit - length, without overflow.
    a.load(X.RCX, _ctx("batch_limit"), QWORD)
    a.alu_rr(AluOp.SUB, X.RCX, X.RDX)
    a.jcc(Cond.B, bad_span)
    a.alu_rr(AluOp.CMP, X.RAX, X.RCX)
    a.jcc(Cond.A, bad_span)
    a.alu_rm(AluOp.ADD, X.RAX, Mem(X.RSP, QWORD))
    a.store(_ctx("in_arg"), X.RAX, QWORD)
    a.store(_ctx("in_len"), X.RDX, QWORD)
    a.test_rr(X.RBX, X.RBX)
    a.jcc(Cond.NE, regs_set)
    a.store(_ctx("in_r2"), X.RDX, QWORD)
    a.test_rr(X.RDX, X.RDX)
    a.jcc(Cond.NE, nonempty)
    a.xor_zero(X.RAX)
    a.bind(nonempty)
    a.store(_ctx("in_r1"), X.RAX, QWORD)
    a.bind(regs_set)
    a.mov_rr(X.RDI, X.R12)
    a.call(program)
    a.store(Mem(X.R15, 0), X.RAX, QWORD)
    a.alu_mi(AluOp.CMP, _ctx("fault"), 0)
    a.jcc(Cond.NE, done)
    a.alu_ri(AluOp.ADD, X.R13, 2 * QWORD)
    a.alu_ri(AluOp.ADD, X.R15, QWORD)
    a.alu_ri(AluOp.SUB, X.R14, 1)
    # What the run charged of its first slice (the budget register at entry
    # less at exit; exact unless it polled itself), and the run's own units.
    a.load(X.RAX, _ctx("in_budget"), QWORD)
    a.alu_rm(AluOp.SUB, X.RAX, _ctx("budget_left"))
    a.alu_ri(AluOp.ADD, X.RAX, BATCH_RUN_UNITS)
    a.alu_mr(AluOp.SUB, slice_left, X.RAX)
    a.jcc(Cond.LE, spent)
    a.jmp(loop)
    a.bind(spent)  # poll before the next run, if there is one
    a.test_rr(X.R14, X.R14)
    a.jcc(Cond.E, done)
    a.store_imm(_ctx("fault"), Fault.BATCH_POLL, QWORD)  # the poll clears it when it runs
    a.load(X.RCX, _ctx("poll_fn"), QWORD)
    a.call_r(X.RCX)
    a.alu_mi(AluOp.CMP, _ctx("fault"), 0)
    a.jcc(Cond.NE, done)
    a.store_imm(slice_left, BUDGET_SLICE, QWORD)
    a.jmp(loop)
    a.bind(bad_span)
    a.store_imm(_ctx("fault"), Fault.BATCH, QWORD)
    a.bind(done)
    a.mov_rr(X.RAX, X.R14)
    a.alu_ri(AluOp.ADD, X.RSP, 2 * QWORD)
    for reg in reversed(saved):
        a.pop(reg)
    a.ret()
