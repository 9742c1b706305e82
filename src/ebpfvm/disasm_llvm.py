"""The C-like syntax of llvm-objdump and of kernel verifier logs.

``r0 = *(u32 *)(r1 + 0)``, ``if r1 > r2 goto +3``, ``w0 += 1``, ``call 1``,
``exit``: one line per instruction, as LLVM's BPF instruction printer writes
it without ``-mattr=+alu32`` (64-bit loads, stores and non-fetching atomics
name ``rN`` registers; 32-bit ALU, JMP32 and 32-bit atomics use ``wN``). Immediates are
signed decimal. The table of spellings follows the instruction classes of
RFC 9669 sections 4 and 5; unprintable instructions fall back to ``.raw``.
"""

from __future__ import annotations

from collections.abc import Callable

from .encoding import Insn
from .isa import MAX_REG, Form, Op, OpInfo

__all__ = ["format_llvm"]

_ALU_OPERATOR: dict[Op, str] = {
    Op.ADD: "+=", Op.SUB: "-=", Op.MUL: "*=", Op.DIV: "/=", Op.SDIV: "s/=", Op.MOD: "%=",
    Op.SMOD: "s%=", Op.OR: "|=", Op.AND: "&=", Op.LSH: "<<=", Op.RSH: ">>=", Op.ARSH: "s>>=",
    Op.XOR: "^=", Op.MOV: "=",
}
_JUMP_OPERATOR: dict[Op, str] = {
    Op.JEQ: "==", Op.JNE: "!=", Op.JGT: ">", Op.JGE: ">=", Op.JLT: "<", Op.JLE: "<=",
    Op.JSET: "&", Op.JSGT: "s>", Op.JSGE: "s>=", Op.JSLT: "s<", Op.JSLE: "s<=",
}
_ATOMIC_OPERATOR: dict[Op, str] = {Op.ADD: "+=", Op.OR: "|=", Op.AND: "&=", Op.XOR: "^="}
_FETCH_OPS = frozenset({Op.FETCH_ADD, Op.FETCH_OR, Op.FETCH_AND, Op.FETCH_XOR})
_M32 = 0xFFFF_FFFF


def _s32(value: int) -> int:
    value &= _M32
    return value - (1 << 32) if value >> 31 else value


def _s64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def _reg(number: int, width: int = 64) -> str:
    return f"{'w' if width == 32 else 'r'}{number}"


def _address(base: int, off: int) -> str:
    return f"r{base} {'-' if off < 0 else '+'} {abs(off)}"


def _mem(kind: str, base: int, off: int) -> str:
    return f"*({kind} *)({_address(base, off)})"


def _target(off: int, label: str | None) -> str:
    text = f"{off:+d}"
    return f"{text} <{label}>" if label else text


def _alu(insn: Insn, row: OpInfo) -> str:
    dst = _reg(insn.dst, row.width)
    if row.op is Op.MOVSX:
        return f"{dst} = (s{insn.off}){_reg(insn.src, row.width)}"
    source = _reg(insn.src, row.width) if row.form is Form.ALU_X else str(_s32(insn.imm))
    return f"{dst} {_ALU_OPERATOR[row.op]} {source}"


def _endian(insn: Insn, row: OpInfo) -> str:
    return f"r{insn.dst} = {row.op}{row.width} r{insn.dst}"


def _atomic(insn: Insn, row: OpInfo) -> str:
    kind = f"u{row.width}"
    src = insn.src
    value = _reg(src, row.width)
    if row.op in _ATOMIC_OPERATOR:
        return f"lock {_mem(kind, insn.dst, insn.off)} {_ATOMIC_OPERATOR[row.op]} {value}"
    if row.op in _FETCH_OPS:
        return f"{value} = atomic_{row.op}(({kind} *)({_address(insn.dst, insn.off)}), {value})"
    suffix = "32_32" if row.width == 32 else "_64"
    where = _address(insn.dst, insn.off)
    if row.op is Op.XCHG:
        return f"{value} = xchg{suffix}({where}, {value})"
    r0 = _reg(0, row.width)
    return f"{r0} = cmpxchg{suffix}({where}, {r0}, {value})"


def _jump(insn: Insn, row: OpInfo, label: str | None) -> str:
    if row.form is Form.JA:
        return f"goto {_target(insn.off, label)}"
    if row.form is Form.JA32:
        return f"gotol {_target(_s32(insn.imm), label)}"
    source = _reg(insn.src, row.width) if row.form is Form.JCC_X else str(_s32(insn.imm))
    return (f"if {_reg(insn.dst, row.width)} {_JUMP_OPERATOR[row.op]} {source} "
            f"goto {_target(insn.off, label)}")


def _lddw(insn: Insn, row: OpInfo) -> str:
    if row.src_value:
        return f"ld_pseudo\tr{insn.dst}, {row.src_value}, {insn.imm & _M32}"
    return f"r{insn.dst} = {_s64(insn.imm)} ll"


def _ldx(insn: Insn, row: OpInfo) -> str:
    kind = ("s" if row.signed else "u") + str(row.width)
    return f"r{insn.dst} = {_mem(kind, insn.src, insn.off)}"


def _st(insn: Insn, row: OpInfo) -> str:
    return f"{_mem(f'u{row.width}', insn.dst, insn.off)} = {_s32(insn.imm)}"


def _stx(insn: Insn, row: OpInfo) -> str:
    return f"{_mem(f'u{row.width}', insn.dst, insn.off)} = r{insn.src}"


def _neg(insn: Insn, row: OpInfo) -> str:
    dst = _reg(insn.dst, row.width)
    return f"{dst} = -{dst}"


def _call(insn: Insn, row: OpInfo) -> str:
    if row.form is Form.CALLX:
        return f"callx r{insn.dst}"
    return f"call {_s32(insn.imm)}"


def _legacy_packet_load(insn: Insn, row: OpInfo) -> str:
    where = f"r{insn.src}" if row.form is Form.LD_IND else str(_s32(insn.imm))
    return f"r0 = *(u{row.width} *)skb[{where}]"


_Formatter = Callable[[Insn, OpInfo], str]
_FORMATTERS: dict[Form, _Formatter] = {
    Form.ALU_K: _alu,
    Form.ALU_X: _alu,
    Form.NEG: _neg,
    Form.ENDIAN: _endian,
    Form.LDDW: _lddw,
    Form.LDX: _ldx,
    Form.ST: _st,
    Form.STX: _stx,
    Form.ATOMIC: _atomic,
    Form.CALL: _call,
    Form.CALL_LOCAL: _call,
    Form.CALL_RUNTIME: _call,
    Form.CALLX: _call,
    Form.LD_ABS: _legacy_packet_load,
    Form.LD_IND: _legacy_packet_load,
}


def format_llvm(insn: Insn, label: str | None = None) -> str | None:
    """`insn` in LLVM's syntax, or None when no table row prints it. `label`
    names a jump's target (``<LBB0_3>``, as llvm-objdump shows symbols)."""
    row = insn.row
    if row is None or insn.dst > MAX_REG or insn.src > MAX_REG:
        return None
    if row.form is Form.EXIT:
        return "exit"
    formatter = _FORMATTERS.get(row.form)
    if formatter is None:
        return _jump(insn, row, label)
    return formatter(insn, row)
