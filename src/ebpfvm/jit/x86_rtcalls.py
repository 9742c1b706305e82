"""x86-64 encoding of the native runtime's links (see rtlink.py for what is
linked and why): the guest's call of a linked helper, and the intrinsics a
trusted unit calls.

A linked call saves the guest's r1-r10 (r1-r5 stay unchanged across helper
calls, as in every engine; the unit uses r6-r10 as its own), gives the unit
a frame of its own on the native stack (r10 = rbp points at its top: the
guest's frames and call depth are untouched) and calls it; the unit's exit
returns. The native stack stays 16-byte aligned at the unit's code as at the
guest's, so RT_PYTHON's trampoline call is aligned too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..cfg import FRAME_SIZE
from ..encoding import Insn
from ..native.abi import RT_CHARGE_ID, RT_CHECK_ID, RT_ENV_ID, RT_PYTHON_BASE
from .rtlink import CALL_UNITS
from .x86_64 import AluOp, Cond, Mem
from .x86_64 import Reg as X
from .x86_stubs import ADDR, BUDGET, QWORD, REG_MAP, ctx_mem

if TYPE_CHECKING:
    from .x86_codegen import X86Translator

__all__ = ["emit_intrinsic", "emit_linked_call"]

LINK_SAVED = (X.RDI, X.RSI, X.RDX, X.R9, X.R8, X.RBX, X.R13, X.R14, X.R15, X.RBP)
"""The guest's r1-r10 (ten registers: the stack keeps its alignment)."""
UNIT_STACK = FRAME_SIZE + QWORD
"""The unit's frame, and a pad that keeps the unit's code aligned as the guest's."""


def _charge_register(t: X86Translator) -> None:
    """After ``sub BUDGET, n``: when that went below zero, refill or fault."""
    a = t.asm
    enough = a.new_label()
    a.jcc(Cond.AE, enough)
    a.call(t.rt_charged)
    a.bind(enough)


def emit_linked_call(t: X86Translator, insn: Insn) -> None:
    """The guest's ``call N`` of a helper linked as a trusted unit."""
    a = t.asm
    a.store_imm(ctx_mem("helper_pc"), insn.pc, QWORD)  # faults and RT_PYTHON report it
    if t.callbacks:  # the frame a callback run by a fallback helper goes below
        a.store(ctx_mem("cb_r10"), REG_MAP[10], QWORD)
    if t.metered:
        a.alu_ri(AluOp.SUB, BUDGET, CALL_UNITS)
        _charge_register(t)
    for reg in LINK_SAVED:
        a.push(reg)
    a.alu_ri(AluOp.SUB, X.RSP, UNIT_STACK)
    a.lea(REG_MAP[10], Mem(X.RSP, FRAME_SIZE))
    a.call(t.rt_labels[insn.imm])
    a.alu_ri(AluOp.ADD, X.RSP, UNIT_STACK)
    for reg in reversed(LINK_SAVED):
        a.pop(reg)


def emit_intrinsic(t: X86Translator, insn: Insn,
                   call_trampoline: Callable[[X86Translator], None]) -> None:
    """A trusted unit's call: one of rt.h's intrinsics (`call_trampoline`
    calls Python's helper, for RT_PYTHON)."""
    a = t.asm
    helper = insn.imm & 0xFFFF_FFFF
    if helper == RT_ENV_ID:
        a.load(X.RAX, ctx_mem("rt_env"), QWORD)
    elif helper == RT_CHECK_ID:
        a.call(t.rt_check)
    elif helper == RT_CHARGE_ID:
        if t.metered:
            a.alu_rr(AluOp.SUB, BUDGET, REG_MAP[1])
            _charge_register(t)
        a.xor_zero(X.RAX)
    elif RT_PYTHON_BASE <= helper < RT_PYTHON_BASE + 0x10000:
        a.mov_ri(ADDR, helper - RT_PYTHON_BASE, w64=False)
        if t.metered:  # Machine.call charges the call: the link's call site did already
            a.alu_ri(AluOp.ADD, BUDGET, CALL_UNITS)
        call_trampoline(t)
    else:
        raise AssertionError(f"{helper:#x} is no intrinsic (registry checks the units)")
