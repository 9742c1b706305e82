"""x86-64 runtime stubs: the entry, the exits and the cold code a program's
blocks call, plus the register map and context operands every x86-64 piece
shares. No machine-code bytes here: every instruction goes through
:class:`~ebpfvm.jit.x86_64.X86Assembler`.

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
import struct
from collections.abc import Callable

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
from .plan import JitCaches, Template
from .x86_64 import AluOp, Cond, Label, Mem, ShiftOp, X86Assembler
from .x86_64 import Reg as X

__all__ = ["REG_MAP", "X86Stubs"]

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


@functools.cache
def ctx_mem(name: str, index: int = 0) -> Mem:
    """The memory operand of the JitContext field `name` (its `index`th qword)."""
    return Mem(CTX, field_offset(name) + index * QWORD)


_TEMPLATE_HOLES = 4


def place_template(caches: JitCaches, key: tuple[object, ...],
                   build: Callable[[X86Assembler, list[Label]], None]) -> Template:
    """The code `build` emits, built once per `key` (which must name everything
    `build` depends on). `build` gets placeholder labels to branch to and binds none."""
    template = caches.templates.get(key)
    if template is None:
        scratch = X86Assembler()
        holes = [Label(f"hole {index}") for index in range(_TEMPLATE_HOLES)]
        build(scratch, holes)
        refs = tuple((offset, holes.index(label)) for offset, label in scratch.buf.fixups)
        template = (bytes(scratch.buf.data), refs)
        caches.remember(caches.templates, key, template)
    return template


INFO_LOW_MASK = (1 << FAULT_INFO_SHIFT) - 1
_U32 = struct.Struct("<I")
_INFO_MARK = (1 << 31) - 1
"""The imm32 stub templates are built with; their builders assert where it sits."""
_BUDGET_STUB_KEY = ("budget",)


def _mov_tmp_imm32(a: X86Assembler) -> int:
    """``mov ecx, imm32`` with a placeholder imm32; returns where the imm32 sits."""
    a.mov_ri(TMP, _INFO_MARK, w64=False)
    at = a.buf.position - _U32.size
    assert _U32.unpack_from(a.buf.data, at)[0] == _INFO_MARK, "mov r32, imm32 ends in imm32"
    return at



def _budget_stub(caches: JitCaches) -> tuple[bytes, int, int, int]:
    """A block's budget stub: (code, offset of the block index u32, of the
    call's rel32, of the jump's rel32), see X86Stubs._budget_stubs."""
    stub = caches.stubs.get(_BUDGET_STUB_KEY)
    if stub is None:
        a = X86Assembler()
        index_at = _mov_tmp_imm32(a)
        a.call(Label("hole"))
        call_at = a.buf.position - REL32_SIZE
        a.jmp(Label("hole"))
        stub = (bytes(a.buf.data), index_at, call_at, a.buf.position - REL32_SIZE)
        caches.remember(caches.stubs, _BUDGET_STUB_KEY, stub)
    return stub


def _access_stub(caches: JitCaches, base: int, off: int) -> tuple[bytes, int, int, int]:
    """The cold stub of a checked access through ``[base + off]``: (code,
    offset of its fault info u32, of its call's rel32, of its jump's rel32)."""
    stub = caches.stubs.get((base, off))
    if stub is None:
        a = X86Assembler()
        hole = Label("hole")
        a.lea(ADDR, Mem(REG_MAP[base], off))
        info_at = _mov_tmp_imm32(a)
        a.call(hole)
        call_at = a.buf.position - REL32_SIZE
        a.jmp(hole)
        jmp_at = a.buf.position - REL32_SIZE
        stub = (bytes(a.buf.data), info_at, call_at, jmp_at)
        caches.remember(caches.stubs, (base, off), stub)
    return stub


RUNTIME_LABELS = ("exit_main", "terminate", "fault_exit", "slowpath", "budget_fail",
                  "invalid_fail", "depth_fail", "budget_refill", "rt_check", "rt_charged")
"""Labels inside the shared runtime code that program code jumps to."""


def position(label: Label) -> int:
    """Where a bound label sits."""
    assert label.position is not None, "runtime labels are bound"
    return label.position


def _sizeof(entry: type[RegionEntry]) -> int:
    return ctypes.sizeof(entry)


class X86Stubs:
    """The code around a program's blocks: the runtime every program shares
    (epilogues, fault exits, the budget refill, the region-table walk, the
    native loops), the entry, and the per-block and per-access cold stubs.
    The translator (x86_codegen) derives from it."""

    def __init__(self, context: int, stack_clear: int, caches: JitCaches) -> None:
        self.context = context
        self.stack_clear = stack_clear
        self.caches = caches
        self.asm = X86Assembler()
        a = self.asm
        self.exit_main = a.new_label()
        self.terminate = a.new_label()
        self.fault_exit = a.new_label()
        self.slowpath = a.new_label()
        self.budget_fail = a.new_label()
        self.budget_refill = a.new_label()
        self.invalid_fail = a.new_label()
        self.depth_fail = a.new_label()
        self.entry_label = a.new_label()
        self.rt_check = a.new_label()
        self.rt_charged = a.new_label()
        self.budget_stubs: list[int] = []
        """Per block, the offset of its budget charge's rel32 (see _budget_stubs)."""
        self.access_stubs: list[tuple[int, int, int, int]] = []
        """The checked accesses, whose stubs go in cold code: (offset of the
        check's rel32, base, off, fault info), see _access_stubs."""

    def _runtime(self) -> tuple[int, int]:
        """The program-independent code, placed first: epilogues, fault exits,
        the region-table walk and the native loops, which call the entry placed
        right after them. It is the same bytes for every program, so it is
        built once per process and copied after that."""
        a = self.asm
        cached = self.caches.runtime
        if cached is not None:
            code, labels, repeat_entry, batch_entry = cached
            a.buf.emit(code)
            for name, at in labels.items():
                getattr(self, name).position = at
            return repeat_entry, batch_entry
        self._epilogues()
        self._slowpath()
        self._refill()
        self._rt_stubs()
        repeat_entry = a.buf.position
        repeat_driver(a, self.entry_label)
        batch_entry = a.buf.position
        batch_driver(a, self.entry_label)
        return repeat_entry, batch_entry

    def share_runtime(self, parent: X86Stubs) -> None:
        """Emit into `parent`'s code, with its runtime labels (a trusted unit
        linked into a program, see x86_rtcalls)."""
        self.asm = parent.asm
        for name in (*RUNTIME_LABELS, "entry_label"):
            setattr(self, name, getattr(parent, name))

    def _keep_runtime(self, code: bytes, repeat_entry: int, batch_entry: int) -> None:
        """Remember the runtime code just built (`code`: the bytes before the entry)."""
        if self.caches.runtime is None:
            labels = {name: position(getattr(self, name)) for name in RUNTIME_LABELS}
            self.caches.runtime = (code, labels, repeat_entry, batch_entry)

    # -- entry and exits ------------------------------------------------------

    def _prologue(self) -> None:
        """The entry's code depends on the stack bytes to clear and, in one
        imm64, on the context address: it is built once per size and patched."""
        a = self.asm
        buf = a.buf
        start = len(buf.data)
        clear = self.stack_clear
        cached = self.caches.prologues.get(clear)
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
        a.store(ctx_mem("saved_rsp"), X.RSP, QWORD)
        self._zero_stack(clear)
        self._resolve_bytearray()
        self._input_bounds()
        a.store_imm(ctx_mem("depth"), 0, QWORD)
        self._fixed_mbuff()
        a.load(REG_MAP[1], ctx_mem("r1_run"), QWORD)
        a.load(REG_MAP[2], ctx_mem("in_r2"), QWORD)
        a.load(REG_MAP[10], ctx_mem("s_top"), QWORD)
        a.load(BUDGET, ctx_mem("in_budget"), QWORD)
        a.load(X.RAX, ctx_mem("in_reserve"), QWORD)
        a.store(ctx_mem("budget_reserve"), X.RAX, QWORD)
        for ebpf in (0, 3, 4, 5, 6, 7, 8, 9):
            a.xor_zero(REG_MAP[ebpf])
        built = buf.local_bytes(start, fixups)
        assert built is not None, "the prologue branches only inside itself"
        self.caches.remember(self.caches.prologues, clear, (built, context_at))

    def _callback_entry(self) -> int:
        """A second entry, for programs that refer to callbacks: Python calls
        it from a helper (bpf_loop...) to run one callback as a local call
        with its own frame (cb_r10), r1..r5 (cb_args) and the run's budget
        (cb_budget; Python sets depth and keeps saved_rsp). The callback's
        exit returns here and ends through exit_main; a fault unwinds to this
        entry's frame (saved_rsp), so Python sees it at once. Returns its offset."""
        a = self.asm
        start = a.buf.position
        for reg in CALLEE_SAVED:
            a.push(reg)
        a.alu_ri(AluOp.SUB, X.RSP, ALIGN_PAD)
        a.mov_ri64(CTX, self.context)
        a.store(ctx_mem("saved_rsp"), X.RSP, QWORD)
        for ebpf in range(1, 6):
            a.load(REG_MAP[ebpf], ctx_mem("cb_args", ebpf - 1), QWORD)
        for ebpf in (0, 6, 7, 8, 9):
            a.xor_zero(REG_MAP[ebpf])
        a.load(REG_MAP[10], ctx_mem("cb_r10"), QWORD)
        a.load(BUDGET, ctx_mem("cb_budget"), QWORD)
        a.load(ADDR, ctx_mem("cb_target"), QWORD)
        # A local call pushes five registers first: the callee's stack sits
        # 8 mod 16 lower than the caller's, and its helper calls rely on it.
        a.alu_ri(AluOp.SUB, X.RSP, QWORD)
        a.call_r(ADDR)
        a.alu_ri(AluOp.ADD, X.RSP, QWORD)
        a.jmp(self.exit_main)
        return start

    def _zero_stack(self, size: int) -> None:
        """No run sees another run's stack. Only the bytes the program can
        reach need clearing (see observable_stack); a few stores beat rep stos."""
        a = self.asm
        if not size:
            return
        a.xor_zero(X.RAX)
        a.load(X.RDI, ctx_mem("s_top"), QWORD)
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
        a.load(X.RAX, ctx_mem("in_arg"), QWORD)
        a.load(X.RDX, ctx_mem("in_r1"), QWORD)
        a.load(X.RCX, ctx_mem("in_flags"), QWORD)
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
        a.store(ctx_mem("in_ptr"), X.RAX, QWORD)
        a.store(ctx_mem("r1_run"), X.RDX, QWORD)

    def _input_bounds(self) -> None:
        """Valid-offset counts of the input per access size, and its region entry."""
        a = self.asm
        a.load(X.RDX, ctx_mem("in_len"), QWORD)
        a.load(ADDR, ctx_mem("in_wmask"), QWORD)
        for index, size in enumerate(ACCESS_SIZES):
            a.mov_rr(X.RAX, X.RDX)
            if size > 1:
                fits = a.new_label()
                a.alu_ri(AluOp.SUB, X.RAX, size - 1)
                a.jcc(Cond.AE, fits)
                a.xor_zero(X.RAX)
                a.bind(fits)
            a.store(ctx_mem("p_cnt", index), X.RAX, QWORD)
            a.store(ctx_mem("k_cnt", index), X.RAX, QWORD)
            a.alu_rr(AluOp.AND, X.RAX, ADDR)
            a.store(ctx_mem("p_wcnt", index), X.RAX, QWORD)
        entry = RegionEntry
        a.load(X.RCX, ctx_mem("regions"), QWORD)
        a.load(X.RAX, ctx_mem("in_ptr"), QWORD)
        a.store(ctx_mem("k_ptr"), X.RAX, QWORD)
        base = _sizeof(entry)  # entry 1: the input
        a.store(Mem(X.RCX, base + entry.start.offset), X.RAX, QWORD)
        a.store(Mem(X.RCX, base + entry.size.offset), X.RDX, QWORD)
        a.store(Mem(X.RCX, base + entry.writable.offset), ADDR, QWORD)
        a.load(X.RAX, ctx_mem("in_nregions"), QWORD)
        a.store(ctx_mem("nregions"), X.RAX, QWORD)

    def _fixed_mbuff(self) -> None:
        """EbpfVmFixedMbuff: store the input's start and end into the mbuff."""
        a = self.asm
        skip = a.new_label()
        a.load(X.RCX, ctx_mem("mbuff"), QWORD)
        a.test_rr(X.RCX, X.RCX)
        a.jcc(Cond.E, skip)
        a.load(X.RAX, ctx_mem("in_ptr"), QWORD)
        a.mov_rr(ADDR, X.RCX)
        a.alu_rm(AluOp.ADD, ADDR, ctx_mem("data_off"))
        a.store(Mem(ADDR), X.RAX, QWORD)
        a.alu_rm(AluOp.ADD, X.RAX, ctx_mem("in_len"))
        a.mov_rr(ADDR, X.RCX)
        a.alu_rm(AluOp.ADD, ADDR, ctx_mem("data_end_off"))
        a.store(Mem(ADDR), X.RAX, QWORD)
        a.bind(skip)

    def _epilogues(self) -> None:
        a = self.asm
        # Normal end: record the registers and the budget left.
        a.bind(self.exit_main)
        for ebpf, reg in REG_MAP.items():
            a.store(ctx_mem("regs_out", ebpf), reg, QWORD)
        a.store(ctx_mem("budget_left"), BUDGET, QWORD)
        restore = a.new_label()
        a.bind(restore)
        a.alu_ri(AluOp.ADD, X.RSP, ALIGN_PAD)
        for reg in reversed(CALLEE_SAVED):
            a.pop(reg)
        a.ret()
        # End from any call depth with r0 already set (legacy packet load out of bounds).
        a.bind(self.terminate)
        a.load(X.RSP, ctx_mem("saved_rsp"), QWORD)
        a.jmp(self.exit_main)
        # Faults: the reason is in the context; unwind the native stack. The
        # budget register tells Python how many instructions ran.
        a.bind(self.fault_exit)
        a.store(ctx_mem("budget_left"), BUDGET, QWORD)
        a.load(X.RSP, ctx_mem("saved_rsp"), QWORD)
        a.xor_zero(X.RAX)
        a.jmp(restore)
        for label, kind in ((self.budget_fail, Fault.BUDGET), (self.invalid_fail, Fault.INVALID),
                            (self.depth_fail, Fault.DEPTH)):
            a.bind(label)
            if kind is Fault.BUDGET:
                a.store(ctx_mem("budget_block"), TMP, QWORD)
            else:
                a.store(ctx_mem("fault_pc"), TMP, QWORD)
            a.store_imm(ctx_mem("fault"), kind, QWORD)
            a.jmp(self.fault_exit)


    def _charge_template(self, length: int) -> Template:
        """Take a block's length off the budget; when that goes below zero, the
        jump (its rel32 ends the code) goes to the block's cold stub, which
        _budget_stubs places and which reports the block."""

        def charge(a: X86Assembler, holes: list[Label]) -> None:
            a.alu_ri(AluOp.SUB, BUDGET, length)
            a.jcc(Cond.B, holes[0])

        template = place_template(self.caches, ("charge", length), charge)
        self.caches.remember(self.caches.charges, length, template)
        assert template[1] == ((len(template[0]) - REL32_SIZE, 0),), "one branch, at the end"
        return template

    def _budget_stubs(self) -> None:
        """Each block's budget stub: its index into ecx, a call of the refill
        (which returns when the run's budget holds the block), then back to
        the block, past its charge."""
        code, index_at, call_at, jmp_at = _budget_stub(self.caches)
        refill = position(self.budget_refill)
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
        spent = a.new_label()
        live = (X.RAX, X.RDI, X.RSI, X.RDX, X.R8, X.R9, ADDR)  # seven: the call stays aligned
        a.bind(self.budget_refill)
        a.load(ADDR, ctx_mem("budget_reserve"), QWORD)
        a.alu_rr(AluOp.ADD, ADDR, BUDGET)  # what the run has left after this block
        a.jcc(Cond.S, spent)
        a.store(ctx_mem("budget_block"), TMP, QWORD)
        for reg in live:
            a.push(reg)
        a.store_imm(ctx_mem("fault"), Fault.POLL, QWORD)  # the poll clears it when it runs
        a.load(TMP, ctx_mem("poll_fn"), QWORD)
        a.call_r(TMP)
        for reg in reversed(live):
            a.pop(reg)
        a.mov_rr(BUDGET, ADDR)  # the call clobbered it: the charged value, for a fault
        a.alu_rm(AluOp.SUB, BUDGET, ctx_mem("budget_reserve"))
        a.alu_mi(AluOp.CMP, ctx_mem("fault"), 0)
        a.jcc(Cond.NE, self.fault_exit)
        take_slice(a)
        a.ret()
        a.bind(spent)  # the register holds what the run has left, below zero
        a.mov_rr(BUDGET, ADDR)
        a.store_imm(ctx_mem("budget_reserve"), 0, QWORD)
        a.jmp(self.budget_fail)

    def _rt_stubs(self) -> None:
        """The native runtime's intrinsics that are not inline (x86_rtcalls):
        rt_check walks the region table for [rdi, rdi + rsi) (a store when
        rdx != 0) with 64-bit sizes and returns rdi in rax, else records the
        fault (Fault.RT_MEMORY); rt_charged runs when a charge took the
        budget register below zero: it refills it from the reserve, or
        records the budget fault (Fault.RT_BUDGET). Both clobber only what a
        helper call may (r1-r5, rcx, r11)."""
        a = self.asm
        entry = RegionEntry
        loop, nxt, fail, done, spent = (a.new_label() for _ in range(5))
        a.bind(self.rt_check)
        a.mov_rr(X.RAX, X.RDI)
        a.test_rr(X.RSI, X.RSI)
        a.jcc(Cond.E, done)
        a.load(X.R8, ctx_mem("regions"), QWORD)
        a.load(X.R9, ctx_mem("nregions"), QWORD)
        a.bind(loop)
        a.test_rr(X.R9, X.R9)
        a.jcc(Cond.E, fail)
        a.mov_rr(TMP, X.RDI)
        a.alu_rm(AluOp.SUB, TMP, Mem(X.R8, entry.start.offset))
        a.jcc(Cond.B, nxt)  # below the region
        a.load(ADDR, Mem(X.R8, entry.size.offset), QWORD)
        a.alu_rr(AluOp.SUB, ADDR, TMP)
        a.jcc(Cond.B, nxt)  # starts past its end; else ADDR = the room left
        a.alu_rr(AluOp.CMP, X.RSI, ADDR)
        a.jcc(Cond.A, nxt)  # longer than the room
        a.test_rr(X.RDX, X.RDX)
        a.jcc(Cond.E, done)  # a load
        a.alu_mi(AluOp.CMP, Mem(X.R8, entry.writable.offset), 0)
        a.jcc(Cond.NE, done)
        a.bind(nxt)
        a.alu_ri(AluOp.ADD, X.R8, _sizeof(entry))
        a.alu_ri(AluOp.SUB, X.R9, 1)
        a.jmp(loop)
        a.bind(done)
        a.ret()
        a.bind(fail)
        a.store(ctx_mem("fault_addr"), X.RDI, QWORD)
        a.store(ctx_mem("fault_size"), X.RSI, QWORD)
        a.store(ctx_mem("fault_info"), X.RDX, QWORD)
        a.store_imm(ctx_mem("fault"), Fault.RT_MEMORY, QWORD)
        a.jmp(self.fault_exit)
        a.bind(self.rt_charged)
        a.load(ADDR, ctx_mem("budget_reserve"), QWORD)
        a.alu_rr(AluOp.ADD, ADDR, BUDGET)  # what the run has left after the charge
        a.jcc(Cond.S, spent)
        take_slice(a)
        a.ret()
        a.bind(spent)
        a.mov_rr(BUDGET, ADDR)
        a.store_imm(ctx_mem("budget_reserve"), 0, QWORD)
        a.store_imm(ctx_mem("fault"), Fault.RT_BUDGET, QWORD)
        a.jmp(self.fault_exit)

    def _access_stubs(self) -> None:
        """The cold stubs of the checked accesses: the address into r11, the
        fault info into ecx, a call of the region-table walk (which returns
        when some region allows the access), then back to the access, which
        follows its check's rel32."""
        data = self.asm.buf.data
        slowpath = position(self.slowpath)
        u32 = _U32.pack_into
        for hole, base, off, info in self.access_stubs:
            stub = len(data)
            patch_rel32(data, hole, stub)
            code, info_at, call_at, jmp_at = _access_stub(self.caches, base, off)
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
        a.load(X.RSI, ctx_mem("regions"), QWORD)
        a.load(X.RDI, ctx_mem("nregions"), QWORD)
        a.mov_rr(X.RDX, TMP, w64=False)
        a.shift_ri(ShiftOp.SHR, X.RDX, 1, w64=False)
        a.alu_ri(AluOp.AND, X.RDX, INFO_LOW_MASK >> 1, w64=False)  # the access size
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
        a.store(ctx_mem("fault_addr"), ADDR, QWORD)
        a.store(ctx_mem("fault_info"), TMP, QWORD)
        a.store_imm(ctx_mem("fault"), Fault.MEMORY, QWORD)
        a.jmp(self.fault_exit)


def take_slice(a: X86Assembler) -> None:
    """With ADDR = what the run has left: BUDGET = min(ADDR, BUDGET_SLICE)
    and the rest back into ctx.budget_reserve (a budget refill's last step,
    shared by the block refill and the tail-call charge)."""
    full = a.new_label()
    a.mov_ri(BUDGET, BUDGET_SLICE, w64=False)
    a.alu_rr(AluOp.CMP, ADDR, BUDGET)
    a.jcc(Cond.AE, full)
    a.mov_rr(BUDGET, ADDR)
    a.bind(full)
    a.alu_rr(AluOp.SUB, ADDR, BUDGET)
    a.store(ctx_mem("budget_reserve"), ADDR, QWORD)
