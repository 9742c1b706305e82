"""x86-64 machine-code encoder (layer 1).

Encodings follow the Intel 64 and IA-32 Architectures Software Developer's
Manual, Volume 2 (chapter 2, "Instruction Format", and the per-instruction
pages of chapters 3-5). This module knows nothing about eBPF: it turns one
method call into the bytes of one instruction, and every opcode byte, prefix
and ModRM ``/digit`` it uses is a named constant below.

An instruction is laid out as::

    [legacy prefixes: F0 lock, 66 operand size] [REX] opcode [ModRM [SIB] [disp]] [imm]

Conventions:

* ``w64=True`` selects 64-bit operand size (REX.W). A 32-bit register write
  zero-extends into bits 63..32; 8- and 16-bit writes do not.
* A memory operand is :class:`Mem`, ``[base + disp]`` with a signed 32-bit
  displacement. ``disp8`` is used whenever the displacement fits s8.
* Immediates are checked against the field that holds them and raise
  ValueError when they cannot be encoded; 32-bit forms also accept the
  unsigned spelling (``0xFFFFFFFF`` for ``-1``).
* Where two encodings exist, the shorter one is chosen, matching ``llvm-mc``:
  ``83 /d ib`` for group-1 immediates that fit s8, the accumulator forms
  ``05 id`` ... ``3D id`` and ``A9 id`` when the register is RAX, and
  ``D1 /d`` for shifts by 1.
* Branches to labels always use rel32 (see :mod:`ebpfvm.jit.codebuf`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from ebpfvm.jit.codebuf import CodeBuffer, Label

__all__ = [
    "AluOp",
    "Cond",
    "Label",
    "Mem",
    "Reg",
    "ShiftOp",
    "X86Assembler",
    "encode_mem",
    "modrm",
    "rex",
    "sib",
]


class Reg(IntEnum):
    """General-purpose registers by their 4-bit encoding (Vol. 2, 2.2.1.2)."""

    __hash__ = int.__hash__  # Enum's own hash runs Python code; this one is C

    RAX = 0
    RCX = 1
    RDX = 2
    RBX = 3
    RSP = 4
    RBP = 5
    RSI = 6
    RDI = 7
    R8 = 8
    R9 = 9
    R10 = 10
    R11 = 11
    R12 = 12
    R13 = 13
    R14 = 14
    R15 = 15

    low3: int
    """The 3 bits that go in ModRM.reg, ModRM.rm, SIB.base or opcode+rd."""
    ext: int
    """The 4th bit, carried by REX.R, REX.X or REX.B."""


# Plain attributes set once: a property on an enum member costs a Python call
# on every use, and the encoder asks for these bits constantly.
for _reg in Reg:
    _reg.low3 = int(_reg) & 0b111
    _reg.ext = int(_reg) >> 3


class Cond(IntEnum):
    """Condition codes, the ``cc`` nibble of Jcc/SETcc/CMOVcc (Vol. 1, B.1)."""

    __hash__ = int.__hash__  # Enum's own hash runs Python code; this one is C

    O = 0  # noqa: E741 (the Intel manual's name)
    NO = 1
    B = 2  # unsigned <
    AE = 3  # unsigned >=
    E = 4
    NE = 5
    BE = 6  # unsigned <=
    A = 7  # unsigned >
    S = 8
    NS = 9
    P = 10
    NP = 11
    L = 12  # signed <
    GE = 13  # signed >=
    LE = 14  # signed <=
    G = 15  # signed >


class AluOp(IntEnum):
    """Group-1 arithmetic operations; the value is the ``/digit`` of 80/81/83."""

    __hash__ = int.__hash__  # Enum's own hash runs Python code; this one is C

    ADD = 0
    OR = 1
    ADC = 2
    SBB = 3
    AND = 4
    SUB = 5
    XOR = 6
    CMP = 7


class ShiftOp(IntEnum):
    """Group-2 shifts and rotates; the value is the ``/digit`` of C1/D1/D3."""

    __hash__ = int.__hash__  # Enum's own hash runs Python code; this one is C

    ROL = 0
    ROR = 1
    SHL = 4
    SHR = 5
    SAR = 7


# --- prefixes (Vol. 2, 2.1.1 and 2.2.1) -----------------------------------------
PREFIX_LOCK = 0xF0
PREFIX_OPERAND_SIZE = 0x66  # 16-bit operand size
PREFIX_REP = 0xF3  # repeat a string instruction rCX times
REX_BASE = 0x40  # 0100WRXB
REX_W = 0x08  # 64-bit operand size
REX_R = 0x04  # extends ModRM.reg
REX_X = 0x02  # extends SIB.index
REX_B = 0x01  # extends ModRM.rm, SIB.base or opcode+rd
ESCAPE_0F = 0x0F  # two-byte opcode map

# --- ModRM / SIB fields (Vol. 2, 2.1.5) ------------------------------------------
MOD_INDIRECT = 0b00  # [base]
MOD_DISP8 = 0b01  # [base + disp8]
MOD_DISP32 = 0b10  # [base + disp32]
MOD_DIRECT = 0b11  # register operand
RM_SIB = 0b100  # rm = 100: a SIB byte follows (so RSP/R12 as base need one)
RM_RBP_DISP = 0b101  # rm = 101 with mod 00 means RIP+disp32 (so RBP/R13 need mod 01)
SIB_NO_INDEX = 0b100  # index = 100 (without REX.X): no index register
SIB_SCALE_1 = 0b00

# --- moves ------------------------------------------------------------------------
MOV_RM8_R8 = 0x88  # mov r/m8, r8
MOV_RM_R = 0x89  # mov r/m32|64, r32|64
MOV_R_RM = 0x8B  # mov r32|64, r/m32|64
MOV_RM8_IMM8 = 0xC6  # mov r/m8, imm8           /0
MOV_RM_IMM32 = 0xC7  # mov r/m16|32|64, imm16|32 /0 (sign-extended for 64)
MOV_IMM_DIGIT = 0
MOV_R_IMM = 0xB8  # mov r32, imm32 / (REX.W) mov r64, imm64:  B8+rd
MOVZX_R_RM8 = bytes([ESCAPE_0F, 0xB6])
MOVZX_R_RM16 = bytes([ESCAPE_0F, 0xB7])
MOVSX_R_RM8 = bytes([ESCAPE_0F, 0xBE])
MOVSX_R_RM16 = bytes([ESCAPE_0F, 0xBF])
MOVSXD_R_RM32 = 0x63  # with REX.W
LEA_R_M = 0x8D
# load(size, signed) -> (opcode, REX.W): zero-extension comes from 32-bit writes
LOAD_FORMS: dict[tuple[int, bool], tuple[int | bytes, bool]] = {
    (1, False): (MOVZX_R_RM8, False),
    (2, False): (MOVZX_R_RM16, False),
    (4, False): (MOV_R_RM, False),
    (8, False): (MOV_R_RM, True),
    (1, True): (MOVSX_R_RM8, True),
    (2, True): (MOVSX_R_RM16, True),
    (4, True): (MOVSXD_R_RM32, True),
}

# --- group 1 ALU: op r/m, r | op r, r/m | op eAX, imm32 | 81 /d id | 83 /d ib -----
ALU_RM_R: dict[AluOp, int] = {
    AluOp.ADD: 0x01,
    AluOp.OR: 0x09,
    AluOp.ADC: 0x11,
    AluOp.SBB: 0x19,
    AluOp.AND: 0x21,
    AluOp.SUB: 0x29,
    AluOp.XOR: 0x31,
    AluOp.CMP: 0x39,
}
ALU_R_RM: dict[AluOp, int] = {
    AluOp.ADD: 0x03,
    AluOp.OR: 0x0B,
    AluOp.ADC: 0x13,
    AluOp.SBB: 0x1B,
    AluOp.AND: 0x23,
    AluOp.SUB: 0x2B,
    AluOp.XOR: 0x33,
    AluOp.CMP: 0x3B,
}
ALU_EAX_IMM32: dict[AluOp, int] = {
    AluOp.ADD: 0x05,
    AluOp.OR: 0x0D,
    AluOp.ADC: 0x15,
    AluOp.SBB: 0x1D,
    AluOp.AND: 0x25,
    AluOp.SUB: 0x2D,
    AluOp.XOR: 0x35,
    AluOp.CMP: 0x3D,
}
GRP1_RM_IMM32 = 0x81
GRP1_RM_IMM8 = 0x83  # imm8 sign-extended to the operand size

# --- group 2 shifts, group 3 unary, multiply ----------------------------------
GRP2_RM_IMM8 = 0xC1
GRP2_RM_1 = 0xD1
GRP2_RM_CL = 0xD3
GRP3_RM = 0xF7
GRP3_TEST_DIGIT = 0  # test r/m, imm32
GRP3_NEG_DIGIT = 3
GRP3_DIV_DIGIT = 6  # unsigned rDX:rAX / r/m
GRP3_IDIV_DIGIT = 7  # signed
TEST_RM_R = 0x85
TEST_EAX_IMM32 = 0xA9
IMUL_R_RM = bytes([ESCAPE_0F, 0xAF])
IMUL_R_RM_IMM8 = 0x6B
IMUL_R_RM_IMM32 = 0x69
CDQ = 0x99  # sign-extend eAX into eDX; with REX.W it is CQO
STOS = 0xAB  # store eAX at [rDI], advance rDI; with REX.W it is STOSQ
BSWAP_R = 0xC8  # 0F C8+rd

# --- atomics ------------------------------------------------------------------------
XADD_RM_R = bytes([ESCAPE_0F, 0xC1])
CMPXCHG_RM_R = bytes([ESCAPE_0F, 0xB1])
XCHG_RM_R = 0x87  # implicitly locked with a memory operand
LOCKABLE_ALU_OPS = frozenset(AluOp) - {AluOp.CMP}  # lock cmp raises #UD

# --- control flow -----------------------------------------------------------------
JMP_REL32 = 0xE9
CALL_REL32 = 0xE8
JCC_REL32 = 0x80  # 0F 80+cc
GRP5_RM = 0xFF
GRP5_CALL_DIGIT = 2  # call r/m64
GRP5_JMP_DIGIT = 4  # jmp r/m64
RET = 0xC3
PUSH_R = 0x50  # 50+rd, 64-bit by default
POP_R = 0x58  # 58+rd
UD2 = bytes([ESCAPE_0F, 0x0B])
INT3 = 0xCC
NOP = 0x90

# Byte registers SPL, BPL, SIL, DIL exist only with a REX prefix; without one,
# the same encodings name AH, CH, DH, BH (Vol. 2, 3.7.2.1 / table 3-1).
BYTE_REGS_NEEDING_REX = frozenset({Reg.RSP, Reg.RBP, Reg.RSI, Reg.RDI})
_BYTE_REX_NUMBERS = frozenset(int(reg) for reg in BYTE_REGS_NEEDING_REX)
"""The same as plain ints: hashing an IntEnum member goes through Python code."""

S8_MIN, S8_MAX = -(1 << 7), (1 << 7) - 1
S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1
U32_MAX = (1 << 32) - 1
S64_MIN, U64_MAX = -(1 << 63), (1 << 64) - 1


def fits_s8(value: int) -> bool:
    return S8_MIN <= value <= S8_MAX


def fits_s32(value: int) -> bool:
    return S32_MIN <= value <= S32_MAX


def _check_field(value: int, bits: int, what: str) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{what} field {value} does not fit {bits} bits")


def rex(w: bool | int, r: int, x: int, b: int) -> int:
    """The REX byte ``0100WRXB``; each argument is 0 or 1."""
    if (int(w) | r | x | b) >> 1:  # also catches negatives: -1 >> 1 == -1
        for value, what in ((int(w), "REX.W"), (r, "REX.R"), (x, "REX.X"), (b, "REX.B")):
            _check_field(value, 1, what)
    return REX_BASE | (REX_W if w else 0) | (REX_R * r) | (REX_X * x) | (REX_B * b)


def modrm(mod: int, reg: int, rm: int) -> int:
    """The ModRM byte: 2-bit `mod`, 3-bit `reg` (register or /digit), 3-bit `rm`."""
    if mod >> 2 or (reg | rm) >> 3:  # the fast common case first; the checks name the field
        _check_field(mod, 2, "ModRM.mod")
        _check_field(reg, 3, "ModRM.reg")
        _check_field(rm, 3, "ModRM.rm")
    return (mod << 6) | (reg << 3) | rm


def sib(scale: int, index: int, base: int) -> int:
    """The SIB byte: 2-bit `scale` field (0..3 for x1, x2, x4, x8), 3-bit
    `index` and `base`."""
    _check_field(scale, 2, "SIB.scale")
    _check_field(index, 3, "SIB.index")
    _check_field(base, 3, "SIB.base")
    return (scale << 6) | (index << 3) | base


@dataclass(frozen=True, slots=True)
class Mem:
    """Memory operand ``[base + disp]``; `disp` must fit s32."""

    base: Reg
    disp: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.base, Reg):
            raise ValueError(f"memory base must be a Reg, not {self.base!r}")
        if not fits_s32(self.disp):
            raise ValueError(f"displacement {self.disp} does not fit s32")


def encode_mem(reg: int, mem: Mem) -> bytes:
    """ModRM, optional SIB and displacement for ``[base + disp]``.

    `reg` is the 3-bit ModRM.reg field (register low bits or /digit); REX.B
    for the base is the caller's business. The two special cases of the
    ModRM table are handled here and only here:

    * rm = 100 (RSP, R12) means "SIB follows", so those bases get a SIB byte
      with no index.
    * mod = 00 with rm = 101 (RBP, R13) means RIP-relative, so those bases
      use mod = 01 with a zero disp8 when the displacement is 0.
    """
    base = mem.base
    if mem.disp == 0 and base.low3 != RM_RBP_DISP:
        mod, disp = MOD_INDIRECT, b""
    elif fits_s8(mem.disp):
        mod, disp = MOD_DISP8, mem.disp.to_bytes(1, "little", signed=True)
    else:
        mod, disp = MOD_DISP32, mem.disp.to_bytes(4, "little", signed=True)
    if base.low3 == RM_SIB:
        return bytes([modrm(mod, reg, RM_SIB), sib(SIB_SCALE_1, SIB_NO_INDEX, base.low3)]) + disp
    return bytes([modrm(mod, reg, base.low3)]) + disp


def _imm32(imm: int, w64: bool) -> int:
    """The s32 bit pattern of a 32-bit immediate field. For 64-bit operations
    the field is sign-extended, so `imm` must fit s32; for 32-bit operations
    the unsigned spelling (up to 0xFFFFFFFF) is accepted too."""
    if fits_s32(imm):
        return imm
    if not w64 and 0 <= imm <= U32_MAX:
        return imm - (1 << 32)
    width = "s32" if w64 else "s32 or u32"
    raise ValueError(f"immediate {imm:#x} does not fit {width}")


def _s8(value: int) -> bytes:
    return value.to_bytes(1, "little", signed=True)


def _s32(value: int) -> bytes:
    return value.to_bytes(4, "little", signed=True)


def _low_bits(imm: int, size: int) -> bytes:
    """The low `size` bytes of a 64-bit (signed or unsigned) integer."""
    if not S64_MIN <= imm <= U64_MAX:
        raise ValueError(f"immediate {imm:#x} does not fit 64 bits")
    return (imm & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def _opcode(opcode: int | bytes) -> bytes:
    return bytes([opcode]) if isinstance(opcode, int) else opcode


class X86Assembler:
    """Emits one x86-64 instruction per method call into :attr:`buf`."""

    def __init__(self) -> None:
        self.buf = CodeBuffer()

    # --- labels -----------------------------------------------------------------------
    def new_label(self, name: str = "") -> Label:
        return Label(name)

    def bind(self, label: Label) -> None:
        self.buf.bind(label)

    def code(self) -> bytes:
        """Resolve every rel32 fixup and return the machine code."""
        self.buf.resolve()
        return bytes(self.buf.data)

    # --- instruction skeletons ------------------------------------------------------
    def _emit_modrm(
        self,
        opcode: int | bytes,
        reg: int,
        rm: Reg | Mem,
        *,
        w64: bool,
        prefix: bytes = b"",
        imm: bytes = b"",
        byte_reg: Reg | None = None,
    ) -> None:
        """``prefix [REX] opcode ModRM [SIB] [disp] imm``.

        `reg` is a Reg or a /digit (0..7); `rm` a register or memory operand;
        `byte_reg` names the register used as an 8-bit operand, if any, so that
        SPL..DIL get the REX prefix that distinguishes them from AH..BH."""
        if isinstance(rm, Mem):
            b, operand = rm.base.ext, encode_mem(reg & 0b111, rm)
        else:
            b, operand = rm.ext, bytes([modrm(MOD_DIRECT, reg & 0b111, rm.low3)])
        r = reg >> 3
        needs_rex = w64 or r or b or (byte_reg is not None and int(byte_reg) in _BYTE_REX_NUMBERS)
        rex_byte = bytes([rex(w64, r, 0, b)]) if needs_rex else b""
        self.buf.emit(prefix + rex_byte + _opcode(opcode) + operand + imm)

    def _emit_plus_r(
        self, opcode: bytes, base: int, reg: Reg, *, w64: bool, imm: bytes = b""
    ) -> None:
        """``[REX] opcode (base + reg.low3) imm``, the register-in-opcode forms."""
        needs_rex = w64 or reg.ext
        rex_byte = bytes([rex(w64, 0, 0, reg.ext)]) if needs_rex else b""
        self.buf.emit(rex_byte + opcode + bytes([base + reg.low3]) + imm)

    def _emit_plain(self, opcode: int | bytes, *, w64: bool = False, imm: bytes = b"") -> None:
        """``[REX.W] opcode imm``, for forms with no ModRM."""
        rex_byte = bytes([rex(w64, 0, 0, 0)]) if w64 else b""
        self.buf.emit(rex_byte + _opcode(opcode) + imm)

    # --- moves ---------------------------------------------------------------------------
    def mov_rr(self, dst: Reg, src: Reg, w64: bool = True) -> None:
        """``mov dst, src`` (89 /r); the 32-bit form zero-extends dst."""
        self._emit_modrm(MOV_RM_R, src, dst, w64=w64)

    def mov_ri(self, dst: Reg, imm: int, w64: bool = True) -> None:
        """``mov dst, imm``. 64-bit: REX.W C7 /0 id, `imm` fits s32 and is
        sign-extended. 32-bit: B8+rd id, `imm` is s32 or u32 and zero-extends."""
        if w64:
            self._emit_modrm(
                MOV_RM_IMM32, MOV_IMM_DIGIT, dst, w64=True, imm=_s32(_imm32(imm, True))
            )
        else:
            self._emit_plus_r(b"", MOV_R_IMM, dst, w64=False, imm=_s32(_imm32(imm, False)))

    def mov_ri64(self, dst: Reg, imm: int) -> None:
        """``movabs dst, imm64`` (REX.W B8+rd io, always 10 bytes); `imm` is
        any signed or unsigned 64-bit value."""
        if not S64_MIN <= imm <= U64_MAX:
            raise ValueError(f"immediate {imm:#x} does not fit 64 bits")
        self._emit_plus_r(b"", MOV_R_IMM, dst, w64=True, imm=_low_bits(imm, 8))

    def load(self, dst: Reg, mem: Mem, size: int, signed: bool = False) -> None:
        """Load `size` bytes into dst, zero- or sign-extending to 64 bits.

        Unsigned: movzx r32, byte|word (0F B6 | 0F B7), mov r32 (8B), mov r64
        (REX.W 8B); the 32-bit writes clear bits 63..32. Signed: movsx r64,
        byte|word (REX.W 0F BE | 0F BF), movsxd r64, dword (REX.W 63)."""
        form = LOAD_FORMS.get((size, signed))
        if form is None:
            raise ValueError(f"no {'signed ' if signed else ''}load of size {size}")
        opcode, w64 = form
        self._emit_modrm(opcode, dst, mem, w64=w64)

    def store(self, mem: Mem, src: Reg, size: int) -> None:
        """Store the low `size` bytes of src: 88, 66 89, 89 or REX.W 89."""
        if size == 1:
            self._emit_modrm(MOV_RM8_R8, src, mem, w64=False, byte_reg=src)
        elif size == 2:
            self._emit_modrm(MOV_RM_R, src, mem, w64=False, prefix=bytes([PREFIX_OPERAND_SIZE]))
        elif size in (4, 8):
            self._emit_modrm(MOV_RM_R, src, mem, w64=size == 8)
        else:
            raise ValueError(f"no store of size {size}")

    def store_imm(self, mem: Mem, imm: int, size: int) -> None:
        """Store an immediate: C6 /0 ib, 66 C7 /0 iw, C7 /0 id, REX.W C7 /0 id.

        Sizes 1, 2 and 4 store the low bits of `imm`; size 8 sign-extends an
        imm32, so `imm` must fit s32."""
        if size == 1:
            self._emit_modrm(MOV_RM8_IMM8, MOV_IMM_DIGIT, mem, w64=False, imm=_low_bits(imm, 1))
        elif size == 2:
            prefix = bytes([PREFIX_OPERAND_SIZE])
            self._emit_modrm(
                MOV_RM_IMM32, MOV_IMM_DIGIT, mem, w64=False, prefix=prefix, imm=_low_bits(imm, 2)
            )
        elif size == 4:
            self._emit_modrm(MOV_RM_IMM32, MOV_IMM_DIGIT, mem, w64=False, imm=_low_bits(imm, 4))
        elif size == 8:
            self._emit_modrm(
                MOV_RM_IMM32, MOV_IMM_DIGIT, mem, w64=True, imm=_s32(_imm32(imm, True))
            )
        else:
            raise ValueError(f"no store of size {size}")

    def lea(self, dst: Reg, mem: Mem) -> None:
        """``lea dst, [base + disp]`` (REX.W 8D /r)."""
        self._emit_modrm(LEA_R_M, dst, mem, w64=True)

    def movzx_rr(self, dst: Reg, src: Reg, size: int) -> None:
        """Zero-extend the low byte (0F B6) or word (0F B7) of src into dst32."""
        if size == 1:
            self._emit_modrm(MOVZX_R_RM8, dst, src, w64=False, byte_reg=src)
        elif size == 2:
            self._emit_modrm(MOVZX_R_RM16, dst, src, w64=False)
        else:
            raise ValueError(f"no movzx from size {size}")

    def movsx_rr(self, dst: Reg, src: Reg, size: int, w64: bool) -> None:
        """Sign-extend the low byte (0F BE) or word (0F BF) of src into dst32|64,
        or its dword into dst64 (movsxd, REX.W 63)."""
        if size == 1:
            self._emit_modrm(MOVSX_R_RM8, dst, src, w64=w64, byte_reg=src)
        elif size == 2:
            self._emit_modrm(MOVSX_R_RM16, dst, src, w64=w64)
        elif size == 4 and w64:
            self._emit_modrm(MOVSXD_R_RM32, dst, src, w64=True)
        else:
            raise ValueError(f"no movsx from size {size} to {64 if w64 else 32} bits")

    # --- ALU ---------------------------------------------------------------------------
    def alu_rr(self, op: AluOp, dst: Reg, src: Reg, w64: bool = True) -> None:
        """``op dst, src`` in the r/m, r form (01, 09, ... 39 /r)."""
        self._emit_modrm(ALU_RM_R[op], src, dst, w64=w64)

    def alu_ri(self, op: AluOp, dst: Reg, imm: int, w64: bool = True) -> None:
        """``op dst, imm``: 83 /d ib when imm fits s8, else the accumulator form
        (05 ... 3D id) for RAX, else 81 /d id. The immediate is sign-extended."""
        value = _imm32(imm, w64)
        if fits_s8(value):
            self._emit_modrm(GRP1_RM_IMM8, op, dst, w64=w64, imm=_s8(value))
        elif dst == Reg.RAX:
            self._emit_plain(ALU_EAX_IMM32[op], w64=w64, imm=_s32(value))
        else:
            self._emit_modrm(GRP1_RM_IMM32, op, dst, w64=w64, imm=_s32(value))

    def alu_rm(self, op: AluOp, dst: Reg, mem: Mem, w64: bool = True) -> None:
        """``op dst, [mem]`` in the r, r/m form (03, 0B, ... 3B /r)."""
        self._emit_modrm(ALU_R_RM[op], dst, mem, w64=w64)

    def alu_mr(self, op: AluOp, mem: Mem, src: Reg, w64: bool = True) -> None:
        """``op [mem], src`` in the r/m, r form (01, 09, ... 39 /r)."""
        self._emit_modrm(ALU_RM_R[op], src, mem, w64=w64)

    def alu_mi(self, op: AluOp, mem: Mem, imm: int, w64: bool = True) -> None:
        """``op dword|qword [mem], imm``: 83 /d ib when imm fits s8, else 81 /d id."""
        value = _imm32(imm, w64)
        if fits_s8(value):
            self._emit_modrm(GRP1_RM_IMM8, op, mem, w64=w64, imm=_s8(value))
        else:
            self._emit_modrm(GRP1_RM_IMM32, op, mem, w64=w64, imm=_s32(value))

    def test_rr(self, a: Reg, b: Reg, w64: bool = True) -> None:
        """``test a, b`` (85 /r): flags of a & b."""
        self._emit_modrm(TEST_RM_R, b, a, w64=w64)

    def test_ri(self, a: Reg, imm: int, w64: bool = True) -> None:
        """``test a, imm32``: A9 id for RAX, else F7 /0 id (sign-extended)."""
        value = _s32(_imm32(imm, w64))
        if a == Reg.RAX:
            self._emit_plain(TEST_EAX_IMM32, w64=w64, imm=value)
        else:
            self._emit_modrm(GRP3_RM, GRP3_TEST_DIGIT, a, w64=w64, imm=value)

    def imul_rr(self, dst: Reg, src: Reg, w64: bool = True) -> None:
        """``imul dst, src`` (0F AF /r); the low half is the same signed or unsigned."""
        self._emit_modrm(IMUL_R_RM, dst, src, w64=w64)

    def imul_rri(self, dst: Reg, src: Reg, imm: int, w64: bool = True) -> None:
        """``imul dst, src, imm``: 6B /r ib when imm fits s8, else 69 /r id."""
        value = _imm32(imm, w64)
        if fits_s8(value):
            self._emit_modrm(IMUL_R_RM_IMM8, dst, src, w64=w64, imm=_s8(value))
        else:
            self._emit_modrm(IMUL_R_RM_IMM32, dst, src, w64=w64, imm=_s32(value))

    def shift_ri(self, op: ShiftOp, dst: Reg, count: int, w64: bool = True) -> None:
        """``op dst, count``: D1 /d for count 1, else C1 /d ib. The count must
        be below the operand width (the CPU would mask it anyway)."""
        bits = 64 if w64 else 32
        if not 0 <= count < bits:
            raise ValueError(f"shift count {count} is outside [0, {bits - 1}]")
        if count == 1:
            self._emit_modrm(GRP2_RM_1, op, dst, w64=w64)
        else:
            self._emit_modrm(GRP2_RM_IMM8, op, dst, w64=w64, imm=bytes([count]))

    def shift_cl(self, op: ShiftOp, dst: Reg, w64: bool = True) -> None:
        """``op dst, cl`` (D3 /d); the CPU masks CL to 5 or 6 bits."""
        self._emit_modrm(GRP2_RM_CL, op, dst, w64=w64)

    def ror16_ri(self, dst: Reg, count: int) -> None:
        """``ror dst16, count`` (66 C1 /1 ib, or 66 D1 /1 for count 1); bits
        63..16 of dst are left unchanged."""
        if not 0 <= count < 16:
            raise ValueError(f"16-bit rotate count {count} is outside [0, 15]")
        prefix = bytes([PREFIX_OPERAND_SIZE])
        if count == 1:
            self._emit_modrm(GRP2_RM_1, ShiftOp.ROR, dst, w64=False, prefix=prefix)
        else:
            self._emit_modrm(
                GRP2_RM_IMM8, ShiftOp.ROR, dst, w64=False, prefix=prefix, imm=bytes([count])
            )

    def neg(self, dst: Reg, w64: bool = True) -> None:
        """``neg dst`` (F7 /3)."""
        self._emit_modrm(GRP3_RM, GRP3_NEG_DIGIT, dst, w64=w64)

    def div(self, src: Reg, w64: bool = True, signed: bool = False) -> None:
        """``div src`` (F7 /6) or ``idiv src`` (F7 /7): rDX:rAX / src, quotient
        in rAX, remainder in rDX. Faults (#DE) on a zero divisor or on
        overflow, so callers must guard both."""
        digit = GRP3_IDIV_DIGIT if signed else GRP3_DIV_DIGIT
        self._emit_modrm(GRP3_RM, digit, src, w64=w64)

    def cqo(self) -> None:
        """``cqo`` (REX.W 99): RDX = sign of RAX."""
        self._emit_plain(CDQ, w64=True)

    def cdq(self) -> None:
        """``cdq`` (99): EDX = sign of EAX."""
        self._emit_plain(CDQ)

    def xor_zero(self, dst: Reg) -> None:
        """``xor dst32, dst32`` (31 /r): zeroes all 64 bits and sets flags."""
        self._emit_modrm(ALU_RM_R[AluOp.XOR], dst, dst, w64=False)

    def bswap(self, dst: Reg, w64: bool = True) -> None:
        """``bswap dst`` (0F C8+rd); the 32-bit form zero-extends."""
        self._emit_plus_r(bytes([ESCAPE_0F]), BSWAP_R, dst, w64=w64)

    def rep_stosq(self) -> None:
        """``rep stosq`` (F3 REX.W AB): store RAX at [RDI] RCX times, advancing
        RDI by 8 each time (the direction flag must be clear) and leaving RCX 0."""
        self.buf.emit(bytes([PREFIX_REP]))
        self._emit_plain(STOS, w64=True)

    # --- atomics -----------------------------------------------------------------------
    def lock_alu_mr(self, op: AluOp, mem: Mem, src: Reg, w64: bool) -> None:
        """``lock op [mem], src`` (F0 + the r/m, r form); CMP cannot be locked."""
        if op not in LOCKABLE_ALU_OPS:
            raise ValueError(f"{op.name} cannot take a lock prefix")
        self._emit_modrm(ALU_RM_R[op], src, mem, w64=w64, prefix=bytes([PREFIX_LOCK]))

    def lock_xadd(self, mem: Mem, src: Reg, w64: bool) -> None:
        """``lock xadd [mem], src`` (F0 0F C1 /r): src receives the old value."""
        self._emit_modrm(XADD_RM_R, src, mem, w64=w64, prefix=bytes([PREFIX_LOCK]))

    def lock_cmpxchg(self, mem: Mem, src: Reg, w64: bool) -> None:
        """``lock cmpxchg [mem], src`` (F0 0F B1 /r): compares with rAX, which
        receives the old value."""
        self._emit_modrm(CMPXCHG_RM_R, src, mem, w64=w64, prefix=bytes([PREFIX_LOCK]))

    def xchg_mr(self, mem: Mem, src: Reg, w64: bool) -> None:
        """``xchg [mem], src`` (87 /r), locked by the CPU without a prefix."""
        self._emit_modrm(XCHG_RM_R, src, mem, w64=w64)

    # --- control flow ---------------------------------------------------------------
    def jmp(self, label: Label) -> None:
        """``jmp rel32`` (E9 cd)."""
        self.buf.emit_u8(JMP_REL32)
        self.buf.emit_rel32(label)

    def jcc(self, cond: Cond, label: Label) -> None:
        """``jcc rel32`` (0F 80+cc cd)."""
        self.buf.emit(bytes([ESCAPE_0F, JCC_REL32 + cond]))
        self.buf.emit_rel32(label)

    def call(self, label: Label) -> None:
        """``call rel32`` (E8 cd)."""
        self.buf.emit_u8(CALL_REL32)
        self.buf.emit_rel32(label)

    def call_r(self, reg: Reg) -> None:
        """``call reg`` (FF /2)."""
        self._emit_modrm(GRP5_RM, GRP5_CALL_DIGIT, reg, w64=False)

    def jmp_r(self, reg: Reg) -> None:
        """``jmp reg`` (FF /4)."""
        self._emit_modrm(GRP5_RM, GRP5_JMP_DIGIT, reg, w64=False)

    def ret(self) -> None:
        self._emit_plain(RET)

    def push(self, reg: Reg) -> None:
        """``push reg`` (50+rd), always 64-bit."""
        self._emit_plus_r(b"", PUSH_R, reg, w64=False)

    def pop(self, reg: Reg) -> None:
        """``pop reg`` (58+rd), always 64-bit."""
        self._emit_plus_r(b"", POP_R, reg, w64=False)

    def ud2(self) -> None:
        self._emit_plain(UD2)

    def int3(self) -> None:
        self._emit_plain(INT3)

    def nop(self) -> None:
        self._emit_plain(NOP)


def _memoized(method: Callable[..., None]) -> Callable[..., None]:
    """Cache the bytes an encoding method emits for given operands. Encodings
    are pure functions of their operands, so a repeated instruction costs one
    dict lookup (the JIT compiles programs with many repeated instructions)."""
    cache: dict[object, bytes] = {}

    @functools.wraps(method)
    def wrapper(self: X86Assembler, *args: object, **kwargs: object) -> None:
        key = (args, tuple(kwargs.items())) if kwargs else args
        code = cache.get(key)
        if code is None:
            data = self.buf.data
            start = len(data)
            method(self, *args, **kwargs)
            cache[key] = bytes(data[start:])
        else:
            self.buf.emit(code)

    return wrapper


_LABEL_FREE = (
    "mov_rr", "mov_ri", "mov_ri64", "load", "store", "store_imm", "lea", "movzx_rr",
    "movsx_rr", "alu_rr", "alu_ri", "alu_rm", "alu_mr", "alu_mi", "test_rr", "test_ri",
    "imul_rr", "imul_rri", "shift_ri", "shift_cl", "ror16_ri", "neg", "div", "cqo", "cdq",
    "xor_zero", "bswap", "lock_alu_mr", "lock_xadd", "lock_cmpxchg", "xchg_mr", "call_r",
    "jmp_r", "ret", "push", "pop", "ud2", "int3", "nop", "rep_stosq",
)
"""Methods whose output depends on their operands only (no labels, no position)."""

for _name in _LABEL_FREE:
    setattr(X86Assembler, _name, _memoized(getattr(X86Assembler, _name)))
