"""Control-flow facts every engine shares: basic blocks and stack size.

The instruction budget is charged per basic block, so all engines must cut a
program into the same blocks; they all call :func:`basic_blocks`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .encoding import Insn
from .isa import MAX_REG, OPS, Form, Op, OpInfo, Reg

__all__ = ["CALLBACK_BASE", "CALLBACK_SCALE", "FRAME_SIZE", "MAX_CALL_DEPTH", "basic_blocks", "branch_delta", "branch_target",
           "callback_target", "callback_value", "register_problem", "relative_target", "stack_size"]

FRAME_SIZE = 512
"""Bytes of stack each function frame gets."""
MAX_CALL_DEPTH = 8
"""Most frames that may be active at once, the outermost included (as Linux)."""

CALLBACK_BASE = 0xFFFF_FFFF_A000_0000
"""What ``lddw_func`` loads: this plus 8 times the callback's pc (the kernel
loads the function's address; ours identifies an entry of this program,
which bpf_loop and bpf_for_each_map_elem check before they call it)."""
CALLBACK_SCALE = 8
"""Bytes per slot in a callback value, as in a code address."""

_TARGET_IN_OFF, _TARGET_IN_IMM = 1, 2
_ROW_KIND = {
    id(row): (
        row.form.ends_block,
        {"off": _TARGET_IN_OFF, "imm": _TARGET_IN_IMM}.get(row.form.target_field or "", 0),
    )
    for row in OPS
}
"""Per row (by identity, the cheap key), from the opcode table's form facts:
(ends a block, where its target is: 0 none, 1 in off, 2 in imm)."""
_INVALID_KIND = (True, 0)
_NEXT_SLOT = 1
"""A branch delta counts slots from the one after the branch (RFC 9669 section 4.3)."""


def relative_target(pc: int, delta: int) -> int:
    """The slot a branch at `pc` with slot delta `delta` goes to. Every target
    is computed here (through :func:`branch_target` where an Insn is at hand)."""
    return pc + _NEXT_SLOT + delta


def branch_delta(pc: int, target: int) -> int:
    """The slot delta a branch at `pc` needs to go to `target` (the inverse of
    :func:`relative_target`, for assemblers and loaders)."""
    return target - (pc + _NEXT_SLOT)


def branch_target(insn: Insn) -> int | None:
    """The slot a jump or local call goes to, or None for other instructions
    (and invalid ones). The one place that reads a target out of an instruction."""
    where = _ROW_KIND[id(insn.row)][1] if insn.row is not None else 0
    if where == _TARGET_IN_OFF:
        return relative_target(insn.pc, insn.off)
    if where == _TARGET_IN_IMM:
        return relative_target(insn.pc, insn.imm)
    return None


_CALLBACK_ROWS = frozenset(id(row) for row in OPS
                           if row.form is Form.LDDW and row.op is Op.CODE_ADDR)
"""ids of the ``lddw_func`` rows (lddw src 4, BPF_PSEUDO_FUNC, RFC 9669 section 5.4)."""


def callback_target(insn: Insn) -> int | None:
    """The function entry an ``lddw_func`` refers to (a callback for
    bpf_loop and bpf_for_each_map_elem: its imm counts slots from the one
    after the lddw's first, as the kernel's verifier reads it), or None for
    other instructions."""
    if id(insn.row) in _CALLBACK_ROWS:
        return relative_target(insn.pc, _first_imm(insn.imm))
    return None


def _first_imm(imm: int) -> int:
    """The first slot's imm (a signed 32-bit field) of an lddw's 64-bit value."""
    low = imm & 0xFFFF_FFFF
    return low - (1 << 32) if low >> 31 else low


def callback_value(pc: int) -> int:
    """The value ``lddw_func`` loads for the callback at `pc`."""
    return CALLBACK_BASE + CALLBACK_SCALE * pc


def basic_blocks(insns: Sequence[Insn]) -> list[list[Insn]]:
    """Cut the program into basic blocks. A block starts at pc 0, at every
    branch, local-call or callback target, and after every jump, call, exit, legacy
    packet load and invalid instruction."""
    starts = {insn.pc for insn in insns}
    leaders = {0}
    kinds = _ROW_KIND
    for insn in insns:
        row = insn.row
        ends, where = kinds[id(row)] if row is not None else _INVALID_KIND
        if ends:
            leaders.add(insn.pc + insn.slots)
        if where:
            leaders.add(relative_target(insn.pc, insn.off if where == _TARGET_IN_OFF else insn.imm))
        elif id(row) in _CALLBACK_ROWS:
            leaders.add(relative_target(insn.pc, _first_imm(insn.imm)))
    leaders &= starts
    blocks: list[list[Insn]] = []
    current: list[Insn] = []
    for insn in insns:
        if insn.pc in leaders and current:
            blocks.append(current)
            current = []
        current.append(insn)
    if current:
        blocks.append(current)
    return blocks


_CALL_LOCAL_ROWS = frozenset(id(row) for row in OPS if row.form is Form.CALL_LOCAL) \
    | _CALLBACK_ROWS
"""ids of the local-call rows and of the lddw_func rows, whose callbacks run
in frames of their own (hashing a row itself would go through Python code)."""


def stack_size(insns: Sequence[Insn]) -> int:
    """Stack bytes a run gets: one frame, or every frame when the program
    makes local calls or refers to callbacks (the kernel also allows 512 bytes to a call-free program)."""
    calls = _CALL_LOCAL_ROWS.intersection([id(insn.row) for insn in insns])
    return FRAME_SIZE * (MAX_CALL_DEPTH if calls else 1)


def register_problem(row: OpInfo, insn: Insn) -> str:
    """Why an engine cannot run `insn` as `row` (a register that does not
    exist, or a write to r10), or "" when its registers are fine. Engines turn
    such instructions into InvalidInstruction at run time (unverified code)."""
    if insn.dst < MAX_REG and insn.src < MAX_REG:
        return ""
    for rule, value in ((row.dst, insn.dst), (row.src, insn.src)):
        if rule is not Reg.NONE and value > MAX_REG:
            return f"register r{value} does not exist"
    for rule, value in ((row.dst, insn.dst), (row.src, insn.src)):
        if rule is Reg.WRITE and value == MAX_REG:
            return "r10 is read-only"
    return ""
