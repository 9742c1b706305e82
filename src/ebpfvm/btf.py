"""A reader for BTF (the ``.BTF`` section), enough to size types and to read
BTF-defined maps. pyelftools has no BTF parser; the format is the kernel's
``include/uapi/linux/btf.h``.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .errors import BtfValueError, ElfError, count_of
from .maps import MAX_VALUE_SIZE

__all__ = ["Btf", "BtfKind", "BtfType", "BtfValueError", "Codec", "parse_btf"]


BTF_MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off/len, str_off/len
_TYPE = struct.Struct("<III")  # name_off, info, size_or_type
_U32 = struct.Struct("<I")
_ARRAY = struct.Struct("<III")  # type, index_type, nelems
_MEMBER = struct.Struct("<III")  # name_off, type, offset
_MAX_CHAIN = 64
"""Most typedef/const/volatile links followed before giving up (loops in bad input)."""
MAX_DEPTH = 32
"""Deepest nesting of types through non-pointer references (an array of
structs of arrays...) that sizes and codecs follow. A type that contains
itself (not through a pointer) nests without end, and is refused."""
MAX_TYPE_SIZE = 0xFFFF_FFFF
"""Largest type size (the kernel's limit: a size is a u32)."""
MAX_DECODED_ITEMS = 1 << 20
"""Most Python values one decode may build (a u32 array filling the largest
map value has 2**20): an array of 2**32 empty structs is refused, not built."""


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
    int_info: int = 0  # INT: encoding << 24 | bit offset << 16 | bits
    kflag: bool = False  # bitfield member offsets (STRUCT, UNION); signed values (ENUM*)
    items: list[tuple[str, int, int]] = field(default_factory=list)


class Btf:
    """Parsed BTF: types by id (id 0 is void)."""

    def __init__(self, types: list[BtfType]) -> None:
        self.types = types
        self._sizes: dict[int, int] = {}
        self._shapes: dict[int, tuple[int, int]] = {}

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
        """Byte size of a type (INT, STRUCT, UNION, ENUM, PTR, ARRAY...).
        ElfError for a type with no size, one nested deeper than MAX_DEPTH
        (or containing itself) or larger than MAX_TYPE_SIZE."""
        return self._size(type_id, 0)

    def _size(self, type_id: int, depth: int) -> int:
        found = self.strip(type_id)
        known = self._sizes.get(found.id)
        if known is not None:
            return known
        if depth > MAX_DEPTH:
            raise _too_deep(found)
        if found.kind in (BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM,
                          BtfKind.ENUM64, BtfKind.FLOAT, BtfKind.DATASEC):
            size = found.ref
        elif found.kind is BtfKind.PTR:
            size = 8
        elif found.kind is BtfKind.ARRAY and found.array is not None:
            size = found.array[2] * self._size(found.array[0], depth + 1)
            if size > MAX_TYPE_SIZE:
                raise ElfError(f"BTF array type {found.id} is {size} bytes, more than "
                               f"{MAX_TYPE_SIZE}", ".BTF")
        else:
            raise ElfError(f"BTF type {found.id} ({found.kind.name}) has no size", ".BTF")
        self._sizes[found.id] = size
        return size

    def shape(self, type_id: int) -> tuple[int, int]:
        """(Python values a decode of the type builds, nesting height): ElfError
        when the type nests deeper than MAX_DEPTH (a struct or array that
        contains itself) or decodes to more than MAX_DECODED_ITEMS values."""
        return self._shape(self.strip(type_id), 0)

    def _shape(self, found: BtfType, depth: int) -> tuple[int, int]:
        known = self._shapes.get(found.id)
        if known is None:
            if depth > MAX_DEPTH:
                raise _too_deep(found)
            items, height = 1, 0
            if found.kind is BtfKind.ARRAY and found.array is not None:
                element = self.strip(found.array[0])
                inner, below = self._shape(element, depth + 1)
                if not (element.kind is BtfKind.INT and self.size(element.id) == 1):
                    items = found.array[2] * inner  # else a char array: one bytes value
                height = below + 1
            elif found.kind in (BtfKind.STRUCT, BtfKind.UNION):
                for _name, member_type, _offset in found.items:
                    inner, below = self._shape(self.strip(member_type), depth + 1)
                    items += inner
                    height = max(height, below + 1)
                    if items > MAX_DECODED_ITEMS:
                        break
            if items > MAX_DECODED_ITEMS:
                raise ElfError(f"BTF type {found.id} decodes to {items} values, more than "
                               f"{MAX_DECODED_ITEMS}", ".BTF")
            known = self._shapes[found.id] = (items, height)
        if depth + known[1] > MAX_DEPTH:
            raise _too_deep(found)
        return known

    def datasec(self, name: str) -> BtfType | None:
        return next((t for t in self.types[1:] if t.kind is BtfKind.DATASEC and t.name == name),
                    None)


def _too_deep(found: BtfType) -> ElfError:
    return ElfError(f"BTF type {found.id} ({found.kind.name}) nests deeper than {MAX_DEPTH} "
                    "levels (a type that contains itself?)", ".BTF")


def btf_strings(data: bytes) -> bytes:
    """The string table of a ``.BTF`` section, after the header checks."""
    return _checked_header(data)[2]


def string_at(strings: bytes, offset: int, section: str = ".BTF") -> str:
    """The NUL-terminated string at `offset` of a BTF string table."""
    if offset >= len(strings):
        raise ElfError(f"BTF string offset {offset} is out of range", section)
    end = strings.find(b"\0", offset)
    return strings[offset : end if end >= 0 else len(strings)].decode("utf-8", "replace")


def _checked_header(data: bytes) -> tuple[int, int, bytes]:
    """(start of the types, their length, the string table) of a ``.BTF`` section."""
    if len(data) < _HEADER.size:
        raise ElfError("BTF header is cut short", ".BTF")
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
        _HEADER.unpack_from(data)
    if magic != BTF_MAGIC:
        raise ElfError(f"BTF magic is {magic:#x}", ".BTF")
    types_start, strings_start = hdr_len + type_off, hdr_len + str_off
    if types_start + type_len > len(data) or strings_start + str_len > len(data):
        raise ElfError("BTF sections run past the end of .BTF", ".BTF")
    return types_start, type_len, data[strings_start : strings_start + str_len]


def parse_btf(data: bytes) -> Btf:
    """Parse a ``.BTF`` section; ElfError on anything malformed."""
    types_start, type_len, strings = _checked_header(data)

    def name_at(offset: int) -> str:
        return string_at(strings, offset)

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
        item = BtfType(len(types), kind, name_at(name_off), ref, vlen, kflag=bool(info >> 31))
        extra = _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_ITEM.get(kind, 0) * vlen
        if pos + extra > end:
            raise ElfError(f"BTF type {item.id} is cut short", ".BTF")
        if kind is BtfKind.ARRAY:
            item.array = _ARRAY.unpack_from(data, pos)
        elif kind is BtfKind.INT:
            item.int_info = _U32.unpack_from(data, pos)[0]
        elif kind in (BtfKind.STRUCT, BtfKind.UNION, BtfKind.DATASEC):
            for index in range(vlen):
                a, b, c = _MEMBER.unpack_from(data, pos + 12 * index)
                # members: (name, type, bit offset); DATASEC: (var type, offset, size)
                item.items.append((name_at(a), b, c) if kind is not BtfKind.DATASEC
                                  else ("", a, b))
        elif kind in (BtfKind.ENUM, BtfKind.ENUM64):  # CO-RE (issue 13): (name, value, 0)
            item.items = _enum_values(data, pos, item, name_at)
        elif kind is BtfKind.FUNC_PROTO:  # CO-RE (issue 13): (name, type, 0) per parameter
            item.items = [(name_at(a), b, 0) for a, b in
                          (struct.unpack_from("<II", data, pos + 8 * i) for i in range(vlen))]
        pos += extra
        types.append(item)
    return Btf(types)


def _enum_values(data: bytes, pos: int, item: BtfType,
                 name_at: Any) -> list[tuple[str, int, int]]:
    """An ENUM's (name_off, i32 or u32 value) or ENUM64's (name_off, lo32,
    hi32) entries as (name, value, 0); kflag marks signed values."""
    values = []
    for index in range(item.vlen):
        if item.kind is BtfKind.ENUM:
            name_off, raw = struct.unpack_from("<II", data, pos + 8 * index)
            bits = 32
        else:
            name_off, low, high = struct.unpack_from("<III", data, pos + 12 * index)
            raw, bits = low | high << 32, 64
        if item.kflag and raw >> (bits - 1):
            raw -= 1 << bits
        values.append((name_at(name_off), raw, 0))
    return values


BTF_INT_SIGNED = 1
BTF_INT_BOOL = 4


class Codec:
    """Converts between bytes and Python values for one BTF type: ints (signed
    per the BTF encoding), bools, structs and unions as named tuples (encode
    also takes dicts or plain tuples), arrays as lists, char arrays as bytes,
    pointers and enums as ints."""

    def __init__(self, btf: Btf, type_id: int, role: str = "value") -> None:
        self.btf = btf
        self.role = role
        """What the codec's values are (``key``, ``value``, a variable's name):
        the start of the field paths in BtfValueError."""
        self.type = btf.strip(type_id)
        self.size = btf.size(type_id)
        if self.size > MAX_VALUE_SIZE:  # every codec is for a map key or value
            raise ElfError(f"BTF type {self.type.id} is {self.size} bytes, more than a map "
                           f"value may hold ({MAX_VALUE_SIZE})", ".BTF")
        btf.shape(type_id)  # bounded nesting and value count: decode/encode recurse safely
        self._records: dict[int, Any] = {}

    def decode(self, data: bytes) -> Any:
        return self._decode(self.type, bytes(data[: self.size]))

    def encode(self, value: Any, field: str | None = None) -> bytes:
        """The bytes of `value`. Strict: a value that does not fit its type (an
        int out of range, a float, a bool for a non-bool int, an unknown struct
        member, too many array items) raises BtfValueError naming the `field`
        path, such as ``value.hits`` or ``key.addr[2]`` (`field` defaults to
        the codec's role)."""
        out = bytearray(self.size)
        self._encode(self.type, value, out, 0, self.role if field is None else field)
        return bytes(out)

    def _decode(self, found: BtfType, data: bytes) -> Any:
        kind = found.kind
        if kind is BtfKind.INT:
            signed = bool((found.int_info >> 24) & BTF_INT_SIGNED)
            value = int.from_bytes(data[: found.ref], "little", signed=signed)
            return bool(value) if (found.int_info >> 24) & BTF_INT_BOOL else value
        if kind in (BtfKind.ENUM, BtfKind.ENUM64, BtfKind.PTR):
            return int.from_bytes(data[: self.btf.size(found.id)], "little")
        if kind is BtfKind.ARRAY and found.array is not None:
            element = self.btf.strip(found.array[0])
            size = self.btf.size(element.id)
            if element.kind is BtfKind.INT and size == 1:  # char arrays: bytes
                return data[: size * found.array[2]]
            return [self._decode(element, data[i * size : (i + 1) * size])
                    for i in range(found.array[2])]
        if kind in (BtfKind.STRUCT, BtfKind.UNION):
            values = []
            for _name, member_type, bit_offset in found.items:
                member = self.btf.strip(member_type)
                start = (bit_offset & 0xFFFFFF) // 8
                values.append(self._decode(member, data[start : start + self.btf.size(member.id)]))
            return self._record(found)(*values)
        raise ElfError(f"cannot decode BTF kind {kind.name}", ".BTF")

    def _record(self, found: BtfType) -> Any:
        """A namedtuple class for a struct (hashable, so structs can be keys)."""
        if found.id not in self._records:
            names = [name or f"_{index}" for index, (name, _t, _o) in enumerate(found.items)]
            self._records[found.id] = namedtuple(
                found.name or f"struct_{found.id}", names, rename=True)
        return self._records[found.id]

    def _encode(self, found: BtfType, value: Any, out: bytearray, offset: int,
                field: str) -> None:
        size = self.btf.size(found.id)
        kind = found.kind
        if kind in (BtfKind.INT, BtfKind.ENUM, BtfKind.ENUM64, BtfKind.PTR):
            number = self._scalar(found, size, value, field)
            out[offset : offset + size] = (number % (1 << (8 * size))).to_bytes(size, "little")
        elif kind is BtfKind.ARRAY and found.array is not None:
            self._encode_array(found, size, value, out, offset, field)
        elif kind in (BtfKind.STRUCT, BtfKind.UNION):
            members = self._members(found, value, field)
            for name, member_type, bit_offset in found.items:
                if name in members:
                    member = self.btf.strip(member_type)
                    self._encode(member, members[name], out,
                                 offset + (bit_offset & 0xFFFFFF) // 8, f"{field}.{name}")
        else:
            raise ElfError(f"cannot encode BTF kind {kind.name}", ".BTF")

    def _scalar(self, found: BtfType, size: int, value: Any, field: str) -> int:
        """`value` as an int of `found`'s range (an int, or a bool for a bool type)."""
        what = type_text(found, size)
        is_bool = found.kind is BtfKind.INT and (found.int_info >> 24) & BTF_INT_BOOL
        if isinstance(value, bool) and not is_bool:
            raise BtfValueError(field, value, f"{value} is a bool, not a number ({what})")
        if not isinstance(value, int):
            raise BtfValueError(field, value, f"{value!r} is not a whole number ({what})")
        bits = 8 * size
        if found.kind is BtfKind.INT and (found.int_info >> 24) & BTF_INT_SIGNED:
            low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        elif found.kind in (BtfKind.ENUM, BtfKind.ENUM64):
            low, high = -(1 << (bits - 1)), (1 << bits) - 1  # enums may be either
        else:
            low, high = 0, (1 << bits) - 1
        if not low <= value <= high:
            raise BtfValueError(field, value, f"{value} does not fit {what} "
                                f"({low} to {high})")
        return int(value)

    def _encode_array(self, found: BtfType, size: int, value: Any, out: bytearray,
                      offset: int, field: str) -> None:
        assert found.array is not None
        count = found.array[2]
        element = self.btf.strip(found.array[0])
        step = self.btf.size(element.id)
        if isinstance(value, (bytes, bytearray)) and element.kind is BtfKind.INT and step == 1:
            if len(value) > size:
                raise BtfValueError(field, value, f"{count_of(len(value), 'byte')} for "
                                    f"a char[{count}]")
            out[offset : offset + len(value)] = value
            return
        if not isinstance(value, (list, tuple)):
            raise BtfValueError(field, value, f"{value!r} is not a list (an array of {count})")
        if len(value) > count:
            raise BtfValueError(field, value, f"{count_of(len(value), 'item')} for an array "
                                f"of {count}")
        for index, item in enumerate(value):
            self._encode(element, item, out, offset + index * step, f"{field}[{index}]")

    def _members(self, found: BtfType, value: Any, field: str) -> dict[str, Any]:
        """A struct value as {member: value}: from a dict, a named tuple or a
        plain tuple of at most as many values as members."""
        names = [name for name, _t, _o in found.items]
        word = "union" if found.kind is BtfKind.UNION else "struct"
        if hasattr(value, "_asdict"):
            value = value._asdict()
        elif isinstance(value, (list, tuple)):
            if len(value) > len(names):
                raise BtfValueError(field, value, f"{count_of(len(value), 'value')} for "
                                    f"{count_of(len(names), 'member')}")
            value = dict(zip(names, value, strict=False))
        if not isinstance(value, dict):
            shown = ", ".join(names)
            raise BtfValueError(field, value, f"{value!r} is not an object with the "
                                f"members of {word} {found.name or '<anon>'} ({shown})")
        unknown = [key for key in value if key not in names]
        if unknown:
            raise BtfValueError(f"{field}.{unknown[0]}", value[unknown[0]],
                                f"{word} {found.name or '<anon>'} has no member "
                                f"{unknown[0]!r} (members: {', '.join(names)})")
        return value



def type_text(found: BtfType, size: int) -> str:
    """A short name for a scalar BTF type in messages: ``unsigned char (1 byte)``."""
    name = found.name or found.kind.name.lower()
    if found.kind is BtfKind.PTR:
        name = "pointer"
    return f"{name} ({count_of(size, 'byte')})"
