"""Assembler: text in the uBPF / bpf_conformance dialect -> eBPF byte code.

The dialect is the one the ``-- asm`` sections of the conformance vectors use
(``shared/conformance/README.md`` section 1), plus rbpf's spellings (plain
``r1`` registers, ``add64``...). Every opcode byte and every fixed field value
(the offset of sdiv/smod/movsx, the immediate of atomics and byte swaps, the
src subtype of calls and lddw) comes from the :mod:`ebpfvm.isa` row that the
mnemonic and the operand kinds select; :data:`FORM_OPERANDS` says which
operands each :class:`~ebpfvm.isa.Form` takes and which instruction field each
one fills. The disassembler formats from the same layout, so its output
re-assembles.

Pipeline: tokenize each line -> parse statements (labels, instructions,
``.raw`` slots) and count slots -> resolve labels into relative slot offsets
(RFC 9669 section 4.3: relative to the next slot, lddw takes two slots) ->
encode with :func:`ebpfvm.encoding.encode_one`. Every input error raises
:class:`~ebpfvm.errors.AsmError` with the 1-based line and column of the
offending token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from .cfg import branch_delta
from .encoding import encode_one
from .errors import ArgumentTypeError, AsmError
from .isa import MAX_REG, OPS, Form, OpInfo, Reg, rows_for_mnemonic

__all__ = [
    "CALLX_ALIAS",
    "FORM_OPERANDS",
    "RAW_DIRECTIVE",
    "Operand",
    "assemble",
    "operand_layout",
]

RAW_DIRECTIVE = ".raw"
"""``.raw 0xHHHHHHHHHHHHHHHH``: one slot given as its little-endian u64 value."""

CALLX_ALIAS = "callx"
"""rbpf's spelling of ``call %rN``; it selects only the callx row."""

EXIT_LABEL = "exit"
"""Predefined label: the first ``exit`` instruction, unless a label of that name exists."""

MAX_ENCODABLE_REG = 15
"""Register fields are 4 bits: ``%r11``..``%r15`` build invalid programs on purpose."""

_M16 = 0xFFFF
_M32 = 0xFFFF_FFFF
_M64 = 0xFFFF_FFFF_FFFF_FFFF
_S16 = (-(1 << 15), (1 << 15) - 1)
_S32 = (-(1 << 31), (1 << 31) - 1)
_MAX_NUMBER_CHARS = 64  # longer digit strings are out of every range; keeps int() cheap


class Operand(Enum):
    """One operand position of an instruction and the field(s) it fills."""

    DST = "dst"  # register -> dst field
    SRC = "src"  # register -> src field
    MEM_DST = "[dst+off]"  # memory operand: base register -> dst, displacement -> off
    MEM_SRC = "[src+off]"  # memory operand: base register -> src, displacement -> off
    IMM = "imm"  # 32-bit immediate -> imm
    IMM64 = "imm64"  # lddw 64-bit value -> imm of both slots
    NEXT_IMM = "next_imm"  # lddw subtype: optional 32-bit imm of the second slot (default 0)
    OFF_TARGET = "off_target"  # jump target (label or relative slots) -> off (s16)
    IMM_TARGET = "imm_target"  # jump target (label or relative slots) -> imm (s32)


FORM_OPERANDS: dict[Form, tuple[Operand, ...]] = {
    Form.ALU_K: (Operand.DST, Operand.IMM),
    Form.ALU_X: (Operand.DST, Operand.SRC),
    Form.NEG: (Operand.DST,),
    Form.ENDIAN: (Operand.DST,),
    Form.LDDW: (Operand.DST, Operand.IMM64),
    Form.LDX: (Operand.DST, Operand.MEM_SRC),
    Form.ST: (Operand.MEM_DST, Operand.IMM),
    Form.STX: (Operand.MEM_DST, Operand.SRC),
    Form.ATOMIC: (Operand.MEM_DST, Operand.SRC),
    Form.JA: (Operand.OFF_TARGET,),
    Form.JA32: (Operand.IMM_TARGET,),
    Form.JCC_K: (Operand.DST, Operand.IMM, Operand.OFF_TARGET),
    Form.JCC_X: (Operand.DST, Operand.SRC, Operand.OFF_TARGET),
    Form.CALL: (Operand.IMM,),
    Form.CALL_LOCAL: (Operand.IMM_TARGET,),
    Form.CALL_RUNTIME: (Operand.IMM,),
    Form.CALLX: (Operand.DST,),
    Form.EXIT: (),
    Form.LD_ABS: (Operand.IMM,),
    Form.LD_IND: (Operand.SRC, Operand.IMM),
}
"""The operands of each form, in source order (shared by asm and disasm)."""

_LDDW_SUBTYPE_OPERANDS = (Operand.DST, Operand.IMM, Operand.NEXT_IMM)


def operand_layout(row: OpInfo) -> tuple[Operand, ...]:
    """The operands of `row`: its form's layout, except that the lddw subtypes
    (src 1..6, RFC 9669 section 5.4) take imm and an optional next_imm."""
    if row.form is Form.LDDW and row.src_value != 0:
        return _LDDW_SUBTYPE_OPERANDS
    return FORM_OPERANDS[row.form]


# --------------------------------------------------------------------------- tokens


class _Tok(Enum):
    WORD = "word"  # mnemonic, label, plain register (r0..r10), .raw
    NUM = "number"
    REG = "register"  # %rN
    PUNCT = "punctuation"  # , [ ] + - :


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Tok
    text: str
    col: int  # 1-based


_TOKEN_RE = re.compile(
    r"""
      (?P<space>[ \t\r\f\v]+)
    | (?P<word>[A-Za-z_.][A-Za-z0-9_.]*)
    | (?P<number>[0-9][A-Za-z0-9_]*)
    | (?P<register>%[A-Za-z0-9_]*)
    | (?P<punctuation>[,\[\]+\-:])
    """,
    re.VERBOSE | re.ASCII,
)
_DECIMAL_RE = re.compile(r"[0-9]+", re.ASCII)
_HEX_RE = re.compile(r"0[xX][0-9A-Fa-f]+", re.ASCII)
_PERCENT_REG_RE = re.compile(r"%r(0|[1-9][0-9]?)", re.ASCII)
_PLAIN_REG_RE = re.compile(r"r[0-9]+", re.ASCII)
_COMMENT_STARTS = ("#", ";", "//")


def _strip_comment(text: str) -> str:
    """Cut `text` at the first comment marker (``#``, ``;`` or ``//``)."""
    cut = len(text)
    for marker in _COMMENT_STARTS:
        index = text.find(marker)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def _tokenize(code: str, line: int) -> list[_Token]:
    """Split one comment-free line into tokens; reject any other character."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(code):
        match = _TOKEN_RE.match(code, pos)
        if match is None:
            raise AsmError(f"unexpected character {code[pos]!r}", line, pos + 1)
        kind = match.lastgroup
        if kind is not None and kind != "space":
            tokens.append(_Token(_Tok(kind), match.group(), pos + 1))
        pos = match.end()
    return tokens


# --------------------------------------------------------------------------- operands


class _Kind(Enum):
    """Syntactic kind of a parsed operand."""

    REG = "register"
    MEM = "memory operand"
    NUM = "number"
    LABEL = "label"


@dataclass(frozen=True, slots=True)
class _Arg:
    kind: _Kind
    col: int
    reg: int = 0  # REG and MEM
    value: int = 0  # NUM value with its sign applied, or the MEM displacement
    is_hex: bool = False  # NUM written as 0x...
    name: str = ""  # LABEL


_ACCEPTS: dict[Operand, frozenset[_Kind]] = {
    Operand.DST: frozenset({_Kind.REG}),
    Operand.SRC: frozenset({_Kind.REG}),
    Operand.MEM_DST: frozenset({_Kind.MEM}),
    Operand.MEM_SRC: frozenset({_Kind.MEM}),
    Operand.IMM: frozenset({_Kind.NUM}),
    Operand.IMM64: frozenset({_Kind.NUM}),
    Operand.NEXT_IMM: frozenset({_Kind.NUM}),
    Operand.OFF_TARGET: frozenset({_Kind.NUM, _Kind.LABEL}),
    Operand.IMM_TARGET: frozenset({_Kind.NUM, _Kind.LABEL}),
}

_EXPECTED: dict[Operand, str] = {
    Operand.DST: "register",
    Operand.SRC: "register",
    Operand.MEM_DST: "memory operand [%rN+off]",
    Operand.MEM_SRC: "memory operand [%rN+off]",
    Operand.IMM: "immediate",
    Operand.IMM64: "64-bit immediate",
    Operand.NEXT_IMM: "immediate",
    Operand.OFF_TARGET: "jump target (label or +N/-N)",
    Operand.IMM_TARGET: "jump target (label or +N/-N)",
}

_OPTIONAL = frozenset({Operand.NEXT_IMM})


class _Cursor:
    """The tokens of one line and a read position; builds located errors."""

    def __init__(self, tokens: list[_Token], line: int, end_col: int) -> None:
        self.tokens = tokens
        self.line = line
        self.end_col = end_col
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)

    def peek(self, ahead: int = 0) -> _Token | None:
        index = self.pos + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self, what: str) -> _Token:
        """The next token; AsmError("expected `what`") at the end of the line."""
        token = self.peek()
        if token is None:
            raise self.error(f"expected {what}, found end of line", self.end_col)
        self.pos += 1
        return token

    def is_punct(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token.kind is _Tok.PUNCT and token.text == text

    def error(self, message: str, col: int) -> AsmError:
        return AsmError(message, self.line, col)


def _number(cur: _Cursor, token: _Token) -> tuple[int, bool]:
    """(value, written in hex) of a number token."""
    text = token.text
    if len(text) > _MAX_NUMBER_CHARS:
        raise cur.error(f"number {text[:20]}... is out of range", token.col)
    if _HEX_RE.fullmatch(text):
        return int(text[2:], 16), True
    if _DECIMAL_RE.fullmatch(text):
        return int(text, 10), False
    raise cur.error(f"malformed number {text!r}", token.col)


def _register(cur: _Cursor, token: _Token) -> int:
    """The number of a ``%rN`` (0..15) or plain ``rN`` (0..10) register token."""
    if token.kind is _Tok.REG:
        match = _PERCENT_REG_RE.fullmatch(token.text)
        if match is None or int(match.group(1)) > MAX_ENCODABLE_REG:
            raise cur.error(f"bad register {token.text!r} (expected %r0..%r15)", token.col)
        return int(match.group(1))
    number = token.text[1:]
    if len(number) > 2 or (len(number) > 1 and number[0] == "0") or int(number) > MAX_REG:
        raise cur.error(
            f"bad register {token.text!r} (plain names are r0..r{MAX_REG}; "
            f"write %r11..%r{MAX_ENCODABLE_REG} for invalid registers)",
            token.col,
        )
    return int(number)


def _is_register(token: _Token | None) -> bool:
    if token is None:
        return False
    return token.kind is _Tok.REG or (
        token.kind is _Tok.WORD and _PLAIN_REG_RE.fullmatch(token.text) is not None
    )


def _signed_number(cur: _Cursor) -> _Arg:
    """An optionally signed number (``5``, ``-8``, ``+3``, ``-0x10``)."""
    first = cur.take("number")
    sign = 1
    token = first
    if first.kind is _Tok.PUNCT and first.text in ("+", "-"):
        sign = -1 if first.text == "-" else 1
        token = cur.take("number")
    if token.kind is not _Tok.NUM:
        raise cur.error(f"expected number, found {token.text!r}", token.col)
    value, is_hex = _number(cur, token)
    return _Arg(_Kind.NUM, first.col, value=sign * value, is_hex=is_hex)


def _memory(cur: _Cursor) -> _Arg:
    """``[reg]``, ``[reg+off]`` or ``[reg-off]``; off must fit s16."""
    bracket = cur.take("'['")
    token = cur.take("register")
    if not _is_register(token):
        raise cur.error(f"expected base register, found {token.text!r}", token.col)
    reg = _register(cur, token)
    off = 0
    if cur.is_punct("+") or cur.is_punct("-"):
        number = _signed_number(cur)
        off = number.value
        if not _S16[0] <= off <= _S16[1]:
            raise cur.error(f"memory offset {off} out of s16 range", number.col)
    closing = cur.take("']'")
    if closing.kind is not _Tok.PUNCT or closing.text != "]":
        raise cur.error(f"expected ']', found {closing.text!r}", closing.col)
    return _Arg(_Kind.MEM, bracket.col, reg=reg, value=off)


def _operand(cur: _Cursor) -> _Arg:
    """One operand: register, memory operand, signed number or label."""
    token = cur.peek()
    if token is None:
        raise cur.error("expected operand, found end of line", cur.end_col)
    if _is_register(token):
        cur.pos += 1
        return _Arg(_Kind.REG, token.col, reg=_register(cur, token))
    if token.kind is _Tok.PUNCT and token.text == "[":
        return _memory(cur)
    if token.kind is _Tok.NUM or (token.kind is _Tok.PUNCT and token.text in ("+", "-")):
        return _signed_number(cur)
    if token.kind is _Tok.WORD:
        cur.pos += 1
        return _Arg(_Kind.LABEL, token.col, name=token.text)
    raise cur.error(f"expected operand, found {token.text!r}", token.col)


def _operands(cur: _Cursor) -> list[_Arg]:
    """The comma-separated operands up to the end of the line."""
    args: list[_Arg] = []
    if cur.at_end():
        return args
    while True:
        args.append(_operand(cur))
        token = cur.peek()
        if token is None:
            return args
        if not cur.is_punct(","):
            raise cur.error(f"trailing garbage {token.text!r} after operand", token.col)
        cur.pos += 1
        if cur.at_end():
            raise cur.error("expected operand after ','", cur.end_col)


# --------------------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class _Insn:
    """One parsed instruction (row set) or ``.raw`` slot (row None)."""

    line: int
    pc: int
    row: OpInfo | None
    args: tuple[_Arg, ...]
    raw: int = 0

    @property
    def slots(self) -> int:
        return 1 if self.row is None else self.row.slots


@dataclass(frozen=True, slots=True)
class _Label:
    pc: int
    line: int
    col: int


_MAX_MNEMONIC_WORDS = max(len(row.mnemonic.split()) for row in OPS)


def _mnemonic(cur: _Cursor) -> tuple[str, tuple[OpInfo, ...], int]:
    """The longest run of leading words that spells a mnemonic (``lock fetch
    add32``, ``call local``): (spelling, its rows, column)."""
    first = cur.take("mnemonic")
    if first.kind is not _Tok.WORD:
        raise cur.error(f"expected mnemonic or label, found {first.text!r}", first.col)
    words = [first.text]
    while len(words) < _MAX_MNEMONIC_WORDS:
        token = cur.peek(len(words) - 1)
        if token is None or token.kind is not _Tok.WORD:
            break
        words.append(token.text)
    for count in range(len(words), 0, -1):
        name = " ".join(words[:count])
        rows = rows_for_mnemonic(name)
        if name == CALLX_ALIAS:
            rows = tuple(row for row in rows if row.form is Form.CALLX)
        if rows:
            cur.pos += count - 1
            return name, rows, first.col
    unknown = " ".join(words) if _is_prefix(first.text) else first.text
    raise cur.error(f"unknown mnemonic {unknown!r}", first.col)


def _is_prefix(words: str) -> bool:
    """Whether `words` starts a multi-word mnemonic (``lock``, ``lock fetch``)."""
    return any(row.mnemonic.startswith(words + " ") for row in OPS)


def _count_range(row: OpInfo) -> tuple[int, int]:
    layout = operand_layout(row)
    return len(layout) - sum(1 for slot in layout if slot in _OPTIONAL), len(layout)


def _plural(count: int) -> str:
    return "operand" if count == 1 else "operands"


def _select_row(
    cur: _Cursor, name: str, col: int, rows: tuple[OpInfo, ...], args: list[_Arg]
) -> OpInfo:
    """The row whose operand layout matches the kinds of `args` (K or X form:
    register or immediate as second operand; ``call N`` or ``call %rN``)."""
    counts_of = {row: range(_count_range(row)[0], _count_range(row)[1] + 1) for row in rows}
    fitting = [row for row in rows if len(args) in counts_of[row]]
    if not fitting:
        counts = sorted({n for allowed in counts_of.values() for n in allowed})
        wanted = " or ".join(str(n) for n in counts)
        message = f"{name!r} takes {wanted} {_plural(counts[-1])}, got {len(args)}"
        raise cur.error(message, args[counts[-1]].col if len(args) > counts[-1] else col)
    best = -1
    expected: list[str] = []
    for row in fitting:
        layout = operand_layout(row)
        # strict=False: an optional trailing operand may be absent.
        pairs = enumerate(zip(layout, args, strict=False))
        bad = next((i for i, (slot, arg) in pairs if arg.kind not in _ACCEPTS[slot]), None)
        if bad is None:
            return row
        if bad > best:
            best, expected = bad, []
        if bad == best and _EXPECTED[layout[bad]] not in expected:
            expected.append(_EXPECTED[layout[bad]])
    found = args[best]
    raise cur.error(f"expected {' or '.join(expected)}, found {found.kind.value}", found.col)


def _raw_slot(cur: _Cursor, directive: _Token) -> int:
    """The u64 operand of a ``.raw`` directive."""
    args = _operands(cur)
    if len(args) != 1:
        where = args[1].col if len(args) > 1 else directive.col
        raise cur.error(f"{RAW_DIRECTIVE} takes 1 operand, got {len(args)}", where)
    arg = args[0]
    if arg.kind is not _Kind.NUM:
        raise cur.error(f"expected 64-bit slot value, found {arg.kind.value}", arg.col)
    if not 0 <= arg.value <= _M64:
        raise cur.error(f"slot value {arg.value} out of u64 range", arg.col)
    return arg.value


def _define_labels(cur: _Cursor, pc: int, labels: dict[str, _Label]) -> None:
    """Consume the ``name:`` prefixes of the line and record them at slot `pc`."""
    while True:
        token, colon = cur.peek(), cur.peek(1)
        if token is None or colon is None or token.kind is not _Tok.WORD:
            return
        if colon.kind is not _Tok.PUNCT or colon.text != ":":
            return
        if _is_register(token):
            raise cur.error(f"label name {token.text!r} is a register name", token.col)
        if token.text in labels:
            first = labels[token.text]
            raise cur.error(
                f"duplicate label {token.text!r} (first defined on line {first.line})", token.col
            )
        labels[token.text] = _Label(pc, cur.line, token.col)
        cur.pos += 2


def _parse_line(cur: _Cursor, pc: int, labels: dict[str, _Label]) -> _Insn | None:
    """Labels and at most one instruction of one line."""
    _define_labels(cur, pc, labels)
    token = cur.peek()
    if token is None:
        return None
    if token.kind is _Tok.WORD and token.text == RAW_DIRECTIVE:
        cur.pos += 1
        return _Insn(cur.line, pc, None, (), raw=_raw_slot(cur, token))
    name, rows, col = _mnemonic(cur)
    args = _operands(cur)
    row = _select_row(cur, name, col, rows, args)
    return _Insn(cur.line, pc, row, tuple(args))


# --------------------------------------------------------------------------- encoding


def _imm32(arg: _Arg, line: int) -> int:
    """An s32 immediate: decimal in s32, or hex up to 0xFFFFFFFF read as s32."""
    value = arg.value
    if arg.is_hex and 0 <= value <= _M32:
        return value - (1 << 32) if value >> 31 else value
    if _S32[0] <= value <= _S32[1]:
        return value
    raise AsmError(f"immediate {value} out of 32-bit range", line, arg.col)


def _imm64(arg: _Arg, line: int) -> int:
    """A 64-bit lddw value: anything from -2**63 to 2**64-1, kept as u64."""
    if -(1 << 63) <= arg.value <= _M64:
        return arg.value & _M64
    raise AsmError(f"immediate {arg.value} out of 64-bit range", line, arg.col)


def _target(arg: _Arg, insn: _Insn, labels: dict[str, _Label], bits: int) -> int:
    """A jump/call target as slots relative to the next slot, checked to fit s`bits`."""
    if arg.kind is _Kind.NUM:
        delta = arg.value
    else:
        label = labels.get(arg.name)
        if label is None:
            raise AsmError(f"undefined label {arg.name!r}", insn.line, arg.col)
        delta = branch_delta(insn.pc, label.pc)
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if not low <= delta <= high:
        raise AsmError(f"jump offset {delta} out of s{bits} range", insn.line, arg.col)
    return delta


@dataclass(slots=True)
class _Fields:
    dst: int
    src: int
    off: int
    imm: int
    next_imm: int = 0


def _encode(insn: _Insn, labels: dict[str, _Label]) -> bytes:
    """The slot(s) of one instruction: fixed fields from its row, the rest from operands."""
    row = insn.row
    if row is None:
        return insn.raw.to_bytes(8, "little")
    fields = _Fields(
        dst=0,
        src=row.src_value if row.src is Reg.NONE else 0,
        off=row.off if row.off is not None else 0,
        imm=row.imm if row.imm is not None else 0,
    )
    for slot, arg in zip(operand_layout(row), insn.args, strict=False):  # optional last operand
        if slot in (Operand.DST, Operand.MEM_DST):
            fields.dst = arg.reg
        elif slot in (Operand.SRC, Operand.MEM_SRC):
            fields.src = arg.reg
        if slot in (Operand.MEM_DST, Operand.MEM_SRC):
            fields.off = arg.value
        elif slot is Operand.IMM:
            fields.imm = _imm32(arg, insn.line)
        elif slot is Operand.IMM64:
            fields.imm = _imm64(arg, insn.line)
        elif slot is Operand.NEXT_IMM:
            fields.next_imm = _imm32(arg, insn.line)
        elif slot is Operand.OFF_TARGET:
            fields.off = _target(arg, insn, labels, 16)
        elif slot is Operand.IMM_TARGET:
            fields.imm = _target(arg, insn, labels, 32)
    if row.form is Form.LDDW and row.src_value != 0:
        fields.imm = (fields.imm & _M32) | ((fields.next_imm & _M32) << 32)
    return encode_one(row.opcode, fields.dst, fields.src, fields.off, fields.imm)


def _predefine_exit(insns: list[_Insn], labels: dict[str, _Label]) -> None:
    """Define ``exit`` as the first exit instruction when no such label exists."""
    if EXIT_LABEL in labels:
        return
    for insn in insns:
        if insn.row is not None and insn.row.form is Form.EXIT:
            labels[EXIT_LABEL] = _Label(insn.pc, insn.line, 0)
            return


def _source_text(text: object) -> str:
    """Assembler source as str: bytes decoded as UTF-8, AsmError at the line
    and column of an invalid byte; ArgumentTypeError for any other type."""
    if isinstance(text, str):
        return text
    if not isinstance(text, (bytes, bytearray)):
        raise ArgumentTypeError("assembler source", text, "str or UTF-8 bytes")
    data = bytes(text)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        raise AsmError(f"byte 0x{data[exc.start]:02x} is not UTF-8", line, col) from None


def assemble(text: str | bytes | bytearray) -> bytes:
    """Assemble `text` into eBPF byte code (8-byte little-endian slots).

    One instruction, ``label:`` or ``label: instruction`` per line; comments
    run from ``#``, ``;`` or ``//`` to the end of the line. Jump targets are
    labels or slot deltas (``+N``, ``-N``, ``N``) relative to the next slot.
    Raises AsmError (with line and column) on any malformed input. Bytes are
    decoded as UTF-8 (AsmError at the first byte that is not); any other type
    is an ArgumentTypeError (a TypeError).
    """
    text = _source_text(text)
    labels: dict[str, _Label] = {}
    insns: list[_Insn] = []
    pc = 0
    for number, line in enumerate(text.split("\n"), start=1):
        code = _strip_comment(line)
        cur = _Cursor(_tokenize(code, number), number, len(code.rstrip()) + 1)
        insn = _parse_line(cur, pc, labels)
        if insn is not None:
            insns.append(insn)
            pc += insn.slots
    _predefine_exit(insns, labels)
    return b"".join(_encode(insn, labels) for insn in insns)
