"""The eBPF opcode table: one row per valid (opcode, variant) pair.

This module is the single source of truth for the instruction set (RFC 9669:
section 3's encoding, Appendix A's opcode table). The interpreter, the
assembler, the disassembler, the verifier and the JIT all read :data:`OPS`;
nothing else in the package spells an opcode byte. Control-flow and memory
facts are properties of :class:`Form` (``ends_block``, ``target_field``...),
and :class:`Op` names each row's operation. ``python -m ebpfvm.isa`` prints the table.

Rows are generated from field products (class x source x operation) in
:func:`_build_table`, exactly as the opcode byte is composed in the ISA.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum

__all__ = [
    "ALU_CLASSES",
    "BY_OPCODE",
    "CALL_FORMS",
    "JMP_CLASSES",
    "JUMP_FORMS",
    "LDDW_SUBTYPES",
    "MAX_REG",
    "OPS",
    "Cls",
    "Form",
    "Mode",
    "Op",
    "OpInfo",
    "Reg",
    "Size",
    "Src",
    "find_row",
    "rows_for_mnemonic",
]


class Cls(IntEnum):
    """Instruction class: bits 0-2 of the opcode (RFC 9669 section 3.3)."""

    LD = 0
    LDX = 1
    ST = 2
    STX = 3
    ALU = 4
    JMP = 5
    JMP32 = 6
    ALU64 = 7


class Src(IntEnum):
    """Source bit of ALU/JMP opcodes: K = immediate operand, X = register."""

    K = 0x00
    X = 0x08


class Size(IntEnum):
    """Size bits of load/store opcodes."""

    W = 0x00
    H = 0x08
    B = 0x10
    DW = 0x18


SIZE_BYTES: dict[Size, int] = {Size.B: 1, Size.H: 2, Size.W: 4, Size.DW: 8}
SIZE_SUFFIX: dict[Size, str] = {Size.B: "b", Size.H: "h", Size.W: "w", Size.DW: "dw"}


class Mode(IntEnum):
    """Mode bits of load/store opcodes."""

    IMM = 0x00
    ABS = 0x20
    IND = 0x40
    MEM = 0x60
    MEMSX = 0x80
    ATOMIC = 0xC0


class Form(Enum):
    """Operand shape. Drives assembler parsing, disassembler formatting and
    the choice of handler in every engine."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash runs Python code

    ALU_K = "alu_k"  # op dst, imm
    ALU_X = "alu_x"  # op dst, src
    NEG = "neg"  # op dst
    ENDIAN = "endian"  # op dst            (width in imm)
    LDDW = "lddw"  # op dst, imm64     (two slots)
    LDX = "ldx"  # op dst, [src+off]
    ST = "st"  # op [dst+off], imm
    STX = "stx"  # op [dst+off], src
    ATOMIC = "atomic"  # lock op [dst+off], src   (operation in imm)
    JA = "ja"  # ja +off
    JA32 = "ja32"  # ja32 +imm
    JCC_K = "jcc_k"  # op dst, imm, +off
    JCC_X = "jcc_x"  # op dst, src, +off
    CALL = "call"  # call imm           (helper id)
    CALL_LOCAL = "call_local"  # call local +imm
    CALL_RUNTIME = "call_runtime"  # call runtime imm  (BTF id, kfunc)
    CALLX = "callx"  # call dst          (register holds the target)
    EXIT = "exit"  # exit
    LD_ABS = "ld_abs"  # op imm            (legacy packet load into r0)
    LD_IND = "ld_ind"  # op src, imm       (legacy packet load into r0)

    # Control-flow and memory facts of each form (RFC 9669 sections 4.3 and
    # 5), declared once here; cfg, the verifier and every engine read them.

    @property
    def target_field(self) -> str | None:
        """Where the branch or local-call target is, as a slot delta from the
        next slot: ``"off"`` (jumps, RFC 9669 section 4.3), ``"imm"`` (ja32
        and local calls, sections 4.3 and 4.3.2), None for other forms.
        :func:`ebpfvm.cfg.branch_target` is the one place that adds it up."""
        return _TARGET_FIELD.get(self)

    @property
    def has_branch_target(self) -> bool:
        """A jump (conditional or not) or a local call."""
        return self in _TARGET_FIELD

    @property
    def falls_through(self) -> bool:
        """Whether execution may go on at the next instruction (all but ja, ja32
        and exit; a local call returns there)."""
        return self not in _NO_FALL_THROUGH

    @property
    def ends_block(self) -> bool:
        """Whether the instruction ends a basic block: jumps, calls (which may
        stop the program; returns resume after them), exit and legacy packet
        loads (which may end the program)."""
        return self in _BLOCK_ENDERS

    @property
    def memory_base(self) -> str | None:
        """The register field holding the base of a ``[reg + off]`` memory
        access (RFC 9669 section 5.1): ``"src"`` for loads, ``"dst"`` for
        stores and atomics; None for other forms (legacy packet loads address
        the packet, not memory)."""
        return _MEMORY_BASE.get(self)

    @property
    def is_memory_access(self) -> bool:
        """A load, store or atomic through ``[reg + off]``."""
        return self in _MEMORY_BASE


JUMP_FORMS = frozenset({Form.JA, Form.JA32, Form.JCC_K, Form.JCC_X})
CALL_FORMS = frozenset({Form.CALL, Form.CALL_LOCAL, Form.CALL_RUNTIME, Form.CALLX})
_TARGET_FIELD: dict[Form, str] = {
    Form.JA: "off", Form.JCC_K: "off", Form.JCC_X: "off", Form.JA32: "imm", Form.CALL_LOCAL: "imm",
}
_NO_FALL_THROUGH = frozenset({Form.JA, Form.JA32, Form.EXIT})
_BLOCK_ENDERS = JUMP_FORMS | CALL_FORMS | {Form.EXIT, Form.LD_ABS, Form.LD_IND}
_MEMORY_BASE: dict[Form, str] = {Form.LDX: "src", Form.ST: "dst", Form.STX: "dst",
                                 Form.ATOMIC: "dst"}


class Op(str, Enum):
    """The semantic key of a row (:attr:`OpInfo.op`), shared by every engine:
    the operation, whatever the class, source or size. Members compare and
    hash as their string values; compare with members, so that a misspelled
    op is a type error."""

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    # ALU (RFC 9669 section 4.1)
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    SDIV = "sdiv"
    OR = "or"
    AND = "and"
    LSH = "lsh"
    RSH = "rsh"
    NEG = "neg"
    MOD = "mod"
    SMOD = "smod"
    XOR = "xor"
    MOV = "mov"
    MOVSX = "movsx"
    ARSH = "arsh"
    # Byte swaps (section 4.2)
    LE = "le"
    BE = "be"
    BSWAP = "bswap"
    # Jumps (section 4.3)
    JA = "ja"
    JEQ = "jeq"
    JGT = "jgt"
    JGE = "jge"
    JSET = "jset"
    JNE = "jne"
    JSGT = "jsgt"
    JSGE = "jsge"
    JLT = "jlt"
    JLE = "jle"
    JSLT = "jslt"
    JSLE = "jsle"
    CALL = "call"
    CALL_LOCAL = "call_local"
    CALL_RUNTIME = "call_runtime"
    CALLX = "callx"
    EXIT = "exit"
    # Loads and stores (section 5)
    LDX = "ldx"
    LDXS = "ldxs"
    ST = "st"
    STX = "stx"
    LDABS = "ldabs"
    LDIND = "ldind"
    # Atomics (section 5.3): the plain operations share ADD, OR, AND, XOR
    FETCH_ADD = "fetch_add"
    FETCH_OR = "fetch_or"
    FETCH_AND = "fetch_and"
    FETCH_XOR = "fetch_xor"
    XCHG = "xchg"
    CMPXCHG = "cmpxchg"
    # 64-bit immediate loads (section 5.4)
    IMM64 = "imm64"
    MAP_FD = "map_fd"
    MAP_VALUE = "map_value"
    VAR_ADDR = "var_addr"
    CODE_ADDR = "code_addr"
    MAP_IDX = "map_idx"
    MAP_IDX_VALUE = "map_idx_value"


class Reg(Enum):
    """How an instruction uses a register field."""

    __hash__ = object.__hash__  # members are singletons; Enum's hash runs Python code

    NONE = "none"  # the field is not a register: it must hold `src_value` (dst: 0)
    READ = "read"  # a register 0..10 that is only read
    WRITE = "write"  # a register 0..9 that is written (r10 is read-only)


MAX_REG = 10
"""Highest valid register number. r10 is the read-only frame pointer."""

ALU_CLASSES = (Cls.ALU, Cls.ALU64)
JMP_CLASSES = (Cls.JMP, Cls.JMP32)


@dataclass(frozen=True, slots=True)
class OpInfo:
    """One row of the opcode table.

    Columns:
      opcode    the full opcode byte.
      mnemonic  assembler spelling in the uBPF / bpf_conformance dialect
                (``add``, ``add32``, ``ldxw``, ``lock fetch add32``, ``call local``).
      form      operand shape (:class:`Form`).
      cls       instruction class.
      op        semantic key shared by every engine (``add``, ``jgt``, ``fetch_add``...).
      width     operand width in bits: 32 or 64 for ALU/JMP/atomics, the swap
                width for byte swaps, the access size in bits for loads/stores.
      dst, src  how the register fields are used (:class:`Reg`).
      src_value the required value of the src field when ``src`` is NONE
                (call kind, lddw subtype); otherwise unused.
      off, imm  the required value of the field, or None when any value is allowed.
      group     RFC 9669 conformance group (``callx`` is bpf_conformance's own).
      cpu       the LLVM -mcpu level that introduced it (1..4).
      signed    sign-extending load, signed division/modulo, signed compare.
    """

    opcode: int
    mnemonic: str
    form: Form
    cls: Cls
    op: Op
    width: int
    dst: Reg
    src: Reg
    src_value: int = 0
    off: int | None = 0
    imm: int | None = None
    group: str = "base32"
    cpu: int = 1
    signed: bool = False

    @property
    def size(self) -> int:
        """Memory access size in bytes (load, store, atomic, legacy packet load)."""
        return self.width // 8

    @property
    def slots(self) -> int:
        """Number of 8-byte slots the instruction takes (2 for lddw)."""
        return 2 if self.form is Form.LDDW else 1

    @property
    def is_jump(self) -> bool:
        return self.form in JUMP_FORMS

    def describe(self) -> str:
        def rule(value: int | None) -> str:
            return "any" if value is None else str(value)

        src = self.src.value if self.src is not Reg.NONE else f"={self.src_value}"
        return (
            f"0x{self.opcode:02x}  {self.mnemonic:<20} {self.form.value:<12} "
            f"op={self.op:<12} w={self.width:<3} dst={self.dst.value:<5} src={src:<5} "
            f"off={rule(self.off):<4} imm={rule(self.imm):<4} {self.group:<8} v{self.cpu}"
        )


# (code, op) of the ALU operations, RFC 9669 section 4.1.
_ALU_OPS: tuple[tuple[int, Op], ...] = (
    (0x0, Op.ADD),
    (0x1, Op.SUB),
    (0x2, Op.MUL),
    (0x3, Op.DIV),
    (0x4, Op.OR),
    (0x5, Op.AND),
    (0x6, Op.LSH),
    (0x7, Op.RSH),
    (0x9, Op.MOD),
    (0xA, Op.XOR),
    (0xB, Op.MOV),
    (0xC, Op.ARSH),
)
_DIVMUL = frozenset({Op.MUL, Op.DIV, Op.MOD, Op.SDIV, Op.SMOD})
_SIGNED_TWIN = {Op.DIV: Op.SDIV, Op.MOD: Op.SMOD}
"""ALU operations whose off = 1 variant is the signed one (RFC 9669 section 4.1)."""
_ALU_CODE_NEG = 0x8
_ALU_CODE_END = 0xD

# Conditional jumps (RFC 9669 section 4.3): (code, op, signed, cpu level of the JMP form).
_JCC_OPS: tuple[tuple[int, Op, bool, int], ...] = (
    (0x1, Op.JEQ, False, 1),
    (0x2, Op.JGT, False, 1),
    (0x3, Op.JGE, False, 1),
    (0x4, Op.JSET, False, 1),
    (0x5, Op.JNE, False, 1),
    (0x6, Op.JSGT, True, 1),
    (0x7, Op.JSGE, True, 1),
    (0xA, Op.JLT, False, 2),
    (0xB, Op.JLE, False, 2),
    (0xC, Op.JSLT, True, 2),
    (0xD, Op.JSLE, True, 2),
)
_JMP_CODE_JA = 0x0
_JMP_CODE_CALL = 0x8
_JMP_CODE_EXIT = 0x9

# Atomic operations (RFC 9669 section 5.3): imm -> op.
_ATOMIC_OPS: tuple[tuple[int, Op], ...] = (
    (0x00, Op.ADD),
    (0x01, Op.FETCH_ADD),
    (0x40, Op.OR),
    (0x41, Op.FETCH_OR),
    (0x50, Op.AND),
    (0x51, Op.FETCH_AND),
    (0xA0, Op.XOR),
    (0xA1, Op.FETCH_XOR),
    (0xE1, Op.XCHG),
    (0xF1, Op.CMPXCHG),
)
ATOMIC_FETCH = 0x01

# lddw subtypes (RFC 9669 section 5.4): src value -> (mnemonic, op).
LDDW_SUBTYPES: dict[int, tuple[str, Op]] = {
    0: ("lddw", Op.IMM64),
    1: ("lddw_map_fd", Op.MAP_FD),
    2: ("lddw_map_value", Op.MAP_VALUE),
    3: ("lddw_var", Op.VAR_ADDR),
    4: ("lddw_func", Op.CODE_ADDR),
    5: ("lddw_map_idx", Op.MAP_IDX),
    6: ("lddw_map_idx_value", Op.MAP_IDX_VALUE),
}


def _alu_rows() -> list[OpInfo]:
    rows: list[OpInfo] = []
    for cls in ALU_CLASSES:
        width = 64 if cls is Cls.ALU64 else 32
        suffix = "" if cls is Cls.ALU64 else "32"
        base = "base64" if cls is Cls.ALU64 else "base32"
        divmul = "divmul64" if cls is Cls.ALU64 else "divmul32"
        for code, op in _ALU_OPS:
            for src_bit in Src:
                opcode = (code << 4) | src_bit | cls
                form = Form.ALU_K if src_bit is Src.K else Form.ALU_X
                src = Reg.NONE if src_bit is Src.K else Reg.READ
                imm = None if src_bit is Src.K else 0
                variants = [(op, op.value + suffix, 0, False, 1)]
                if op in _SIGNED_TWIN:
                    twin = _SIGNED_TWIN[op]
                    variants.append((twin, twin.value + suffix, 1, True, 4))
                if op is Op.MOV and src_bit is Src.X:
                    for bits in (8, 16, 32) if cls is Cls.ALU64 else (8, 16):
                        variants.append((Op.MOVSX, f"movsx{bits}{width}", bits, True, 4))
                for sem, mnemonic, off, signed, cpu in variants:
                    rows.append(
                        OpInfo(
                            opcode, mnemonic, form, cls, sem, width, Reg.WRITE, src,
                            off=off, imm=imm,
                            group=divmul if sem in _DIVMUL else base, cpu=cpu, signed=signed,
                        )
                    )
        rows.append(
            OpInfo(
                (_ALU_CODE_NEG << 4) | cls, "neg" + suffix, Form.NEG, cls, Op.NEG, width,
                Reg.WRITE, Reg.NONE, imm=0, group=base,
            )
        )
    # Byte swaps (RFC 9669 section 4.2): le/be in ALU, bswap in ALU64 (K form only).
    for cls, src_bit, name, op, cpu in (
        (Cls.ALU, Src.K, "le", Op.LE, 1),
        (Cls.ALU, Src.X, "be", Op.BE, 1),
        (Cls.ALU64, Src.K, "bswap", Op.BSWAP, 4),
    ):
        for bits in (16, 32, 64):
            rows.append(
                OpInfo(
                    (_ALU_CODE_END << 4) | src_bit | cls, f"{name}{bits}", Form.ENDIAN, cls, op,
                    bits, Reg.WRITE, Reg.NONE, imm=bits,
                    group="base64" if bits == 64 else "base32", cpu=cpu,
                )
            )
    return rows


def _jmp_rows() -> list[OpInfo]:
    rows: list[OpInfo] = [
        OpInfo(_JMP_CODE_JA << 4 | Cls.JMP, "ja", Form.JA, Cls.JMP, Op.JA, 64,
               Reg.NONE, Reg.NONE, off=None, imm=0),
        OpInfo(_JMP_CODE_JA << 4 | Cls.JMP32, "ja32", Form.JA32, Cls.JMP32, Op.JA, 32,
               Reg.NONE, Reg.NONE, off=0, imm=None, cpu=4),
    ]
    for cls in JMP_CLASSES:
        width = 64 if cls is Cls.JMP else 32
        suffix = "" if cls is Cls.JMP else "32"
        for code, op, signed, cpu in _JCC_OPS:
            for src_bit in Src:
                rows.append(
                    OpInfo(
                        (code << 4) | src_bit | cls, op.value + suffix,
                        Form.JCC_K if src_bit is Src.K else Form.JCC_X, cls, op, width,
                        Reg.READ, Reg.NONE if src_bit is Src.K else Reg.READ,
                        off=None, imm=None if src_bit is Src.K else 0,
                        group="base64" if cls is Cls.JMP else "base32",
                        cpu=cpu if cls is Cls.JMP else 3, signed=signed,
                    )
                )
    call = (_JMP_CODE_CALL << 4) | Cls.JMP
    rows += [
        OpInfo(call, "call", Form.CALL, Cls.JMP, Op.CALL, 64, Reg.NONE, Reg.NONE,
               src_value=0, imm=None),
        OpInfo(call, "call local", Form.CALL_LOCAL, Cls.JMP, Op.CALL_LOCAL, 64, Reg.NONE,
               Reg.NONE, src_value=1, imm=None, cpu=3),
        OpInfo(call, "call runtime", Form.CALL_RUNTIME, Cls.JMP, Op.CALL_RUNTIME, 64,
               Reg.NONE, Reg.NONE, src_value=2, imm=None, cpu=3),
        # callx as bpf_conformance defines it: the target is in the *dst* field.
        OpInfo(call | Src.X, "call", Form.CALLX, Cls.JMP, Op.CALLX, 64, Reg.READ, Reg.NONE,
               imm=0, group="callx"),
        OpInfo((_JMP_CODE_EXIT << 4) | Cls.JMP, "exit", Form.EXIT, Cls.JMP, Op.EXIT, 64,
               Reg.NONE, Reg.NONE, imm=0),
    ]
    return rows


def _mem_rows() -> list[OpInfo]:
    rows: list[OpInfo] = []
    for size in (Size.B, Size.H, Size.W, Size.DW):
        nbytes = SIZE_BYTES[size]
        sfx = SIZE_SUFFIX[size]
        group = "base64" if size is Size.DW else "base32"
        rows += [
            OpInfo(Mode.MEM | size | Cls.LDX, "ldx" + sfx, Form.LDX, Cls.LDX, Op.LDX, nbytes * 8,
                   Reg.WRITE, Reg.READ, off=None, imm=0, group=group),
            OpInfo(Mode.MEM | size | Cls.ST, "st" + sfx, Form.ST, Cls.ST, Op.ST, nbytes * 8,
                   Reg.READ, Reg.NONE, off=None, imm=None, group=group),
            OpInfo(Mode.MEM | size | Cls.STX, "stx" + sfx, Form.STX, Cls.STX, Op.STX, nbytes * 8,
                   Reg.READ, Reg.READ, off=None, imm=0, group=group),
        ]
        if size is not Size.DW:
            rows.append(
                OpInfo(Mode.MEMSX | size | Cls.LDX, "ldxs" + sfx, Form.LDX, Cls.LDX, Op.LDXS,
                       nbytes * 8, Reg.WRITE, Reg.READ, off=None, imm=0, cpu=4, signed=True)
            )
            # Legacy packet loads (RFC 9669 section 5.5): no DW form.
            rows += [
                OpInfo(Mode.ABS | size | Cls.LD, "ldabs" + sfx, Form.LD_ABS, Cls.LD, Op.LDABS,
                       nbytes * 8, Reg.NONE, Reg.NONE, imm=None, group="packet"),
                OpInfo(Mode.IND | size | Cls.LD, "ldind" + sfx, Form.LD_IND, Cls.LD, Op.LDIND,
                       nbytes * 8, Reg.NONE, Reg.READ, imm=None, group="packet"),
            ]
    for size, suffix, group in ((Size.W, "32", "atomic32"), (Size.DW, "", "atomic64")):
        for imm, op in _ATOMIC_OPS:
            words = op.value.split("_")
            mnemonic = "lock " + " ".join(words) + suffix
            # Fetch forms write the old value back into src; cmpxchg writes it into r0.
            writes_src = bool(imm & ATOMIC_FETCH) and op is not Op.CMPXCHG
            rows.append(
                OpInfo(Mode.ATOMIC | size | Cls.STX, mnemonic, Form.ATOMIC, Cls.STX, op,
                       SIZE_BYTES[size] * 8, Reg.READ, Reg.WRITE if writes_src else Reg.READ,
                       off=None, imm=imm, group=group, cpu=3)
            )
    for src_value, (mnemonic, op) in LDDW_SUBTYPES.items():
        rows.append(
            OpInfo(Mode.IMM | Size.DW | Cls.LD, mnemonic, Form.LDDW, Cls.LD, op, 64, Reg.WRITE,
                   Reg.NONE, src_value=src_value, imm=None, group="base64")
        )
    return rows


def _build_table() -> tuple[OpInfo, ...]:
    rows = _alu_rows() + _jmp_rows() + _mem_rows()
    return tuple(sorted(rows, key=lambda r: (r.opcode, r.src_value, r.off or 0, r.imm or 0)))


OPS: tuple[OpInfo, ...] = _build_table()
"""Every valid instruction row, sorted by opcode."""


def _index() -> tuple[list[tuple[OpInfo, ...]], dict[str, tuple[OpInfo, ...]]]:
    by_opcode: list[list[OpInfo]] = [[] for _ in range(256)]
    by_mnemonic: dict[str, list[OpInfo]] = {}
    seen: set[tuple[int, int, int | None, int | None]] = set()
    for row in OPS:
        key = (row.opcode, row.src_value, row.off, row.imm)
        if key in seen:
            raise RuntimeError(f"duplicate opcode table row {row.describe()}")
        seen.add(key)
        by_opcode[row.opcode].append(row)
        same = by_mnemonic.setdefault(row.mnemonic, [])
        if any(other.form is row.form for other in same):
            raise RuntimeError(f"duplicate (mnemonic, form) {row.mnemonic!r} {row.form}")
        same.append(row)
    return [tuple(rows) for rows in by_opcode], {k: tuple(v) for k, v in by_mnemonic.items()}


BY_OPCODE, BY_MNEMONIC = _index()
"""BY_OPCODE[opcode] lists the rows of one opcode byte (empty when invalid);
BY_MNEMONIC[mnemonic] lists the rows that share a spelling (K and X forms)."""

MNEMONIC_ALIASES: dict[str, str] = {
    **{f"{op.value}64": op.value for _code, op in _ALU_OPS},
    "neg64": "neg",
    "sdiv64": "sdiv",
    "smod64": "smod",
    "swap16": "bswap16",
    "swap32": "bswap32",
    "swap64": "bswap64",
    "callx": "call",
    "gotol": "ja32",
}
"""Other spellings the assembler accepts (rbpf's ``add64``, ``swap16``...)."""


def rows_for_mnemonic(mnemonic: str) -> tuple[OpInfo, ...]:
    """Rows spelled `mnemonic` (aliases resolved); empty when unknown."""
    name = MNEMONIC_ALIASES.get(mnemonic, mnemonic)
    return BY_MNEMONIC.get(name, ())


def _fits(row: OpInfo, src: int, off: int, imm: int) -> bool:
    """Whether the discriminating fields (src subtype, off, imm) select `row`."""
    if row.src is Reg.NONE and src != row.src_value:
        return False
    if row.off is not None and off != row.off:
        return False
    return row.imm is None or imm == row.imm


def find_row(opcode: int, src: int, off: int, imm: int) -> OpInfo | None:
    """The row that an instruction's fields select, or None.

    Register fields are not checked here (the verifier does that); the src
    field is checked only where it is a subtype rather than a register.
    """
    for row in BY_OPCODE[opcode]:
        if _fits(row, src, off, imm):
            return row
    return None


def main() -> None:
    """Print the whole table: the readable spec."""
    for row in OPS:
        print(row.describe())
    print(f"{len(OPS)} rows, {sum(1 for rows in BY_OPCODE if rows)} opcode bytes")


if __name__ == "__main__":
    main()
