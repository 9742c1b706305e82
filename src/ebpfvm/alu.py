"""Arithmetic and comparison semantics (RFC 9669 section 4), written once as
Python expression templates.

The templates are the single statement of what each ALU operation, byte swap
and jump condition computes. The interpreter's translator pastes them into
the Python code it generates; :func:`alu` and :func:`condition` compile the
same templates into functions, which the edge-case tables test directly.

Registers are held unsigned (0 <= v < 2**64). In a template ``{d}`` is the
destination value and ``{s}`` the source: a register, or for K forms the
immediate already widened by :func:`widen_imm`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from .isa import Cls, Form, Op, OpInfo

__all__ = [
    "M32",
    "M64",
    "RUNTIME",
    "alu",
    "alu_expr",
    "bswap16",
    "bswap32",
    "bswap64",
    "condition",
    "condition_expr",
    "sdiv32",
    "sdiv64",
    "sign_extend",
    "smod32",
    "smod64",
    "widen_imm",
]

M64 = 0xFFFF_FFFF_FFFF_FFFF
M32 = 0xFFFF_FFFF
SIGN64 = 0x8000_0000_0000_0000
SIGN32 = 0x8000_0000


def sign_extend(value: int, bits: int) -> int:
    """The low `bits` of `value` read as a signed integer."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _tdiv(a: int, b: int) -> int:
    """Signed division truncating toward zero (C semantics), b != 0."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def sdiv64(d: int, s: int) -> int:
    """sdiv: 0 when s == 0; INT64_MIN / -1 wraps to INT64_MIN."""
    if not s & M64:
        return 0
    return _tdiv(sign_extend(d, 64), sign_extend(s, 64)) & M64


def smod64(d: int, s: int) -> int:
    """smod: dst unchanged when s == 0; the remainder takes the dividend's sign."""
    if not s & M64:
        return d & M64
    a, b = sign_extend(d, 64), sign_extend(s, 64)
    return (a - b * _tdiv(a, b)) & M64


def sdiv32(d: int, s: int) -> int:
    """sdiv32 on the low halves; result zero-extended."""
    if not s & M32:
        return 0
    return _tdiv(sign_extend(d, 32), sign_extend(s, 32)) & M32


def smod32(d: int, s: int) -> int:
    """smod32 on the low halves; dst's low half kept when s == 0; zero-extended."""
    if not s & M32:
        return d & M32
    a, b = sign_extend(d, 32), sign_extend(s, 32)
    return (a - b * _tdiv(a, b)) & M32


def bswap16(d: int) -> int:
    return ((d & 0xFF) << 8) | ((d >> 8) & 0xFF)


def bswap32(d: int) -> int:
    return int.from_bytes((d & M32).to_bytes(4, "little"), "big")


def bswap64(d: int) -> int:
    return int.from_bytes((d & M64).to_bytes(8, "little"), "big")


RUNTIME: dict[str, Callable[..., int]] = {
    "sdiv64": sdiv64,
    "smod64": smod64,
    "sdiv32": sdiv32,
    "smod32": smod32,
    "bswap16": bswap16,
    "bswap32": bswap32,
    "bswap64": bswap64,
}
"""Functions that templates call by name; generated code binds them."""

# 64-bit and 32-bit templates per ALU op. 32-bit templates cut both operands to
# 32 bits where the high bits could leak in, and zero-extend the result.
_ALU64: dict[Op, str] = {
    Op.ADD: "({d} + {s}) & 0xFFFFFFFFFFFFFFFF",
    Op.SUB: "({d} - {s}) & 0xFFFFFFFFFFFFFFFF",
    Op.MUL: "({d} * {s}) & 0xFFFFFFFFFFFFFFFF",
    Op.DIV: "({d} // {s} if {s} else 0)",
    Op.SDIV: "sdiv64({d}, {s})",
    Op.OR: "{d} | {s}",
    Op.AND: "{d} & {s}",
    Op.LSH: "({d} << ({s} & 63)) & 0xFFFFFFFFFFFFFFFF",
    Op.RSH: "{d} >> ({s} & 63)",
    Op.MOD: "({d} % {s} if {s} else {d})",
    Op.SMOD: "smod64({d}, {s})",
    Op.XOR: "{d} ^ {s}",
    Op.MOV: "{s}",
    Op.ARSH: "((({d} ^ 0x8000000000000000) - 0x8000000000000000) >> ({s} & 63)) & 0xFFFFFFFFFFFFFFFF",
    Op.NEG: "-{d} & 0xFFFFFFFFFFFFFFFF",
}
_ALU32: dict[Op, str] = {
    Op.ADD: "({d} + {s}) & 0xFFFFFFFF",
    Op.SUB: "({d} - {s}) & 0xFFFFFFFF",
    Op.MUL: "({d} * {s}) & 0xFFFFFFFF",
    Op.DIV: "(({d} & 0xFFFFFFFF) // ({s} & 0xFFFFFFFF) if {s} & 0xFFFFFFFF else 0)",
    Op.SDIV: "sdiv32({d}, {s})",
    Op.OR: "({d} | {s}) & 0xFFFFFFFF",
    Op.AND: "{d} & {s} & 0xFFFFFFFF",
    Op.LSH: "({d} << ({s} & 31)) & 0xFFFFFFFF",
    Op.RSH: "({d} & 0xFFFFFFFF) >> ({s} & 31)",
    Op.MOD: "(({d} & 0xFFFFFFFF) % ({s} & 0xFFFFFFFF) if {s} & 0xFFFFFFFF else {d} & 0xFFFFFFFF)",
    Op.SMOD: "smod32({d}, {s})",
    Op.XOR: "({d} ^ {s}) & 0xFFFFFFFF",
    Op.MOV: "{s} & 0xFFFFFFFF",
    Op.ARSH: "(((({d} & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000) >> ({s} & 31)) & 0xFFFFFFFF",
    Op.NEG: "-{d} & 0xFFFFFFFF",
}
_ENDIAN: dict[tuple[Op, int], str] = {
    (Op.LE, 16): "{d} & 0xFFFF",
    (Op.LE, 32): "{d} & 0xFFFFFFFF",
    (Op.LE, 64): "{d}",
    (Op.BE, 16): "bswap16({d})",
    (Op.BE, 32): "bswap32({d})",
    (Op.BE, 64): "bswap64({d})",
    (Op.BSWAP, 16): "bswap16({d})",
    (Op.BSWAP, 32): "bswap32({d})",
    (Op.BSWAP, 64): "bswap64({d})",
}
# Jump conditions; signed compares flip the sign bit so unsigned order is signed order.
_COND: dict[Op, str] = {
    Op.JEQ: "{d} == {s}",
    Op.JNE: "{d} != {s}",
    Op.JGT: "{d} > {s}",
    Op.JGE: "{d} >= {s}",
    Op.JLT: "{d} < {s}",
    Op.JLE: "{d} <= {s}",
    Op.JSET: "{d} & {s}",
    Op.JSGT: "({d} ^ {sign}) > ({s} ^ {sign})",
    Op.JSGE: "({d} ^ {sign}) >= ({s} ^ {sign})",
    Op.JSLT: "({d} ^ {sign}) < ({s} ^ {sign})",
    Op.JSLE: "({d} ^ {sign}) <= ({s} ^ {sign})",
}


def widen_imm(row: OpInfo, imm: int) -> int:
    """The value a K-form instruction uses for its s32 `imm` (RFC 9669 section 4):
    sign-extended to 64 bits for ALU64/JMP, the 32-bit pattern for ALU/JMP32."""
    return imm & (M64 if row.cls in (Cls.ALU64, Cls.JMP) else M32)


def alu_expr(row: OpInfo, d: str, s: str) -> str:
    """Python expression for the new dst value of an ALU or byte-swap row."""
    if row.form is Form.ENDIAN:
        return _ENDIAN[(row.op, row.width)].format(d=d)
    if row.op is Op.MOVSX:
        bits = row.off or 0
        sign = 1 << (bits - 1)
        mask = M64 if row.width == 64 else M32
        return f"((({s} & {(1 << bits) - 1:#x}) ^ {sign:#x}) - {sign:#x}) & {mask:#x}"
    table = _ALU64 if row.width == 64 else _ALU32
    return "(" + table[row.op].format(d=d, s=s) + ")"


def condition_expr(row: OpInfo, d: str, s: str) -> str:
    """Python expression that is true when a conditional jump row is taken."""
    if row.width == 32:
        d = f"({d} & 0xFFFFFFFF)"
        s = f"({s} & 0xFFFFFFFF)"
        sign = "0x80000000"
    else:
        sign = "0x8000000000000000"
    return "(" + _COND[row.op].format(d=d, s=s, sign=sign) + ")"


@cache
def _compiled(expr: str) -> Callable[[int, int], int]:
    fn: Callable[[int, int], int] = eval(f"lambda d, s: {expr}", dict(RUNTIME))
    return fn


def alu(row: OpInfo, d: int, s: int = 0) -> int:
    """Evaluate an ALU or byte-swap row: the new dst for dst value `d` and
    source `s` (a register value, or widen_imm(row, imm) for K forms)."""
    return _compiled(alu_expr(row, "d", "s"))(d, s)


def condition(row: OpInfo, d: int, s: int) -> bool:
    """Evaluate a conditional jump row."""
    return bool(_compiled(condition_expr(row, "d", "s"))(d, s))
