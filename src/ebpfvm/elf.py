"""Load eBPF programs from clang/libbpf ELF objects (pyelftools does the ELF).

A program is a function symbol in an executable section other than ``.text``
(``xdp``, ``tc``, ``socket``, ``.classifier``...). Functions in ``.text`` are
subprograms: a program that calls them (R_BPF_64_32 on a ``call local``) gets
the ``.text`` code appended and its call offsets patched, as libbpf links
bpf-to-bpf calls.

Not yet supported (the ELF issue continues): maps and global data (R_BPF_64_64
on lddw) and BTF. Such objects raise :class:`~ebpfvm.errors.ElfError` naming
the section and the symbol.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .encoding import SLOT, SLOT_LAYOUT
from .errors import ElfError
from .isa import Form, find_row

__all__ = ["R_BPF_64_32", "R_BPF_64_64", "ElfObject", "Program", "load"]

EM_BPF = 247
R_BPF_64_64 = 1
"""Relocation on lddw: the address of a map or of global data."""
R_BPF_64_32 = 10
"""Relocation on a call: the called function."""
SHF_EXECINSTR = 0x4
TEXT = ".text"


@dataclass(frozen=True)
class Program:
    """One program: its function and section names and its linked bytecode."""

    name: str
    section: str
    code: bytes
    subprograms: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.code) // SLOT


@dataclass
class ElfObject:
    """The programs of one object file, by function name and by section."""

    programs: list[Program] = field(default_factory=list)
    license: str | None = None

    def program(self, name: str | None = None, *, section: str | None = None) -> Program:
        """The program called `name`, or the only one in `section`, or the only one."""
        found = [p for p in self.programs
                 if (name is None or p.name == name) and (section is None or p.section == section)]
        if len(found) != 1:
            what = f"name={name!r} section={section!r}"
            listing = ", ".join(f"{p.section}/{p.name}" for p in self.programs) or "none"
            raise ElfError(f"{len(found)} programs match {what} (programs: {listing})", section)
        return found[0]

    @property
    def sections(self) -> list[str]:
        return sorted({p.section for p in self.programs})


@dataclass
class _Section:
    index: int
    name: str
    data: bytes
    relocations: dict[int, tuple[int, str, int, int]]  # insn index -> (type, symbol, value, shndx)


def load(source: str | os.PathLike[str] | bytes | bytearray) -> ElfObject:
    """Read an object file (a path or its bytes). Malformed or unsupported input
    raises ElfError naming the section when there is one."""
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else _read(source)
    try:
        return _load(data)
    except ElfError:
        raise
    except Exception as exc:  # pyelftools raises many types on corrupt input
        raise ElfError(f"malformed object: {type(exc).__name__}: {exc}") from exc


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ElfError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from exc


def _load(data: bytes) -> ElfObject:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    if data[:4] != b"\x7fELF":
        raise ElfError("not an ELF file")
    elf = ELFFile(io.BytesIO(data))
    if elf.elfclass != 64 or not elf.little_endian:
        raise ElfError(f"expected a 64-bit little-endian object, not ELF{elf.elfclass} "
                       f"{'LE' if elf.little_endian else 'BE'}")
    if elf["e_machine"] not in ("EM_BPF", EM_BPF):
        raise ElfError(f"machine is {elf['e_machine']}, not EM_BPF")
    symtab = elf.get_section_by_name(".symtab")
    symbols = list(symtab.iter_symbols()) if isinstance(symtab, SymbolTableSection) else []
    sections = dict(_code_sections(elf, symbols))
    result = ElfObject(license=_license(elf))
    text = next((s for s in sections.values() if s.name == TEXT), None)
    for sym in symbols:
        if sym["st_info"]["type"] != "STT_FUNC" or not isinstance(sym["st_shndx"], int):
            continue
        section = sections.get(sym["st_shndx"])
        if section is None or section.name == TEXT:
            continue
        result.programs.append(_link(section, sym, text, sections))
    return result


def _license(elf: Any) -> str | None:
    section = elf.get_section_by_name("license")
    if section is None:
        return None
    return bytes(section.data()).split(b"\0", 1)[0].decode("ascii", "replace")


def _code_sections(elf: Any, symbols: list[Any]) -> Iterator[tuple[int, _Section]]:
    relocs: dict[int, Any] = {}
    for section in elf.iter_sections():
        if section["sh_type"] == "SHT_REL":
            relocs[section["sh_info"]] = section
    for index, section in enumerate(elf.iter_sections()):
        if section["sh_type"] != "SHT_PROGBITS" or not section["sh_flags"] & SHF_EXECINSTR:
            continue
        code = bytes(section.data())
        if len(code) % SLOT:
            raise ElfError(f"code size {len(code)} is not a multiple of {SLOT}", section.name)
        table: dict[int, tuple[int, str, int, int]] = {}
        if index in relocs:
            for reloc in relocs[index].iter_relocations():
                sym_index = reloc["r_info_sym"]
                if sym_index >= len(symbols):
                    raise ElfError(f"relocation symbol {sym_index} is out of range", section.name)
                sym = symbols[sym_index]
                offset = reloc["r_offset"]
                if offset % SLOT or offset >= len(code):
                    raise ElfError(f"relocation offset {offset} is not an instruction",
                                   section.name)
                shndx = sym["st_shndx"] if isinstance(sym["st_shndx"], int) else -1
                table[offset // SLOT] = (reloc["r_info_type"], sym.name, sym["st_value"], shndx)
        yield index, _Section(index, section.name, code, table)


def _function_slice(section: _Section, sym: Any) -> bytes:
    start, size = sym["st_value"], sym["st_size"] or len(section.data) - sym["st_value"]
    if start % SLOT or size % SLOT or start + size > len(section.data):
        raise ElfError(f"function {sym.name!r} lies outside its section", section.name)
    return section.data[start : start + size]


def _link(section: _Section, sym: Any, text: _Section | None,
          sections: dict[int, _Section]) -> Program:
    """The function's code, with .text appended when it calls into it."""
    start = sym["st_value"] // SLOT
    code = bytearray(_function_slice(section, sym))
    own = {start + i: i for i in range(len(code) // SLOT)}  # section index -> program index
    text_base: int | None = None
    pending = [(i, section, section_index) for section_index, i in own.items()]
    while pending:
        pc, where, index_in_section = pending.pop()
        reloc = where.relocations.get(index_in_section)
        if reloc is None:
            continue
        kind, target_name, value, shndx = reloc
        opcode, regs, _off, imm = SLOT_LAYOUT.unpack_from(code, pc * SLOT)
        row = find_row(opcode, regs >> 4, _off, imm)
        if kind == R_BPF_64_64:
            raise ElfError(f"maps and global data are not supported yet (lddw of "
                           f"{target_name!r})", where.name)
        if kind != R_BPF_64_32 or row is None or row.form is not Form.CALL_LOCAL:
            raise ElfError(f"unsupported relocation type {kind} at instruction "
                           f"{index_in_section} ({target_name!r})", where.name)
        target_section = sections.get(shndx)
        if target_section is None:
            raise ElfError(f"call to {target_name!r}, which is in no code section", where.name)
        target = value // SLOT + imm + 1
        if not 0 <= target < len(target_section.data) // SLOT:
            raise ElfError(f"call target {target} outside section {target_section.name}",
                           where.name)
        if target_section is section and target in own:
            base_pc = own[target]
        elif text is not None and target_section is text:
            if text_base is None:
                text_base = len(code) // SLOT
                code += text.data
                pending += [(text_base + i, text, i) for i in range(len(text.data) // SLOT)]
            base_pc = text_base + target
        else:
            raise ElfError(f"call to {target_name!r} in section {target_section.name}, "
                           "outside the program", where.name)
        struct.pack_into("<i", code, pc * SLOT + 4, base_pc - (pc + 1))
    subprograms = (TEXT,) if text_base is not None else ()
    return Program(sym.name, section.name, bytes(code), subprograms)
