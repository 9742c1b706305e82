"""An ELF writer for the hostile fuzz target (tests/hostile.py): EM_BPF
relocatable objects section by section, and .BTF sections with a DATASEC."""

from __future__ import annotations

import struct
from dataclasses import dataclass

# -- BTF ----------------------------------------------------------------------------------------

BTF_MAGIC = 0xEB9F
BTF_INT, BTF_ARRAY, BTF_STRUCT, BTF_VAR, BTF_DATASEC = 1, 3, 4, 14, 15
BTF_NELEMS_MAX = 0xFFFF_FFFF
VAR_GLOBAL = 1


def _btf_type(kind: int, name: int, vlen: int, size_or_type: int) -> bytes:
    return struct.pack("<III", name, kind << 24 | vlen, size_or_type)


def build_btf(kind: str, bss_size: int) -> bytes:
    """A .BTF whose DATASEC ``.bss`` holds one variable ``big`` of a type
    chosen by `kind` (see Recipe.btf)."""
    strings = b"\0int\0big\0.bss\0S\0self\0E\0"
    name = {s.decode(): strings.index(b"\0" + s + b"\0") + 1
            for s in (b"int", b"big", b".bss", b"S", b"self", b"E")}
    types = [_btf_type(BTF_INT, name["int"], 0, 1) + struct.pack("<I", 8)]  # 1: char
    if kind == "self":  # 2: struct S { struct S self; } of 8 bytes
        types.append(_btf_type(BTF_STRUCT, name["S"], 1, 8) + struct.pack("<III", name["self"], 2, 0))
    elif kind == "huge":  # 2: struct E {}; 3: struct E[2**32-1], zero bytes in all
        types.append(_btf_type(BTF_STRUCT, name["E"], 0, 0))
        types.append(_btf_type(BTF_ARRAY, 0, 0, 0) + struct.pack("<III", 2, 1, BTF_NELEMS_MAX))
    else:  # 2: char[bss_size]
        types.append(_btf_type(BTF_ARRAY, 0, 0, 0) + struct.pack("<III", 1, 1, bss_size))
    var_type = len(types)  # the last type
    types.append(_btf_type(BTF_VAR, name["big"], 0, var_type) + struct.pack("<I", VAR_GLOBAL))
    var_id = len(types)
    types.append(_btf_type(BTF_DATASEC, name[".bss"], 1, bss_size)
                 + struct.pack("<III", var_id, 0, bss_size))
    body = b"".join(types)
    header = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(body), len(body), len(strings))
    return header + body + strings


# -- the ELF writer ------------------------------------------------------------------------------

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
SHDR = struct.Struct("<IIQQQQIIQQ")
SYM = struct.Struct("<IBBHQQ")
REL = struct.Struct("<QQ")
EM_BPF = 247
ETREL = 1
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_REL, SHT_NOBITS = 1, 2, 3, 9, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
STT_OBJECT, STT_FUNC = 1, 2
STB_GLOBAL = 1
MAP_DEF = struct.Struct("<5I")
ELF_IDENT = b"\x7fELF\x02\x01\x01" + bytes(9)
U32 = (1 << 32) - 1


@dataclass
class Section:
    """One section: its header fields and its bytes (`size` for SHT_NOBITS)."""

    name: str
    type: int
    flags: int
    data: bytes
    size: int = -1
    link: int = 0
    info: int = 0
    entsize: int = 0


class Strings:
    """A string table being built."""

    def __init__(self) -> None:
        self.data = bytearray(b"\0")

    def add(self, text: str) -> int:
        """The offset of `text`, appended."""
        offset = len(self.data)
        self.data += text.encode() + b"\0"
        return offset


def write_elf(sections: list[Section]) -> bytes:
    """The object file: ELF header, the sections 8-byte aligned, a .shstrtab, the
    section headers. `sections` starts with the null section."""
    names = Strings()
    name_offsets = [names.add(s.name) if s.name else 0 for s in sections]
    shstrndx = len(sections)
    sections = [*sections, Section(".shstrtab", SHT_STRTAB, 0, b"")]
    name_offsets.append(names.add(".shstrtab"))
    sections[-1].data = bytes(names.data)
    out = bytearray(EHDR.size)
    offsets = []
    for section in sections:
        out += bytes(-len(out) % 8)
        offsets.append(len(out))
        if section.type != SHT_NOBITS:
            out += section.data
    out += bytes(-len(out) % 8)
    shoff = len(out)
    for section, name, offset in zip(sections, name_offsets, offsets, strict=True):
        size = section.size if section.size >= 0 else len(section.data)
        if section.type == 0:
            out += bytes(SHDR.size)
            continue
        out += SHDR.pack(name, section.type, section.flags, 0, offset, size, section.link,
                          section.info, 8, section.entsize)
    EHDR.pack_into(out, 0, ELF_IDENT, ETREL, EM_BPF, 1, 0, 0, shoff, 0, EHDR.size, 0, 0,
                    SHDR.size, len(sections), shstrndx)
    return bytes(out)
