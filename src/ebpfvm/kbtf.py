"""An object's BTF in the form the kernel loads (for ebpfvm.kdiff).

The kernel wants BTF ``func_info`` for programs with callbacks (bpf_loop,
bpf_for_each_map_elem) and global functions, and map BTF for values holding
a ``bpf_spin_lock``. clang leaves part of ``.BTF`` for the loader to fill,
as libbpf does before BPF_BTF_LOAD: each DATASEC's size and its variables'
offsets come from the ELF section and symbols; a DATASEC of externs
(``.kconfig``, ``.ksyms``) has no section and becomes an empty struct here;
extern variables and functions are marked global. Layouts: the kernel's
Documentation/bpf/btf.rst ("BTF Type and String Encoding", "BTF.ext").
The instructions are RFC 9669 instructions; func_info names where each
function of the linked program starts (RFC 9669, section 4.3.2, local
calls).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Any

from .btf import BtfKind

__all__ = ["KernelBtf", "kernel_btf"]

_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_U32 = struct.Struct("<I")
_EXTRA_FIXED = {BtfKind.INT: 4, BtfKind.ARRAY: 12, BtfKind.VAR: 4, BtfKind.DECL_TAG: 4}
_EXTRA_PER_ITEM = {BtfKind.STRUCT: 12, BtfKind.UNION: 12, BtfKind.ENUM: 8,
                   BtfKind.FUNC_PROTO: 8, BtfKind.DATASEC: 12, BtfKind.ENUM64: 12}
_EXTERN = 2
"""BTF_VAR_GLOBAL_EXTERN / BTF_FUNC_EXTERN: the kernel takes neither."""
_GLOBAL = 1
SLOT = 8


@dataclass
class KernelBtf:
    """The fixed ``.BTF`` blob, func_info by code section ((byte offset,
    FUNC type id)), each BTF-defined map's (key, value) type ids and each
    data section's DATASEC id, and the symbols of functions (section name,
    function name) -> (byte offset, size)."""

    blob: bytes
    func_info: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    map_types: dict[str, tuple[int, int]] = field(default_factory=dict)
    functions: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    section_sizes: dict[str, int] = field(default_factory=dict)

    def program_func_info(self, program: Any) -> list[tuple[int, int]]:
        """(pc, FUNC id) of each function of a linked `program` (its function,
        then ``.text`` appended when it calls into it): [] when its entry has
        no func_info."""
        start, size = self.functions.get((program.section, program.name), (-1, 0))
        own = [((offset - start) // SLOT, type_id)
               for offset, type_id in self.func_info.get(program.section, [])
               if start <= offset < start + (size or len(program.code))]
        if not own or own[0][0] != 0:
            return []
        if ".text" in program.subprograms and program.section != ".text":
            base = len(program) - self.section_sizes.get(".text", 0) // SLOT
            own += [(base + offset // SLOT, type_id)
                    for offset, type_id in self.func_info.get(".text", [])]
        return own


@dataclass
class _Type:
    id: int
    kind: int
    name: str
    start: int
    """Where the type's record starts in the types area."""
    ref: int
    vlen: int


def _walk(types: bytes, strings: bytes) -> list[_Type]:
    found = [_Type(0, 0, "", 0, 0, 0)]
    pos = 0
    while pos + _TYPE.size <= len(types):
        name_off, info, ref = _TYPE.unpack_from(types, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        name = _string(strings, name_off)
        found.append(_Type(len(found), kind, name, pos, ref, vlen))
        try:
            known = BtfKind(kind)
        except ValueError:
            break
        pos += _TYPE.size + _EXTRA_FIXED.get(known, 0) + _EXTRA_PER_ITEM.get(known, 0) * vlen
    return found


def kernel_btf(source: bytes) -> KernelBtf | None:
    """The BTF of the ELF object `source` (its bytes) made loadable, or None
    when it has no ``.BTF``."""
    from elftools.elf.elffile import ELFFile  # type: ignore[import-untyped,unused-ignore]

    elf = ELFFile(io.BytesIO(source))
    btf_section = elf.get_section_by_name(".BTF")
    if btf_section is None:
        return None
    data = btf_section.data()
    _magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
        _HEADER.unpack_from(data)
    types = data[hdr_len + type_off : hdr_len + type_off + type_len]
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    walked = _walk(types, strings)
    sections = {section.name: (index, section) for index, section in
                enumerate(elf.iter_sections())}
    symtab: Any = elf.get_section_by_name(".symtab")
    symbols: list[Any] = list(symtab.iter_symbols()) if symtab is not None else []
    result = KernelBtf(b"")
    result.blob = _fixed(types, strings, walked, sections, symbols, (hdr_len, data))
    result.map_types = _map_types(types, strings, walked)
    ext = elf.get_section_by_name(".BTF.ext")
    if ext is not None:
        result.func_info = _func_info(ext.data(), strings)
    result.section_sizes = {name: section["sh_size"] for name, (_i, section) in sections.items()}
    for symbol in symbols:
        index = symbol["st_shndx"]
        if symbol["st_info"]["type"] == "STT_FUNC" and isinstance(index, int):
            result.functions[(elf.get_section(index).name, symbol.name)] = (
                symbol["st_value"], symbol["st_size"])
    return result


def _fixed(types: bytes, strings: bytes, walked: list[_Type], sections: dict[str, Any],
           symbols: list[Any], header: tuple[int, bytes]) -> bytes:
    """The types area with libbpf's fix-ups, behind a new header."""
    out = bytearray()
    bounds = [t.start for t in walked[1:]] + [len(types)]
    for item, end in zip(walked[1:], bounds[1:], strict=False):
        record = bytearray(types[item.start : end])
        if item.kind == BtfKind.DATASEC:
            record = _datasec(record, item, walked, sections, symbols)
        elif item.kind in (BtfKind.VAR,) and _U32.unpack_from(record, 12)[0] == _EXTERN:
            _U32.pack_into(record, 12, _GLOBAL)
        elif item.kind == BtfKind.FUNC and item.vlen == _EXTERN:
            _U32.pack_into(record, 4, (BtfKind.FUNC << 24) | _GLOBAL)
        out += record
    hdr_len, data = header
    head = bytearray(data[:hdr_len])
    struct.pack_into("<IIII", head, 8, 0, len(out), len(out), len(strings))
    return bytes(head) + bytes(out) + strings


def _datasec(record: bytearray, item: _Type, walked: list[_Type], sections: dict[str, Any],
             symbols: list[Any]) -> bytearray:
    found = sections.get(item.name)
    if found is None:  # externs (.kconfig, .ksyms): an empty anonymous struct
        return bytearray(_TYPE.pack(0, BtfKind.STRUCT << 24, 0))
    index, section = found
    _U32.pack_into(record, 8, section["sh_size"])
    by_name = {symbol.name: symbol["st_value"] for symbol in symbols
               if symbol["st_shndx"] == index}
    for number in range(item.vlen):
        at = _TYPE.size + 12 * number
        var = walked[_U32.unpack_from(record, at)[0]]
        if var.name in by_name:
            _U32.pack_into(record, at + 4, by_name[var.name])
    return record


def _map_types(types: bytes, strings: bytes, walked: list[_Type]) -> dict[str, tuple[int, int]]:
    """(key type id, value type id) of each map of the ``.maps`` DATASEC, and
    (0, DATASEC id) of each data section, as libbpf creates them."""
    found: dict[str, tuple[int, int]] = {}
    for item in walked[1:]:
        if item.kind != BtfKind.DATASEC:
            continue
        if item.name != ".maps":
            found[item.name] = (0, item.id)
            continue
        for number in range(item.vlen):
            var = walked[_U32.unpack_from(types, item.start + _TYPE.size + 12 * number)[0]]
            definition = _strip(walked, var.ref)
            members = {}
            for member in range(definition.vlen if definition.kind == BtfKind.STRUCT else 0):
                name_off, type_id = struct.unpack_from("<II", types, definition.start
                                                       + _TYPE.size + 12 * member)
                members[_string(strings, name_off)] = type_id
            found[var.name] = (_pointee(walked, members.get("key", 0)),
                               _pointee(walked, members.get("value", 0)))
    return found


def _string(strings: bytes, offset: int) -> str:
    end = strings.find(b"\0", offset)
    return strings[offset : end if end >= 0 else None].decode(errors="replace")


def _strip(walked: list[_Type], type_id: int) -> _Type:
    found = walked[type_id] if 0 <= type_id < len(walked) else walked[0]
    for _ in range(32):
        if found.kind not in (BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST,
                              BtfKind.RESTRICT, BtfKind.TYPE_TAG):
            return found
        found = walked[found.ref] if 0 <= found.ref < len(walked) else walked[0]
    return found


def _pointee(walked: list[_Type], type_id: int) -> int:
    found = _strip(walked, type_id) if type_id else walked[0]
    return found.ref if found.kind == BtfKind.PTR else 0


def _func_info(ext: bytes, strings: bytes) -> dict[str, list[tuple[int, int]]]:
    """func_info of ``.BTF.ext``: per code section, (byte offset, FUNC id)."""
    _magic, _version, _flags, hdr_len, info_off, info_len = struct.unpack_from("<HBBIII", ext)
    block = ext[hdr_len + info_off : hdr_len + info_off + info_len]
    found: dict[str, list[tuple[int, int]]] = {}
    if len(block) < 4:
        return found
    record_size = _U32.unpack_from(block, 0)[0]
    pos = 4
    while pos + 8 <= len(block) and record_size >= 8:
        name_off, count = struct.unpack_from("<II", block, pos)
        pos += 8
        found[_string(strings, name_off)] = [struct.unpack_from("<II", block, pos + record_size * i)
                       for i in range(count) if pos + record_size * (i + 1) <= len(block)]
        pos += record_size * count
    return found
