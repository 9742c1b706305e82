"""Random XDP programs that the Linux verifier accepts (hypothesis strategies).

Used by the kernel differential test (tests/test_kernel_differential.py) and
the long campaign (tools/kernel_campaign.py). Every instruction comes from a
row of :data:`ebpfvm.isa.OPS`; nothing here spells an opcode byte. Helpers
shared with the engine-only generator (:class:`progen.Op`, labels, layout,
edge values) come from tests/progen.py.

Shape of a program (``N`` = :data:`PACKET_MIN`, the packet is N..N+32 bytes):

* Prologue: r2 = ctx->data, r3 = ctx->data_end; ``if r2 + N > r3`` goes to a
  bail-out exit. The two pointers are spilled to the stack (fp-8, fp-16), so
  that r0-r9 are free to hold scalars only: the verifier keeps a spilled
  pointer's packet range, and a fill gives it back. The stack area the body
  uses is written in full, then r0-r9 get edge or random values (lddw, mov,
  mov32) or a load from the packet, so the verifier does not know them all.
* Body: units (runs of instructions that jumps never enter in the middle) with
  forward jumps between them (every JMP/JMP32 conditional in K and X form; ja
  and ja32 behind a conditional jump over them, since code that nothing can
  reach is refused), bounded loops (a counter in r6-r8 set to 1..4, a body that never
  writes it, one decrement and one backward conditional jump):
    - every ALU/ALU64 row (K and X forms, neg, le/be/bswap, movsx, signed and
      unsigned div/mod, with register divisors the verifier does not know,
      a third of them forced to 0 or -1 and some dividends to INT_MIN by
      shifts); immediate divisors are never 0 and immediate shifts stay
      below the width, as the verifier demands;
    - loads (also sign-extending), stores and atomics on the stack, aligned;
    - packet loads and stores, at constant offsets under the prologue's guard,
      or at a variable offset (a register masked to a few bits) under a guard
      of their own against data_end. The pointer lives in a register only
      inside the unit; the registers it borrows are saved to and restored
      from the stack around it;
    - local calls to subprograms placed after main (subprogram i only calls
      j > i). A subprogram initialises r0, r6-r9 and its stack area before
      reading them, and only reads r1-r5 as arguments; after a call the
      caller gives r1-r5 fresh values (the verifier forgets them).
* Epilogue: r0-r9 are stored as 64-bit words at the start of the packet (r9
  through a save slot, the pointer through a fill), then ``exit`` returns r0:
  the kernel's 32-bit retval and its output packet cover all 64-bit state.

All choices are read from one hypothesis byte string per program
(:class:`Choices`); hypothesis shrinks it, and tests/kernel_diff.py's
`reduce` then deletes single instructions of a divergent program.

Left out on purpose: atomics on packet memory (the verifier refuses them),
32-bit cmpxchg (kernel 6.18 may leave r0's upper half set after a successful
one, see shared/docs/notes.md, "The kernel as an oracle"; the ISA says it is
zero-extended), helper calls and the legacy ldabs/ldind loads (not part of an
XDP program).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import strategies as st

from ebpfvm.disasm import disassemble
from ebpfvm.isa import OPS, Cls, Form, OpInfo
from ebpfvm.isa import Op as IsaOp
from progen import EDGE_IMM32, EDGE_U64, Item, Label, Op, Unit, layout

__all__ = ["DUMP_SIZE", "PACKET_MIN", "Choices", "KCase", "build", "dump_registers", "kcases"]

T = TypeVar("T")

FP = 10
DATA_SLOT = -8
"""The spilled packet pointer (ctx->data)."""
END_SLOT = -16
"""The spilled ctx->data_end."""
SAVE_A = -24
SAVE_B = -32
"""Where a packet unit saves the registers it borrows."""
MAIN_AREA = (-104, -40)
SUB_AREA = (-64, 0)
"""[low, high) of the stack bytes random accesses use, main / subprograms.
Main's frame stays below the pointer and save slots; with three nested
subprograms the frames add up to well under the kernel's 512 bytes."""

DUMP_REGS = 10
DUMP_SIZE = 8 * DUMP_REGS
"""r0-r9 as 64-bit words at the start of the output packet."""
SCRATCH = 64
PACKET_MIN = DUMP_SIZE + SCRATCH
"""The prologue's guard: the packet holds at least this many bytes."""
PACKET_EXTRA = 32
XDP_MD_DATA = 0
XDP_MD_DATA_END = 4
BAIL_VERDICT = 1
LOOP_COUNTERS = (6, 7, 8)
VAR_MASKS = (7, 15, 31, 63)
MAX_SUBS = 3

# -- rows of the opcode table ------------------------------------------------------


def _rows(pred: Callable[[OpInfo], bool]) -> tuple[OpInfo, ...]:
    rows = tuple(row for row in OPS if pred(row))
    assert rows
    return rows


def _row(pred: Callable[[OpInfo], bool]) -> OpInfo:
    rows = _rows(pred)
    assert len(rows) == 1, rows
    return rows[0]


def _alu(op: IsaOp, width: int, form: Form) -> OpInfo:
    return _row(lambda r: r.op is op and r.width == width and r.form is form
                and r.cls in (Cls.ALU, Cls.ALU64))


ALU_ROWS = _rows(lambda r: r.form in (Form.ALU_K, Form.ALU_X, Form.NEG, Form.ENDIAN))
JCC_ROWS = _rows(lambda r: r.form in (Form.JCC_K, Form.JCC_X))
JA_ROW = _row(lambda r: r.form is Form.JA)
JA32_ROW = _row(lambda r: r.form is Form.JA32)
LDX_ROWS = _rows(lambda r: r.form is Form.LDX)
STORE_ROWS = _rows(lambda r: r.form in (Form.ST, Form.STX))
ATOMIC_ROWS = _rows(lambda r: r.form is Form.ATOMIC and not (r.op is IsaOp.CMPXCHG and r.width == 32))
"""Every atomic but 32-bit cmpxchg (the kernel bug in the module docstring)."""
LDDW_ROW = _row(lambda r: r.form is Form.LDDW and r.src_value == 0)
CALL_LOCAL_ROW = _row(lambda r: r.form is Form.CALL_LOCAL)
EXIT_ROW = _row(lambda r: r.form is Form.EXIT)
LDXDW = _row(lambda r: r.form is Form.LDX and r.op is IsaOp.LDX and r.width == 64)
LDXW = _row(lambda r: r.form is Form.LDX and r.op is IsaOp.LDX and r.width == 32)
STXDW = _row(lambda r: r.form is Form.STX and r.width == 64)
STDW = _row(lambda r: r.form is Form.ST and r.width == 64)
MOV64_X = _alu(IsaOp.MOV, 64, Form.ALU_X)
MOV64_K = _alu(IsaOp.MOV, 64, Form.ALU_K)
MOV32_K = _alu(IsaOp.MOV, 32, Form.ALU_K)
ADD64_X = _alu(IsaOp.ADD, 64, Form.ALU_X)
ADD64_K = _alu(IsaOp.ADD, 64, Form.ALU_K)
SUB64_K = _alu(IsaOp.SUB, 64, Form.ALU_K)
SUB32_K = _alu(IsaOp.SUB, 32, Form.ALU_K)
AND64_K = _alu(IsaOp.AND, 64, Form.ALU_K)
ARSH64_K = _alu(IsaOp.ARSH, 64, Form.ALU_K)
ARSH32_K = _alu(IsaOp.ARSH, 32, Form.ALU_K)
LSH64_K = _alu(IsaOp.LSH, 64, Form.ALU_K)
LSH32_K = _alu(IsaOp.LSH, 32, Form.ALU_K)
JGT_X = _row(lambda r: r.op is IsaOp.JGT and r.width == 64 and r.form is Form.JCC_X)
JLT_X = _row(lambda r: r.op is IsaOp.JLT and r.width == 64 and r.form is Form.JCC_X)
SHIFTS = frozenset({IsaOp.LSH, IsaOp.RSH, IsaOp.ARSH})
DIVISIONS = frozenset({IsaOp.DIV, IsaOp.MOD, IsaOp.SDIV, IsaOp.SMOD})


def _jcc_k(op: IsaOp, width: int) -> OpInfo:
    return _row(lambda r: r.op is op and r.width == width and r.form is Form.JCC_K)


LOOP_DECREMENTS: tuple[tuple[OpInfo, int], ...] = ((ADD64_K, -1), (SUB64_K, 1), (SUB32_K, 1))
LOOP_BRANCHES = (_jcc_k(IsaOp.JNE, 64), _jcc_k(IsaOp.JSGT, 64), _jcc_k(IsaOp.JGT, 32), _jcc_k(IsaOp.JNE, 32))
"""Each is taken while the counter (1..4, decremented by one) is not yet 0."""

TARGET_ROWS: tuple[OpInfo, ...] = (ALU_ROWS + JCC_ROWS + (JA_ROW, JA32_ROW) + LDX_ROWS
                                   + STORE_ROWS + ATOMIC_ROWS + (LDDW_ROW, CALL_LOCAL_ROW))
"""Every row the generator is meant to reach (coverage checks use it)."""

# -- the case -------------------------------------------------------------------------


@dataclass(frozen=True)
class KCase:
    """An XDP program and the packet to run it on; `features` lists what the
    generator put in (row names, "loop", "call", "packet-var"...)."""

    code: bytes
    packet: bytes
    features: frozenset[str] = frozenset()
    items: tuple[Item, ...] = field(default=(), compare=False, repr=False)
    """The program before layout (instructions and labels), for reduction."""

    def __repr__(self) -> str:
        return f"KCase(packet={self.packet.hex()}, code=\n{self.text()})"

    def text(self) -> str:
        """The program in assembler text (re-assembles with ebpfvm.asm)."""
        return disassemble(self.code)


def row_name(row: OpInfo) -> str:
    """A row's name in `KCase.features`: mnemonic and form (add/alu_k, add/alu_x)."""
    return f"{row.mnemonic}/{row.form.value}"


def dump_registers(packet: bytes) -> list[int]:
    """r0-r9 as the epilogue left them in an output packet."""
    return [int.from_bytes(packet[8 * reg : 8 * reg + 8], "little") for reg in range(DUMP_REGS)]


# -- the generator ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """What a unit may do where it is generated: the registers it may write,
    the stack area, whether the packet is reachable, the subprograms it may call."""

    writable: tuple[int, ...]
    area: tuple[int, int]
    packet: bool
    callees: tuple[Label, ...]

    def without(self, reg: int) -> _Scope:
        return _Scope(tuple(r for r in self.writable if r != reg), self.area, self.packet,
                      self.callees)


class Choices:
    """Every choice of the generator, read from one hypothesis byte string.

    One draw per program keeps generation cheap (a draw per choice cost more
    than running the program on all engines); hypothesis still shrinks the
    string, and zero bytes read as the smallest choice (the first option, the
    low end of a range, no more units), so a shrunk string is a small program.
    Past the end of the string every choice is the smallest."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, count: int) -> int:
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return int.from_bytes(chunk, "little")

    def int_in(self, low: int, high: int) -> int:
        span = high - low + 1
        return low + self.take(max(1, (span.bit_length() + 15) // 8)) % span

    def bytes(self, count: int) -> bytes:
        return self.take(count).to_bytes(count, "little")


CHOICE_BYTES = 2048
"""Programs read about 800 on average, 1,700 at most in a sample of 300;
a longer one would read zeros (smallest choices) at the end."""


@dataclass
class _Builder:
    choices: Choices
    features: set[str] = field(default_factory=set)

    # -- choosing --------------------------------------------------------------

    def pick(self, options: Sequence[T]) -> T:
        return options[self.choices.int_in(0, len(options) - 1)]

    def int_in(self, low: int, high: int) -> int:
        return self.choices.int_in(low, high)

    def flag(self) -> bool:
        return self.choices.int_in(0, 1) == 1

    def imm(self) -> int:
        """An edge value (0, 1, -1, INT32_MIN...) half of the time, else any s32."""
        if self.flag():
            return self.int_in(-(1 << 31), (1 << 31) - 1)
        return self.pick(EDGE_IMM32)

    def u64(self) -> int:
        if self.flag():
            return self.int_in(0, (1 << 64) - 1)
        return self.pick(EDGE_U64)

    def reg(self) -> int:
        """Any register a unit may read: r0-r9 all hold scalars."""
        return self.int_in(0, DUMP_REGS - 1)

    def note(self, row: OpInfo, where: str = "") -> None:
        self.features.add(row_name(row) + where)

    # -- initialisation -----------------------------------------------------------

    def constant(self, reg: int) -> Unit:
        kind = self.pick(("lddw", "mov", "mov32"))
        if kind == "lddw":
            self.note(LDDW_ROW)
            return [Op(LDDW_ROW, reg, imm=self.u64())]
        return [Op(MOV64_K if kind == "mov" else MOV32_K, reg, imm=self.imm())]

    def init_reg(self, reg: int, base: int | None) -> Unit:
        """A constant, or (with a packet pointer in `base`) a packet load."""
        if base is None or self.flag():
            return self.constant(reg)
        row = self.pick(LDX_ROWS)
        self.note(row, "@packet")
        return [Op(row, reg, base, off=self.int_in(0, PACKET_MIN - row.size))]

    def init_area(self, area: tuple[int, int], temp: int | None) -> Unit:
        """Write every 8-byte slot of `area`: stdw of a sign-extended 32-bit
        value, or (with a `temp` register) lddw into it and stxdw."""
        slots = range(area[0], area[1], 8)
        imms = self.choices.bytes(4 * len(slots))
        wide = self.choices.bytes(8 * len(slots)) if temp is not None else b""
        use_lddw = self.int_in(0, (1 << len(slots)) - 1) if temp is not None else 0
        out: Unit = []
        for index, off in enumerate(slots):
            if temp is not None and use_lddw >> index & 1:
                value = int.from_bytes(wide[8 * index : 8 * index + 8], "little")
                out += [Op(LDDW_ROW, temp, imm=value), Op(STXDW, FP, temp, off=off)]
            else:
                imm = int.from_bytes(imms[4 * index : 4 * index + 4], "little", signed=True)
                out.append(Op(STDW, FP, off=off, imm=imm))
        return out

    # -- units ----------------------------------------------------------------

    def alu_unit(self, scope: _Scope) -> Unit:
        row = self.pick(ALU_ROWS)
        dst = self.pick(scope.writable)
        self.note(row)
        if row.form is Form.ALU_X:
            src = self.reg()
            edges = self.edge_operands(row, dst, src, scope) if row.op in DIVISIONS else []
            return [*edges, Op(row, dst, src, off=row.off or 0)]
        if row.form is Form.ALU_K:
            if row.op in SHIFTS:
                imm = self.int_in(0, row.width - 1)  # the verifier refuses larger ones
            elif row.op in DIVISIONS:
                imm = self.imm() or self.pick((1, -1))  # an immediate 0 is refused
            else:
                imm = self.imm()
            return [Op(row, dst, off=row.off or 0, imm=imm)]
        return [Op(row, dst, imm=row.imm or 0)]

    def edge_operands(self, row: OpInfo, dst: int, src: int, scope: _Scope) -> Unit:
        """Sometimes turn a register divisor into 0 or -1 (an arithmetic shift
        right by width - 1) and the dividend into 0 or INT_MIN (a shift left
        by width - 1): the division-by-zero and INT_MIN / -1 cases, with
        values the verifier still does not know."""
        if self.int_in(0, 2) != 0 or src not in scope.writable:
            return []
        self.features.add("edge-divisor")
        arsh, lsh = (ARSH64_K, LSH64_K) if row.width == 64 else (ARSH32_K, LSH32_K)
        out: Unit = [Op(arsh, src, imm=row.width - 1)]
        if src != dst and self.flag():
            out.append(Op(lsh, dst, imm=row.width - 1))
        return out

    def _access(self, row: OpInfo, base: int, off: int, writable: Sequence[int],
                readable: Sequence[int]) -> Op:
        """`row` at [base + off]; the register operand drawn for its form."""
        if row.form is Form.LDX:
            return Op(row, self.pick(writable), base, off=off)
        if row.form is Form.ST:
            return Op(row, base, off=off, imm=self.imm())
        if row.form is Form.STX:
            return Op(row, base, self.pick(readable), off=off)
        # atomics: fetch forms (and xchg) write src; cmpxchg compares and writes r0
        src = self.pick(writable) if row.src.value == "write" else self.pick(readable)
        return Op(row, base, src, off=off, imm=row.imm or 0)

    def stack_unit(self, scope: _Scope, rows: tuple[OpInfo, ...]) -> Unit:
        row = self.pick(rows)
        if row.op is IsaOp.CMPXCHG and 0 not in scope.writable:
            return self.alu_unit(scope)
        low, high = scope.area
        off = row.size * self.int_in(low // row.size, high // row.size - 1)  # aligned
        self.note(row, "@stack")
        return [self._access(row, FP, off, scope.writable, range(DUMP_REGS))]

    def packet_unit(self, scope: _Scope) -> Unit:
        """A load or store at a constant offset through the spilled pointer."""
        if len(scope.writable) < 2:
            return self.alu_unit(scope)
        row = self.pick(LDX_ROWS + STORE_ROWS)
        ptr = self.pick(scope.writable)
        others = [r for r in range(DUMP_REGS) if r != ptr]
        writable = [r for r in scope.writable if r != ptr]
        off = self.int_in(DUMP_SIZE if self.flag() else 0, PACKET_MIN - row.size)
        self.note(row, "@packet")
        return [Op(STXDW, FP, ptr, off=SAVE_A), Op(LDXDW, ptr, FP, off=DATA_SLOT),
                self._access(row, ptr, off, writable, others),
                Op(LDXDW, ptr, FP, off=SAVE_A)]

    def packet_var_unit(self, scope: _Scope) -> Unit:
        """A load or store at data + (reg & mask) + k, under its own guard:
        the pointer is compared with data_end, and the access skipped when
        it would pass the end."""
        if len(scope.writable) < 3:
            return self.packet_unit(scope)
        row = self.pick(LDX_ROWS + STORE_ROWS)
        ptr = self.pick(scope.writable)
        end = self.pick([r for r in scope.writable if r != ptr])
        index = self.reg()
        others = [r for r in range(DUMP_REGS) if r not in (ptr, end)]
        writable = [r for r in scope.writable if r not in (ptr, end)]
        past = DUMP_SIZE + self.int_in(0, SCRATCH - row.size) + row.size
        skip = Label()
        guard = (Op(JGT_X, ptr, end, target=skip) if self.flag()
                 else Op(JLT_X, end, ptr, target=skip))
        self.note(row, "@packet-var")
        self.features.add("packet-var")
        return [Op(STXDW, FP, ptr, off=SAVE_A), Op(STXDW, FP, end, off=SAVE_B),
                Op(MOV64_X, end, index), Op(AND64_K, end, imm=self.pick(VAR_MASKS)),
                Op(LDXDW, ptr, FP, off=DATA_SLOT), Op(ADD64_X, ptr, end),
                Op(ADD64_K, ptr, imm=past), Op(LDXDW, end, FP, off=END_SLOT), guard,
                self._access(row, ptr, -row.size, writable, others),
                skip, Op(LDXDW, ptr, FP, off=SAVE_A), Op(LDXDW, end, FP, off=SAVE_B)]

    def call_unit(self, scope: _Scope) -> Unit:
        """call local, then fresh values in r1-r5 (the verifier forgets them)."""
        if not scope.callees or not set(range(1, 6)) <= set(scope.writable):
            return self.alu_unit(scope)
        self.features.add("call")
        self.note(CALL_LOCAL_ROW)
        out: Unit = [Op(CALL_LOCAL_ROW, target=self.pick(scope.callees))]
        for reg in range(1, 6):
            if self.flag():
                out.append(Op(MOV64_X, reg, self.pick((0, 6, 7, 8, 9))))
            else:
                out += self.constant(reg)
        return out

    def cond_jump(self, target: Label) -> Op:
        row = self.pick(JCC_ROWS)
        self.note(row)
        if row.form is Form.JCC_X:
            return Op(row, self.reg(), self.reg(), target=target)
        return Op(row, self.reg(), imm=self.imm(), target=target)

    def jump(self, target: Label) -> Unit:
        """A conditional jump to `target`, or ja/ja32 to it behind a
        conditional jump over it: code an unconditional jump skips must stay
        reachable, or the verifier refuses the program."""
        kind = self.pick(("ja", "ja32", "jcc", "jcc", "jcc", "jcc"))
        if kind == "jcc":
            return [self.cond_jump(target)]
        row = JA_ROW if kind == "ja" else JA32_ROW
        self.note(row)
        over = Label()
        return [self.cond_jump(over), Op(row, target=target), over]

    def plain_unit(self, scope: _Scope) -> Unit:
        kinds = ["alu", "alu", "alu", "alu", "stack", "atomic", "call"]
        if scope.packet:
            kinds += ["packet", "packet-var"]
        kind = self.pick(kinds)
        if kind == "alu":
            return self.alu_unit(scope)
        if kind == "stack":
            return self.stack_unit(scope, LDX_ROWS + STORE_ROWS)
        if kind == "atomic":
            return self.stack_unit(scope, ATOMIC_ROWS)
        if kind == "call":
            return self.call_unit(scope)
        if kind == "packet":
            return self.packet_unit(scope)
        return self.packet_var_unit(scope)

    def with_jumps(self, units: list[Unit]) -> Unit:
        """Concatenate `units`, inserting forward jumps between them. A jump
        before unit p goes to the start of a unit t >= p."""
        labels = [Label() for _ in units]
        jumps: dict[int, list[Item]] = {}
        for _ in range(self.int_in(0, min(6, len(units)))):
            p = self.int_in(0, len(units) - 1)
            t = self.int_in(p, len(units) - 1)
            jumps.setdefault(p, []).extend(self.jump(labels[t]))
        out: Unit = []
        for index, unit in enumerate(units):
            out += jumps.get(index, [])
            out.append(labels[index])
            out += unit
        return out

    def loop_unit(self, scope: _Scope) -> Unit:
        """counter = 1..4; L: body; counter -= 1; if counter != 0 goto L."""
        counters = [reg for reg in LOOP_COUNTERS if reg in scope.writable]
        if not counters:
            return self.plain_unit(scope)
        counter = self.pick(counters)
        inner = scope.without(counter)
        body = [self.plain_unit(inner) for _ in range(self.int_in(0, 5))]
        dec_row, dec_imm = self.pick(LOOP_DECREMENTS)
        body.append([Op(dec_row, counter, imm=dec_imm)])
        top = Label()
        self.features.add("loop")
        return [Op(MOV64_K, counter, imm=self.int_in(1, 4)), top, *self.with_jumps(body),
                Op(self.pick(LOOP_BRANCHES), counter, imm=0, target=top)]

    def body(self, scope: _Scope, count: int) -> list[Unit]:
        units: list[Unit] = []
        for _ in range(count):
            units.append(self.loop_unit(scope) if self.int_in(0, 4) == 0
                         else self.plain_unit(scope))
        return units

    # -- functions ------------------------------------------------------------------

    def main(self, callees: tuple[Label, ...], calls: list[Label]) -> list[Item]:
        """Prologue, body (with a call to each of `calls`), epilogue, bail-out."""
        bail = Label()
        data, data_end, probe = 2, 3, 4
        items: list[Item] = [
            Op(LDXW, data, 1, off=XDP_MD_DATA), Op(LDXW, data_end, 1, off=XDP_MD_DATA_END),
            Op(MOV64_X, probe, data), Op(ADD64_K, probe, imm=PACKET_MIN),
            Op(JGT_X, probe, data_end, target=bail),
            Op(STXDW, FP, data, off=DATA_SLOT), Op(STXDW, FP, data_end, off=END_SLOT),
        ]
        items += self.init_area(MAIN_AREA, probe)
        for reg in (0, 1, 3, 4, 5, 6, 7, 8, 9, 2):  # r2 (the pointer) last
            items += self.init_reg(reg, data)
        scope = _Scope(tuple(range(DUMP_REGS)), MAIN_AREA, True, callees)
        units = self.body(scope, self.int_in(0, 14))
        for label in calls:
            units.insert(self.int_in(0, len(units)), self.call_at(label))
        epilogue: Unit = [Op(STXDW, FP, 9, off=SAVE_A), Op(LDXDW, 9, FP, off=DATA_SLOT)]
        epilogue += [Op(STXDW, 9, reg, off=8 * reg) for reg in range(9)]
        epilogue += [Op(LDXDW, 8, FP, off=SAVE_A), Op(STXDW, 9, 8, off=8 * 9), Op(EXIT_ROW)]
        items += self.with_jumps([*units, epilogue])
        items += [bail, Op(MOV64_K, 0, imm=BAIL_VERDICT), Op(EXIT_ROW)]
        return items

    def call_at(self, label: Label) -> Unit:
        self.features.add("call")
        self.note(CALL_LOCAL_ROW)
        out: Unit = [Op(CALL_LOCAL_ROW, target=label)]
        for reg in range(1, 6):
            out += self.constant(reg)
        return out

    def sub(self, label: Label, callees: tuple[Label, ...], calls: list[Label]) -> list[Item]:
        """A subprogram: r0, r6-r9 and its stack area written before the body."""
        items: list[Item] = [label, *self.init_area(SUB_AREA, None)]
        for reg in (0, 6, 7, 8, 9):
            items += self.init_reg(reg, None)
        scope = _Scope(tuple(range(DUMP_REGS)), SUB_AREA, False, callees)
        units = self.body(scope, self.int_in(0, 6))
        for target in calls:
            units.insert(self.int_in(0, len(units)), self.call_at(target))
        items += self.with_jumps([*units, [Op(EXIT_ROW)]])
        return items


@st.composite
def _kcases(draw: Callable[[st.SearchStrategy[Any]], Any]) -> KCase:
    packet_len = PACKET_MIN + draw(st.integers(0, PACKET_EXTRA))
    packet = bytearray(draw(st.binary(min_size=packet_len, max_size=packet_len)))
    # Edge values (0, -1, INT64_MIN...) at a few aligned words, so that loads
    # of the packet give divisors and shift counts at the edges too.
    edges = draw(st.lists(st.tuples(st.integers(0, packet_len // 8 - 1),
                                    st.sampled_from(EDGE_U64)), max_size=4))
    for word, value in edges:
        packet[8 * word : 8 * word + 8] = value.to_bytes(8, "little")
    items, features = build(Choices(draw(st.binary(min_size=CHOICE_BYTES,
                                                   max_size=CHOICE_BYTES))))
    return KCase(layout(items), bytes(packet), frozenset(features), tuple(items))


def build(choices: Choices) -> tuple[list[Item], set[str]]:
    """The program `choices` describe (before layout), and its features."""
    b = _Builder(choices)
    count = b.int_in(0, MAX_SUBS)
    labels = [Label() for _ in range(count)]
    # Each subprogram is called at least once, by main or by an earlier one,
    # so the verifier finds no unreachable code.
    callers: dict[int, list[Label]] = {}
    for index, label in enumerate(labels):
        callers.setdefault(b.int_in(-1, index - 1), []).append(label)
    items = b.main(tuple(labels), callers.get(-1, []))
    for index, label in enumerate(labels):
        items += b.sub(label, tuple(labels[index + 1:]), callers.get(index, []))
    return items, b.features


def kcases() -> st.SearchStrategy[KCase]:
    """Random XDP programs for the kernel verifier, with their packets."""
    return _kcases()
