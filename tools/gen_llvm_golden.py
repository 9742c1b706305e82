#!/usr/bin/env python3
"""Regenerate the golden LLVM-syntax disassembly under tests/data/llvm_disasm/.

Two files, both produced by LLVM 19 only (Debian package ``llvm-19``), never
by our disassembler, so they are an independent oracle for
``ebpfvm disasm --style llvm``:

* ``rows.txt``: for every row of the opcode table, sample bytes and the text
  ``llvm-mc-19 --disassemble -arch=bpfel`` prints for them (``hex | text``);
  32-bit atomics with ``-mattr=+alu32``, the only mode that decodes them.
* ``<example>.txt``: ``llvm-objdump-19 -d --no-print-imm-hex`` of each object
  in examples/bpf, without its first (file name) line.

Usage: python3 tools/gen_llvm_golden.py   (needs /usr/lib/llvm-19/bin)
Do not edit the outputs by hand; review them as a diff.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ebpfvm.encoding import encode_one, lddw_slots  # noqa: E402
from ebpfvm.isa import OPS, Form, OpInfo, Reg  # noqa: E402

LLVM = Path("/usr/lib/llvm-19/bin")
OUT = ROOT / "tests" / "data" / "llvm_disasm"
SAMPLE_IMMS = (5, -7)
"""Two immediates per row: a positive and a negative one."""


def samples(row: OpInfo) -> list[bytes]:
    """Instances of `row` with sample operands (dst r1, src r2, off -3 or the fixed value)."""
    dst = 0 if row.dst is Reg.NONE else 1
    src = row.src_value if row.src is Reg.NONE else 2
    off = -3 if row.off is None else row.off
    imms = SAMPLE_IMMS if row.imm is None else (row.imm,)
    out = []
    for imm in imms:
        if row.form is Form.LDDW:
            out.append(lddw_slots(dst, src, imm & ((1 << 64) - 1)))
        else:
            out.append(encode_one(row.opcode, dst, src, off if row.form is not Form.JA32 else 0,
                                  imm))
    return out


def llvm_mc(code: bytes, alu32: bool) -> str:
    text = " ".join(f"0x{byte:02x}" for byte in code)
    extra = ["-mattr=+alu32"] if alu32 else []
    result = subprocess.run([str(LLVM / "llvm-mc"), "--disassemble", "-arch=bpfel", *extra],
                            input=text, capture_output=True, text=True, check=True)
    lines = [line.strip() for line in result.stdout.splitlines()
             if line.strip() and not line.strip().startswith(".text")]
    return " ".join(lines) if lines else "<invalid>"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in OPS:
        for code in samples(row):
            # Without +alu32 LLVM 19 decodes no 32-bit atomic but add, and that one
            # wrongly (as the non-fetching form); with it, they name wN registers.
            alu32 = row.form is Form.ATOMIC and row.width == 32
            rows.append(f"{code.hex()} | {llvm_mc(code, alu32)}")
    (OUT / "rows.txt").write_text("\n".join(rows) + "\n")
    for obj in sorted((ROOT / "examples" / "bpf").glob("*.o")):
        result = subprocess.run([str(LLVM / "llvm-objdump"), "-d", "--no-print-imm-hex",
                                 str(obj)], capture_output=True, text=True, check=True)
        body = result.stdout.split("\n", 2)[2]  # drop the blank line and the file line
        (OUT / f"{obj.stem}.txt").write_text(body)
    print(f"wrote {len(rows)} rows and the examples to {OUT}")


if __name__ == "__main__":
    main()
