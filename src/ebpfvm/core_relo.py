"""CO-RE ("compile once, run everywhere") relocations, applied as libbpf
applies them when it loads an object.

clang records, for every instruction that depends on a type's layout (an
access through a ``preserve_access_index`` struct, ``bpf_core_field_exists``,
``bpf_core_type_size``, ``bpf_core_enum_value``...), a relocation in the
``core_relo`` block of ``.BTF.ext``: the instruction (section and byte
offset), the local type (an id in the object's own BTF), an access string
(``0:1:2``: an index into the root pointer, then member or array indices)
and a kind. The loader finds the local type's counterparts in a target BTF
(ebpfvm.core_btf: by kind and "essential name", the name without a
``___flavor`` suffix), follows the access by member *name* (through anonymous
struct and union members), and writes the target's value into the
instruction: an ALU immediate, the offset of a load or store (changing the
load's size when the field's size differs), or an lddw's 64-bit immediate
(RFC 9669 sections 3 to 5 describe the instructions).

Like libbpf, a field or enum value that the target lacks does not fail the
load: ``*_exists`` relocations give 0, and an instruction that needs the
missing offset or size is *poisoned*: it becomes ``call 0xbad2310 + n``, a
helper that raises CoreRelocationFault (naming the type and the field) only
if a run reaches it. ``load(..., core_strict=True)`` refuses such objects
instead. Anything libbpf refuses (an access string that does not parse, an
instruction whose value is not the one the local type gives, candidates that
disagree) is a CoreRelocationError at load.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .btf import BTF_INT_SIGNED, Btf, BtfKind, BtfType, btf_strings, string_at
from .core_btf import CoreTarget, CoreTargetSpec, essential_name, kind_group, target_btf
from .encoding import SLOT, SLOT_LAYOUT
from .errors import CoreRelocationError, CoreRelocationFault, ElfError

__all__ = ["POISON", "CoreKind", "CoreRelocation", "CoreTargetSpec", "apply_core", "is_poison", "poison_helpers",
           "read_core_relos"]

EXT = ".BTF.ext"
POISON = 0xBAD2310
"""The helper id libbpf writes into a poisoned instruction; ebpfvm numbers
the poisoned relocations of an object from it (POISON + n) so that the
helper can name its relocation."""
MAX_POISONED = 1 << 12
"""Poisoned relocations one object may have (their helper ids stay distinct)."""
MAX_SPEC = 64
"""Most accessors in one access string (libbpf's BPF_CORE_SPEC_MAX_LEN)."""
_HEADER = struct.Struct("<HBBIIIIIII")  # ... line_info_off/len, core_relo_off/len
_SECTION = struct.Struct("<II")  # sec_name_off, num_info
_RECORD = struct.Struct("<IIII")  # insn_off, type_id, access_str_off, kind
_U32 = struct.Struct("<I")
_SIZE_CODES = {4: 0x00, 2: 0x08, 1: 0x10, 8: 0x18}
"""A load's or store's size field (RFC 9669 section 5.1) by bytes."""


class CoreKind(IntEnum):
    """enum bpf_core_relo_kind of the kernel's uapi linux/bpf.h."""

    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12

    @property
    def label(self) -> str:
        """libbpf's short name (``byte_off``, ``field_exists``...)."""
        return _LABELS[self]


_LABELS = {CoreKind.FIELD_BYTE_OFFSET: "byte_off", CoreKind.FIELD_BYTE_SIZE: "byte_sz",
           CoreKind.FIELD_EXISTS: "field_exists", CoreKind.FIELD_SIGNED: "signed",
           CoreKind.FIELD_LSHIFT_U64: "lshift_u64", CoreKind.FIELD_RSHIFT_U64: "rshift_u64",
           CoreKind.TYPE_ID_LOCAL: "local_type_id", CoreKind.TYPE_ID_TARGET: "target_type_id",
           CoreKind.TYPE_EXISTS: "type_exists", CoreKind.TYPE_SIZE: "type_size",
           CoreKind.ENUMVAL_EXISTS: "enumval_exists", CoreKind.ENUMVAL_VALUE: "enumval_value",
           CoreKind.TYPE_MATCHES: "type_matches"}
_FIELD_KINDS = frozenset(range(CoreKind.FIELD_BYTE_OFFSET, CoreKind.FIELD_RSHIFT_U64 + 1))
_TYPE_KINDS = frozenset(range(CoreKind.TYPE_ID_LOCAL, CoreKind.TYPE_SIZE + 1)) \
    | {CoreKind.TYPE_MATCHES}
_ENUM_KINDS = frozenset({CoreKind.ENUMVAL_EXISTS, CoreKind.ENUMVAL_VALUE})
_COMPOSITE = frozenset({BtfKind.STRUCT, BtfKind.UNION})
_ANY_ENUM = frozenset({BtfKind.ENUM, BtfKind.ENUM64})


@dataclass(frozen=True)
class CoreRelocation:
    """One applied relocation: where (code section, instruction index in it),
    what (kind, local type name, access string, the field path it names), and
    the result: `value` written into the instruction, or `poisoned` (the
    target lacks the field or enumerator: the instruction faults if run) with
    the `helper_id` it calls."""

    section: str
    insn: int
    kind: CoreKind
    type_name: str
    access: str
    field: str
    value: int | None
    poisoned: bool = False
    helper_id: int | None = None
    target_id: int | None = None
    """The target type id that matched (None when none did)."""


@dataclass(frozen=True)
class _Record:
    section: str
    insn: int
    type_id: int
    access: str
    kind: CoreKind


def read_core_relos(btf_data: bytes, ext: bytes) -> list[_Record]:
    """The core_relo records of a ``.BTF.ext`` section, in file order (none
    when its header is shorter than 32 bytes). ElfError naming ``.BTF.ext``
    for malformed blocks."""
    if len(ext) < 8:
        raise ElfError("BTF.ext header is cut short", EXT)
    (hdr_len,) = _U32.unpack_from(ext, 4)
    if hdr_len < _HEADER.size:
        return []
    if len(ext) < _HEADER.size or hdr_len > len(ext):
        raise ElfError(f"BTF.ext header length {hdr_len} is out of range", EXT)
    *_, relo_off, relo_len = _HEADER.unpack_from(ext)
    start, end = hdr_len + relo_off, hdr_len + relo_off + relo_len
    if end > len(ext) or 0 < relo_len < _U32.size:
        raise ElfError("BTF.ext CO-RE relocations run past the end of the section", EXT)
    if relo_len == 0:
        return []
    strings = btf_strings(btf_data)
    (rec_size,) = _U32.unpack_from(ext, start)
    if rec_size < _RECORD.size or rec_size % _U32.size:
        raise ElfError(f"BTF.ext CO-RE relocation records of {rec_size} bytes", EXT)
    records: list[_Record] = []
    pos = start + _U32.size
    while pos < end:
        if pos + _SECTION.size > end:
            raise ElfError("BTF.ext CO-RE relocation section header is cut short", EXT)
        name_off, count = _SECTION.unpack_from(ext, pos)
        pos += _SECTION.size
        if pos + count * rec_size > end:
            raise ElfError("BTF.ext CO-RE relocation records run past their block", EXT)
        section = string_at(strings, name_off, EXT)
        for index in range(count):
            insn_off, type_id, access_off, kind = _RECORD.unpack_from(ext, pos + index * rec_size)
            if kind not in CoreKind._value2member_map_ or insn_off % SLOT:
                raise ElfError(f"BTF.ext CO-RE relocation of kind {kind} at byte {insn_off}",
                               EXT)
            records.append(_Record(section, insn_off // SLOT, type_id,
                                   string_at(strings, access_off, EXT), CoreKind(kind)))
        pos += count * rec_size
    return records


class _Failed(Exception):
    """A relocation libbpf refuses: becomes a CoreRelocationError."""


class _Poison(Exception):
    """The target lacks what the relocation needs: poison the instruction."""


@dataclass
class _Access:
    type_id: int  # the struct/union (named access), or the element type (array access)
    index: int
    name: str | None


@dataclass
class _Spec:
    btf: Btf
    root: int
    raw: list[int]
    access: list[_Access]
    bit_offset: int = 0


def _strip(btf: Btf, type_id: int) -> BtfType:
    try:
        return btf.strip(type_id)
    except ElfError as exc:
        raise _Failed(exc.reason) from exc


def _size(btf: Btf, type_id: int) -> int:
    try:
        return btf.size(type_id)
    except ElfError as exc:
        raise _Failed(exc.reason) from exc


def _member_bits(found: BtfType, index: int) -> tuple[int, int]:
    """(bit offset, bitfield size or 0) of member `index` of a struct/union."""
    raw = found.items[index][2]
    return (raw & 0xFFFFFF, raw >> 24) if found.kflag else (raw, 0)


def _is_flex(btf: Btf, parent: _Access | None, nelems: int) -> bool:
    """An array of 0 elements that is the last member of its struct."""
    if parent is None or parent.name is None or nelems > 0:
        return False
    return parent.index == len(btf.get(parent.type_id).items) - 1


def _parse_spec(btf: Btf, record: _Record) -> _Spec:
    """The local spec: the access string followed through the local types."""
    text = record.access
    if record.kind in _TYPE_KINDS:
        if text != "0":
            raise _Failed(f"access string {text!r} of a type relocation is not '0'")
        return _Spec(btf, record.type_id, [0], [])
    parts = text.split(":")
    if len(parts) > MAX_SPEC or not all(p.isascii() and p.isdigit() for p in parts):
        raise _Failed(f"access string {text!r} is not up to {MAX_SPEC} numbers joined by ':'")
    raw = [int(part) for part in parts]
    root = _strip(btf, record.type_id)
    spec = _Spec(btf, record.type_id, raw, [_Access(root.id, raw[0], None)])
    if record.kind in _ENUM_KINDS:
        if root.kind not in _ANY_ENUM or len(raw) > 1 or raw[0] >= len(root.items):
            raise _Failed(f"access string {text!r} is not an enumerator of {root.name!r}")
        spec.access[0].name = root.items[raw[0]][0]
        return spec
    spec.bit_offset = raw[0] * _size(btf, root.id) * 8
    type_id = root.id
    for index in raw[1:]:
        found = _strip(btf, type_id)
        if found.kind in _COMPOSITE:
            if index >= len(found.items):
                raise _Failed(f"member {index} of {found.name or '<anon>'} does not exist")
            spec.bit_offset += _member_bits(found, index)[0]
            name, type_id, _ = found.items[index]
            if name:
                spec.access.append(_Access(found.id, index, name))
        elif found.kind is BtfKind.ARRAY and found.array is not None:
            element = _strip(btf, found.array[0])
            parent = spec.access[-1] if spec.access else None
            if not _is_flex(btf, parent, found.array[2]) and index >= found.array[2]:
                raise _Failed(f"index {index} is past an array of {found.array[2]}")
            type_id = element.id
            spec.access.append(_Access(element.id, index, None))
            spec.bit_offset += index * _size(btf, element.id) * 8
        else:
            raise _Failed(f"access {index} into {found.kind.name}, not a struct or array")
    return spec


def _fields_compat(local: Btf, local_id: int, target: Btf, target_id: int) -> bool:
    """Whether a field of type `local_id` may be read as one of `target_id`."""
    for _ in range(MAX_SPEC):
        a, b = _strip(local, local_id), _strip(target, target_id)
        if a.kind in _COMPOSITE and b.kind in _COMPOSITE:
            return True
        if kind_group(a.kind) is not kind_group(b.kind):
            return False
        if a.kind in (BtfKind.PTR, BtfKind.FLOAT):
            return True
        if a.kind in _ANY_ENUM or a.kind is BtfKind.FWD:
            x, y = essential_name(a.name), essential_name(b.name)
            return not x or not y or x == y
        if a.kind is BtfKind.INT:
            return (a.int_info >> 16) & 0xFF == 0 and (b.int_info >> 16) & 0xFF == 0
        if a.kind is not BtfKind.ARRAY or a.array is None or b.array is None:
            return False
        local_id, target_id = a.array[0], b.array[0]
    raise _Failed("types nest too deeply")


_VOID = BtfType(0, BtfKind.INT, "", 0, 0)
"""Type id 0 for the walks below (libbpf's BTF_KIND_UNKN): `kind` is unused."""
_QUALIFIED = frozenset({BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT,
                        BtfKind.TYPE_TAG})


def _peel(btf: Btf, type_id: int) -> BtfType:
    """The type behind qualifiers and typedefs, _VOID for void."""
    for _ in range(MAX_SPEC):
        if type_id == 0:
            return _VOID
        found = btf.get(type_id) if 0 < type_id < len(btf.types) else None
        if found is None:
            raise _Failed(f"BTF type id {type_id} does not exist")
        if found.kind not in _QUALIFIED:
            return found
        type_id = found.ref
    raise _Failed("BTF type chain too long")


def _same_kind(a: BtfType, b: BtfType) -> bool:
    if a is _VOID or b is _VOID:
        return a is b
    return kind_group(a.kind) is kind_group(b.kind)


def _types_compat(local: Btf, local_id: int, target: Btf, target_id: int,
                  level: int = 32) -> bool:
    """libbpf's type compatibility of type relocations: the same kinds all
    the way through pointers, arrays and function prototypes; any struct,
    union, enum or forward declaration; ints without a bit offset."""
    for _ in range(32):
        a, b = _peel(local, local_id), _peel(target, target_id)
        if not _same_kind(a, b):
            return False
        if a is _VOID or a.kind in _COMPOSITE or a.kind in _ANY_ENUM or a.kind is BtfKind.FWD:
            return True
        if a.kind is BtfKind.INT:
            return (a.int_info >> 16) & 0xFF == 0 and (b.int_info >> 16) & 0xFF == 0
        if a.kind is BtfKind.PTR:
            local_id, target_id = a.ref, b.ref
        elif a.kind is BtfKind.ARRAY and a.array is not None and b.array is not None:
            local_id, target_id = a.array[0], b.array[0]
        elif a.kind is BtfKind.FUNC_PROTO:
            if len(a.items) != len(b.items) or level <= 0 or not all(
                    _types_compat(local, x[1], target, y[1], level - 1)
                    for x, y in zip(a.items, b.items, strict=True)):
                return False
            local_id, target_id = a.ref, b.ref
        else:
            return False
    raise _Failed("types nest too deeply")


def _names_match(local: str, target: str) -> bool:
    """libbpf's name match of type_matches: equal essential names; an
    anonymous target matches only an anonymous local."""
    if not target:
        return not local
    return essential_name(local) == essential_name(target)


def _types_match(local: Btf, local_id: int, target: Btf, target_id: int, behind_ptr: bool,
                 level: int) -> bool:
    """libbpf's stricter "types match" relation (bpf_core_type_matches): same
    kinds, names, int sizes and signedness, array lengths, every local
    member or enumerator present in the target by name."""
    for _ in range(32):
        if level <= 0:
            raise _Failed("types nest too deeply")
        a, b = _peel(local, local_id), _peel(target, target_id)
        if not _names_match(a.name, b.name):
            return False
        if a.kind is BtfKind.PTR and b.kind is BtfKind.PTR:
            behind_ptr, local_id, target_id = True, a.ref, b.ref
        elif a.kind is BtfKind.ARRAY and b.kind is BtfKind.ARRAY and a.array and b.array:
            if a.array[2] != b.array[2]:
                return False
            local_id, target_id = a.array[0], b.array[0]
        elif a.kind is BtfKind.FUNC_PROTO and b.kind is BtfKind.FUNC_PROTO:
            if len(a.items) != len(b.items) or not all(
                    _types_match(local, x[1], target, y[1], behind_ptr, level - 1)
                    for x, y in zip(a.items, b.items, strict=True)):
                return False
            local_id, target_id = a.ref, b.ref
        else:
            return _leaf_match(a, b, behind_ptr, (local, target, level))
    raise _Failed("types nest too deeply")


def _leaf_match(a: BtfType, b: BtfType, behind_ptr: bool, where: tuple[Btf, Btf, int]) -> bool:
    """_types_match for kinds that end the walk (FWD, ENUM, STRUCT, UNION, INT, void)."""
    local, target, level = where
    if a is _VOID or b is _VOID:
        return a is b
    if a.kind is BtfKind.FWD:  # kflag: a union's forward declaration
        if behind_ptr and b.kind is not BtfKind.FWD:
            return (b.kind is BtfKind.STRUCT and not a.kflag) or \
                (b.kind is BtfKind.UNION and a.kflag)
        return b.kind is BtfKind.FWD and a.kflag == b.kflag
    if a.kind in _ANY_ENUM:
        names = [name for name, _v, _ in b.items]
        return b.kind in _ANY_ENUM and a.ref == b.ref and len(a.items) <= len(b.items) and all(
            any(_names_match(name, other) for other in names) for name, _v, _ in a.items)
    if a.kind in _COMPOSITE:
        if behind_ptr and a.kind is not b.kind:
            return b.kind is BtfKind.FWD and (a.kind is BtfKind.UNION) == b.kflag
        if a.kind is not b.kind or len(a.items) > len(b.items):
            return False
        if behind_ptr:
            return True
        return all(any(_names_match(name, other) and _types_match(
            local, member, target, other_type, behind_ptr, level - 1)
            for other, other_type, _ in b.items) for name, member, _ in a.items)
    if a.kind is BtfKind.INT:
        return b.kind is BtfKind.INT and a.ref == b.ref and \
            (a.int_info >> 24) & BTF_INT_SIGNED == (b.int_info >> 24) & BTF_INT_SIGNED
    return False


def _match_member(local: _Spec, acc: _Access, target: Btf, target_id: int,
                  spec: _Spec, depth: int = 0) -> int | None:
    """Find `acc`'s member by name in target struct `target_id` (looking into
    anonymous members); extend `spec` and return the member's type id."""
    found = _strip(target, target_id)
    if found.kind not in _COMPOSITE or depth > MAX_SPEC:
        return None
    local_type = local.btf.get(acc.type_id)
    _name, local_member_type, _ = local_type.items[acc.index]
    for index, (name, member_type, _raw) in enumerate(found.items):
        bits = _member_bits(found, index)[0]
        spec.bit_offset += bits
        spec.raw.append(index)
        if not name:
            inner = _match_member(local, acc, target, member_type, spec, depth + 1)
            if inner is not None:
                return inner
        elif name == acc.name:
            if not _fields_compat(local.btf, local_member_type, target, member_type):
                return None
            spec.access.append(_Access(found.id, index, name))
            return member_type
        spec.bit_offset -= bits
        spec.raw.pop()
    return None


def _match(local: _Spec, kind: CoreKind, target: Btf, target_id: int) -> _Spec | None:
    """The target spec of candidate `target_id`, or None when it does not match."""
    spec = _Spec(target, target_id, [], [])
    if kind is CoreKind.TYPE_MATCHES:
        return spec if _types_match(local.btf, local.root, target, target_id, False, 32) \
            else None
    if kind in _TYPE_KINDS:
        return spec if _types_compat(local.btf, local.root, target, target_id) else None
    if kind in _ENUM_KINDS:
        found = _strip(target, target_id)
        wanted = essential_name(local.access[0].name or "")
        if found.kind not in _ANY_ENUM:
            return None
        for index, (name, _value, _) in enumerate(found.items):
            if essential_name(name) == wanted:
                spec.access.append(_Access(found.id, index, name))
                return spec
        return None
    type_id = target_id
    for position, acc in enumerate(local.access):
        if acc.name is not None:
            member = _match_member(local, acc, target, type_id, spec)
            if member is None:
                return None
            type_id = member
            continue
        if position > 0:
            found = _strip(target, type_id)
            if found.kind is not BtfKind.ARRAY or found.array is None:
                return None
            parent = spec.access[-1] if spec.access else None
            if not _is_flex(target, parent, found.array[2]) and acc.index >= found.array[2]:
                return None
            type_id = _strip(target, found.array[0]).id
        spec.access.append(_Access(type_id, acc.index, None))
        spec.raw.append(acc.index)
        spec.bit_offset += acc.index * _size(target, type_id) * 8
    return spec


@dataclass
class _Value:
    value: int
    size: int = 0  # the field's byte size, for a load/store's size (byte_off)
    type_id: int = 0
    validate: bool = True


def _field_value(spec: _Spec | None, kind: CoreKind) -> _Value:
    """A field relocation's value in one spec; _Poison when `spec` is None."""
    if kind is CoreKind.FIELD_EXISTS:
        return _Value(int(spec is not None))
    if spec is None:
        raise _Poison()
    last = spec.access[-1]
    btf = spec.btf
    if last.name is None:  # an array element (or the root)
        size = _size(btf, last.type_id)
        if kind is CoreKind.FIELD_BYTE_OFFSET:
            return _Value(spec.bit_offset // 8, size, last.type_id)
        if kind is CoreKind.FIELD_BYTE_SIZE:
            return _Value(size)
        raise _Failed(f"{kind.label} cannot be applied to an array element")
    parent = btf.get(last.type_id)
    member_type = parent.items[last.index][1]
    field = _strip(btf, member_type)
    bits = _member_bits(parent, last.index)[1]
    bitfield = bits > 0
    bit_offset = spec.bit_offset
    if bitfield:
        size = field.ref
        if size not in _SIZE_CODES:
            raise _Failed(f"a bitfield of a {size}-byte type")
        byte_off = bit_offset // 8 // size * size
        while bit_offset + bits - byte_off * 8 > size * 8:
            if size >= 8:
                raise _Failed("the bitfield cannot be read with one 64-bit load")
            size *= 2
            byte_off = bit_offset // 8 // size * size
    else:
        size = _size(btf, member_type)
        byte_off, bits = bit_offset // 8, size * 8
    if kind is CoreKind.FIELD_BYTE_OFFSET:
        if bitfield:  # the compiler's choice of load may differ: no size, no check
            return _Value(byte_off, validate=False)
        return _Value(byte_off, size, field.id)
    if kind is CoreKind.FIELD_BYTE_SIZE:
        return _Value(size, validate=not bitfield)
    if kind is CoreKind.FIELD_SIGNED:
        signed = (field.kind in _ANY_ENUM and field.kflag) or (
            field.kind is BtfKind.INT and bool((field.int_info >> 24) & BTF_INT_SIGNED))
        return _Value(int(signed))
    if kind is CoreKind.FIELD_LSHIFT_U64:
        return _Value(64 - (bit_offset + bits - byte_off * 8), validate=not bitfield)
    return _Value(64 - bits)  # FIELD_RSHIFT_U64


def _other_value(spec: _Spec | None, kind: CoreKind) -> _Value:
    """A type or enum relocation's value in one spec (None: no match)."""
    if kind in _ENUM_KINDS:
        if kind is CoreKind.ENUMVAL_EXISTS:
            return _Value(int(spec is not None))
        if spec is None:
            raise _Poison()
        found = spec.btf.get(spec.access[0].type_id)
        value = found.items[spec.access[0].index][1]
        if found.kind is BtfKind.ENUM:  # libbpf reads a 32-bit enumerator as s32
            value = (value & 0xFFFF_FFFF) - ((value & 0x8000_0000) << 1)
        return _Value(value & 0xFFFF_FFFF_FFFF_FFFF)
    if spec is None:
        return _Value(0)
    if kind is CoreKind.TYPE_ID_TARGET:
        return _Value(spec.root, validate=False)
    if kind is CoreKind.TYPE_SIZE:
        return _Value(_size(spec.btf, spec.root))
    return _Value(1)  # TYPE_EXISTS, TYPE_MATCHES


def _value(spec: _Spec | None, kind: CoreKind) -> _Value:
    return _field_value(spec, kind) if kind in _FIELD_KINDS else _other_value(spec, kind)


@dataclass
class _Result:
    local: _Value
    new: _Value | None  # None: poison
    target_id: int | None
    bad_size: bool = False  # the field's size changed in a way a load cannot follow


def _resolve(record: _Record, local: Btf, spec: _Spec, target: CoreTarget) -> _Result:
    """Match the local spec against every candidate of the target BTF, as
    libbpf does: all matching candidates must agree."""
    kind = record.kind
    if kind is CoreKind.TYPE_ID_LOCAL:
        return _Result(_Value(spec.root, validate=False), _Value(spec.root), None)
    if not 0 < record.type_id < len(local.types):
        raise _Failed(f"BTF type id {record.type_id} does not exist")
    local_type = local.types[record.type_id]
    if not local_type.name:
        raise _Failed("CO-RE relocations of anonymous types are not supported")
    orig = _value(spec, kind)
    chosen: tuple[_Spec, _Value, int] | None = None
    for candidate in target.candidates(local_type.kind, local_type.name):
        found = _match(spec, kind, target.btf, candidate)
        if found is None:
            continue
        new = _value(found, kind)
        if chosen is None:
            chosen = (found, new, candidate)
        elif found.bit_offset != chosen[0].bit_offset or new.value != chosen[1].value:
            raise _Failed(f"target types {chosen[2]} and {candidate} give different results")
    if chosen is None:
        try:
            return _Result(orig, _value(None, kind), None)
        except _Poison:
            return _Result(orig, None, None)
    _found, new, candidate = chosen
    return _Result(orig, new, candidate, _bad_size(orig, local, new, target.btf))


def _bad_size(orig: _Value, local: Btf, new: _Value, target: Btf) -> bool:
    """libbpf's rule: a load or store may change size only for pointers and
    unsigned integers (zero extension keeps their values)."""
    if orig.size == new.size:
        return False
    if not orig.type_id or not new.type_id:  # a bitfield on one side: no size to keep
        return True
    a, b = local.get(orig.type_id), target.get(new.type_id)
    if a.kind is BtfKind.PTR and b.kind is BtfKind.PTR:
        return False
    unsigned = (a.kind is BtfKind.INT and b.kind is BtfKind.INT
                and not (a.int_info >> 24) & BTF_INT_SIGNED
                and not (b.int_info >> 24) & BTF_INT_SIGNED)
    return not unsigned


_CALL = 0x85  # BPF_JMP | BPF_CALL
_LDDW = 0x18
_M64 = (1 << 64) - 1


def _poison(code: bytearray, insn: int, helper_id: int, slots: int) -> None:
    for slot in range(insn, insn + slots):
        SLOT_LAYOUT.pack_into(code, slot * SLOT, _CALL, 0, 0, helper_id - (1 << 32)
                              if helper_id >= 1 << 31 else helper_id)


def _patch(code: bytearray, insn: int, result: _Result, helper_id: int) -> bool:
    """Write `result` into the instruction at `insn` (or poison it, calling
    `helper_id`); True when poisoned."""
    opcode, regs, off, imm = SLOT_LAYOUT.unpack_from(code, insn * SLOT)
    cls, orig, new = opcode & 7, result.local, result.new
    if cls in (4, 7):  # ALU, ALU64 with an immediate
        if opcode & 0x08:
            raise _Failed(f"instruction {opcode:#04x} has no immediate to relocate")
        if new is None:
            _poison(code, insn, helper_id, 1)
            return True
        if orig.validate and imm & _M64 != orig.value & _M64:
            raise _Failed(f"the instruction's immediate is {imm}, the local type gives "
                          f"{orig.value}")
        value = new.value & 0xFFFF_FFFF
        SLOT_LAYOUT.pack_into(code, insn * SLOT, opcode, regs, off,
                              value - (1 << 32) if value >> 31 else value)
        return False
    if cls in (1, 2, 3):  # LDX, ST, STX: the offset, and the size when it changed
        if new is None or result.bad_size:
            _poison(code, insn, helper_id, 1)
            return True
        if orig.validate and off & _M64 != orig.value & _M64:
            raise _Failed(f"the instruction's offset is {off}, the local type gives {orig.value}")
        if new.value > 0x7FFF:
            raise _Failed(f"offset {new.value} does not fit a load or store")
        if new.size != orig.size:
            size = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}[opcode & 0x18]
            if size != orig.size or new.size not in _SIZE_CODES:
                raise _Failed(f"a {size}-byte access of a {orig.size}-byte field cannot "
                              f"become {new.size} bytes")
            opcode = (opcode & ~0x18) | _SIZE_CODES[new.size]
        SLOT_LAYOUT.pack_into(code, insn * SLOT, opcode, regs, new.value, imm)
        return False
    return _patch_lddw(code, insn, result, helper_id)


def _patch_lddw(code: bytearray, insn: int, result: _Result, helper_id: int) -> bool:
    opcode, regs, off, low = SLOT_LAYOUT.unpack_from(code, insn * SLOT)
    if opcode != _LDDW or regs >> 4 or off or (insn + 2) * SLOT > len(code):
        raise _Failed(f"instruction {opcode:#04x} cannot be relocated")
    op2, regs2, off2, high = SLOT_LAYOUT.unpack_from(code, (insn + 1) * SLOT)
    if op2 or regs2 or off2:
        raise _Failed("the lddw's second slot is not plain")
    if result.new is None:
        _poison(code, insn, helper_id, 2)
        return True
    current = (low & 0xFFFF_FFFF) | (high & 0xFFFF_FFFF) << 32
    if result.local.validate and current != result.local.value & _M64:
        raise _Failed(f"the lddw's immediate is {current}, the local type gives "
                      f"{result.local.value}")
    value = result.new.value & _M64
    for slot, part in ((insn, value & 0xFFFF_FFFF), (insn + 1, value >> 32)):
        opcode, regs, off, _ = SLOT_LAYOUT.unpack_from(code, slot * SLOT)
        SLOT_LAYOUT.pack_into(code, slot * SLOT, opcode, regs, off,
                              part - (1 << 32) if part >> 31 else part)
    return False


def _field_path(btf: Btf, record: _Record, spec: _Spec | None) -> str:
    """A C-like name of what the relocation reads: ``iphdr.saddr``,
    ``xdp_action::XDP_PASS``, ``iphdr`` (type relocations)."""
    try:
        name = btf.get(record.type_id).name or "<anon>"
    except ElfError:
        return f"type {record.type_id}"
    if spec is None or record.kind in _TYPE_KINDS:
        return name
    if record.kind in _ENUM_KINDS:
        return f"{name}::{spec.access[0].name}"
    text = name + (f"[{spec.raw[0]}]" if spec.raw[0] else "")
    for acc in spec.access[1:]:
        text += f".{acc.name}" if acc.name is not None else f"[{acc.index}]"
    return text


def _error(reason: str, record: _Record, type_name: str, path: str) -> CoreRelocationError:
    return CoreRelocationError(reason, record.section, record.insn, record.kind.label,
                               type_name, record.access, path)


def apply_core(elf: Any, btf: Btf | None, sections: list[Any], core_btf: CoreTargetSpec,
               strict: bool) -> list[CoreRelocation]:
    """Apply the CO-RE relocations of `elf`'s ``.BTF.ext`` to the code of
    `sections` (objects with ``name`` and ``data``, data replaced) against
    the target BTF `core_btf`. Returns every relocation with its result.
    CoreRelocationError for what libbpf refuses, and for a poisoned
    instruction when `strict`."""
    ext, btf_section = elf.get_section_by_name(EXT), elf.get_section_by_name(".BTF")
    if ext is None or btf is None or btf_section is None:
        return []
    records = read_core_relos(bytes(btf_section.data()), bytes(ext.data()))
    if not records:
        return []
    target = target_btf(core_btf)
    by_name = {section.name: section for section in sections}
    codes = {name: bytearray(section.data) for name, section in by_name.items()}
    results: list[CoreRelocation] = []
    poisoned = 0
    for record in records:
        code = codes.get(record.section)
        if code is None or record.insn >= len(code) // SLOT:
            raise ElfError(f"CO-RE relocation at instruction {record.insn} of a section "
                           "with no such instruction", record.section)
        if poisoned >= MAX_POISONED:
            raise _error(f"more than {MAX_POISONED} relocations failed", record, "", "")
        results.append(_apply_one(record, btf, target, code, POISON + poisoned, strict))
        poisoned += results[-1].poisoned
    for name, section in by_name.items():
        section.data = bytes(codes[name])
    return results


def _apply_one(record: _Record, btf: Btf, target: CoreTarget, code: bytearray,
               helper_id: int, strict: bool) -> CoreRelocation:
    spec: _Spec | None = None
    try:
        type_name = btf.get(record.type_id).name
    except ElfError:
        type_name = ""
    try:
        spec = _parse_spec(btf, record)
        result = _resolve(record, btf, spec, target)
        path = _field_path(btf, record, spec)
        if result.new is None and strict:
            raise _Failed(f"the target BTF ({target.source}) has no {path}")
        poisoned = _patch(code, record.insn, result, helper_id)
    except _Failed as exc:
        raise _error(str(exc), record, type_name, _field_path(btf, record, spec)) from None
    value = None if poisoned or result.new is None else result.new.value
    return CoreRelocation(record.section, record.insn, record.kind, type_name, record.access,
                          path, value, poisoned, helper_id if poisoned else None,
                          result.target_id)


def is_poison(helper_id: int) -> bool:
    """Whether a call's immediate is a poisoned CO-RE instruction's."""
    return POISON <= helper_id < POISON + MAX_POISONED


def poison_helpers(relocations: list[CoreRelocation]) -> dict[int, Callable[..., int]]:
    """The helpers of an object's poisoned instructions: each raises
    CoreRelocationFault at the pc of the call, naming its relocation."""
    found: dict[int, Callable[..., int]] = {}
    for relocation in relocations:
        if relocation.helper_id is not None:
            found[relocation.helper_id] = _poisoned(relocation)
    return found


def _poisoned(relocation: CoreRelocation) -> Callable[..., int]:
    def fault(ctx: Any, *_args: int) -> int:
        raise CoreRelocationFault(ctx.pc, relocation, relocation.type_name, relocation.field,
                                  relocation.kind.label)

    return fault
