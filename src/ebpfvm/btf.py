"""A reader for BTF (the ``.BTF`` section), enough to size types and to read
BTF-defined maps. pyelftools has no BTF parser; the format is the kernel's
``include/uapi/linux/btf.h``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import ElfError

__all__ = ["Btf", "BtfKind", "BtfType", "parse_btf"]

BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off/len, str_off/len
_TYPE = struct.Struct("<III")  # name_off, info, size_or_type
_U32 = struct.Struct("<I")
_ARRAY = struct.Struct("<III")  # type, index_type, nelems
_MEMBER = struct.Struct("<III")  # name_off, type, offset
_MAX_CHAIN = 64
"""Most typedef/const/volatile links followed before giving up (loops in bad input)."""


class BtfKind(IntEnum):
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Bytes of kind-specific data after the common header: fixed, or per vlen item.
_EXTRA_FIXED = {BtfKind.INT: 4, BtfKind.ARRAY: 12, BtfKind.VAR: 4, BtfKind.DECL_TAG: 4}
_EXTRA_PER_ITEM = {BtfKind.STRUCT: 12, BtfKind.UNION: 12, BtfKind.ENUM: 8,
                   BtfKind.FUNC_PROTO: 8, BtfKind.DATASEC: 12, BtfKind.ENUM64: 12}
_QUALIFIERS = frozenset({BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT,
                         BtfKind.TYPE_TAG})


@dataclass
class BtfType:
    """One type. `ref` is size_or_type; `items` the members, enum values,
    parameters or section variables as (name, type or value, offset)."""

    id: int
    kind: BtfKind
    name: str
    ref: int
    vlen: int
    array: tuple[int, int, int] | None = None  # (elem type, index type, nelems)
    items: list[tuple[str, int, int]] = field(default_factory=list)


class Btf:
    """Parsed BTF: types by id (id 0 is void)."""

    def __init__(self, types: list[BtfType]) -> None:
        self.types = types

    def get(self, type_id: int) -> BtfType:
        if not 0 < type_id < len(self.types):
            raise ElfError(f"BTF type id {type_id} does not exist", ".BTF")
        return self.types[type_id]

    def strip(self, type_id: int) -> BtfType:
        """The type behind typedefs and qualifiers."""
        for _ in range(_MAX_CHAIN):
            found = self.get(type_id)
            if found.kind not in _QUALIFIERS:
                return found
            type_id = found.ref
        raise ElfError("BTF type chain too long", ".BTF")

    def size(self, type_id: int) -> int:
        """Byte size of a type (INT, STRUCT, UNION, ENUM, PTR, ARRAY...)."""
        found = self.strip(type_id)
        if found.kind in (BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM,
                          BtfKind.ENUM64, BtfKind.FLOAT, BtfKind.DATASEC):
            return found.ref
        if found.kind is BtfKind.PTR:
            return 8
        if found.kind is BtfKind.ARRAY and found.array is not None:
            return found.array[2] * self.size(found.array[0])
        raise ElfError(f"BTF type {found.id} ({found.kind.name}) has no size", ".BTF")

    def datasec(self, name: str) -> BtfType | None:
        return next((t for t in self.types[1:] if t.kind is BtfKind.DATASEC and t.name == name),
                    None)


def parse_btf(data: bytes) -> Btf:
    """Parse a ``.BTF`` section; ElfError on anything malformed."""
    if len(data) < _HEADER.size:
        raise ElfError("BTF header is cut short", ".BTF")
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
        _HEADER.unpack_from(data)
    if magic != BTF_MAGIC:
        raise ElfError(f"BTF magic is {magic:#x}", ".BTF")
    types_start, strings_start = hdr_len + type_off, hdr_len + str_off
    if types_start + type_len > len(data) or strings_start + str_len > len(data):
        raise ElfError("BTF sections run past the end of .BTF", ".BTF")
    strings = data[strings_start : strings_start + str_len]

    def name_at(offset: int) -> str:
        if offset >= len(strings):
            raise ElfError(f"BTF string offset {offset} is out of range", ".BTF")
        return strings[offset : strings.index(b"\0", offset)].decode("utf-8", "replace") \
            if b"\0" in strings[offset:] else ""

    types = [BtfType(0, BtfKind.INT, "void", 0, 0)]
    pos, end = types_start, types_start + type_len
    while pos < end:
        if pos + _TYPE.size > end:
            raise ElfError("BTF type is cut short", ".BTF")
        name_off, info, ref = _TYPE.unpack_from(data, pos)
        pos += _TYPE.size
        try:
            kind = BtfKind((info >> 24) & 0x1F)
        except ValueError:
            raise ElfError(f"unknown BTF kind {(info >> 24) & 0x1F}", ".BTF") from None
        vlen = info & 0xFFFF
        item = BtfType(len(types), kind, name_at(name_off), ref, vlen)
        extra = _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_ITEM.get(kind, 0) * vlen
        if pos + extra > end:
            raise ElfError(f"BTF type {item.id} is cut short", ".BTF")
        if kind is BtfKind.ARRAY:
            item.array = _ARRAY.unpack_from(data, pos)
        elif kind in (BtfKind.STRUCT, BtfKind.UNION, BtfKind.DATASEC):
            for index in range(vlen):
                a, b, c = _MEMBER.unpack_from(data, pos + 12 * index)
                # members: (name, type, bit offset); DATASEC: (var type, offset, size)
                item.items.append((name_at(a), b, c) if kind is not BtfKind.DATASEC
                                  else ("", a, b))
        pos += extra
        types.append(item)
    return Btf(types)
