#!/usr/bin/env python3
"""Regenerate tests/data/x86_golden.txt, the golden bytes of the x86-64 encoder.

Every row is one :class:`ebpfvm.jit.x86_64.X86Assembler` call, the bytes
``llvm-mc`` produces for the equivalent Intel-syntax instruction, and that
instruction::

    alu_ri(AluOp.ADD, Reg.R15, -129, w64=True) | 49 81 c7 7f ff ff ff | add r15, -129

The expected bytes come from the external assembler only, never from our
encoder, so the table is an independent oracle. ``tests/test_x86_encoder.py``
replays the frozen table without llvm-mc, and, when llvm-mc is on PATH,
re-derives the table and a random sample of fresh calls live.

Branches to labels are rows whose target is ``LabelAfter(n)`` (the label is n
bytes after the end of the instruction) or ``LabelBefore(n)`` (n bytes before
its start); llvm-mc assembles them as ``{disp32} jmp L`` with ``.zero n``
padding into an object file, and the instruction's bytes are cut out of .text.

Usage::

    python tools/gen_x86_golden.py            # rewrite the table
    python tools/gen_x86_golden.py --check    # exit 1 if the table is stale

Review the diff of the table; never edit it by hand (docs/style.md section 5).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ebpfvm.jit.x86_64 import AluOp, Cond, Mem, Reg, ShiftOp, X86Assembler

REPO = Path(__file__).resolve().parents[1]
GOLDEN_PATH = REPO / "tests" / "data" / "x86_golden.txt"
LLVM_MC = "llvm-mc"
LLVM_MC_FLAGS = ["-triple=x86_64", "-x86-asm-syntax=intel", "-output-asm-variant=1"]
FIELD_SEPARATOR = " | "


# --- the call model: one encoder call, printable and parseable ---------------------------
@dataclass(frozen=True)
class LabelAfter:
    """A branch target `gap` bytes after the end of the branch instruction."""

    gap: int


@dataclass(frozen=True)
class LabelBefore:
    """A branch target `gap` bytes before the start of the branch instruction."""

    gap: int


Target = LabelAfter | LabelBefore
Arg = Reg | Cond | AluOp | ShiftOp | Mem | LabelAfter | LabelBefore | bool | int
ENUMS: dict[str, Any] = {"Reg": Reg, "Cond": Cond, "AluOp": AluOp, "ShiftOp": ShiftOp}
CONSTRUCTORS: dict[str, Callable[..., Arg]] = {
    "Mem": Mem,
    "LabelAfter": LabelAfter,
    "LabelBefore": LabelBefore,
}


def format_arg(arg: Arg) -> str:
    if isinstance(arg, (Reg, Cond, AluOp, ShiftOp)):
        return f"{type(arg).__name__}.{arg.name}"
    if isinstance(arg, Mem):
        return f"Mem(Reg.{arg.base.name}, {format_arg(arg.disp)})"
    if isinstance(arg, (LabelAfter, LabelBefore)):
        return f"{type(arg).__name__}({format_arg(arg.gap)})"
    if isinstance(arg, bool):
        return repr(arg)
    return hex(arg) if abs(arg) >= 0x100 else str(arg)


@dataclass(frozen=True)
class Call:
    """``X86Assembler.<method>(*args, **kwargs)``."""

    method: str
    args: tuple[Arg, ...]
    kwargs: tuple[tuple[str, Arg], ...] = ()

    def text(self) -> str:
        parts = [format_arg(a) for a in self.args]
        parts += [f"{k}={format_arg(v)}" for k, v in self.kwargs]
        return f"{self.method}({', '.join(parts)})"

    def bound(self) -> dict[str, Any]:
        """Every parameter by name, defaults filled in."""
        signature = inspect.signature(getattr(X86Assembler, self.method))
        bound = signature.bind(None, *self.args, **dict(self.kwargs))
        bound.apply_defaults()
        return {k: v for k, v in bound.arguments.items() if k != "self"}

    def target(self) -> Target | None:
        for arg in self.args:
            if isinstance(arg, (LabelAfter, LabelBefore)):
                return arg
        return None


def _parse_arg(node: ast.expr) -> Arg:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _parse_arg(node.operand)
        if isinstance(value, int) and not isinstance(value, bool):
            return -value
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in ENUMS
    ):
        return ENUMS[node.value.id][node.attr]  # type: ignore[no-any-return]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        constructor = CONSTRUCTORS.get(node.func.id)
        if constructor is not None and not node.keywords:
            return constructor(*(_parse_arg(a) for a in node.args))
    raise ValueError(f"unsupported argument syntax: {ast.unparse(node)}")


def parse_call(text: str) -> Call:
    """The inverse of :meth:`Call.text`; accepts only literals, enum members,
    ``Mem(...)`` and label targets (no eval)."""
    node = ast.parse(text, mode="eval").body
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError(f"not a call: {text}")
    args = tuple(_parse_arg(a) for a in node.args)
    kwargs = tuple((k.arg or "", _parse_arg(k.value)) for k in node.keywords)
    return Call(node.func.id, args, kwargs)


def encode(call: Call) -> bytes:
    """Our encoder's bytes for `call` (just the one instruction)."""
    asm = X86Assembler()
    method = getattr(asm, call.method)
    target = call.target()
    if target is None:
        method(*call.args, **dict(call.kwargs))
        return asm.code()
    label = asm.new_label("target")
    args = [label if a is target else a for a in call.args]
    if isinstance(target, LabelBefore):
        asm.bind(label)
        asm.buf.emit(bytes(target.gap))
    start = asm.buf.position
    method(*args, **dict(call.kwargs))
    end = asm.buf.position
    if isinstance(target, LabelAfter):
        asm.buf.emit(bytes(target.gap))
        asm.bind(label)
    return asm.code()[start:end]


# --- Intel syntax for llvm-mc ------------------------------------------------------------
REG_NAMES: dict[int, list[str]] = {
    64: ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi"] + [f"r{n}" for n in range(8, 16)],
    32: ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"] + [f"r{n}d" for n in range(8, 16)],
    16: ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"] + [f"r{n}w" for n in range(8, 16)],
    8: ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil"] + [f"r{n}b" for n in range(8, 16)],
}
PTR = {1: "byte ptr ", 2: "word ptr ", 4: "dword ptr ", 8: "qword ptr ", 0: ""}
JCC_NAMES = {c: "j" + c.name.lower() for c in Cond}


def reg(r: Reg, bits: int) -> str:
    return REG_NAMES[bits][r]


def width(a: dict[str, Any]) -> int:
    return 64 if a["w64"] else 32


def mem(m: Mem, size: int) -> str:
    """``qword ptr [r12 - 128]``; size 0 omits the size (for lea)."""
    base = reg(m.base, 64)
    if m.disp == 0:
        return f"{PTR[size]}[{base}]"
    sign = "-" if m.disp < 0 else "+"
    return f"{PTR[size]}[{base} {sign} {abs(m.disp)}]"


def _load(a: dict[str, Any]) -> str:
    size, signed, dst, m = a["size"], a["signed"], a["dst"], a["mem"]
    if size == 8:
        return f"mov {reg(dst, 64)}, {mem(m, 8)}"
    if size == 4:
        return (
            f"movsxd {reg(dst, 64)}, {mem(m, 4)}" if signed else f"mov {reg(dst, 32)}, {mem(m, 4)}"
        )
    return (
        f"movsx {reg(dst, 64)}, {mem(m, size)}"
        if signed
        else f"movzx {reg(dst, 32)}, {mem(m, size)}"
    )


def _store_imm(a: dict[str, Any]) -> str:
    size, imm = a["size"], a["imm"]
    value = imm if size == 8 else imm & ((1 << (8 * size)) - 1)
    return f"mov {mem(a['mem'], size)}, {value}"


def _movsx_rr(a: dict[str, Any]) -> str:
    if a["size"] == 4:
        return f"movsxd {reg(a['dst'], 64)}, {reg(a['src'], 32)}"
    return f"movsx {reg(a['dst'], width(a))}, {reg(a['src'], 8 * a['size'])}"


def _branch(mnemonic: str, target: Target) -> list[str]:
    jump = "{disp32} " + f"{mnemonic} .Ltarget"
    pad = f".zero {target.gap}" if target.gap else ""
    lines = [jump, pad, ".Ltarget:"] if isinstance(target, LabelAfter) else [".Ltarget:", pad, jump]
    return [line for line in lines if line]


INTEL: dict[str, Callable[[dict[str, Any]], str]] = {
    "mov_rr": lambda a: f"mov {reg(a['dst'], width(a))}, {reg(a['src'], width(a))}",
    "mov_ri": lambda a: f"mov {reg(a['dst'], width(a))}, {a['imm']}",
    "mov_ri64": lambda a: f"movabs {reg(a['dst'], 64)}, {a['imm']}",
    "load": _load,
    "store": lambda a: f"mov {mem(a['mem'], a['size'])}, {reg(a['src'], 8 * a['size'])}",
    "store_imm": _store_imm,
    "lea": lambda a: f"lea {reg(a['dst'], 64)}, {mem(a['mem'], 0)}",
    "movzx_rr": lambda a: f"movzx {reg(a['dst'], 32)}, {reg(a['src'], 8 * a['size'])}",
    "movsx_rr": _movsx_rr,
    "alu_rr": lambda a: (
        f"{a['op'].name.lower()} {reg(a['dst'], width(a))}, {reg(a['src'], width(a))}"
    ),
    "alu_ri": lambda a: f"{a['op'].name.lower()} {reg(a['dst'], width(a))}, {a['imm']}",
    "alu_rm": lambda a: (
        f"{a['op'].name.lower()} {reg(a['dst'], width(a))}, {mem(a['mem'], width(a) // 8)}"
    ),
    "alu_mr": lambda a: (
        f"{a['op'].name.lower()} {mem(a['mem'], width(a) // 8)}, {reg(a['src'], width(a))}"
    ),
    "alu_mi": lambda a: f"{a['op'].name.lower()} {mem(a['mem'], width(a) // 8)}, {a['imm']}",
    "test_rr": lambda a: f"test {reg(a['a'], width(a))}, {reg(a['b'], width(a))}",
    "test_ri": lambda a: f"test {reg(a['a'], width(a))}, {a['imm']}",
    "imul_rr": lambda a: f"imul {reg(a['dst'], width(a))}, {reg(a['src'], width(a))}",
    "imul_rri": lambda a: f"imul {reg(a['dst'], width(a))}, {reg(a['src'], width(a))}, {a['imm']}",
    "shift_ri": lambda a: f"{a['op'].name.lower()} {reg(a['dst'], width(a))}, {a['count']}",
    "shift_cl": lambda a: f"{a['op'].name.lower()} {reg(a['dst'], width(a))}, cl",
    "ror16_ri": lambda a: f"ror {reg(a['dst'], 16)}, {a['count']}",
    "neg": lambda a: f"neg {reg(a['dst'], width(a))}",
    "div": lambda a: f"{'idiv' if a['signed'] else 'div'} {reg(a['src'], width(a))}",
    "cqo": lambda _: "cqo",
    "cdq": lambda _: "cdq",
    "xor_zero": lambda a: f"xor {reg(a['dst'], 32)}, {reg(a['dst'], 32)}",
    "bswap": lambda a: f"bswap {reg(a['dst'], width(a))}",
    "lock_alu_mr": lambda a: (
        f"lock {a['op'].name.lower()} {mem(a['mem'], width(a) // 8)}, {reg(a['src'], width(a))}"
    ),
    "lock_xadd": lambda a: f"lock xadd {mem(a['mem'], width(a) // 8)}, {reg(a['src'], width(a))}",
    "lock_cmpxchg": lambda a: (
        f"lock cmpxchg {mem(a['mem'], width(a) // 8)}, {reg(a['src'], width(a))}"
    ),
    "xchg_mr": lambda a: f"xchg {mem(a['mem'], width(a) // 8)}, {reg(a['src'], width(a))}",
    "call_r": lambda a: f"call {reg(a['reg'], 64)}",
    "jmp_r": lambda a: f"jmp {reg(a['reg'], 64)}",
    "ret": lambda _: "ret",
    "push": lambda a: f"push {reg(a['reg'], 64)}",
    "pop": lambda a: f"pop {reg(a['reg'], 64)}",
    "rep_stosq": lambda _: "rep stosq",
    "ud2": lambda _: "ud2",
    "int3": lambda _: "int3",
    "nop": lambda _: "nop",
}
BRANCHES: dict[str, Callable[[dict[str, Any]], str]] = {
    "jmp": lambda _: "jmp",
    "call": lambda _: "call",
    "jcc": lambda a: JCC_NAMES[a["cond"]],
}


def intel_lines(call: Call) -> list[str]:
    """The llvm-mc source for `call`: one instruction, plus a label and
    padding for branches."""
    a = call.bound()
    target = call.target()
    if target is not None:
        return _branch(BRANCHES[call.method](a), target)
    return [INTEL[call.method](a)]


def intel_text(call: Call) -> str:
    return "; ".join(intel_lines(call))


# --- running llvm-mc ---------------------------------------------------------------------
ENCODING_RE = re.compile(r"encoding: \[([^\]]*)\]")


def _run_llvm_mc(source: str, extra: Sequence[str]) -> str:
    result = subprocess.run(
        [LLVM_MC, *LLVM_MC_FLAGS, *extra],
        input=source,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or result.stderr.strip():
        raise RuntimeError(f"llvm-mc failed:\n{result.stderr}")
    return result.stdout


def _elf_text_section(image: bytes) -> bytes:
    """The contents of .text in an ELF64 little-endian relocatable file."""
    (shoff,) = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)

    def header(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", image, shoff + index * shentsize
        )
        return name, offset, size

    _, strings_offset, _ = header(shstrndx)
    for index in range(shnum):
        name, offset, size = header(index)
        end = image.index(b"\0", strings_offset + name)
        if image[strings_offset + name : end] == b".text":
            return image[offset : offset + size]
    raise RuntimeError("no .text section in llvm-mc output")


def llvm_encode(calls: Sequence[Call]) -> list[bytes]:
    """llvm-mc's bytes for each call, from two runs over one source: the
    listing (``-show-encoding``) gives each instruction's length, the object
    file gives the bytes with every label resolved."""
    blocks = [
        "\n".join(line.replace(".Ltarget", f".Ltarget{i}") for line in intel_lines(call))
        for i, call in enumerate(calls)
    ]
    source = "\n".join(blocks) + "\n"
    listing = _run_llvm_mc(source, ["-show-encoding"])
    lengths = [len(m.group(1).split(",")) for m in ENCODING_RE.finditer(listing)]
    if len(lengths) != len(calls):
        raise RuntimeError(f"llvm-mc encoded {len(lengths)} instructions for {len(calls)} calls")
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "golden.o"
        _run_llvm_mc(source, ["-filetype=obj", "-o", str(obj)])
        text = _elf_text_section(obj.read_bytes())
    out, position = [], 0
    for call, length in zip(calls, lengths, strict=True):
        target = call.target()
        if isinstance(target, LabelBefore):
            position += target.gap
        out.append(text[position : position + length])
        position += length
        if isinstance(target, LabelAfter):
            position += target.gap
    if position != len(text):
        raise RuntimeError(f"walked {position} bytes of a {len(text)}-byte .text")
    return out


def llvm_available() -> bool:
    return shutil.which(LLVM_MC) is not None


def llvm_version() -> str:
    result = subprocess.run([LLVM_MC, "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"LLVM version (\S+)", result.stdout)
    return match.group(1) if match else "unknown"


# --- the table -------------------------------------------------------------------------
REGS = list(Reg)
KEY_REGS = [Reg.RAX, Reg.RCX, Reg.RSP, Reg.RBP, Reg.RSI, Reg.RDI, Reg.R8, Reg.R12, Reg.R13, Reg.R15]
# distinct (dst, src) pairs: every key register appears on each side
PAIRS = [
    *zip(KEY_REGS, KEY_REGS[3:] + KEY_REGS[:3], strict=True),
    (Reg.RDX, Reg.R9),
    (Reg.R11, Reg.RBX),
]
BASES = [Reg.RAX, Reg.RCX, Reg.RSP, Reg.RBP, Reg.RSI, Reg.R8, Reg.R12, Reg.R13, Reg.R15]
DISPS = [0, 8, -128, 127, 128, -129, 0x12345678, -0x80000000]
MEMS = [Mem(b, d) for b in BASES for d in DISPS]
FEW_MEMS = [
    Mem(b, d) for b, d in zip(BASES, [0, 8, -128, 127, 0, 128, -129, 0, 0x12345678], strict=True)
]
IMMS_S32 = [0, 1, -1, 8, -128, 127, 128, -129, 0x12345678, -0x80000000, 0x7FFFFFFF]
IMMS_U32_ONLY = [0x80000000, 0xFFFFFF80, 0xFFFFFFFF]
GAPS = [0, 8, 127, 128, 300, 0x12345]
WIDTHS = [True, False]


def _cycle(items: Sequence[Reg], index: int) -> Reg:
    return items[index % len(items)]


def _moves() -> list[Call]:
    calls = [Call("mov_rr", (Reg.RAX, Reg.RBX))]
    calls += [
        Call("mov_rr", (d, s), (("w64", w),)) for w in WIDTHS for d in KEY_REGS for s in KEY_REGS
    ]
    for w in WIDTHS:
        imms = IMMS_S32 + ([] if w else IMMS_U32_ONLY)
        calls += [
            Call("mov_ri", (_cycle(REGS, i * 5), imm), (("w64", w),)) for i, imm in enumerate(imms)
        ]
    calls += [Call("mov_ri", (r, 0x12345678)) for r in REGS]
    imm64 = [0, -1, 0x123456789ABCDEF0, 0xFFFFFFFFFFFFFFFF, -(1 << 63), 0x80000000]
    calls += [Call("mov_ri64", (r, imm64[i % len(imm64)])) for i, r in enumerate(REGS)]
    for size, signed in [
        (1, False),
        (2, False),
        (4, False),
        (8, False),
        (1, True),
        (2, True),
        (4, True),
    ]:
        calls += [
            Call("load", (_cycle(REGS, i + size), m, size), (("signed", signed),))
            for i, m in enumerate(MEMS)
        ]
    calls += [Call("load", (r, Mem(Reg.RDI, 16), 8)) for r in REGS]
    for size in (1, 2, 4, 8):
        calls += [Call("store", (m, _cycle(REGS, i + size), size)) for i, m in enumerate(MEMS)]
    calls += [Call("store", (Mem(Reg.RAX), r, 1)) for r in REGS]
    store_imms = [0, 0x7F, -1, 0x80, -129, 0x12345678, -0x80000000]
    for size in (1, 2, 4, 8):
        calls += [
            Call("store_imm", (m, store_imms[i % len(store_imms)], size))
            for i, m in enumerate(FEW_MEMS)
        ]
    calls += [Call("store_imm", (Mem(Reg.R12, -8), 0xFFFFFFFF, 4))]
    calls += [Call("lea", (_cycle(REGS, i), m)) for i, m in enumerate(MEMS)]
    for size in (1, 2):
        calls += [Call("movzx_rr", (_cycle(REGS, i + 3), r, size)) for i, r in enumerate(REGS)]
    # SPL..DIL as a byte source need a REX prefix even when nothing else does
    calls += [Call("movsx_rr", (Reg.RAX, r, 1, False)) for r in REGS]
    for size, w in [(1, True), (1, False), (2, True), (2, False), (4, True)]:
        calls += [Call("movsx_rr", (_cycle(REGS, i + 7), r, size, w)) for i, r in enumerate(REGS)]
    return calls


def _alu() -> list[Call]:
    calls: list[Call] = [
        Call("alu_rr", (AluOp.ADD, Reg.RAX, Reg.RCX)),
        Call("alu_ri", (AluOp.SUB, Reg.RSP, 8)),
    ]
    for op in AluOp:
        for w in WIDTHS:
            wk = (("w64", w),)
            calls += [Call("alu_rr", (op, d, s), wk) for d, s in PAIRS]
            imms = IMMS_S32 + ([] if w else IMMS_U32_ONLY)
            calls += [
                Call("alu_ri", (op, _cycle(KEY_REGS, i + op), imm), wk)
                for i, imm in enumerate(imms)
            ]
            calls += [Call("alu_ri", (op, Reg.RAX, imm), wk) for imm in (1, -128, 128, 0x12345678)]
            calls += [
                Call("alu_rm", (op, _cycle(REGS, i + op), m), wk) for i, m in enumerate(FEW_MEMS)
            ]
            calls += [
                Call(
                    "alu_mr",
                    (
                        op,
                        m,
                        _cycle(REGS, i + op + 5),
                    ),
                    wk,
                )
                for i, m in enumerate(FEW_MEMS)
            ]
            calls += [
                Call("alu_mi", (op, m, IMMS_S32[(i + op) % len(IMMS_S32)]), wk)
                for i, m in enumerate(FEW_MEMS)
            ]
    return calls


def _arith() -> list[Call]:
    calls = [Call("test_rr", (Reg.RAX, Reg.RAX)), Call("imul_rr", (Reg.RAX, Reg.RCX))]
    for w in WIDTHS:
        wk = (("w64", w),)
        imms = IMMS_S32 + ([] if w else IMMS_U32_ONLY)
        calls += [Call("test_rr", (a, b), wk) for a, b in PAIRS]
        calls += [Call("test_ri", (_cycle(KEY_REGS, i), imm), wk) for i, imm in enumerate(imms)]
        calls += [Call("test_ri", (Reg.RAX, imm), wk) for imm in (1, -1, 0x12345678)]
        calls += [Call("imul_rr", (d, s), wk) for d, s in PAIRS]
        calls += [
            Call("imul_rri", (d, s, imms[i % len(imms)]), wk) for i, (d, s) in enumerate(PAIRS)
        ]
        calls += [Call("imul_rri", (Reg.R9, Reg.R9, imm), wk) for imm in imms]
        counts = [0, 1, 2, 8, 31] + ([32, 63] if w else [])
        for op in ShiftOp:
            calls += [
                Call("shift_ri", (op, _cycle(REGS, i + 3 * op), c), wk)
                for i, c in enumerate(counts)
            ]
            calls += [Call("shift_cl", (op, r), wk) for r in KEY_REGS]
        calls += [Call("neg", (r,), wk) for r in REGS]
        for signed in (False, True):
            calls += [Call("div", (r,), (*wk, ("signed", signed))) for r in REGS]
        calls += [Call("bswap", (r,), wk) for r in REGS]
    calls += [Call("ror16_ri", (r, (0, 1, 8, 15)[i % 4])) for i, r in enumerate(REGS)]
    calls += [Call("shift_ri", (ShiftOp.SHL, Reg.RAX, 3)), Call("shift_cl", (ShiftOp.SAR, Reg.R10))]
    calls += [Call("neg", (Reg.RAX,)), Call("div", (Reg.RCX,)), Call("bswap", (Reg.RSI,))]
    calls += [Call("cqo", ()), Call("cdq", ()), Call("rep_stosq", ())]
    calls += [Call("xor_zero", (r,)) for r in REGS]
    return calls


def _atomics() -> list[Call]:
    calls: list[Call] = []
    for w in WIDTHS:
        wk = (("w64", w),)
        for op in sorted(set(AluOp) - {AluOp.CMP}):
            calls += [
                Call("lock_alu_mr", (op, m, _cycle(REGS, i + op)), wk)
                for i, m in enumerate(FEW_MEMS)
            ]
        for method in ("lock_xadd", "lock_cmpxchg", "xchg_mr"):
            calls += [Call(method, (m, _cycle(REGS, i + 2), w)) for i, m in enumerate(MEMS[::3])]
    return calls


def _control() -> list[Call]:
    targets: list[Target] = [LabelAfter(g) for g in GAPS] + [LabelBefore(g) for g in GAPS]
    calls = [Call("jmp", (t,)) for t in targets] + [Call("call", (t,)) for t in targets]
    calls += [Call("jcc", (c, t)) for c in Cond for t in (LabelAfter(0), LabelBefore(0))]
    calls += [Call("jcc", (c, targets[i % len(targets)])) for i, c in enumerate(Cond)]
    for method in ("call_r", "jmp_r", "push", "pop"):
        calls += [Call(method, (r,)) for r in REGS]
    calls += [Call(m, ()) for m in ("ret", "ud2", "int3", "nop")]
    return calls


def golden_calls() -> list[Call]:
    """The frozen table: every method with many operand combinations, each once."""
    return list(dict.fromkeys(_moves() + _alu() + _arith() + _atomics() + _control()))


# --- a random call of any method, for the live cross-check --------------------------------
def _random_imm(rng: random.Random, w64: bool = True) -> int:
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(IMMS_S32)
    if pick < 0.6:
        return rng.randint(-128, 127)
    if not w64 and pick < 0.7:
        return rng.randint(0x80000000, 0xFFFFFFFF)
    return rng.randint(-(1 << 31), (1 << 31) - 1)


def _random_mem(rng: random.Random) -> Mem:
    disp = rng.choice(DISPS) if rng.random() < 0.4 else _random_imm(rng)
    return Mem(rng.choice(REGS), disp)


def random_call(rng: random.Random) -> Call:
    """One valid call of a randomly chosen method with random operands."""

    def r() -> Reg:
        return rng.choice(REGS)

    w = rng.choice(WIDTHS)
    wk = (("w64", w),)
    makers: dict[str, Callable[[], Call]] = {
        "mov_rr": lambda: Call("mov_rr", (r(), r()), wk),
        "mov_ri": lambda: Call("mov_ri", (r(), _random_imm(rng, w)), wk),
        "mov_ri64": lambda: Call("mov_ri64", (r(), rng.randint(-(1 << 63), (1 << 64) - 1))),
        "load": lambda: _random_load(rng),
        "store": lambda: Call("store", (_random_mem(rng), r(), rng.choice((1, 2, 4, 8)))),
        "store_imm": lambda: Call(
            "store_imm", (_random_mem(rng), _random_imm(rng), rng.choice((1, 2, 4, 8)))
        ),
        "lea": lambda: Call("lea", (r(), _random_mem(rng))),
        "movzx_rr": lambda: Call("movzx_rr", (r(), r(), rng.choice((1, 2)))),
        "movsx_rr": lambda: _random_movsx(rng),
        "alu_rr": lambda: Call("alu_rr", (rng.choice(list(AluOp)), r(), r()), wk),
        "alu_ri": lambda: Call("alu_ri", (rng.choice(list(AluOp)), r(), _random_imm(rng, w)), wk),
        "alu_rm": lambda: Call("alu_rm", (rng.choice(list(AluOp)), r(), _random_mem(rng)), wk),
        "alu_mr": lambda: Call("alu_mr", (rng.choice(list(AluOp)), _random_mem(rng), r()), wk),
        "alu_mi": lambda: Call(
            "alu_mi", (rng.choice(list(AluOp)), _random_mem(rng), _random_imm(rng, w)), wk
        ),
        "test_rr": lambda: Call("test_rr", (r(), r()), wk),
        "test_ri": lambda: Call("test_ri", (r(), _random_imm(rng, w)), wk),
        "imul_rr": lambda: Call("imul_rr", (r(), r()), wk),
        "imul_rri": lambda: Call("imul_rri", (r(), r(), _random_imm(rng, w)), wk),
        "shift_ri": lambda: Call(
            "shift_ri", (rng.choice(list(ShiftOp)), r(), rng.randrange(64 if w else 32)), wk
        ),
        "shift_cl": lambda: Call("shift_cl", (rng.choice(list(ShiftOp)), r()), wk),
        "ror16_ri": lambda: Call("ror16_ri", (r(), rng.randrange(16))),
        "neg": lambda: Call("neg", (r(),), wk),
        "div": lambda: Call("div", (r(),), (*wk, ("signed", rng.random() < 0.5))),
        "cqo": lambda: Call("cqo", ()),
        "cdq": lambda: Call("cdq", ()),
        "rep_stosq": lambda: Call("rep_stosq", ()),
        "xor_zero": lambda: Call("xor_zero", (r(),)),
        "bswap": lambda: Call("bswap", (r(),), wk),
        "lock_alu_mr": lambda: Call(
            "lock_alu_mr", (rng.choice(sorted(set(AluOp) - {AluOp.CMP})), _random_mem(rng), r(), w)
        ),
        "lock_xadd": lambda: Call("lock_xadd", (_random_mem(rng), r(), w)),
        "lock_cmpxchg": lambda: Call("lock_cmpxchg", (_random_mem(rng), r(), w)),
        "xchg_mr": lambda: Call("xchg_mr", (_random_mem(rng), r(), w)),
        "jmp": lambda: Call("jmp", (_random_target(rng),)),
        "jcc": lambda: Call("jcc", (rng.choice(list(Cond)), _random_target(rng))),
        "call": lambda: Call("call", (_random_target(rng),)),
        "call_r": lambda: Call("call_r", (r(),)),
        "jmp_r": lambda: Call("jmp_r", (r(),)),
        "ret": lambda: Call("ret", ()),
        "push": lambda: Call("push", (r(),)),
        "pop": lambda: Call("pop", (r(),)),
        "ud2": lambda: Call("ud2", ()),
        "int3": lambda: Call("int3", ()),
        "nop": lambda: Call("nop", ()),
    }
    return makers[rng.choice(sorted(makers))]()


def _random_load(rng: random.Random) -> Call:
    size = rng.choice((1, 2, 4, 8))
    signed = size != 8 and rng.random() < 0.5
    return Call("load", (rng.choice(REGS), _random_mem(rng), size), (("signed", signed),))


def _random_movsx(rng: random.Random) -> Call:
    size = rng.choice((1, 2, 4))
    w64 = size == 4 or rng.random() < 0.5
    return Call("movsx_rr", (rng.choice(REGS), rng.choice(REGS), size, w64))


def _random_target(rng: random.Random) -> Target:
    gap = rng.choice((0, rng.randrange(1, 200), rng.randrange(200, 5000)))
    return LabelAfter(gap) if rng.random() < 0.5 else LabelBefore(gap)


# --- the file ---------------------------------------------------------------------------
def render(calls: Sequence[Call], encodings: Sequence[bytes], version: str) -> str:
    lines = [
        "# Golden bytes of ebpfvm.jit.x86_64.X86Assembler: call | expected hex | Intel syntax.",
        f"# Generated by tools/gen_x86_golden.py from llvm-mc {version}. Do not edit.",
    ]
    for call, code in zip(calls, encodings, strict=True):
        lines.append(FIELD_SEPARATOR.join((call.text(), code.hex(" "), intel_text(call))))
    return "\n".join(lines) + "\n"


def read_golden(path: Path = GOLDEN_PATH) -> list[tuple[str, bytes, str]]:
    """(call text, expected bytes, Intel syntax) for every row of the table."""
    rows = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        call, code, intel = line.split(FIELD_SEPARATOR)
        rows.append((call, bytes.fromhex(code), intel))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the table is stale")
    options = parser.parse_args(argv)
    calls = golden_calls()
    encodings = llvm_encode(calls)
    content = render(calls, encodings, llvm_version())
    mismatches = [(c, e) for c, e in zip(calls, encodings, strict=True) if encode(c) != e]
    for call, expected in mismatches:
        print(
            f"encoder differs: {call.text()}: llvm {expected.hex(' ')}, ours {encode(call).hex(' ')}"
        )
    if options.check:
        stale = not GOLDEN_PATH.exists() or GOLDEN_PATH.read_text() != content
        print(f"{GOLDEN_PATH}: {'stale' if stale else 'up to date'}, {len(calls)} rows")
        return 1 if stale else 0
    GOLDEN_PATH.write_text(content)
    print(f"wrote {len(calls)} rows to {GOLDEN_PATH}; {len(mismatches)} differ from the encoder")
    return 0


if __name__ == "__main__":
    sys.exit(main())
