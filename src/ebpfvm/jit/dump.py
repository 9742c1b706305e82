"""jit-dump: each eBPF instruction beside the x86-64 bytes it became, with
x86 disassembly when capstone is installed."""

from __future__ import annotations

from typing import Any

from ..disasm import disassemble_insn
from .runtime import JitProgram

__all__ = ["jit_dump"]


def _capstone() -> Any | None:
    try:
        import capstone  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        return None
    return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def jit_dump(program: JitProgram, *, style: str = "ubpf") -> str:
    """One section per eBPF pc: its disassembly, then its machine code."""
    code = program.jit.code
    by_pc = {insn.pc: insn for insn in program.insns}
    offsets = program.pc_offsets()
    base = program.memory.address
    decoder = _capstone()
    lines = [f"; {'checked' if program.checked else 'UNCHECKED'} x86-64 code, "
             f"{len(code)} bytes at {base:#x}"]
    ends = [offset for _pc, offset in offsets[1:]] + [_code_end(program)]
    for (pc, start), end in zip(offsets, ends, strict=True):
        lines.append(f"{pc:5d}: {disassemble_insn(by_pc[pc], style)}")
        chunk = code[start:end]
        if decoder is not None:
            for ins in decoder.disasm(chunk, base + start):
                raw = ins.bytes.hex(" ")
                lines.append(f"       {ins.address - base:6x}  {raw:<30} {ins.mnemonic} {ins.op_str}")
        else:
            for row in range(0, len(chunk), 16):
                lines.append(f"       {start + row:6x}  {chunk[row:row + 16].hex(' ')}")
    return "\n".join(lines) + "\n"


def _code_end(program: JitProgram) -> int:
    """Where the last instruction's code ends: the first cold stub or epilogue."""
    return program.jit.body_end
