"""Tail calls as native jumps in the JIT (bpf_tail_call, helper 12).

An ELF object's programs form a tail-call group: a VM made by
``ElfObject.vm`` compiles its program together with every other program of
the object into one piece of code, each program at its own pc offset, and a
``call 12`` becomes a native sequence instead of a trip through Python:

1. charge the helper call's HELPER_CALL_UNITS to the run's budget, as the
   interpreter's Machine.call does for every helper;
2. find the program array whose handle r2 holds, and read slot r3 from its
   native table (NativeTable: program index + 1, 0 for an empty slot, kept in
   step with the ProgArray from Python): an index past the end or an empty
   slot makes r0 = -ENOENT, and the caller goes on;
3. after MAX_TAIL_CALLS calls in this run, r0 = -E2BIG and the caller goes on;
4. else record the call (its pc and the target) in the run's tail state and
   jump to the target's tail entry: the native stack and call depth of the
   run's start, a cleared stack, r1 and r2 as the run started, the other
   registers zero (a fresh run of the callee on the same input, as the
   interpreter's callee VM does), then the target's first block.

Everything else is the root's: the run context, the region table (the
root's VM has every program's data and maps, see tailcalls._TailCalls), the budget
register, the helpers and their machine. The callee's exit ends the run.

When the run stops early, TailPlan.stopped turns a stop inside a callee into
what the interpreter reports: TailCallFault(pc of the tail call in the
outermost program, program names outermost first, the fault with its pc in
the faulting program); RunInterrupted at that outermost pc. The rare cases
the native code does not handle (r2 not a program array, a slot naming a
program the object does not have) call the Python helper as before, which
raises the interpreter's error.
"""

from __future__ import annotations

import ctypes
import functools
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..alu import M64
from ..cfg import branch_target, callback_target, stack_size
from ..encoding import Insn, decode
from ..errors import BudgetExceeded, HelperFault, RunInterrupted, TailCallFault, VmFault
from ..helpers import HELPER_CALL_UNITS
from ..isa import Form
from ..maps import ProgArray
from ..memory import Region
from ..tailcalls import BPF_TAIL_CALL, E2BIG, ENOENT, MAX_TAIL_CALLS
from .x86_64 import AluOp, Cond, Label, Mem, ShiftOp
from .x86_64 import Reg as X

if TYPE_CHECKING:
    from ..elf import ElfObject
    from ..isa import OpInfo
    from .runtime import JitProgram
    from .x86_codegen import X86Translator as _Translator

__all__ = ["GROUP_SLOT_LIMIT", "TABLE_LIMIT", "NativeTable", "TailGroup", "TailPlan", "tail_plan"]

TABLE_LIMIT = 1 << 16
"""Program arrays up to this many entries get a native table (4 bytes an
entry); an object with a larger one keeps the Python helper for its tail calls."""
GROUP_SLOT_LIMIT = 1 << 18
"""The most instruction slots one group compiles together; a larger object
keeps the Python helper (its programs are then compiled one at a time)."""
UNKNOWN = 0xFFFF_FFFF
"""A table entry naming a program the object does not have."""
_U32 = 4
_WORD = 8
_COUNT, _CHARGE, _UNKNOWN = 0, 1, 2
"""Tail-state words: tail calls made this run; 1 + pc of a tail call whose
charge exhausted the budget; whether a slot named an unknown program."""
_RESET = (_COUNT, _CHARGE, _UNKNOWN)
_CALLS = 3
"""Then per tail call made: its pc (combined), then the marker of its target."""


class NativeTable:
    """A program array's slots as the generated code reads them: uint32
    program index + 1 (0: empty, UNKNOWN: a name the object lacks). It
    watches its ProgArray, so slots set or deleted from Python apply at once."""

    def __init__(self, array: ProgArray, index_of: dict[str, int]) -> None:
        self.handle = array.handle
        self.size = array.max_entries
        self.index_of = index_of
        self.words = (ctypes.c_uint32 * array.max_entries)()
        self.address = ctypes.addressof(self.words)
        for slot, name in array.slots.items():
            self.set(slot, name)
        array.watchers.append(self.set)

    def set(self, slot: int, name: str | None) -> None:
        """Slot `slot` now holds program `name` (None: emptied)."""
        index = None if name is None else self.index_of.get(name)
        self.words[slot] = 0 if name is None else UNKNOWN if index is None else index + 1


_TABLES: weakref.WeakKeyDictionary[ProgArray, NativeTable] = weakref.WeakKeyDictionary()
"""One native table per program array, shared by every VM of its object."""


@dataclass
class TailGroup:
    """An object's programs and program arrays, as native tail calls need them."""

    names: list[str]
    codes: list[tuple[Insn, ...]]
    tables: list[NativeTable]
    root: int
    """Index of the VM's own program in `names`."""
    limit: int
    missing: int
    too_many: int
    """MAX_TAIL_CALLS, and r0 (u64) after a call to an empty slot or past the limit."""

    @classmethod
    def of(cls, obj: ElfObject, root: str) -> TailGroup | None:
        """The group of `obj` for a VM running `root`; None when tail calls
        stay with the Python helper: `root` makes none, a program array is
        over TABLE_LIMIT, the programs are over GROUP_SLOT_LIMIT, or a program
        is not self-contained (it could fall or jump into its neighbour)."""
        arrays = [m for m in obj.maps.values() if isinstance(m, ProgArray)]
        if not arrays or any(array.max_entries > TABLE_LIMIT for array in arrays):
            return None
        programs = obj.programs
        names = [program.name for program in programs]
        if names.count(root) != 1:
            return None
        if sum(len(program.code) for program in programs) // _WORD > GROUP_SLOT_LIMIT:
            return None
        codes = [tuple(decode(program.code)) for program in programs]
        at = names.index(root)
        if not any(_is_tail_call(insn) for insn in codes[at]):
            return None
        if not all(map(_self_contained, codes)) or any(map(_has_functions, codes)):
            return None
        index_of = {name: index for index, name in enumerate(names) if names.count(name) == 1}
        tables = []
        for array in arrays:
            table = _TABLES.get(array)
            if table is None or table.index_of != index_of or table.handle != array.handle:
                table = _TABLES[array] = NativeTable(array, index_of)
            tables.append(table)
        return cls(names, codes, tables, at, MAX_TAIL_CALLS, -ENOENT & M64, -E2BIG & M64)


def _is_tail_call(insn: Insn) -> bool:
    return insn.row is not None and insn.row.form is Form.CALL and insn.imm == BPF_TAIL_CALL


def _has_functions(insns: Sequence[Insn]) -> bool:
    """Whether the program has bpf-to-bpf functions or callbacks: a tail call
    made in one returns to its caller (see tailcalls), which the Python
    helper and the trampoline handle (tail_exit), not the native jump."""
    return any(insn.row is not None and (insn.row.form is Form.CALL_LOCAL
                                         or callback_target(insn) is not None)
               for insn in insns)


def _self_contained(insns: Sequence[Insn]) -> bool:
    """Whether every branch of the program stays inside it and its last
    instruction cannot fall off its end (an unverified program may), and it
    has no callx (a helper number in a register, which could be 12)."""
    if not insns:
        return False
    end = insns[-1].pc + insns[-1].slots
    for insn in insns:
        row = insn.row
        if row is None:
            continue
        if row.form is Form.CALLX:
            return False
        target = branch_target(insn)
        if target is None:
            continue
        if not 0 <= target < end:
            return False
    last = insns[-1].row
    return last is not None and last.form in (Form.EXIT, Form.JA, Form.JA32)


def tail_plan(helpers: dict[int, Any], insns: Sequence[Insn], stack: Region) -> TailPlan | None:
    """The plan for a JIT program whose VM's tail-call helper (helper 12)
    offers a group (``native_group()``, see tailcalls._TailCalls) for exactly these
    instructions; None: helper 12, if any, stays a Python helper call."""
    owner = getattr(getattr(helpers.get(BPF_TAIL_CALL), "fn", None), "__self__", None)
    native_group: Callable[[], TailGroup | None] | None = getattr(owner, "native_group", None)
    if native_group is None:
        return None
    group = native_group()
    if group is None or group.codes[group.root] != tuple(insns):
        return None
    return TailPlan(group, stack)


class TailPlan:
    """One JIT program's part of its group: the combined instructions (the
    root first, at pc 0, then the others), each program's pc offset, the
    run's tail state and the stack the group needs."""

    def __init__(self, group: TailGroup, stack: Region) -> None:
        from .plan import observable_stack

        self.group = group
        order = [group.root, *(i for i in range(len(group.names)) if i != group.root)]
        self.bases = [0] * len(group.names)
        combined: list[Insn] = []
        at = 0
        for index in order:
            self.bases[index] = at
            combined.extend(insn._replace(pc=insn.pc + at) for insn in group.codes[index])
            last = group.codes[index][-1]
            at += last.pc + last.slots
        self.insns = tuple(combined)
        self.clears = [observable_stack(code, stack_size(code)) for code in group.codes]
        # At most FRAME_SIZE * MAX_CALL_DEPTH (cfg.stack_size): the whole
        # stack buffer of every VM, below the root's region.
        size = max(len(stack.view), *self.clears)
        self.stack = stack if size == len(stack.view) else Region.of_address(
            stack.end - size, size, "stack", True)
        """The root's stack region, widened to what the largest program uses
        (the VM's stack buffer holds the most any program may use)."""
        self.state = (ctypes.c_uint64 * (_CALLS + 2 * group.limit))()
        self.state_addr = ctypes.addressof(self.state)
        self.entries: list[Label] = []
        """The current translation's tail entry per program (see begin)."""

    # -- code -------------------------------------------------------------------

    def begin(self, t: _Translator) -> None:
        """After the prologue: a run starts with no tail calls made; the tail
        entries go in cold code."""
        from .x86_stubs import ADDR

        a = t.asm
        a.mov_ri64(ADDR, self.state_addr)
        for word in _RESET:
            a.store_imm(Mem(ADDR, word * _WORD), 0, _WORD)
        self.entries = [a.new_label(f"tail entry {name}") for name in self.group.names]
        for index, label in enumerate(self.entries):
            t.cold.append(functools.partial(self._entry, t, index, label))

    def _entry(self, t: _Translator, index: int, label: Label) -> None:
        """Program `index` started as a fresh run on the root's context."""
        from .x86_stubs import REG_MAP
        from .x86_stubs import ctx_mem as _ctx

        a = t.asm
        a.bind(label)
        a.load(X.RSP, _ctx("saved_rsp"), _WORD)
        a.store_imm(_ctx("depth"), 0, _WORD)
        t._zero_stack(self.clears[index])
        a.load(REG_MAP[1], _ctx("r1_run"), _WORD)
        a.load(REG_MAP[2], _ctx("in_r2"), _WORD)
        a.load(REG_MAP[10], _ctx("s_top"), _WORD)
        for ebpf in (0, 3, 4, 5, 6, 7, 8, 9):
            a.xor_zero(REG_MAP[ebpf])
        start = t.label(self.bases[index])
        assert start is not None, "a program of the group starts a block"
        a.jmp(start)

    def emit(self, t: _Translator, insn: Insn, row: OpInfo,
             plain: Callable[[_Translator, Insn, OpInfo], None]) -> bool:
        """Emit `insn` when it is a tail call (else False): see the module
        docstring. `plain` emits a helper call through Python."""
        from .x86_stubs import ADDR, BUDGET, REG_MAP, TMP

        if row.form is not Form.CALL or insn.imm != BPF_TAIL_CALL:
            return False
        a = t.asm
        group = self.group
        found, missing, too_many, unknown, slow, done = (a.new_label() for _ in range(6))
        if t.metered:
            self._charge(t, insn.pc)
        for table in group.tables:
            other = a.new_label()
            a.mov_ri64(ADDR, table.handle)
            a.alu_rr(AluOp.CMP, REG_MAP[2], ADDR)
            a.jcc(Cond.NE, other)
            a.mov_rr(X.RAX, REG_MAP[3], w64=False)  # the index is a u32
            a.alu_ri(AluOp.CMP, X.RAX, table.size)
            a.jcc(Cond.AE, missing)
            a.mov_ri64(ADDR, table.address)
            a.shift_ri(ShiftOp.SHL, X.RAX, 2)
            a.alu_rr(AluOp.ADD, ADDR, X.RAX)
            a.load(X.RAX, Mem(ADDR), _U32)
            a.jmp(found)
            a.bind(other)
        a.jmp(slow)  # not a program array: the helper's error
        a.bind(found)
        a.test_rr(X.RAX, X.RAX, w64=False)
        a.jcc(Cond.E, missing)
        a.mov_ri64(ADDR, self.state_addr)
        a.load(TMP, Mem(ADDR, _COUNT * _WORD), _WORD)
        a.alu_ri(AluOp.CMP, TMP, group.limit)
        a.jcc(Cond.AE, too_many)
        a.alu_ri(AluOp.CMP, X.RAX, UNKNOWN, w64=False)
        a.jcc(Cond.E, unknown)
        a.shift_ri(ShiftOp.SHL, TMP, 3)
        a.alu_rr(AluOp.ADD, TMP, ADDR)
        a.store_imm(Mem(TMP, _CALLS * _WORD), insn.pc, _WORD)
        a.store(Mem(TMP, (_CALLS + group.limit) * _WORD), X.RAX, _WORD)
        a.alu_mi(AluOp.ADD, Mem(ADDR, _COUNT * _WORD), 1)
        for index, entry in enumerate(self.entries):
            a.alu_ri(AluOp.CMP, X.RAX, index + 1, w64=False)
            a.jcc(Cond.E, entry)
        a.ud2()  # a marker is a program index + 1
        for label, value in ((missing, group.missing), (too_many, group.too_many)):
            a.bind(label)
            a.mov_ri64(X.RAX, value)
            a.jmp(done)
        a.bind(unknown)
        a.store_imm(Mem(ADDR, _UNKNOWN * _WORD), 1, _WORD)
        a.bind(slow)
        if t.metered:  # the Python helper charges the call itself
            a.alu_ri(AluOp.ADD, BUDGET, HELPER_CALL_UNITS)
        tail, t.tail = t.tail, None
        try:
            plain(t, insn, row)
        finally:
            t.tail = tail
        a.bind(done)
        return True

    def _charge(self, t: _Translator, pc: int) -> None:
        """Take HELPER_CALL_UNITS off the budget register; when it holds
        fewer, refill it from the reserve (cold code), and when the run has
        fewer left, stop with the budget fault of a helper charge at `pc`."""
        from .x86_stubs import ADDR, BUDGET, TMP, take_slice
        from .x86_stubs import ctx_mem as _ctx

        a = t.asm
        refill, charged = a.new_label(), a.new_label()
        a.alu_ri(AluOp.SUB, BUDGET, HELPER_CALL_UNITS)
        a.jcc(Cond.B, refill)
        a.bind(charged)

        def cold() -> None:
            spent = a.new_label()
            a.bind(refill)
            a.load(ADDR, _ctx("budget_reserve"), _WORD)
            a.alu_rr(AluOp.ADD, ADDR, BUDGET)  # what the run has left after the charge
            a.jcc(Cond.S, spent)
            take_slice(a)
            a.jmp(charged)
            a.bind(spent)
            a.mov_rr(BUDGET, ADDR)
            a.store_imm(_ctx("budget_reserve"), 0, _WORD)
            a.mov_ri64(ADDR, self.state_addr)
            a.store_imm(Mem(ADDR, _CHARGE * _WORD), pc + 1, _WORD)
            a.xor_zero(TMP)
            a.jmp(t.budget_fail)

        t.cold.append(cold)

    # -- stops ------------------------------------------------------------------

    def stopped(self, jit: JitProgram, stop: Callable[[], int]) -> int:
        """JitProgram._stopped for a group: `stop` is the plain one, whose
        errors carry pcs of the combined code; rewrite them as the
        interpreter reports a stop in the program that stopped."""
        state = self.state
        calls = state[_COUNT]
        charge, unknown = state[_CHARGE], state[_UNKNOWN]
        state[_CHARGE] = state[_UNKNOWN] = 0
        try:
            if charge:
                total = (jit.ctx.in_budget + jit.ctx.in_reserve) & M64
                jit._unwound = True
                jit._set_count(total)
                raise BudgetExceeded(charge - 1, total)
            return stop()
        except VmFault as fault:
            if not calls:
                raise
            outer = state[_CALLS]
            if isinstance(fault, RunInterrupted):
                raise RunInterrupted(outer) from None
            if unknown and isinstance(fault, HelperFault):
                # The interpreter's root fails to build the callee's VM.
                raise _moved(fault, outer) from fault.__cause__
            raise self._wrapped(jit, fault, calls, outer) from None

    def _wrapped(self, jit: JitProgram, fault: VmFault, calls: int, outer: int) -> TailCallFault:
        group, state = self.group, self.state
        targets = [state[_CALLS + group.limit + call] - 1 for call in range(calls)]
        chain = (group.names[group.root], *(group.names[index] for index in targets))
        if isinstance(fault, BudgetExceeded):
            total = (jit.ctx.in_budget + jit.ctx.in_reserve) & M64
            fault = BudgetExceeded(fault.pc, total) if fault.count != total else fault
        return TailCallFault(outer, chain, _moved(fault, fault.pc - self.bases[targets[-1]]))


def _moved(fault: VmFault, pc: int) -> VmFault:
    """`fault` at `pc` (its pc in the program that stopped)."""
    fault.pc = pc
    fault.args = (f"{fault.reason} at pc {pc}",)
    return fault
