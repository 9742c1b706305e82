"""What every native backend needs before it emits a byte: the block plan.

:func:`make_plan` cuts a program into the budget's basic blocks (the same
blocks every engine charges, see :func:`ebpfvm.cfg.basic_blocks`) and, per
block, gives what a backend's emitters walk:

- the block's instructions and the budget charge it takes on entry;
- the groups of checked memory accesses whose bounds checks can be fused
  into one (:class:`FusedGroup`);
- whether its last instruction runs past the end of the program.

The plan also holds the stack bytes a run can observe (what the entry must
clear, :func:`observable_stack`) and the block starts, the only pcs a branch
or local call may go to. Branch targets come from
:func:`ebpfvm.cfg.branch_target`, nothing here computes one.

:class:`JitCaches` is everything a backend keeps between translations, as one
bounded object per backend. Nothing in this module knows an instruction set
other than eBPF's: a backend (x86-64 today, see ``x86_codegen``) brings an
encoder, emitters and runtime stubs, and walks a :class:`Plan`.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from ..cfg import FRAME_SIZE, basic_blocks, stack_size
from ..encoding import Insn
from ..isa import BY_OPCODE, MAX_REG, OPS, Form, OpInfo, Reg

__all__ = [
    "CACHE_LIMIT",
    "Block",
    "FusedGroup",
    "JitCaches",
    "JitCode",
    "Plan",
    "falls_through",
    "fused_groups",
    "make_plan",
    "observable_stack",
]

STACK_ROUNDING = 8
"""The stack a run observes is cleared in whole 8-byte words."""
CACHE_LIMIT = 1 << 16
"""Entries a per-instruction cache holds before it starts over."""


@dataclass
class JitCode:
    """Translated program: machine code and what Python needs to explain a stop."""

    code: bytes
    entry: int
    repeat_entry: int
    batch_entry: int
    blocks: list[list[Insn]]
    """The basic blocks, by the index a budget stop reports."""
    invalid: dict[int, str]
    pc_offsets: list[tuple[int, int]] = field(default_factory=list)
    """(eBPF pc, offset of its first native byte), in order: only when asked
    for (see translate), for jit-dump."""
    body_end: int = 0
    """Offset where the code of the last instruction ends."""
    callback_entry: int = 0
    """Offset of the native entry that runs one callback (programs with
    lddw_func only, see jit/callbacks.py)."""
    callbacks: dict[int, int] = field(default_factory=dict)
    """Offset of each callback's code, by its pc."""


# -- fused bounds checks ---------------------------------------------------------


class FusedGroup(NamedTuple):
    """Accesses of one block through one base register that no instruction
    between them writes: `members` are their positions in the block, and
    [base + low, base + low + span) covers all of them. One bounds check of
    the span, before the first member, stands for the members' own checks."""

    base: int
    low: int
    span: int
    store: bool
    members: tuple[int, ...]


FUSABLE_ROWS = frozenset(id(row) for row in OPS if row.form in (Form.LDX, Form.ST, Form.STX))
"""ids of the rows whose access checks can be fused (hashing a row itself
runs Python code). The base is src for LDX, dst for ST and STX."""

_LOAD, _STORE, _BARRIER, _WRITES_DST, _WRITES_SRC = 1, 2, 4, 8, 16
"""What fused_groups needs to know of a row, as bits."""
_ACCESS = _LOAD | _STORE


def _fuse_kind(row: OpInfo) -> int:
    if id(row) in FUSABLE_ROWS:
        return _LOAD | _WRITES_DST if row.form.memory_base == "src" else _STORE
    if row.form.is_memory_access:
        return _BARRIER  # an atomic: it may write its source register, and r0
    return (_WRITES_DST if row.dst is Reg.WRITE else 0) | (
        _WRITES_SRC if row.src is Reg.WRITE else 0)


_FUSE_KINDS = {id(row): _fuse_kind(row) for row in OPS}
_FUSABLE_OPCODE = bytes(
    any(id(row) in FUSABLE_ROWS for row in BY_OPCODE[opcode]) for opcode in range(256))
"""1 for the opcodes some fusable row has: a cheap first filter."""
_OPCODE_OF = operator.itemgetter(1)  # Insn.opcode, read from C


def fused_groups(block: list[Insn]) -> list[FusedGroup]:
    """The groups of two or more checked accesses in `block` (see FusedGroup).
    An r10-based access inside the current frame needs no check, so it joins
    no group."""
    kinds = _FUSE_KINDS
    open_: dict[int, list[tuple[int, int, int, bool]]] = {}  # by base register
    closed: list[tuple[int, list[tuple[int, int, int, bool]]]] = []
    for position, (_pc, _opcode, dst, src, off, _imm, row) in enumerate(block):
        kind = kinds.get(id(row), _BARRIER)  # no row: an invalid instruction
        if kind & _BARRIER or dst > MAX_REG or src > MAX_REG or (
                dst == MAX_REG and kind & _WRITES_DST):  # r10 written: invalid too
            closed += open_.items()
            open_.clear()
            continue
        if kind & _ACCESS:
            base = src if kind & _LOAD else dst
            size = row.size  # type: ignore[union-attr]
            if base != MAX_REG or not -FRAME_SIZE <= off <= -size:  # else unchecked
                if base in open_:
                    open_[base].append((position, off, size, kind == _STORE))
                else:
                    open_[base] = [(position, off, size, kind == _STORE)]
        if kind & _WRITES_DST and dst in open_:
            closed.append((dst, open_.pop(dst)))
        if kind & _WRITES_SRC and src in open_:
            closed.append((src, open_.pop(src)))
    closed += open_.items()
    groups: list[FusedGroup] = []
    for base, members in closed:
        if len(members) > 1:
            low = min(member[1] for member in members)
            high = max(member[1] + member[2] for member in members)
            groups.append(FusedGroup(base, low, high - low, any(member[3] for member in members),
                                     tuple(member[0] for member in members)))
    return groups


# -- the stack a run can observe ---------------------------------------------------


def observable_stack(insns: Sequence[Insn], size: int) -> int:
    """How many bytes below r10 a run can observe, rounded up to 8: all of the
    stack when the program makes local calls or r10 escapes (its value is
    copied, compared, stored or passed on); else the deepest r10-based access."""
    if size > FRAME_SIZE:  # only programs with local calls get more than one frame
        return size
    deepest = 0
    for insn in insns:
        row = insn.row
        if row is None or (insn.dst != MAX_REG and insn.src != MAX_REG):
            continue
        memory_base = row.form.memory_base
        base = insn.src if memory_base == "src" else insn.dst if memory_base == "dst" else -1
        if base == MAX_REG:
            deepest = max(deepest, -insn.off)
        value_regs = [insn.src] if row.src is not Reg.NONE and memory_base != "src" else []
        if row.dst is not Reg.NONE and memory_base != "dst":
            value_regs.append(insn.dst)
        if MAX_REG in value_regs:
            return size
    return min(size, -(-deepest // STACK_ROUNDING) * STACK_ROUNDING)


# -- the block plan ------------------------------------------------------------------


_FALLS_THROUGH_ROWS = frozenset(id(row) for row in OPS if row.form.falls_through)
"""ids of the rows after which execution may go on at the next instruction."""


def falls_through(insn: Insn) -> bool:
    """Whether execution may go on after `insn` (not after ja, ja32, exit, or
    an invalid instruction, which stops the run)."""
    return id(insn.row) in _FALLS_THROUGH_ROWS


class Block(NamedTuple):
    """One basic block as a backend emits it."""

    number: int
    """What a budget stop reports: the block's position in Plan.blocks."""
    insns: list[Insn]
    charge: int
    """Instructions taken off the budget on entry; 0 when the plan is unmetered."""
    fused: tuple[FusedGroup, ...]
    """Fusable check groups (checked plans only; often empty)."""
    falls_off: bool
    """Its last instruction may run on past the end of the program: the
    backend stops there with InvalidInstruction."""


@dataclass
class Plan:
    """A program as every native backend walks it: blocks in program order,
    each emitted at the next code offset, entered at `blocks[0]`."""

    insns: list[Insn]
    blocks: list[Block]
    block_insns: list[list[Insn]]
    """The instructions of each block, by block number (what JitCode.blocks holds)."""
    starts: set[int]
    """Block starts: the only pcs a branch or local call may go to."""
    stack_clear: int
    """Stack bytes below r10 the entry clears (see observable_stack)."""
    checked: bool
    metered: bool

    @property
    def nslots(self) -> int:
        """Slots in the program (an lddw takes two)."""
        if not self.insns:
            return 0
        last = self.insns[-1]
        return last.pc + last.slots


def make_plan(insns: Sequence[Insn], *, checked: bool, metered: bool,
              stack_clear: int | None = None) -> Plan:
    """The plan of decoded `insns`. `checked` plans fused bounds checks;
    `metered` gives each block its budget charge; `stack_clear` (default:
    what the program can observe) is what the entry clears."""
    insns = list(insns)
    if stack_clear is None:
        stack_clear = observable_stack(insns, stack_size(insns))
    cut = basic_blocks(insns)
    new = tuple.__new__  # Block(...) without NamedTuple's Python-level __new__: blocks are many
    blocks: list[Block]
    if checked:
        fusable = bytes(map(_FUSABLE_OPCODE.__getitem__, map(_OPCODE_OF, insns)))
        blocks = []
        at = 0  # index of the block's first instruction
        for number, block in enumerate(cut):
            end = at + len(block)
            groups = tuple(fused_groups(block)) if fusable.count(1, at, end) > 1 else ()
            blocks.append(new(Block, (number, block, end - at if metered else 0, groups, False)))
            at = end
    else:
        blocks = [new(Block, (number, block, len(block) if metered else 0, (), False))
                  for number, block in enumerate(cut)]
    if blocks and id(blocks[-1].insns[-1].row) in _FALLS_THROUGH_ROWS:
        # Blocks are contiguous: only the last one's successor can be missing.
        blocks[-1] = blocks[-1]._replace(falls_off=True)
    return Plan(insns, blocks, cut, {block[0].pc for block in cut}, stack_clear, checked, metered)


# -- caches ------------------------------------------------------------------------


_T = TypeVar("_T")
_K = TypeVar("_K")
Template = tuple[bytes, tuple[tuple[int, int], ...]]
"""Machine code whose only branches go to labels given when it is placed:
(bytes, (offset of a rel32 field, index of its label) for each branch)."""
Holed = tuple[bytes, int] | tuple[bytes, int, int, int, int]
"""Code of an instruction that needs something placed per use:
- a jump: (code, target - pc); the code ends in the field of the target;
- a checked access: (code, offset of the check's branch field, base, off,
  fault info without the pc); each needs its own cold stub."""
RuntimeCode = tuple[bytes, dict[str, int], int, int]
"""The program-independent code: (bytes, offset of each named label, repeat
entry, batch entry)."""


class JitCaches:
    """What a backend keeps between translations, as one object (each backend
    holds its own). Every entry is machine code (or offsets into it) that
    depends only on its key, so a warm cache changes no output byte; every
    table is bounded and starts over when full."""

    def __init__(self, limit: int = CACHE_LIMIT) -> None:
        self.limit = limit
        self.clear()

    def clear(self) -> None:
        """Forget everything (the next translation builds all of its code)."""
        self.insns: dict[bool, dict[tuple[int, ...], bytes]] = {True: {}, False: {}}
        """Per mode (checked or not): the code of instructions whose code
        depends on their fields only, by (opcode, dst, src, off, imm)."""
        self.holed: dict[bool, dict[tuple[int, ...], Holed]] = {True: {}, False: {}}
        """Per mode, by the same key: instructions that need something placed per use."""
        self.templates: dict[tuple[object, ...], Template] = {}
        """Code built by a backend's template builder, by a key naming its inputs."""
        self.charges: dict[int, Template] = {}
        """Budget charges by block length (a shortcut past the template keys)."""
        self.prologues: dict[int, tuple[bytes, int]] = {}
        """Entry code by stack bytes to clear: (code, offset of the context address)."""
        self.stubs: dict[tuple[object, ...], tuple[bytes, int, int, int]] = {}
        """Cold stubs by what they depend on: (code, offsets of their three holes)."""
        self.runtime: RuntimeCode | None = None
        """The program-independent code, once built."""

    def remember(self, cache: dict[_K, _T], key: _K, value: _T) -> None:
        """Store `value` in `cache` (one of the tables above), emptying it first when full."""
        if len(cache) > self.limit:
            cache.clear()
        cache[key] = value
