"""eBPF -> x86-64 translation. No machine-code bytes here: every instruction
goes through :class:`~ebpfvm.jit.x86_64.X86Assembler`.

Register map (System V AMD64; eBPF r1-r5 sit in caller-saved registers, r6-r10
in callee-saved ones, as in the kernel's and uBPF's JITs):

====== ====== ==================================================
eBPF   x86    note
====== ====== ==================================================
r0     rax    also the implicit operand of div and cmpxchg
r1     rdi
r2     rsi
r3     rdx    also the high half of div's dividend: saved around div
r4     r9
r5     r8
r6     rbx
r7     r13
r8     r14
r9     r15
r10    rbp    frame pointer, lowered by FRAME_SIZE per local call
--     r12    pointer to the JitContext (callee-saved)
--     r10    remaining instruction budget (checked mode)
--     r11    scratch: effective address of memory accesses
--     rcx    scratch: shift counts, divisors, bounds arithmetic
====== ====== ==================================================

Checked mode: each load and store computes its address into r11 and checks
``[r11, r11 + size)`` against the stack and the input inline, then calls the
region-table walk; each basic block first charges its length to the budget.
Unchecked mode drops both: the fastest code, and unsafe.

32-bit ALU results rely on x86's rule that writing a 32-bit register clears
bits 32-63. Where an x86 instruction may not write its destination (shift by
zero, a successful 32-bit cmpxchg) the code zero-extends explicitly.
"""

from __future__ import annotations

import ctypes
import functools
import operator
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from ..alu import M32
from ..cfg import FRAME_SIZE, MAX_CALL_DEPTH, basic_blocks, register_problem, stack_size
from ..encoding import Insn
from ..isa import BY_OPCODE, MAX_REG, OPS, Form, OpInfo, Reg
from .codebuf import REL32_SIZE, patch_rel32
from .context import (
    BUDGET_SLICE,
    FAULT_INFO_SHIFT,
    IN_BYTEARRAY,
    IN_OFFSET_SHIFT,
    IN_R1_IS_INPUT,
    Fault,
    RegionEntry,
    field_offset,
)
from .drivers import batch_driver, repeat_driver
from .x86_64 import AluOp, Cond, Label, Mem, ShiftOp, X86Assembler
from .x86_64 import Reg as X

if TYPE_CHECKING:
    from .tailcall import TailPlan

__all__ = ["REG_MAP", "JitCode", "translate"]

REG_MAP: dict[int, X] = {
    0: X.RAX, 1: X.RDI, 2: X.RSI, 3: X.RDX, 4: X.R9, 5: X.R8,
    6: X.RBX, 7: X.R13, 8: X.R14, 9: X.R15, 10: X.RBP,
}
CTX = X.R12
BUDGET = X.R10
ADDR = X.R11
TMP = X.RCX
CALLEE_SAVED = (X.RBP, X.RBX, X.R12, X.R13, X.R14, X.R15)
LOCAL_CALL_SAVED = (X.RBX, X.R13, X.R14, X.R15, X.RBP)
"""eBPF r6-r9 and r10, which the VM restores for the caller of a local call."""
HELPER_SAVED = (X.RDI, X.RSI, X.RDX, X.R9, X.R8, BUDGET)
"""eBPF r1-r5 (kept unchanged across helper calls, as the interpreter does) and the budget."""

SMALL_STACK_CLEAR = 128
"""Up to this many stack bytes are cleared with plain stores instead of rep stosq."""

ACCESS_SIZES = (1, 2, 4, 8)
SIZE_INDEX = {size: index for index, size in enumerate(ACCESS_SIZES)}
QWORD = 8
ALIGN_PAD = 8
"""Entry pushes six registers onto a stack that is 8 mod 16: one more slot aligns it."""

_SIMPLE_ALU = {"add": AluOp.ADD, "sub": AluOp.SUB, "or": AluOp.OR, "and": AluOp.AND,
               "xor": AluOp.XOR}
_SHIFTS = {"lsh": ShiftOp.SHL, "rsh": ShiftOp.SHR, "arsh": ShiftOp.SAR}
_ATOMIC_ALU = {"add": AluOp.ADD, "or": AluOp.OR, "and": AluOp.AND, "xor": AluOp.XOR}
_CONDITIONS = {
    "jeq": Cond.E, "jne": Cond.NE, "jset": Cond.NE,
    "jgt": Cond.A, "jge": Cond.AE, "jlt": Cond.B, "jle": Cond.BE,
    "jsgt": Cond.G, "jsge": Cond.GE, "jslt": Cond.L, "jsle": Cond.LE,
}


@functools.cache
def _ctx(name: str, index: int = 0) -> Mem:
    return Mem(CTX, field_offset(name) + index * QWORD)


_T = TypeVar("_T")
Template = tuple[bytes, tuple[tuple[int, int], ...]]
"""Machine code whose only branches go to labels given when it is placed:
(bytes, (offset of a rel32 field, index of its label) for each branch)."""
_TEMPLATES: dict[tuple[object, ...], Template] = {}
_TEMPLATE_HOLES = 4


def _template(key: tuple[object, ...], build: Callable[[X86Assembler, list[Label]], None]
              ) -> Template:
    """The code `build` emits, built once per `key` (which must name everything
    `build` depends on). `build` gets placeholder labels to branch to and binds none."""
    template = _TEMPLATES.get(key)
    if template is None:
        scratch = X86Assembler()
        holes = [Label(f"hole {index}") for index in range(_TEMPLATE_HOLES)]
        build(scratch, holes)
        refs = tuple((offset, holes.index(label)) for offset, label in scratch.buf.fixups)
        template = _TEMPLATES[key] = (bytes(scratch.buf.data), refs)
    return template


_ENDS_BLOCK = frozenset(id(row) for row in OPS if row.form in (Form.JA, Form.JA32, Form.EXIT))
"""ids of the rows that never fall through to the next instruction."""
_CHARGES: dict[int, Template] = {}
"""Budget charges by block length (a shortcut past _template's key building)."""
_PROLOGUES: dict[int, tuple[bytes, int]] = {}
"""Entry code by stack bytes to clear: (code, offset of the context address)."""

_INSN_CACHE: dict[bool, dict[tuple[int, ...], bytes]] = {True: {}, False: {}}
"""Per mode (checked or not): the code of instructions whose code depends on
their fields only, by (opcode, dst, src, off, imm)."""
_INSN_CACHE_LIMIT = 1 << 16
_Holed = tuple[bytes, int] | tuple[bytes, int, int, int, int]
_HOLED_CACHE: dict[bool, dict[tuple[int, ...], _Holed]] = {True: {}, False: {}}
"""Per mode, by the same key: instructions whose code depends on their fields
only but which need something placed per use.
- Jumps: (code, target - pc); the code ends in the rel32 to the target block.
- Checked loads and stores: (code, offset of the check's rel32, base, off,
  fault info without the pc); each needs its own cold stub."""
_JUMP_FORMS = frozenset({Form.JA, Form.JA32, Form.JCC_K, Form.JCC_X})
_INFO_LOW_MASK = (1 << FAULT_INFO_SHIFT) - 1
_U32 = struct.Struct("<I")
_ACCESS_STUBS: dict[tuple[int, int], tuple[bytes, int, int, int]] = {}
_INFO_MARK = (1 << 31) - 1
"""The imm32 stub templates are built with; their builders assert where it sits."""


def _remember(cache: dict[tuple[int, ...], _T], key: tuple[int, ...], value: _T) -> None:
    if len(cache) > _INSN_CACHE_LIMIT:
        cache.clear()
    cache[key] = value


def _mov_tmp_imm32(a: X86Assembler) -> int:
    """``mov ecx, imm32`` with a placeholder imm32; returns where the imm32 sits."""
    a.mov_ri(TMP, _INFO_MARK, w64=False)
    at = a.buf.position - _U32.size
    assert _U32.unpack_from(a.buf.data, at)[0] == _INFO_MARK, "mov r32, imm32 ends in imm32"
    return at


@functools.cache
def _budget_stub() -> tuple[bytes, int, int, int]:
    """A block's budget stub: (code, offset of the block index u32, of the
    call's rel32, of the jump's rel32), see _Translator._budget_stubs."""
    a = X86Assembler()
    index_at = _mov_tmp_imm32(a)
    a.call(Label("hole"))
    call_at = a.buf.position - REL32_SIZE
    a.jmp(Label("hole"))
    return bytes(a.buf.data), index_at, call_at, a.buf.position - REL32_SIZE


def _access_stub(base: int, off: int) -> tuple[bytes, int, int, int]:
    """The cold stub of a checked access through ``[base + off]``: (code,
    offset of its fault info u32, of its call's rel32, of its jump's rel32)."""
    stub = _ACCESS_STUBS.get((base, off))
    if stub is None:
        a = X86Assembler()
        hole = Label("hole")
        a.lea(ADDR, Mem(REG_MAP[base], off))
        info_at = _mov_tmp_imm32(a)
        a.call(hole)
        call_at = a.buf.position - REL32_SIZE
        a.jmp(hole)
        jmp_at = a.buf.position - REL32_SIZE
        stub = _ACCESS_STUBS[(base, off)] = (bytes(a.buf.data), info_at, call_at, jmp_at)
    return stub


_POSITION_FREE_FORMS = frozenset({
    Form.ALU_K, Form.ALU_X, Form.NEG, Form.ENDIAN, Form.LDDW, Form.LDX, Form.ST, Form.STX,
    Form.ATOMIC,
})
"""Forms whose emitters never use the pc except through a cold stub or an
invalid-instruction exit (which make the code uncacheable)."""


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
    """(eBPF pc, offset of its first x86 byte), in order: only when asked for
    (see translate), for jit-dump."""
    body_end: int = 0
    """Offset where the code of the last instruction ends."""


class _Translator:
    def __init__(self, insns: Sequence[Insn], checked: bool, context: int,
                 stack_clear: int | None, record: bool, metered: bool,
                 tail: TailPlan | None = None) -> None:
        self.context = context
        self.tail = tail
        self.record = record
        self.insns = list(insns)
        self.checked = checked
        self.metered = metered
        """Blocks charge the budget (always with checks; unchecked code on request)."""
        self.stack_clear = (observable_stack(self.insns, stack_size(self.insns))
                            if stack_clear is None else stack_clear)
        self.asm = X86Assembler()
        self.blocks = basic_blocks(self.insns)
        self.starts = {block[0].pc for block in self.blocks}
        """Block starts: the only places jumps and calls go."""
        self.positions: dict[int, int] = {}
        """Code offset of each block start, by pc, once placed."""
        self.labels: dict[int, Label] = {}
        """Labels of block starts that code built by the assembler goes to."""
        self.block_fixups: list[tuple[int, int]] = []
        """rel32 fields (offset) that go to a block start (pc): cached jumps."""
        self.invalid: dict[int, str] = {}
        self.cold: list[Callable[[], None]] = []
        a = self.asm
        self.exit_main = a.new_label()
        self.terminate = a.new_label()
        self.fault_exit = a.new_label()
        self.slowpath = a.new_label()
        self.budget_fail = a.new_label()
        self.budget_refill = a.new_label()
        self.invalid_fail = a.new_label()
        self.depth_fail = a.new_label()
        self.pc_offsets: list[tuple[int, int]] = []
        self.insn_cache = _INSN_CACHE[checked]
        self.holed_cache = _HOLED_CACHE[checked]
        self.budget_stubs: list[int] = []
        """Per block, the offset of its budget charge's rel32 (see _budget_stubs)."""
        self.access_stubs: list[tuple[int, int, int, int]] = []
        """The checked accesses, whose stubs go in cold code: (offset of the
        check's rel32, base, off, fault info), see _access_stubs."""

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
        a = self.asm
        self.entry_label = a.new_label()
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
        checked = self.checked
        metered = self.metered
        budget_stubs = self.budget_stubs.append
        ends_block = _ENDS_BLOCK
        fusable = bytes(map(_FUSABLE_OPCODE.__getitem__, map(_OPCODE_OF, self.insns)))
        at = 0  # index of the block's first instruction
        for block in self.blocks:
            first = block[0]
            positions[first.pc] = len(data)
            if record:
                pc_offset((first.pc, len(data)))
            if metered:
                # The budget charge (see _charge_template), inlined: blocks are many.
                charge = _CHARGES.get(len(block)) or self._charge_template(len(block))
                data += charge[0]
                budget_stubs(len(data) - REL32_SIZE)
            if checked:
                at += len(block)
                if fusable.count(1, at - len(block), at) > 1:  # two accesses, maybe fusable
                    groups = _fused_groups(block)
                    if groups:
                        self._fused_block(block, groups)
                        continue
            if record:
                for insn in block:
                    if insn is not first:
                        pc_offset((insn.pc, len(data)))
                    emit_insn(insn)
            else:
                for insn in block:
                    emit_insn(insn)
            last = block[-1]
            if id(last.row) not in ends_block and last.pc + last.slots not in self.starts:
                self._block_end(last, jump=False)  # falls off the end
        if not self.blocks:  # an empty program (unverified): pc 0 is already past the end
            self.invalid[0] = "execution falls off the end of the program"
            a.mov_ri(TMP, 0, w64=False)
            a.jmp(self.invalid_fail)
        body_end = a.buf.position
        self._budget_stubs()
        for emit in self.cold:
            emit()
        self._access_stubs()  # last: cold code (fused blocks' copies) adds some
        self._place_blocks()
        code = a.code()
        if _RUNTIME_CACHE is None:
            _cache_runtime(code[:entry], {name: _position(getattr(self, name))
                                          for name in _RUNTIME_LABELS}, repeat_entry, batch_entry)
        return JitCode(code, entry, repeat_entry, batch_entry, self.blocks,
                       self.invalid, self.pc_offsets, body_end)

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
        if not _falls_through(last):
            return
        label = self.label(last.pc + last.slots)
        if label is None:
            self._to_invalid(last, "execution falls off the end of the program")
        elif jump:
            self.asm.jmp(label)

    # -- fused bounds checks ---------------------------------------------------

    def _fused_block(self, block: list[Insn], groups: list[_Group]) -> None:
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
                self.place(_fused_check(group), retry[position])
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
        self.checked, self.insn_cache = False, _INSN_CACHE[False]
        self.holed_cache = _HOLED_CACHE[False]
        try:
            self._insn(insn)
        finally:
            self.checked, self.insn_cache = True, _INSN_CACHE[True]
            self.holed_cache = _HOLED_CACHE[True]

    def _runtime(self) -> tuple[int, int]:
        """The program-independent code, placed first: epilogues, fault exits,
        the region-table walk and the native loops, which call the entry placed
        right after them. It is the same bytes for every program, so it is
        built once per process and copied after that."""
        a = self.asm
        cached = _RUNTIME_CACHE
        if cached is not None:
            code, labels, repeat_entry, batch_entry = cached
            a.buf.emit(code)
            for name, position in labels.items():
                getattr(self, name).position = position
            return repeat_entry, batch_entry
        self._epilogues()
        self._slowpath()
        self._refill()
        repeat_entry = a.buf.position
        repeat_driver(a, self.entry_label)
        batch_entry = a.buf.position
        batch_driver(a, self.entry_label)
        return repeat_entry, batch_entry

    # -- entry and exits ------------------------------------------------------

    def _prologue(self) -> None:
        """The entry's code depends on the stack bytes to clear and, in one
        imm64, on the context address: it is built once per size and patched."""
        a = self.asm
        buf = a.buf
        start = len(buf.data)
        clear = self.stack_clear
        cached = _PROLOGUES.get(clear)
        if cached is not None:
            code, context_at = cached
            buf.data += code
            struct.pack_into("<Q", buf.data, start + context_at, self.context)
            return
        fixups = len(buf.fixups)
        for reg in CALLEE_SAVED:
            a.push(reg)
        a.alu_ri(AluOp.SUB, X.RSP, ALIGN_PAD)
        a.mov_ri64(CTX, self.context)  # the entry takes no arguments: cheaper to call
        context_at = len(buf.data) - QWORD - start  # the imm64 ends the instruction
        a.store(_ctx("saved_rsp"), X.RSP, QWORD)
        self._zero_stack(clear)
        self._resolve_bytearray()
        self._input_bounds()
        a.store_imm(_ctx("depth"), 0, QWORD)
        self._fixed_mbuff()
        a.load(REG_MAP[1], _ctx("r1_run"), QWORD)
        a.load(REG_MAP[2], _ctx("in_r2"), QWORD)
        a.load(REG_MAP[10], _ctx("s_top"), QWORD)
        a.load(BUDGET, _ctx("in_budget"), QWORD)
        a.load(X.RAX, _ctx("in_reserve"), QWORD)
        a.store(_ctx("budget_reserve"), X.RAX, QWORD)
        for ebpf in (0, 3, 4, 5, 6, 7, 8, 9):
            a.xor_zero(REG_MAP[ebpf])
        built = buf.local_bytes(start, fixups)
        assert built is not None, "the prologue branches only inside itself"
        _PROLOGUES[clear] = (built, context_at)

    def _zero_stack(self, size: int) -> None:
        """No run sees another run's stack. Only the bytes the program can
        reach need clearing (see observable_stack); a few stores beat rep stos."""
        a = self.asm
        if not size:
            return
        a.xor_zero(X.RAX)
        a.load(X.RDI, _ctx("s_top"), QWORD)
        if size <= SMALL_STACK_CLEAR:
            for offset in range(-size, 0, QWORD):
                a.store(Mem(X.RDI, offset), X.RAX, QWORD)
            return
        a.alu_ri(AluOp.SUB, X.RDI, size)
        a.mov_ri(X.RCX, size // QWORD, w64=False)
        a.rep_stosq()

    def _resolve_bytearray(self) -> None:
        """Python may pass a buffer object (a bytearray or memoryview) instead of
        its address: in_flags >> 8 is where the object keeps its data pointer.
        Python holds the GIL during the run, so nothing moves the data."""
        a = self.asm
        done = a.new_label()
        a.load(X.RAX, _ctx("in_arg"), QWORD)
        a.load(X.RDX, _ctx("in_r1"), QWORD)
        a.load(X.RCX, _ctx("in_flags"), QWORD)
        a.test_ri(X.RCX, IN_BYTEARRAY, w64=False)
        a.jcc(Cond.E, done)
        a.mov_rr(ADDR, X.RCX)
        a.shift_ri(ShiftOp.SHR, ADDR, IN_OFFSET_SHIFT)
        a.alu_rr(AluOp.ADD, ADDR, X.RAX)
        a.load(X.RAX, Mem(ADDR, 0), QWORD)
        a.test_ri(X.RCX, IN_R1_IS_INPUT, w64=False)
        a.jcc(Cond.E, done)
        a.mov_rr(X.RDX, X.RAX)
        a.bind(done)
        # Python's in_* fields stay as Python wrote them: a run with the same
        # input needs no writes at all (see JitProgram.run).
        a.store(_ctx("in_ptr"), X.RAX, QWORD)
        a.store(_ctx("r1_run"), X.RDX, QWORD)

    def _input_bounds(self) -> None:
        """Valid-offset counts of the input per access size, and its region entry."""
        a = self.asm
        a.load(X.RDX, _ctx("in_len"), QWORD)
        a.load(ADDR, _ctx("in_wmask"), QWORD)
        for index, size in enumerate(ACCESS_SIZES):
            a.mov_rr(X.RAX, X.RDX)
            if size > 1:
                fits = a.new_label()
                a.alu_ri(AluOp.SUB, X.RAX, size - 1)
                a.jcc(Cond.AE, fits)
                a.xor_zero(X.RAX)
                a.bind(fits)
            a.store(_ctx("p_cnt", index), X.RAX, QWORD)
            a.alu_rr(AluOp.AND, X.RAX, ADDR)
            a.store(_ctx("p_wcnt", index), X.RAX, QWORD)
        entry = RegionEntry
        a.load(X.RCX, _ctx("regions"), QWORD)
        a.load(X.RAX, _ctx("in_ptr"), QWORD)
        base = _sizeof(entry)  # entry 1: the input
        a.store(Mem(X.RCX, base + entry.start.offset), X.RAX, QWORD)
        a.store(Mem(X.RCX, base + entry.size.offset), X.RDX, QWORD)
        a.store(Mem(X.RCX, base + entry.writable.offset), ADDR, QWORD)
        a.load(X.RAX, _ctx("in_nregions"), QWORD)
        a.store(_ctx("nregions"), X.RAX, QWORD)

    def _fixed_mbuff(self) -> None:
        """EbpfVmFixedMbuff: store the input's start and end into the mbuff."""
        a = self.asm
        skip = a.new_label()
        a.load(X.RCX, _ctx("mbuff"), QWORD)
        a.test_rr(X.RCX, X.RCX)
        a.jcc(Cond.E, skip)
        a.load(X.RAX, _ctx("in_ptr"), QWORD)
        a.mov_rr(ADDR, X.RCX)
        a.alu_rm(AluOp.ADD, ADDR, _ctx("data_off"))
        a.store(Mem(ADDR), X.RAX, QWORD)
        a.alu_rm(AluOp.ADD, X.RAX, _ctx("in_len"))
        a.mov_rr(ADDR, X.RCX)
        a.alu_rm(AluOp.ADD, ADDR, _ctx("data_end_off"))
        a.store(Mem(ADDR), X.RAX, QWORD)
        a.bind(skip)

    def _epilogues(self) -> None:
        a = self.asm
        # Normal end: record the registers and the budget left.
        a.bind(self.exit_main)
        for ebpf, reg in REG_MAP.items():
            a.store(_ctx("regs_out", ebpf), reg, QWORD)
        a.store(_ctx("budget_left"), BUDGET, QWORD)
        restore = a.new_label()
        a.bind(restore)
        a.alu_ri(AluOp.ADD, X.RSP, ALIGN_PAD)
        for reg in reversed(CALLEE_SAVED):
            a.pop(reg)
        a.ret()
        # End from any call depth with r0 already set (legacy packet load out of bounds).
        a.bind(self.terminate)
        a.load(X.RSP, _ctx("saved_rsp"), QWORD)
        a.jmp(self.exit_main)
        # Faults: the reason is in the context; unwind the native stack. The
        # budget register tells Python how many instructions ran.
        a.bind(self.fault_exit)
        a.store(_ctx("budget_left"), BUDGET, QWORD)
        a.load(X.RSP, _ctx("saved_rsp"), QWORD)
        a.xor_zero(X.RAX)
        a.jmp(restore)
        for label, kind in ((self.budget_fail, Fault.BUDGET), (self.invalid_fail, Fault.INVALID),
                            (self.depth_fail, Fault.DEPTH)):
            a.bind(label)
            if kind is Fault.BUDGET:
                a.store(_ctx("budget_block"), TMP, QWORD)
            else:
                a.store(_ctx("fault_pc"), TMP, QWORD)
            a.store_imm(_ctx("fault"), kind, QWORD)
            a.jmp(self.fault_exit)

    @staticmethod
    def _charge_template(length: int) -> Template:
        """Take a block's length off the budget; when that goes below zero, the
        jump (its rel32 ends the code) goes to the block's cold stub, which
        _budget_stubs places and which reports the block."""

        def charge(a: X86Assembler, holes: list[Label]) -> None:
            a.alu_ri(AluOp.SUB, BUDGET, length)
            a.jcc(Cond.B, holes[0])

        template = _CHARGES[length] = _template(("charge", length), charge)
        assert template[1] == ((len(template[0]) - REL32_SIZE, 0),), "one branch, at the end"
        return template

    def _budget_stubs(self) -> None:
        """Each block's budget stub: its index into ecx, a call of the refill
        (which returns when the run's budget holds the block), then back to
        the block, past its charge."""
        code, index_at, call_at, jmp_at = _budget_stub()
        refill = _position(self.budget_refill)
        data = self.asm.buf.data
        u32 = _U32.pack_into
        for block_index, hole in enumerate(self.budget_stubs):
            at = len(data)
            patch_rel32(data, hole, at)
            data += code
            u32(data, at + index_at, block_index)
            patch_rel32(data, at + call_at, refill)
            patch_rel32(data, at + jmp_at, hole + REL32_SIZE)

    def _refill(self) -> None:
        """A block's charge took the budget register below zero (in: ecx =
        the block's index). When the run's budget (register + reserve) is
        spent too: the budget fault. Else call the poll, which lets Python
        handle a pending signal, and refill the register with up to
        BUDGET_SLICE instructions of the reserve (see context.BUDGET_SLICE)."""
        a = self.asm
        spent, full = a.new_label(), a.new_label()
        live = (X.RAX, X.RDI, X.RSI, X.RDX, X.R8, X.R9, ADDR)  # seven: the call stays aligned
        a.bind(self.budget_refill)
        a.load(ADDR, _ctx("budget_reserve"), QWORD)
        a.alu_rr(AluOp.ADD, ADDR, BUDGET)  # what the run has left after this block
        a.jcc(Cond.S, spent)
        a.store(_ctx("budget_block"), TMP, QWORD)
        for reg in live:
            a.push(reg)
        a.store_imm(_ctx("fault"), Fault.POLL, QWORD)  # the poll clears it when it runs
        a.load(TMP, _ctx("poll_fn"), QWORD)
        a.call_r(TMP)
        for reg in reversed(live):
            a.pop(reg)
        a.mov_rr(BUDGET, ADDR)  # the call clobbered it: the charged value, for a fault
        a.alu_rm(AluOp.SUB, BUDGET, _ctx("budget_reserve"))
        a.alu_mi(AluOp.CMP, _ctx("fault"), 0)
        a.jcc(Cond.NE, self.fault_exit)
        a.mov_ri(BUDGET, BUDGET_SLICE, w64=False)
        a.alu_rr(AluOp.CMP, ADDR, BUDGET)
        a.jcc(Cond.AE, full)
        a.mov_rr(BUDGET, ADDR)
        a.bind(full)
        a.alu_rr(AluOp.SUB, ADDR, BUDGET)
        a.store(_ctx("budget_reserve"), ADDR, QWORD)
        a.ret()
        a.bind(spent)  # the register holds what the run has left, below zero
        a.mov_rr(BUDGET, ADDR)
        a.store_imm(_ctx("budget_reserve"), 0, QWORD)
        a.jmp(self.budget_fail)

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
        template = _TEMPLATES.get(("check", base, off, size, store))
        if template is None:

            def check(a: X86Assembler, holes: list[Label]) -> None:
                a.lea(TMP, operand)
                a.alu_rm(AluOp.SUB, TMP, _ctx("in_ptr"))
                a.alu_rm(AluOp.CMP, TMP, _ctx("p_wcnt" if store else "p_cnt", SIZE_INDEX[size]))
                a.jcc(Cond.AE, holes[0])

            template = _template(("check", base, off, size, store), check)
            assert template[1] == ((len(template[0]) - REL32_SIZE, 0),), "one branch, at the end"
        data = self.asm.buf.data
        data += template[0]
        self.access_stubs.append((len(data) - REL32_SIZE, base, off,
                                  (pc << FAULT_INFO_SHIFT) | (size << 1) | int(store)))
        return operand

    def _access_stubs(self) -> None:
        """The cold stubs of the checked accesses: the address into r11, the
        fault info into ecx, a call of the region-table walk (which returns
        when some region allows the access), then back to the access, which
        follows its check's rel32."""
        data = self.asm.buf.data
        slowpath = _position(self.slowpath)
        u32 = _U32.pack_into
        for hole, base, off, info in self.access_stubs:
            stub = len(data)
            patch_rel32(data, hole, stub)
            code, info_at, call_at, jmp_at = _access_stub(base, off)
            data += code
            u32(data, stub + info_at, info)
            patch_rel32(data, stub + call_at, slowpath)
            patch_rel32(data, stub + jmp_at, hole + REL32_SIZE)  # back to the access

    def _slowpath(self) -> None:
        """Walk the region table for [r11, r11 + size); return if allowed, else
        record a memory fault. In: r11 = address, ecx = fault_info."""
        a = self.asm
        entry = RegionEntry
        scratch = (X.RAX, X.RDX, X.RSI, X.RDI)
        loop, nxt, fail, found = (a.new_label() for _ in range(4))
        a.bind(self.slowpath)
        for reg in scratch:
            a.push(reg)
        a.load(X.RSI, _ctx("regions"), QWORD)
        a.load(X.RDI, _ctx("nregions"), QWORD)
        a.mov_rr(X.RDX, TMP, w64=False)
        a.shift_ri(ShiftOp.SHR, X.RDX, 1, w64=False)
        a.alu_ri(AluOp.AND, X.RDX, _INFO_LOW_MASK >> 1, w64=False)  # the access size
        a.bind(loop)
        a.test_rr(X.RDI, X.RDI)
        a.jcc(Cond.E, fail)
        a.mov_rr(X.RAX, ADDR)
        a.alu_rm(AluOp.SUB, X.RAX, Mem(X.RSI, entry.start.offset))
        a.jcc(Cond.B, nxt)  # below the region
        a.alu_rm(AluOp.CMP, X.RAX, Mem(X.RSI, entry.size.offset))
        a.jcc(Cond.A, nxt)  # starts past its end
        a.alu_rr(AluOp.ADD, X.RAX, X.RDX)
        a.alu_rm(AluOp.CMP, X.RAX, Mem(X.RSI, entry.size.offset))
        a.jcc(Cond.A, nxt)  # ends past its end
        a.test_ri(TMP, 1, w64=False)
        a.jcc(Cond.E, found)  # a load
        a.alu_mi(AluOp.CMP, Mem(X.RSI, entry.writable.offset), 0)
        a.jcc(Cond.NE, found)
        a.bind(nxt)
        a.alu_ri(AluOp.ADD, X.RSI, _sizeof(entry))
        a.alu_ri(AluOp.SUB, X.RDI, 1)
        a.jmp(loop)
        a.bind(found)
        for reg in reversed(scratch):
            a.pop(reg)
        a.ret()
        a.bind(fail)
        a.store(_ctx("fault_addr"), ADDR, QWORD)
        a.store(_ctx("fault_info"), TMP, QWORD)
        a.store_imm(_ctx("fault"), Fault.MEMORY, QWORD)
        a.jmp(self.fault_exit)

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
        _EMITTERS[row.form](self, insn, row)
        if len(self.cold) != cold:
            return
        form = row.form
        if form in _POSITION_FREE_FORMS:
            if len(stubs) == nstubs:
                code = buf.local_bytes(start, fixups)
                if code is not None:
                    _remember(self.insn_cache, key, code)
            elif (len(stubs) == nstubs + 1 and id(row) in _FUSABLE_ROWS
                  and len(buf.fixups) == fixups):
                hole, base, off, info = stubs[-1]
                _remember(self.holed_cache, key, (bytes(buf.data[start:]), hole - start, base, off,
                                                  info & _INFO_LOW_MASK))
        elif form in _JUMP_FORMS and len(buf.fixups) == fixups + 1:
            delta = 1 + (insn.imm if form is Form.JA32 else insn.off)
            at, label = buf.fixups[-1]
            if at == len(buf.data) - REL32_SIZE and label is self.labels.get(insn.pc + delta):
                _remember(self.holed_cache, key, (bytes(buf.data[start:]), delta))

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


_RUNTIME_LABELS = ("exit_main", "terminate", "fault_exit", "slowpath", "budget_fail",
                   "invalid_fail", "depth_fail", "budget_refill")
"""Labels inside the shared runtime code that program code jumps to."""
_RUNTIME_CACHE: tuple[bytes, dict[str, int], int, int] | None = None


def _cache_runtime(code: bytes, labels: dict[str, int], repeat_entry: int,
                   batch_entry: int) -> None:
    global _RUNTIME_CACHE
    _RUNTIME_CACHE = (code, labels, repeat_entry, batch_entry)


def _position(label: Label) -> int:
    assert label.position is not None, "runtime labels are bound"
    return label.position


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
        base = insn.src if row.form is Form.LDX else insn.dst if row.form in _MEMORY_FORMS else -1
        if base == MAX_REG:
            deepest = max(deepest, -insn.off)
        value_regs = [insn.src] if row.src is not Reg.NONE and row.form is not Form.LDX else []
        if row.dst is not Reg.NONE and row.form not in _MEMORY_FORMS:
            value_regs.append(insn.dst)
        if MAX_REG in value_regs:
            return size
    return min(size, -(-deepest // QWORD) * QWORD)


_MEMORY_FORMS = frozenset({Form.ST, Form.STX, Form.ATOMIC})


def _sizeof(entry: type[RegionEntry]) -> int:
    return ctypes.sizeof(entry)


class _Group(NamedTuple):
    """Accesses of one block through one base register that no instruction
    between them writes: `members` are their positions in the block, and
    [base + low, base + low + span) covers all of them."""

    base: int
    low: int
    span: int
    store: bool
    members: tuple[int, ...]


_FUSABLE_ROWS = frozenset(id(row) for row in OPS
                          if row.form in (Form.LDX, Form.ST, Form.STX))
"""ids of the rows whose access checks can be fused (hashing a row itself
runs Python code). The base is src for LDX, dst for ST and STX."""

_LOAD, _STORE, _BARRIER, _WRITES_DST, _WRITES_SRC = 1, 2, 4, 8, 16
"""What _fused_groups needs to know of a row, as bits."""
_ACCESS = _LOAD | _STORE


def _fuse_kind(row: OpInfo) -> int:
    if row.form is Form.LDX:
        return _LOAD | _WRITES_DST
    if row.form in (Form.ST, Form.STX):
        return _STORE
    if row.form is Form.ATOMIC:
        return _BARRIER  # it may write its source register, and r0
    return (_WRITES_DST if row.dst is Reg.WRITE else 0) | (
        _WRITES_SRC if row.src is Reg.WRITE else 0)


_FUSE_KINDS = {id(row): _fuse_kind(row) for row in OPS}
_FUSABLE_OPCODE = bytes(
    any(id(row) in _FUSABLE_ROWS for row in BY_OPCODE[opcode]) for opcode in range(256))
"""1 for the opcodes some fusable row has: a cheap first filter."""
_OPCODE_OF = operator.itemgetter(1)  # Insn.opcode, read from C


def _fused_groups(block: list[Insn]) -> list[_Group]:
    """The groups of two or more checked accesses in `block` (see _Group)."""
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
    groups: list[_Group] = []
    for base, members in closed:
        if len(members) > 1:
            low = min(member[1] for member in members)
            high = max(member[1] + member[2] for member in members)
            groups.append(_Group(base, low, high - low, any(member[3] for member in members),
                                 tuple(member[0] for member in members)))
    return groups


def _fused_check(group: _Group) -> Template:
    """Whether [base + low, base + low + span) lies in the input (and it is
    writable, for a group with a store). A span of at most 8 bytes is checked
    like one access of the next access size up (which may refuse a span that
    ends within the last 7 bytes: the checked copy then decides). A longer
    span is checked at its first byte, then at its last, which cannot wrap
    once the first is inside."""
    fits = [size for size in ACCESS_SIZES if size >= group.span]
    count = _ctx("p_wcnt" if group.store else "p_cnt", SIZE_INDEX[fits[0] if fits else 1])

    def build(a: X86Assembler, holes: list[Label]) -> None:
        a.lea(TMP, Mem(REG_MAP[group.base], group.low))
        a.alu_rm(AluOp.SUB, TMP, _ctx("in_ptr"))
        a.alu_rm(AluOp.CMP, TMP, count)
        a.jcc(Cond.AE, holes[0])
        if not fits:
            a.alu_ri(AluOp.ADD, TMP, group.span - 1)
            a.alu_rm(AluOp.CMP, TMP, count)
            a.jcc(Cond.AE, holes[0])

    return _template(("fused", group.base, group.low, group.span, group.store), build)


def _falls_through(insn: Insn) -> bool:
    return insn.row is not None and id(insn.row) not in _ENDS_BLOCK


# -- emitters, one per form ----------------------------------------------------


def _emit_alu(t: _Translator, insn: Insn, row: OpInfo) -> None:
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
    elif op == "mov":
        if reg_src:
            a.mov_rr(d, s, w64)
        else:
            a.mov_ri(d, imm, w64)
    elif op == "movsx":
        a.movsx_rr(d, s, (row.off or 0) // 8, w64)
    elif op == "mul":
        if reg_src:
            a.imul_rr(d, s, w64)
        else:
            a.imul_rri(d, d, imm, w64)
    elif op in _SHIFTS:
        _emit_shift(t, insn, row, d, s if reg_src else None)
    elif op == "neg":
        a.neg(d, w64)
    else:
        _emit_divmod(t, insn, row)


def _emit_shift(t: _Translator, insn: Insn, row: OpInfo, d: X, s: X | None) -> None:
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


def _emit_divmod(t: _Translator, insn: Insn, row: OpInfo) -> None:
    """div/mod/sdiv/smod: zero divisor and INT_MIN / -1 follow the ISA."""
    a = t.asm
    w64 = row.width == 64
    d = REG_MAP[insn.dst]
    signed = row.op in ("sdiv", "smod")
    remainder = row.op in ("mod", "smod")
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


def _divide_by_zero(t: _Translator, d: X, w64: bool, remainder: bool) -> None:
    if not remainder:
        t.asm.xor_zero(d)
    elif not w64:
        t.asm.mov_rr(d, d, w64=False)  # mod32 by zero keeps the low half only


def _divide_by_minus_one(t: _Translator, d: X, w64: bool, remainder: bool) -> None:
    if remainder:
        t.asm.xor_zero(d)
    else:
        t.asm.neg(d, w64)  # INT_MIN / -1 wraps to INT_MIN, like neg


def _emit_endian(t: _Translator, insn: Insn, row: OpInfo) -> None:
    a = t.asm
    d = REG_MAP[insn.dst]
    swap = row.op != "le"
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


def _emit_lddw(t: _Translator, insn: Insn, row: OpInfo) -> None:
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


def _emit_ldx(t: _Translator, insn: Insn, row: OpInfo) -> None:
    mem = t._address(insn.src, insn.off, row.size, False, insn.pc)
    t.asm.load(REG_MAP[insn.dst], mem, row.size, signed=row.signed)


def _emit_st(t: _Translator, insn: Insn, row: OpInfo) -> None:
    mem = t._address(insn.dst, insn.off, row.size, True, insn.pc)
    t.asm.store_imm(mem, insn.imm, row.size)


def _emit_stx(t: _Translator, insn: Insn, row: OpInfo) -> None:
    mem = t._address(insn.dst, insn.off, row.size, True, insn.pc)
    t.asm.store(mem, REG_MAP[insn.src], row.size)


def _emit_atomic(t: _Translator, insn: Insn, row: OpInfo) -> None:
    a = t.asm
    w64 = row.width == 64
    a.lea(ADDR, t._address(insn.dst, insn.off, row.size, True, insn.pc))
    mem = Mem(ADDR, 0)  # the cmpxchg loop below may overwrite the base register
    s = REG_MAP[insn.src]
    op = row.op
    if op in _ATOMIC_ALU:
        a.lock_alu_mr(_ATOMIC_ALU[op], mem, s, w64)
    elif op == "fetch_add":
        a.mov_rr(TMP, s, w64)
        a.lock_xadd(mem, TMP, w64)
        a.mov_rr(s, TMP, w64)
    elif op == "xchg":
        a.mov_rr(TMP, s, w64)
        a.xchg_mr(mem, TMP, w64)
        a.mov_rr(s, TMP, w64)
    elif op == "cmpxchg":
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
        a.alu_rr(_ATOMIC_ALU[op.removeprefix("fetch_")], TMP, BUDGET, w64)
        a.lock_cmpxchg(mem, TMP, w64)
        a.jcc(Cond.NE, retry)
        a.mov_rr(TMP, X.RAX, w64)
        a.pop(X.RAX)
        a.pop(BUDGET)
        a.mov_rr(s, TMP, w64)


def _emit_ja(t: _Translator, insn: Insn, row: OpInfo) -> None:
    delta = insn.imm if row.form is Form.JA32 else insn.off
    t.jump_to(insn, insn.pc + 1 + delta, None)


def _emit_jcc(t: _Translator, insn: Insn, row: OpInfo) -> None:
    a = t.asm
    w64 = row.width == 64
    d = REG_MAP[insn.dst]
    if row.form is Form.JCC_X:
        s = REG_MAP[insn.src]
        if row.op == "jset":
            a.test_rr(d, s, w64)
        else:
            a.alu_rr(AluOp.CMP, d, s, w64)
    elif row.op == "jset":
        a.test_ri(d, insn.imm, w64)
    else:
        a.alu_ri(AluOp.CMP, d, insn.imm, w64)
    t.jump_to(insn, insn.pc + 1 + insn.off, _CONDITIONS[row.op])


def _emit_call(t: _Translator, insn: Insn, row: OpInfo) -> None:
    """Helper call through the Python trampoline: tramp(id, r1, ..., r5)."""
    if t.tail is not None and t.tail.emit(t, insn, row, _emit_call):  # a native tail call
        return
    a = t.asm
    if row.form is Form.CALLX:
        a.mov_rr(ADDR, REG_MAP[insn.dst])
    else:
        a.mov_ri(ADDR, insn.imm & M32, w64=False)
    a.store_imm(_ctx("helper_pc"), insn.pc, QWORD)
    if t.metered:  # the run's budget left (register + reserve), for the helper
        a.load(TMP, _ctx("budget_reserve"), QWORD)
        a.alu_rr(AluOp.ADD, TMP, BUDGET)
        a.store(_ctx("budget_left"), TMP, QWORD)
    # The trampoline clears this mark first thing: if a signal handler raised
    # at its entry, its body never ran (and its return value is garbage).
    a.store_imm(_ctx("fault"), Fault.INTERRUPT, QWORD)
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
    a.load(ADDR, _ctx("helper_fn"), QWORD)
    a.call_r(ADDR)
    for reg in reversed(HELPER_SAVED):
        a.pop(reg)
    if t.metered:  # what the helper left of it, less the reserve it may have cut
        a.load(BUDGET, _ctx("budget_left"), QWORD)
        a.alu_rm(AluOp.SUB, BUDGET, _ctx("budget_reserve"))
    a.alu_mi(AluOp.CMP, _ctx("fault"), 0)
    a.jcc(Cond.NE, t.fault_exit)


def _emit_call_local(t: _Translator, insn: Insn, _row: OpInfo) -> None:
    a = t.asm
    target = t.label(insn.pc + 1 + insn.imm)
    if target is None:
        t._to_invalid(insn, f"local call to {insn.pc + 1 + insn.imm}, which is not an instruction")
        return
    ok = a.new_label()
    a.alu_mi(AluOp.CMP, _ctx("depth"), MAX_CALL_DEPTH - 1)
    a.jcc(Cond.B, ok)
    a.mov_ri(TMP, insn.pc, w64=False)
    a.jmp(t.depth_fail)
    a.bind(ok)
    a.alu_mi(AluOp.ADD, _ctx("depth"), 1)
    for reg in LOCAL_CALL_SAVED:
        a.push(reg)
    a.alu_ri(AluOp.SUB, REG_MAP[10], FRAME_SIZE)
    a.call(target)
    for reg in reversed(LOCAL_CALL_SAVED):
        a.pop(reg)
    a.alu_mi(AluOp.SUB, _ctx("depth"), 1)


def _emit_call_runtime(t: _Translator, insn: Insn, _row: OpInfo) -> None:
    t._to_invalid(insn, "calls by BTF id (kfuncs) are not supported")


def _emit_exit(t: _Translator, _insn: Insn, _row: OpInfo) -> None:
    a = t.asm
    a.alu_mi(AluOp.CMP, _ctx("depth"), 0)
    a.jcc(Cond.E, t.exit_main)
    a.ret()


def _emit_ld_packet(t: _Translator, insn: Insn, row: OpInfo) -> None:
    """Legacy LD_ABS/LD_IND: big-endian load from the input into r0; out of
    bounds ends the program with r0 = 0, as in the kernel."""
    a = t.asm
    size = row.size
    if row.form is Form.LD_ABS:
        a.mov_ri(TMP, insn.imm, w64=True)
    else:
        a.mov_rr(TMP, REG_MAP[insn.src])
        a.alu_ri(AluOp.ADD, TMP, insn.imm)
    out = a.new_label()
    a.alu_rm(AluOp.CMP, TMP, _ctx("p_cnt", SIZE_INDEX[size]))
    a.jcc(Cond.AE, out)
    a.load(ADDR, _ctx("in_ptr"), QWORD)
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


_EMITTERS: dict[Form, Callable[[_Translator, Insn, OpInfo], None]] = {
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


def translate(insns: Sequence[Insn], *, context: int, checked: bool = True,
              stack_clear: int | None = None, record: bool = False,
              metered: bool | None = None, tail: TailPlan | None = None) -> JitCode:
    """Translate decoded instructions to x86-64 machine code that runs with the
    JitContext at address `context`. Each run clears `stack_clear` bytes below
    r10 (by default what the program can observe, see observable_stack).
    `record` fills JitCode.pc_offsets; the code is the same either way.
    `metered` (default: `checked`) makes blocks charge the budget: unchecked
    code charges it only when asked (a run with a budget). `tail` makes tail
    calls native jumps (see tailcall.TailPlan)."""
    charged = checked if metered is None else metered or checked
    return _Translator(insns, checked, context, stack_clear, record, charged, tail).translate()
