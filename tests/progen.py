"""Random eBPF programs for the differential tests (hypothesis strategies).

Every instruction comes from a row of :data:`ebpfvm.isa.OPS`; nothing here
spells an opcode byte. A generated :class:`Case` is a program, an input
buffer and the run settings, plus a ``safe`` flag.

Programs always terminate (unless they are built to run out of budget):

* ``r9 = r1`` first; r9 is never written again, so the generator always knows
  where the input is. r10 is the frame pointer. Then r0-r8 get random lddw /
  mov values, edge values included.
* The body is straight-line code with FORWARD jumps only (ja, ja32, every
  conditional jump of JMP and JMP32, K and X forms), plus bounded loops: a
  counter in r6-r8 set to 1..4, a body that never writes it, a decrement and
  one backward conditional jump.
* Memory accesses go to the stack through r10 (offsets in [-512, -size]) or
  to the input through r9 (offsets in [0, len - size]), directly or through a
  temporary pointer built just before the access; atomics use aligned slots.
* Every ALU/ALU64 row in K and X form (div/mod/sdiv/smod, shifts, movsx,
  neg, le/be/bswap of all widths) with edge immediates and edge register
  values (0, 1, -1, INT32_MIN, INT64_MIN, 0x7fff..., 0x8000..., junk in the
  upper half).
* ``call local`` goes to subprograms placed after the main exit. Subprogram
  i only calls subprograms j > i, so calls nest at most as deep as there are
  subprograms; "chain" programs nest up to the depth limit.
* Helper calls (``call`` and ``callx``) to :data:`HELPERS`: one mixes its
  arguments, one raises for some of them; id 7 is not registered.
* Legacy ldabs/ldind loads, which every engine bounds-checks.

A case is ``safe`` when every memory access is provably in bounds, nothing
stores into a read-only input, no budget is set and the call depth stays
within the limit: only safe cases may run on the unchecked JIT, which would
crash the process on a wild access. ``cases(unsafe=True)`` adds at least one
of: out-of-bounds input or stack offsets (partly overlapping an end), wild
pointers, stores into a read-only input, an endless loop with a small budget,
a small budget on an ordinary program, endless recursion, or a call chain
deeper than the limit. Those run on the checked engines only.

``avoid`` leaves out program shapes that hit a known, still open engine
disagreement (:data:`KNOWN_BUG_KINDS`), so the random tests stay green while
a strict xfail holds the minimal program.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import strategies as st

from ebpfvm.cfg import FRAME_SIZE, MAX_CALL_DEPTH
from ebpfvm.disasm import disassemble
from ebpfvm.encoding import encode_one
from ebpfvm.isa import OPS, Cls, Form, OpInfo, Reg
from ebpfvm.isa import Op as IsaOp

__all__ = [
    "BASE_REG",
    "HELPERS",
    "HELPER_MISSING",
    "HELPER_MIX",
    "HELPER_PICKY",
    "KNOWN_BUG_KINDS",
    "Case",
    "cases",
    "helper_mix",
    "helper_picky",
]

T = TypeVar("T")

M64 = (1 << 64) - 1
INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
INT64_MIN = 1 << 63  # as an unsigned register value
FP = 10
BASE_REG = 9
"""Holds r1 (the input address) for the whole run; never written after pc 0."""
MAX_INPUT = 48

# -- helpers the test registers ----------------------------------------------------

HELPER_MIX = 1
HELPER_PICKY = 2
HELPER_MISSING = 7
"""A helper id nobody registers: calling it is a HelperFault."""


def helper_mix(a: int, b: int, c: int, d: int, e: int) -> int:
    """A deterministic mix of all five arguments."""
    return (a * 0x9E37_79B9 ^ (b << 7) ^ (c >> 3) ^ (d * 31) ^ (M64 - e)) & M64


def helper_picky(a: int, b: int, c: int, d: int, e: int) -> int:
    """Raises for about one argument set in five, else returns a - e."""
    if (a + b + c + d + e) % 5 == 0:
        raise ValueError("picky helper refuses these arguments")
    return (a - e) & M64


HELPERS: dict[int, Callable[[int, int, int, int, int], int]] = {
    HELPER_MIX: helper_mix,
    HELPER_PICKY: helper_picky,
}

# -- rows of the opcode table ------------------------------------------------------


def _rows(pred: Callable[[OpInfo], bool]) -> tuple[OpInfo, ...]:
    rows = tuple(row for row in OPS if pred(row))
    assert rows
    return rows


def _row(pred: Callable[[OpInfo], bool]) -> OpInfo:
    rows = _rows(pred)
    assert len(rows) == 1, rows
    return rows[0]


ALU_ROWS = _rows(lambda r: r.form in (Form.ALU_K, Form.ALU_X, Form.NEG, Form.ENDIAN))
JCC_ROWS = _rows(lambda r: r.form in (Form.JCC_K, Form.JCC_X))
JA_ROW = _row(lambda r: r.form is Form.JA)
JA32_ROW = _row(lambda r: r.form is Form.JA32)
LDX_ROWS = _rows(lambda r: r.form is Form.LDX)
STORE_ROWS = _rows(lambda r: r.form in (Form.ST, Form.STX))
ATOMIC_ROWS = _rows(lambda r: r.form is Form.ATOMIC)
PACKET_ROWS = _rows(lambda r: r.form in (Form.LD_ABS, Form.LD_IND))
LDDW_ROW = _row(lambda r: r.form is Form.LDDW and r.src_value == 0)
CALL_ROW = _row(lambda r: r.form is Form.CALL)
CALLX_ROW = _row(lambda r: r.form is Form.CALLX)
CALL_LOCAL_ROW = _row(lambda r: r.form is Form.CALL_LOCAL)
EXIT_ROW = _row(lambda r: r.form is Form.EXIT)


def _alu(op: IsaOp, width: int, form: Form) -> OpInfo:
    return _row(lambda r: r.op is op and r.width == width and r.form is form
                and r.cls in (Cls.ALU, Cls.ALU64))


def _jcc(op: IsaOp, width: int) -> OpInfo:
    return _row(lambda r: r.op is op and r.width == width and r.form is Form.JCC_K)


MOV64_X = _alu(IsaOp.MOV, 64, Form.ALU_X)
MOV64_K = _alu(IsaOp.MOV, 64, Form.ALU_K)
MOV32_K = _alu(IsaOp.MOV, 32, Form.ALU_K)
ADD64_K = _alu(IsaOp.ADD, 64, Form.ALU_K)
SUB64_K = _alu(IsaOp.SUB, 64, Form.ALU_K)
SUB32_K = _alu(IsaOp.SUB, 32, Form.ALU_K)
LOOP_DECREMENTS: tuple[tuple[OpInfo, int], ...] = ((ADD64_K, -1), (SUB64_K, 1), (SUB32_K, 1))
LOOP_BRANCHES = (_jcc(IsaOp.JNE, 64), _jcc(IsaOp.JSGT, 64), _jcc(IsaOp.JGT, 32), _jcc(IsaOp.JNE, 32))
"""Each is taken while the counter (1..4, decremented by one) is not yet 0."""

# -- operand values ------------------------------------------------------------------

EDGE_IMM32 = (0, 1, -1, 2, -2, INT32_MIN, INT32_MAX, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65,
              0xFF, 0x7F, -0x80, 0x7FFF, -0x8000, 0xFFFF)
EDGE_U64 = (0, 1, M64, 2, M64 - 1, INT64_MIN, INT64_MIN - 1, 0x7FFF_FFFF, 0x8000_0000,
            0xFFFF_FFFF, 0x1_0000_0000, 0xFFFF_FFFF_8000_0000, 0xFFFF_FFFF_0000_0000,
            0x8000_0000_8000_0000, 0xDEAD_BEEF_0000_0000, 0xDEAD_BEEF_0000_0001,
            0x1234_5678_FFFF_FFF6, 0x0123_4567_89AB_CDEF, 0x80, 0xFF, 0x8000, 0xFFFF, 63, 64)

imm32: st.SearchStrategy[int] = st.one_of(st.sampled_from(EDGE_IMM32),
                                          st.integers(INT32_MIN, INT32_MAX))
u64: st.SearchStrategy[int] = st.one_of(st.sampled_from(EDGE_U64), st.integers(0, M64))

# -- program items -----------------------------------------------------------------


def _name(row: OpInfo) -> str:
    """A row's name in `Case.features`: mnemonic and form (add/alu_k, add/alu_x)."""
    return f"{row.mnemonic}/{row.form.value}"


class Label:
    """A position in the program; jumps and local calls name one."""

    __slots__ = ()


@dataclass(frozen=True, eq=False)
class Op:
    """One instruction before layout. `target` fills off (jumps) or imm
    (ja32, call local) once the slot positions are known."""

    row: OpInfo
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    target: Label | None = None


Item = Op | Label
Unit = list[Item]
"""A run of instructions that jumps from outside never enter in the middle."""


def layout(items: Sequence[Item]) -> bytes:
    """Resolve labels and encode."""
    where: dict[Label, int] = {}
    pc = 0
    for item in items:
        if isinstance(item, Label):
            where[item] = pc
        else:
            pc += item.row.slots
    out = bytearray()
    pc = 0
    for item in items:
        if isinstance(item, Label):
            continue
        row, off, imm = item.row, item.off, item.imm
        if item.target is not None:
            delta = where[item.target] - (pc + 1)
            if row.form in (Form.JA32, Form.CALL_LOCAL):
                imm = delta
            else:
                off = delta
        src = item.src if row.src is not Reg.NONE else row.src_value
        out += encode_one(row.opcode, item.dst, src, off, imm)
        pc += row.slots
    return bytes(out)


# -- the case -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A program with its input and run settings.

    `readonly`: pass the input as ``bytes``; `budget`: the VM's budget (None:
    the default); `safe`: may run on the unchecked JIT; `features`: what the
    generator put in, for statistics and reports."""

    code: bytes
    mem: bytes = b""
    readonly: bool = False
    budget: int | None = None
    safe: bool = True
    features: tuple[str, ...] = ()

    def __repr__(self) -> str:
        text = disassemble(self.code).rstrip("\n").replace("\n", "\n    ")
        return (f"Case(readonly={self.readonly}, budget={self.budget}, safe={self.safe}, "
                f"features={self.features}, mem={self.mem.hex() or '-'}, code=\n    {text}\n)")


# -- the generator ----------------------------------------------------------------------


@dataclass
class _Scope:
    """What a unit may do where it is generated."""

    writable: tuple[int, ...]
    callees: tuple[Label, ...]


@dataclass
class _Builder:
    draw: Callable[[st.SearchStrategy[Any]], Any]
    mem_len: int
    readonly: bool
    unsafe: bool
    avoid: frozenset[str]
    features: set[str] = field(default_factory=set)
    unsafe_reasons: set[str] = field(default_factory=set)

    # -- drawing --------------------------------------------------------------

    def pick(self, options: Sequence[T]) -> T:
        value: T = self.draw(st.sampled_from(options))
        return value

    def int_in(self, low: int, high: int) -> int:
        value: int = self.draw(st.integers(low, high))
        return value

    def flag(self) -> bool:
        value: bool = self.draw(st.booleans())
        return value

    def imm(self) -> int:
        value: int = self.draw(imm32)
        return value

    def u64(self) -> int:
        value: int = self.draw(u64)
        return value

    def any_reg(self) -> int:
        return self.int_in(0, FP)

    # -- units ----------------------------------------------------------------

    def init_unit(self, reg: int) -> Unit:
        kind = self.pick(("keep", "lddw", "mov", "mov32"))
        if kind == "lddw":
            return [Op(LDDW_ROW, reg, imm=self.u64())]
        if kind == "mov":
            return [Op(MOV64_K, reg, imm=self.imm())]
        if kind == "mov32":
            return [Op(MOV32_K, reg, imm=self.imm())]
        return []

    def alu_unit(self, scope: _Scope) -> Unit:
        row = self.pick(ALU_ROWS)
        dst = self.pick(scope.writable)
        self.features |= {f"alu:{_name(row)}", f"op:{row.op}"}
        if row.form is Form.ALU_X:
            return [Op(row, dst, self.any_reg(), off=row.off or 0)]
        if row.form is Form.ALU_K:
            return [Op(row, dst, off=row.off or 0, imm=self.imm())]
        return [Op(row, dst, imm=row.imm or 0)]

    def _access(self, row: OpInfo, base: int, off: int, scope: _Scope) -> Op:
        """`row` at [base + off]; the register operand drawn for its form."""
        if row.form is Form.LDX:
            return Op(row, self.pick(scope.writable), base, off=off)
        if row.form is Form.ST:
            return Op(row, base, off=off, imm=self.imm())
        if row.form is Form.STX:
            return Op(row, base, self.any_reg(), off=off)
        # atomics: fetch forms write src; cmpxchg compares and writes r0
        src = self.pick(scope.writable) if row.src is Reg.WRITE else self.any_reg()
        return Op(row, base, src, off=off, imm=row.imm or 0)

    def _via(self, base: int, off: int, row: OpInfo, scope: _Scope) -> Unit:
        """The access at [base + off], sometimes through a temporary pointer
        tmp = base + c built right before it (a unit: nothing jumps between)."""
        if not self.flag():
            return [self._access(row, base, off, scope)]
        tmp = self.pick(scope.writable)
        c = self.int_in(-64, 64)
        self.features.add("tmp-pointer")
        return [Op(MOV64_X, tmp, base), Op(ADD64_K, tmp, imm=c),
                self._access(row, tmp, off - c, scope)]

    def _mem_feature(self, where: str, row: OpInfo) -> None:
        self.features |= {f"mem:{row.mnemonic}", f"op:{row.op}"}
        self.features.add(f"{where}:{row.form.value}")

    def _input_store(self, row: OpInfo) -> None:
        if row.form is not Form.LDX and self.readonly:
            self.unsafe_reasons.add("store-readonly")

    def stack_unit(self, scope: _Scope) -> Unit:
        row = self.pick(LDX_ROWS + STORE_ROWS)
        off = self.int_in(-FRAME_SIZE, -row.size)
        self._mem_feature("stack", row)
        return self._via(FP, off, row, scope)

    def input_unit(self, scope: _Scope) -> Unit:
        rows = [row for row in LDX_ROWS + STORE_ROWS if row.size <= self.mem_len]
        if self.readonly and not self.unsafe:
            rows = [row for row in rows if row.form is Form.LDX]
        if not rows:
            return self.alu_unit(scope)
        row = self.pick(rows)
        off = self.int_in(0, self.mem_len - row.size)
        self._input_store(row)
        self._mem_feature("input", row)
        return self._via(BASE_REG, off, row, scope)

    def atomic_unit(self, scope: _Scope) -> Unit:
        row = self.pick(ATOMIC_ROWS)
        size = row.size
        input_ok = self.unsafe or not self.readonly
        if self.readonly and row.op is IsaOp.CMPXCHG and "cmpxchg-readonly" in self.avoid:
            input_ok = False
        on_input = self.mem_len >= size and input_ok and self.flag()
        if on_input:
            off = size * self.int_in(0, (self.mem_len - size) // size)
            self._input_store(row)
            self._mem_feature("input", row)
            return self._via(BASE_REG, off, row, scope)
        off = -size * self.int_in(1, FRAME_SIZE // size)
        self._mem_feature("stack", row)
        return self._via(FP, off, row, scope)

    def packet_unit(self, scope: _Scope) -> Unit:
        """Legacy ldabs/ldind: bounds-checked by every engine; r0 = load or end."""
        if 0 not in scope.writable:
            return self.alu_unit(scope)
        row = self.pick(PACKET_ROWS)
        self.features.add(f"packet:{row.mnemonic}")
        imm = self.pick((self.int_in(0, self.mem_len + 4), self.imm()))
        if row.form is Form.LD_ABS:
            return [Op(row, imm=imm)]
        return [Op(row, src=self.any_reg(), imm=imm)]

    def call_unit(self, scope: _Scope) -> Unit:
        if 0 not in scope.writable:
            return self.alu_unit(scope)
        kinds = ["helper", "callx"] + (["local"] * 2 if scope.callees else [])
        kind = self.pick(kinds)
        if kind == "local":
            self.features.add("call-local")
            return [Op(CALL_LOCAL_ROW, target=self.pick(scope.callees))]
        helper = self.pick((HELPER_MIX, HELPER_MIX, HELPER_PICKY, HELPER_MISSING))
        self.features.add(f"helper-{helper}")
        if kind == "helper":
            return [Op(CALL_ROW, imm=helper)]
        self.features.add("callx")
        reg = self.pick(scope.writable)
        return [Op(MOV64_K, reg, imm=helper), Op(CALLX_ROW, reg)]

    def jump_op(self, target: Label) -> Op:
        kind = self.pick(("jcc", "jcc", "jcc", "ja", "ja32"))
        if kind == "ja":
            self.features.add("ja")
            return Op(JA_ROW, target=target)
        if kind == "ja32":
            self.features.add("ja32")
            return Op(JA32_ROW, target=target)
        row = self.pick(JCC_ROWS)
        self.features |= {f"jump:{_name(row)}", f"op:{row.op}"}
        if row.form is Form.JCC_X:
            return Op(row, self.any_reg(), self.any_reg(), target=target)
        return Op(row, self.any_reg(), imm=self.imm(), target=target)

    def plain_unit(self, scope: _Scope) -> Unit:
        kind = self.pick(("alu", "alu", "alu", "stack", "input", "atomic", "call", "packet"))
        if kind == "alu":
            return self.alu_unit(scope)
        if kind == "stack":
            return self.stack_unit(scope)
        if kind == "input":
            return self.input_unit(scope)
        if kind == "atomic":
            return self.atomic_unit(scope)
        if kind == "call":
            return self.call_unit(scope)
        return self.packet_unit(scope)

    def with_jumps(self, units: list[Unit]) -> Unit:
        """Concatenate `units`, inserting forward jumps between them. A jump
        before unit p goes to the start of a unit t >= p."""
        labels = [Label() for _ in units]
        jumps: dict[int, list[Op]] = {}
        for _ in range(self.int_in(0, min(6, len(units)))):
            p = self.int_in(0, len(units) - 1)
            t = self.int_in(p, len(units) - 1)
            jumps.setdefault(p, []).append(self.jump_op(labels[t]))
        out: Unit = []
        for index, unit in enumerate(units):
            out += jumps.get(index, [])
            out.append(labels[index])
            out += unit
        return out

    def loop_unit(self, scope: _Scope) -> Unit:
        """counter = 1..4; L: body; counter -= 1; if counter != 0 goto L."""
        counters = [reg for reg in (6, 7, 8) if reg in scope.writable]
        if not counters:
            return self.alu_unit(scope)
        counter = self.pick(counters)
        inner = _Scope(tuple(r for r in scope.writable if r != counter), scope.callees)
        body = [self.plain_unit(inner) for _ in range(self.int_in(0, 5))]
        dec_row, dec_imm = self.pick(LOOP_DECREMENTS)
        body.append([Op(dec_row, counter, imm=dec_imm)])
        top = Label()
        self.features.add("loop")
        return [Op(MOV64_K, counter, imm=self.int_in(1, 4)), top, *self.with_jumps(body),
                Op(self.pick(LOOP_BRANCHES), counter, imm=0, target=top)]

    # -- bad units (unsafe cases only) ------------------------------------------------

    def bad_unit(self, scope: _Scope) -> Unit:
        kinds = ["oob-input", "oob-stack", "wild", "endless"]
        kind = self.pick(kinds)
        self.unsafe_reasons.add(kind)
        self.features.add(kind)
        plain_rows = LDX_ROWS + STORE_ROWS
        atomics = ATOMIC_ROWS
        if self.readonly and "cmpxchg-readonly" in self.avoid:
            atomics = tuple(row for row in atomics if row.op is not IsaOp.CMPXCHG)
        rows = plain_rows + (() if "atomic-oob" in self.avoid else atomics)
        if kind == "endless":
            style = self.pick(("ja", "ja32", "body"))
            top = Label()
            if style == "ja":
                return [top, Op(JA_ROW, target=top)]
            if style == "ja32":
                return [top, Op(JA32_ROW, target=top)]
            return [top, *self.plain_unit(scope), Op(JA_ROW, target=top)]
        row = self.pick(rows)
        size = row.size
        # Out by one byte at either end, or by more.
        if kind == "oob-input":
            off = self.pick((
                self.mem_len - size + 1, -1,
                self.int_in(self.mem_len - size + 1, self.mem_len + 8),  # over the end
                self.int_in(-size - 8, -1),  # before the start
            ))
            return self._via(BASE_REG, off, row, scope)
        if kind == "oob-stack":
            off = self.pick((
                -size + 1, -FRAME_SIZE - 1,
                self.int_in(-size + 1, 16), self.int_in(-FRAME_SIZE - 16, -FRAME_SIZE - 1),
            ))
            return self._via(FP, off, row, scope)
        off = self.int_in(-64, 64)
        if self.flag():
            base = self.pick(scope.writable)
            return [Op(LDDW_ROW, base, imm=self.u64()), self._access(row, base, off, scope)]
        # Whatever a register holds, maybe a valid pointer: no atomics, which
        # could then run unaligned.
        row = self.pick(plain_rows)
        return [self._access(row, self.int_in(0, 8), off, scope)]


def _functions(b: _Builder) -> tuple[list[Unit], list[Unit], bool]:
    """Main body units, the laid-out subprograms (label, body, exit) and
    whether a budget must stop the run."""
    main_scope_regs = tuple(range(0, 9))
    mode = b.pick(("plain", "plain", "chain", "recursion") if b.unsafe
                  else ("plain", "plain", "chain"))
    needs_budget = False
    if mode == "chain":
        # sub i calls sub i+1: calls nest len(subs) deep.
        limit = MAX_CALL_DEPTH if b.unsafe else MAX_CALL_DEPTH - 1
        # Many chains sit at the boundary: as deep as allowed, or one deeper.
        boundary = (MAX_CALL_DEPTH - 1, MAX_CALL_DEPTH) if b.unsafe else (MAX_CALL_DEPTH - 1,)
        count = b.pick((b.int_in(1, limit), *boundary))
        if count >= MAX_CALL_DEPTH:
            b.unsafe_reasons.add("too-deep")
        b.features.add(f"chain-{count}")
    else:
        count = b.int_in(0, 3)
    labels = [Label() for _ in range(count + (mode == "recursion"))]
    subs: list[list[Unit]] = []
    for index in range(count):
        scope = _Scope(main_scope_regs, tuple(labels[index + 1:]))
        units = [b.plain_unit(scope) for _ in range(b.int_in(0, 4))]
        if mode == "chain" and index + 1 < count:
            units.insert(b.int_in(0, len(units)), [Op(CALL_LOCAL_ROW, target=labels[index + 1])])
        subs.append(units)
    if mode == "recursion":
        scope = _Scope(main_scope_regs, ())
        units = [b.plain_unit(scope) for _ in range(b.int_in(0, 3))]
        units.insert(b.int_in(0, len(units)), [Op(CALL_LOCAL_ROW, target=labels[-1])])
        subs.append(units)
        b.unsafe_reasons.add("recursion")
        b.features.add("recursion")
        needs_budget = b.flag()  # depth or budget, whichever comes first
    scope = _Scope(main_scope_regs, tuple(labels))
    main: list[Unit] = []
    for _ in range(b.int_in(0, 16)):
        kind = b.pick(("plain", "plain", "plain", "plain", "loop"))
        main.append(b.loop_unit(scope) if kind == "loop" else b.plain_unit(scope))
    if mode != "plain":
        first = labels[-1] if mode == "recursion" else labels[0]
        main.insert(b.int_in(0, len(main)), [Op(CALL_LOCAL_ROW, target=first)])
    if b.unsafe:
        for _ in range(b.int_in(0, 2)):
            where = b.int_in(0, len(subs))
            units = main if where == len(subs) else subs[where]
            units.insert(b.int_in(0, len(units)), b.bad_unit(scope))
    return main, [[labels[i], *b.with_jumps([*units, [Op(EXIT_ROW)]])]
                  for i, units in enumerate(subs)], needs_budget


@st.composite
def _cases(draw: Callable[[st.SearchStrategy[Any]], Any], unsafe: bool,
           avoid: frozenset[str]) -> Case:
    mem_len = draw(st.integers(0, MAX_INPUT))
    mem: bytes = draw(st.binary(min_size=mem_len, max_size=mem_len))
    readonly: bool = draw(st.booleans()) if unsafe else draw(st.integers(0, 7)) == 7
    b = _Builder(draw, mem_len, readonly, unsafe, avoid)
    init: Unit = [Op(MOV64_X, BASE_REG, 1)]
    for reg in range(9):
        init += b.init_unit(reg)
    main, subs, needs_budget = _functions(b)
    items: list[Item] = [*init, *b.with_jumps([*main, [Op(EXIT_ROW)]])]
    for sub in subs:
        items += sub
    budget: int | None = None
    if "endless" in b.unsafe_reasons or needs_budget or (unsafe and b.flag()):
        budget = b.int_in(1, 400)
        b.unsafe_reasons.add("budget")
    if unsafe and not b.unsafe_reasons:
        budget = b.int_in(1, 60)  # still make the run checked-only and maybe stopped
        b.unsafe_reasons.add("budget")
    if readonly:
        b.features.add("readonly")
    return Case(layout(items), mem, readonly, budget, not b.unsafe_reasons,
                tuple(sorted(b.features | {f"unsafe:{r}" for r in b.unsafe_reasons})))


KNOWN_BUG_KINDS = frozenset({"atomic-oob", "cmpxchg-readonly"})
"""What `avoid` may name: "atomic-oob", no atomic at an address outside every
region; "cmpxchg-readonly", no cmpxchg on a read-only input."""


def cases(*, unsafe: bool = False, avoid: Iterable[str] = ()) -> st.SearchStrategy[Case]:
    """Random cases; safe ones unless `unsafe`. `avoid` names program shapes
    (:data:`KNOWN_BUG_KINDS`) to leave out while an engine bug is open."""
    kinds = frozenset(avoid)
    unknown = kinds - KNOWN_BUG_KINDS
    if unknown:
        raise ValueError(f"unknown shapes to avoid: {sorted(unknown)}")
    return _cases(unsafe, kinds)
