"""Disassembly listings of object files, laid out as ``llvm-objdump -d``.

Each code section of the file is listed as stored (before relocation, as
llvm-objdump shows it): a ``Disassembly of section NAME:`` header, a
``<symbol>:`` line wherever a function or label symbol starts, and one line
per instruction with its slot index, its bytes and its text in the chosen
dialect (``llvm``: the syntax of llvm-objdump; ``rbpf``/``ubpf``: ours). With
``source=True`` and line info in ``.BTF.ext``, each instruction that starts
a new source line is preceded by ``; <the C line> @ file:line``, as kernel
verifier logs print it.
"""

from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass
from typing import Any

from .btf_ext import LineInfo, parse_line_info
from .cfg import branch_target
from .disasm import disassemble_insn
from .disasm_llvm import format_llvm
from .encoding import SLOT, Insn, decode
from .errors import ElfError

__all__ = ["disassemble_code", "disassemble_object"]

SHF_EXECINSTR = 0x4


@dataclass(frozen=True, slots=True)
class _CodeSection:
    index: int
    name: str
    code: bytes
    symbols: dict[int, str]  # slot index -> name (functions first)
    relocations: dict[int, list[str]]  # slot index -> llvm-objdump -r lines


def _format(insn: Insn, style: str, label: str | None) -> str:
    if style == "llvm":
        text = format_llvm(insn, label)
        if text is not None:
            return text
        return disassemble_insn(insn, "rbpf").replace("\n", "; ")
    return disassemble_insn(insn, style).replace("\n", "; ")


def _listing(code: bytes, style: str, symbols: dict[int, str],
             lines: dict[int, LineInfo], relocations: dict[int, list[str]] | None = None,
             ) -> list[str]:
    out: list[str] = []
    last: tuple[str, int] | None = None
    for insn in decode(code):
        pc = insn.pc
        if pc in symbols:
            out += ["", f"{pc * SLOT:016x} <{symbols[pc]}>:"]
        info = lines.get(pc)
        if info is not None and (info.file, info.line) != last and info.text:
            out.append(f"; {info.text.strip()} @ {posixpath.basename(info.file)}:{info.line}")
            last = (info.file, info.line)
        target = branch_target(insn) if insn.row is not None and insn.row.is_jump else None
        label = None if target is None else symbols.get(target)
        raw = code[pc * SLOT : (pc + insn.slots) * SLOT]
        out.append(f"{pc:>8}:\t{' '.join(f'{b:02x}' for b in raw)}\t"
                   f"{_format(insn, style, label)}")
        if relocations:
            out += relocations.get(pc, [])
    return out


def disassemble_code(code: bytes, *, style: str = "llvm") -> str:
    """Raw bytecode as listing lines (slot, bytes, text), one per instruction."""
    return "".join(f"{line}\n" for line in _listing(code, style, {}, {}))


def _sections(elf: Any) -> list[_CodeSection]:
    from elftools.elf.sections import SymbolTableSection

    symtab = elf.get_section_by_name(".symtab")
    symbols = list(symtab.iter_symbols()) if isinstance(symtab, SymbolTableSection) else []
    found = []
    for index, section in enumerate(elf.iter_sections()):
        if section["sh_type"] != "SHT_PROGBITS" or not section["sh_flags"] & SHF_EXECINSTR:
            continue
        code = bytes(section.data())
        if not code:
            continue
        named: dict[int, tuple[int, str]] = {}
        for sym in symbols:
            kind = sym["st_info"]["type"]
            if sym["st_shndx"] != index or not sym.name or kind not in ("STT_FUNC", "STT_NOTYPE"):
                continue
            rank = 0 if kind == "STT_FUNC" else 1
            slot = sym["st_value"] // SLOT
            if slot not in named or rank < named[slot][0]:
                named[slot] = (rank, sym.name)
        found.append(_CodeSection(index, section.name, code,
                                  {slot: name for slot, (_r, name) in named.items()},
                                  _relocations(elf, index, symbols)))
    return found


RELOCATION_TYPES = {1: "R_BPF_64_64", 2: "R_BPF_64_ABS64", 3: "R_BPF_64_ABS32",
                    4: "R_BPF_64_NODYLD32", 10: "R_BPF_64_32"}
"""The BPF relocation types by number, as llvm-objdump names them."""


def _relocations(elf: Any, index: int, symbols: list[Any]) -> dict[int, list[str]]:
    """The relocations of section `index` by slot, each an ``llvm-objdump -r``
    line: offset, type, and the symbol (a map, a global, a function) or,
    for a section symbol, the section's name."""
    from elftools.elf.relocation import RelocationSection

    found: dict[int, list[str]] = {}
    for section in elf.iter_sections():
        if not isinstance(section, RelocationSection) or section["sh_info"] != index:
            continue
        for rel in section.iter_relocations():
            number = rel["r_info_sym"]
            sym = symbols[number] if 0 <= number < len(symbols) else None
            name = sym.name if sym is not None else ""
            if sym is not None and not name and isinstance(sym["st_shndx"], int) \
                    and sym["st_shndx"] < elf.num_sections():
                name = elf.get_section(sym["st_shndx"]).name
            kind = RELOCATION_TYPES.get(rel["r_info_type"], f"R_BPF_{rel['r_info_type']}")
            found.setdefault(rel["r_offset"] // SLOT, []).append(
                f"\t\t{rel['r_offset']:016x}:  {kind}\t{name}")
    return found


def _line_info(elf: Any) -> dict[str, dict[int, LineInfo]]:
    btf, ext = elf.get_section_by_name(".BTF"), elf.get_section_by_name(".BTF.ext")
    if btf is None or ext is None:
        return {}
    return parse_line_info(bytes(btf.data()), bytes(ext.data()))


def _function_range(section: _CodeSection, function: str) -> tuple[int, int] | None:
    starts = sorted(section.symbols)
    for position, slot in enumerate(starts):
        if section.symbols[slot] == function:
            return slot, starts[position + 1] if position + 1 < len(starts) else \
                len(section.code) // SLOT
    return None


def disassemble_object(data: bytes, *, style: str = "llvm", section: str | None = None,
                       function: str | None = None, source: bool = True,
                       relocations: bool = False) -> str:
    """The listing of an ELF object's code sections (or one section or function).
    With `relocations`, each relocated instruction is followed by its
    relocation as ``llvm-objdump -dr`` prints it (the map, global or function
    an ``lddw`` or ``call`` names). ElfError for a malformed object or a
    section or function it does not have."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(io.BytesIO(data))
        sections = _sections(elf)
        lines = _line_info(elf) if source else {}
    except ELFError as exc:
        raise ElfError(f"malformed object: {exc}") from exc
    chosen = [s for s in sections if section is None or s.name == section]
    if not chosen:
        if not sections:
            raise ElfError("no code sections in the object")
        names = ", ".join(s.name for s in sections)
        raise ElfError(f"no code section '{section}' (sections: {names})")
    out: list[str] = []
    matched = False
    for code_section in chosen:
        code = code_section.code
        symbols = code_section.symbols
        relocs = code_section.relocations if relocations else None
        if function is not None:
            span = _function_range(code_section, function)
            if span is None:
                continue
            # Keep slot numbers: list only the function's slots, after blank ones.
            start, end = span
            body = _listing(code[: end * SLOT], style, symbols, lines.get(code_section.name, {}),
                            relocs)
            header = f"{start * SLOT:016x} <{function}>:"
            body = body[body.index(header) - 1 :]
        else:
            body = _listing(code, style, symbols, lines.get(code_section.name, {}), relocs)
        matched = True
        out += ["", f"Disassembly of section {code_section.name}:", *body]
    if not matched:
        raise ElfError(f"no function '{function}' in the object's code sections", section)
    return "".join(f"{line}\n" for line in out)
