"""The x86-64 backend's translator: walks a :class:`~ebpfvm.jit.plan.Plan`
block by block, emits each instruction through x86_emit's emitters, and
places the runtime and the cold stubs (x86_stubs) around them. Its output is
a :class:`~ebpfvm.jit.plan.JitCode`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..cfg import FRAME_SIZE, branch_target, callback_target, register_problem
from ..encoding import Insn
from ..isa import JUMP_FORMS, MAX_REG, Form, Op
from .codebuf import REL32_SIZE, patch_rel32
from .context import FAULT_INFO_SHIFT
from .plan import (
    FUSABLE_ROWS,
    FusedGroup,
    JitCaches,
    JitCode,
    Plan,
    Template,
    falls_through,
    make_plan,
)
from .x86_64 import AluOp, Cond, Label, Mem, X86Assembler
from .x86_emit import EMITTERS
from .x86_stubs import (
    ACCESS_SIZES,
    INFO_LOW_MASK,
    REG_MAP,
    SIZE_INDEX,
    TMP,
    X86Stubs,
    ctx_mem,
    place_template,
)

__all__ = ["CACHES", "X86Translator", "translate"]

if TYPE_CHECKING:
    from .rtlink import RuntimeLink
    from .tailcall import TailPlan

CACHES = JitCaches()
"""The x86-64 backend's caches, shared by every translation in the process."""

_CODE_ADDR = Op.CODE_ADDR
_POSITION_FREE_FORMS = frozenset(form for form in Form if not form.ends_block)
"""Forms whose emitters never use the pc except through a cold stub or an
invalid-instruction exit (which make the code uncacheable): all that do not
end a block."""


class X86Translator(X86Stubs):
    """One program's translation: see the module docstring of x86_stubs for
    the register map and the checked/unchecked modes."""

    def __init__(self, plan: Plan, context: int, record: bool, caches: JitCaches,
                 tail: TailPlan | None = None, link: RuntimeLink | None = None) -> None:
        super().__init__(context, plan.stack_clear, caches)
        self.plan = plan
        self.tail = tail
        self.link = link
        """The runtime functions linked in (see rtlink), or None."""
        self.rt_labels = {number: Label(unit.function.name)
                          for number, unit in link.units.items()} if link else {}
        """Each linked helper's unit, by helper number."""
        self.trusted = False
        """Whether this translates a trusted unit (see _trusted_units)."""
        """Tail calls as native jumps (see tailcall.TailPlan), or None."""
        self.record = record
        self.insns = plan.insns
        self.checked = plan.checked
        self.metered = plan.metered
        """Blocks charge the budget (always with checks; unchecked code on request)."""
        self.starts = plan.starts
        """Block starts: the only places jumps and calls go."""
        self.positions: dict[int, int] = {}
        """Code offset of each block start, by pc, once placed."""
        self.labels: dict[int, Label] = {}
        """Labels of block starts that code built by the assembler goes to."""
        self.block_fixups: list[tuple[int, int]] = []
        """rel32 fields (offset) that go to a block start (pc): cached jumps."""
        self.invalid: dict[int, str] = {}
        self.cold: list[Callable[[], None]] = []
        self.pc_offsets: list[tuple[int, int]] = []
        self.insn_cache = caches.insns[self.checked]
        self.holed_cache = caches.holed[self.checked]
        targets = (callback_target(insn) for insn in self.insns)
        self.callbacks = sorted({target for target in targets if target is not None})
        """The callbacks' pcs: helper calls then record r10 (see _emit_call)."""

    def place(self, template: Template, *labels: Label) -> None:
        """Emit `template` with its branches going to `labels`."""
        buf = self.asm.buf
        start = len(buf.data)
        code, refs = template
        buf.data += code
        for offset, index in refs:
            buf.fixups.append((start + offset, labels[index]))

    # -- driver ---------------------------------------------------------------

    def translate(self) -> JitCode:
        """Runtime, entry, the plan's blocks in order, then the cold code."""
        a = self.asm
        repeat_entry, batch_entry = self._runtime()
        entry = a.buf.position
        a.bind(self.entry_label)
        self._prologue()
        if self.tail is not None:
            self.tail.begin(self)
        data = a.buf.data
        positions = self.positions
        record = self.record
        pc_offset = self.pc_offsets.append
        emit_insn = self._insn
        budget_stubs = self.budget_stubs.append
        charges = self.caches.charges
        for block in self.plan.blocks:
            insns = block.insns
            first = insns[0]
            positions[first.pc] = len(data)
            if record:
                pc_offset((first.pc, len(data)))
            if block.charge:
                # The budget charge (see _charge_template), inlined: blocks are many.
                charge = charges.get(block.charge) or self._charge_template(block.charge)
                data += charge[0]
                budget_stubs(len(data) - REL32_SIZE)
            if block.fused:
                self._fused_block(insns, block.fused)
                continue
            if record:
                for insn in insns:
                    if insn is not first:
                        pc_offset((insn.pc, len(data)))
                    emit_insn(insn)
            else:
                for insn in insns:
                    emit_insn(insn)
            if block.falls_off:
                self._block_end(insns[-1], jump=False)
        if not self.plan.blocks:  # an empty program (unverified): pc 0 is already past the end
            self.invalid[0] = "execution falls off the end of the program"
            a.mov_ri(TMP, 0, w64=False)
            a.jmp(self.invalid_fail)
        body_end = a.buf.position
        self._trusted_units()
        self._budget_stubs()
        for emit in self.cold:
            emit()
        self._access_stubs()  # last: cold code (fused blocks' copies) adds some
        callback_entry = self._callback_entry() if self.callbacks else 0
        self._place_blocks()
        code = a.code()
        self._keep_runtime(code[:entry], repeat_entry, batch_entry)
        return JitCode(code, entry, repeat_entry, batch_entry, self.plan.block_insns,
                       self.invalid, self.pc_offsets, body_end, callback_entry,
                       {pc: positions[pc] for pc in self.callbacks if pc in positions})

    def _trusted_units(self) -> None:
        """The linked runtime functions, after the program's blocks: each
        through a translator of its own (its pcs are its own) that emits
        into this code, unchecked and unmetered, with trusted exits and calls."""
        if self.link is None:
            return
        for number, unit in self.link.units.items():
            sub = X86Translator(unit.plan, self.context, False, self.caches)
            sub.share_runtime(self)
            sub.trusted = True
            sub.metered = self.metered  # RT_CHARGE and RT_PYTHON charge as the program does
            self.asm.bind(self.rt_labels[number])
            data = self.asm.buf.data
            for block in unit.plan.blocks:
                sub.positions[block.insns[0].pc] = len(data)
                for insn in block.insns:
                    sub._insn(insn)
            for emit in sub.cold:
                emit()
            assert not (sub.invalid or sub.access_stubs or sub.budget_stubs), "trusted code"
            sub._place_blocks()

    def label(self, pc: int) -> Label | None:
        """The label of the block starting at `pc`, None when no block does."""
        label = self.labels.get(pc)
        if label is None and pc in self.starts:
            label = self.labels[pc] = Label(f"pc {pc}")
        return label

    def _place_blocks(self) -> None:
        """Once every block is placed: bind the block labels, patch the cached jumps."""
        positions = self.positions
        for pc, label in self.labels.items():
            label.position = positions[pc]
        data = self.asm.buf.data
        for at, pc in self.block_fixups:
            patch_rel32(data, at, positions[pc])

    def _block_end(self, last: Insn, jump: bool) -> None:
        """After a block's last instruction: when it can fall through, go on
        to the next block (with a jump unless it follows directly)."""
        if not falls_through(last):
            return
        label = self.label(last.pc + last.slots)
        if label is None:
            self._to_invalid(last, "execution falls off the end of the program")
        elif jump:
            self.asm.jmp(label)

    # -- fused bounds checks ---------------------------------------------------

    def _fused_block(self, block: list[Insn], groups: tuple[FusedGroup, ...]) -> None:
        """A block whose accesses through one unchanged base are checked once,
        before the first of them, over the span they all cover. If that check
        fails, execution continues at the same instruction in a copy of the
        block, up to its last fused access, in which every access is checked
        on its own (in cold code), then rejoins the block after that access;
        faults and region lookups stay exactly as unfused."""
        data = self.asm.buf.data
        pc_offset = self.pc_offsets.append
        leaders = {group.members[0]: group for group in groups}
        covered = {member for group in groups for member in group.members}
        retry = {position: Label() for position in leaders}
        first, last = min(leaders), max(covered)
        rejoin = Label()  # where the copy comes back, after the last fused access
        record = self.record
        for position, insn in enumerate(block):
            if position and record:
                pc_offset((insn.pc, len(data)))
            if position == last + 1:
                self.asm.bind(rejoin)
            group = leaders.get(position)
            if group is not None:
                self.place(_fused_check(self.caches, group), retry[position])
            if position in covered:
                self._insn_unchecked(insn)
            else:
                self._insn(insn)
        self._block_end(block[-1], jump=False)

        def copy() -> None:
            for position in range(first, last + 1):
                label = retry.get(position)
                if label is not None:
                    self.asm.bind(label)
                self._insn(block[position])
            if last + 1 < len(block):
                self.asm.jmp(rejoin)
            else:
                self._block_end(block[-1], jump=True)

        self.cold.append(copy)

    def _insn_unchecked(self, insn: Insn) -> None:
        """`insn` as unchecked mode emits it: its access was checked already."""
        caches = self.caches
        self.checked, self.insn_cache = False, caches.insns[False]
        self.holed_cache = caches.holed[False]
        try:
            self._insn(insn)
        finally:
            self.checked, self.insn_cache = True, caches.insns[True]
            self.holed_cache = caches.holed[True]


    def _to_invalid(self, insn: Insn, reason: str) -> None:
        """Stop with InvalidInstruction at `insn` when this point is reached."""
        self.invalid.setdefault(insn.pc, reason)
        self.asm.mov_ri(TMP, insn.pc, w64=False)
        self.asm.jmp(self.invalid_fail)

    # -- memory ---------------------------------------------------------------

    def _address(self, base: int, off: int, size: int, store: bool, pc: int) -> Mem:
        """The memory operand ``[base + off]`` of an access, after its bounds check.

        An r10-based access inside the current frame needs none: the frame
        always lies in the stack. Any other access is checked against the
        input inline (four instructions); a miss goes to a cold stub (see
        _access_stubs) that walks the whole region table and either resumes
        or faults."""
        operand = Mem(REG_MAP[base], off)
        if not self.checked or (base == MAX_REG and -FRAME_SIZE <= off <= -size):
            return operand
        template = self.caches.templates.get(("check", base, off, size, store))
        if template is None:

            def check(a: X86Assembler, holes: list[Label]) -> None:
                a.lea(TMP, operand)
                a.alu_rm(AluOp.SUB, TMP, ctx_mem("in_ptr"))
                a.alu_rm(AluOp.CMP, TMP, ctx_mem("p_wcnt" if store else "p_cnt", SIZE_INDEX[size]))
                a.jcc(Cond.AE, holes[0])

            template = place_template(self.caches, ("check", base, off, size, store), check)
            assert template[1] == ((len(template[0]) - REL32_SIZE, 0),), "one branch, at the end"
        data = self.asm.buf.data
        data += template[0]
        self.access_stubs.append((len(data) - REL32_SIZE, base, off,
                                  (pc << FAULT_INFO_SHIFT) | (size << 1) | int(store)))
        return operand

    # -- instructions ---------------------------------------------------------

    def _insn(self, insn: Insn) -> None:
        key = insn[1:6]  # opcode, dst, src, off, imm: they determine the row too
        code = self.insn_cache.get(key)
        buf = self.asm.buf
        if code is not None:
            buf.data += code
            return
        holed = self.holed_cache.get(key)
        if holed is not None:
            data = buf.data
            if len(holed) == 2:  # a jump: its code, ending in the rel32 to its target
                target = insn.pc + holed[1]
                if target in self.starts:
                    data += holed[0]
                    self.block_fixups.append((len(data) - REL32_SIZE, target))
                    return
            else:  # a checked access: its code, and a stub to place later
                code, hole, base, off, info = holed
                start = len(data)
                data += code
                self.access_stubs.append((start + hole, base, off,
                                          (insn.pc << FAULT_INFO_SHIFT) | info))
                return
        row = insn.row
        if row is None:
            self._to_invalid(insn, "no such instruction")
            return
        problem = register_problem(row, insn)
        if problem:
            self._to_invalid(insn, problem)
            return
        stubs = self.access_stubs
        start, fixups, cold, nstubs = len(buf.data), len(buf.fixups), len(self.cold), len(stubs)
        EMITTERS[row.form](self, insn, row)
        if len(self.cold) != cold:
            return
        form = row.form
        if form in _POSITION_FREE_FORMS and row.op is not _CODE_ADDR:  # lddw_func: pc-relative
            if len(stubs) == nstubs:
                code = buf.local_bytes(start, fixups)
                if code is not None:
                    self.caches.remember(self.insn_cache, key, code)
            elif (len(stubs) == nstubs + 1 and id(row) in FUSABLE_ROWS
                  and len(buf.fixups) == fixups):
                hole, base, off, info = stubs[-1]
                self.caches.remember(self.holed_cache, key, (
                    bytes(buf.data[start:]), hole - start, base, off, info & INFO_LOW_MASK))
        elif form in JUMP_FORMS and len(buf.fixups) == fixups + 1:
            goes_to = branch_target(insn)
            at, label = buf.fixups[-1]
            if (goes_to is not None and at == len(buf.data) - REL32_SIZE
                    and label is self.labels.get(goes_to)):
                self.caches.remember(self.holed_cache, key,
                                     (bytes(buf.data[start:]), goes_to - insn.pc))

    def jump_to(self, insn: Insn, target: int, cond: Cond | None) -> None:
        a = self.asm
        label = self.label(target)
        if label is None:
            what = "outside the program" if target < 0 or target >= self._nslots() else "into an lddw"
            if cond is None:
                self._to_invalid(insn, f"jump to {target} {what}")
                return
            stub = a.new_label()
            a.jcc(cond, stub)

            def cold() -> None:
                a.bind(stub)
                self._to_invalid(insn, f"jump {what}")

            self.cold.append(cold)
            return
        if cond is None:
            a.jmp(label)
        else:
            a.jcc(cond, label)

    def _nslots(self) -> int:
        last = self.insns[-1]
        return last.pc + last.slots


def _fused_check(caches: JitCaches, group: FusedGroup) -> Template:
    """Whether [base + low, base + low + span) lies in the input (and it is
    writable, for a group with a store). A span of at most 8 bytes is checked
    like one access of the next access size up (which may refuse a span that
    ends within the last 7 bytes: the checked copy then decides). A longer
    span is checked at its first byte, then at its last, which cannot wrap
    once the first is inside."""
    fits = [size for size in ACCESS_SIZES if size >= group.span]
    count = ctx_mem("p_wcnt" if group.store else "p_cnt", SIZE_INDEX[fits[0] if fits else 1])

    def build(a: X86Assembler, holes: list[Label]) -> None:
        a.lea(TMP, Mem(REG_MAP[group.base], group.low))
        a.alu_rm(AluOp.SUB, TMP, ctx_mem("in_ptr"))
        a.alu_rm(AluOp.CMP, TMP, count)
        a.jcc(Cond.AE, holes[0])
        if not fits:
            a.alu_ri(AluOp.ADD, TMP, group.span - 1)
            a.alu_rm(AluOp.CMP, TMP, count)
            a.jcc(Cond.AE, holes[0])

    return place_template(caches, ("fused", group.base, group.low, group.span, group.store),
                          build)



def translate(insns: Sequence[Insn], *, context: int, checked: bool = True,
              stack_clear: int | None = None, record: bool = False,
              metered: bool | None = None, caches: JitCaches | None = None,
              tail: TailPlan | None = None, link: RuntimeLink | None = None) -> JitCode:
    """Translate decoded instructions to x86-64 machine code that runs with the
    JitContext at address `context`. Each run clears `stack_clear` bytes below
    r10 (by default what the program can observe, see observable_stack).
    `record` fills JitCode.pc_offsets; the code is the same either way.
    `metered` (default: `checked`) makes blocks charge the budget: unchecked
    code charges it only when asked (a run with a budget). `caches` (default:
    the process's, CACHES) holds the code kept between translations. `tail`
    makes tail calls native jumps (see tailcall.TailPlan); `link` links
    runtime functions in (see rtlink.RuntimeLink)."""
    charged = checked if metered is None else metered or checked
    plan = make_plan(insns, checked=checked, metered=charged, stack_clear=stack_clear)
    return X86Translator(plan, context, record, CACHES if caches is None else caches,
                         tail, link).translate()
