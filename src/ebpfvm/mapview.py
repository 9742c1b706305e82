"""Maps as people read and write them: BTF type names, decoded entries, and
preloading from JSON (for the ``ebpfvm`` command).

JSON for :func:`preload` is an object ``{"key": value}`` (keys are numbers
written as strings, ``"0x1f"`` allowed) or a list of ``[key, value]`` pairs
(any key: a struct key is an object of its members). With BTF types, keys
and values go through the map's codecs (ints, objects for structs, lists for
arrays), strictly: a value that does not fit raises BtfValueError naming the
field. Without them, an int fills the key or value little-endian. A string
is hex bytes of the whole key or value. A program array takes program names
as values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, Any

from .btf import Btf, BtfKind
from .errors import BtfValueError, MapError, count_of
from .mapbase import BpfMap

if TYPE_CHECKING:
    from .maps import Map

__all__ = ["btf_type_name", "describe", "describe_keyed", "entries", "entries_keyed",
           "expected_form", "more", "preload", "preload_keyed"]

_MAX_DEPTH = 8


def btf_type_name(btf: Btf, type_id: int, depth: int = 0) -> str:
    """A C spelling of a BTF type: ``struct proto_key``, ``__u64``, ``__u8[16]``."""
    if type_id == 0:
        return "void"
    found = btf.get(type_id)
    kind = found.kind
    if depth > _MAX_DEPTH:
        return "..."
    if kind in (BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.ENUM64):
        word = {BtfKind.STRUCT: "struct", BtfKind.UNION: "union"}.get(kind, "enum")
        return f"{word} {found.name}" if found.name else f"{word} <anon>"
    if kind in (BtfKind.CONST, BtfKind.VOLATILE, BtfKind.RESTRICT):
        return f"{kind.name.lower()} {btf_type_name(btf, found.ref, depth + 1)}"
    if kind is BtfKind.PTR:
        return f"{btf_type_name(btf, found.ref, depth + 1)} *"
    if kind is BtfKind.ARRAY and found.array is not None:
        return f"{btf_type_name(btf, found.array[0], depth + 1)}[{found.array[2]}]"
    return found.name or kind.name.lower()


def _struct_members(codec: Any) -> str:
    found = codec.type
    if found.kind not in (BtfKind.STRUCT, BtfKind.UNION):
        return ""
    members = "; ".join(f"{btf_type_name(codec.btf, member)} {name}"
                        for name, member, _offset in found.items)
    return f" {{ {members}; }}"


def _codec_text(codec: Any, size: int) -> str:
    if codec is None:
        return count_of(size, "byte")
    return f"{btf_type_name(codec.btf, codec.type.id)}{_struct_members(codec)} " \
           f"({count_of(size, 'byte')})"


def describe(m: BpfMap) -> str:
    """One line: name, type, key and value types (BTF when known), sizes, limits."""
    return m.describe()


def describe_keyed(m: Map) -> str:
    """Map.describe: a keyed map's line, or a global-data section's variables."""
    if m.variables:
        names = ", ".join(f"{btf_type_name(codec.btf, codec.type.id)} {name}"
                          for name, (_offset, codec) in m.variables.items())
        return f"{m.name}: global data, {count_of(m.value_size, 'byte')}: {names}"
    return (f"{m.name}: {m.type.name.lower()}, key {_codec_text(m.key_codec, m.key_size)}, "
            f"value {_codec_text(m.value_codec, m.value_size)}, "
            f"max_entries {m.max_entries}")


def _show_variable(value: Any) -> str:
    """Like _show, but a char array holding a C string shows as one."""
    if isinstance(value, bytes):
        text, _nul, rest = value.partition(b"\0")
        if text and text.isascii() and text.decode().isprintable() and not rest.strip(b"\0"):
            return '"' + text.decode() + '"'
    return _show(value)


def _show(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if hasattr(value, "_asdict"):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value._asdict().items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


_SCAN_BYTES = 1 << 16
"""How much of an array's slab _nonzero_slots compares at once."""


def _nonzero_slots(m: Map) -> Iterator[int]:
    """The slots of an array map whose value is not all zero, in order. The
    slab is compared a chunk at a time, so a large, mostly empty array (up to
    the map memory limit) is scanned in a fraction of a second, not a Python
    step per entry."""
    size = m.value_size
    step = max(1, _SCAN_BYTES // size)
    zero = bytes(step * size)
    view = memoryview(m.slab)
    for first in range(0, m.max_entries, step):
        last = min(first + step, m.max_entries)
        chunk = bytes(view[first * size : last * size])
        if chunk == zero[: len(chunk)]:
            continue
        for slot in range(first, last):
            start = (slot - first) * size
            if chunk[start : start + size] != zero[:size]:
                yield slot


def entries(m: BpfMap, limit: int = 20) -> list[str]:
    """Up to `limit` entries as ``key -> value`` lines, BTF-decoded when possible,
    then a ``... N more`` line (the map's entries_text)."""
    return m.entries_text(limit)


def more(lines: list[str], total: int) -> list[str]:
    """`lines`, then ``... N more`` when `total` entries did not fit."""
    if total > len(lines):
        lines.append(f"... {total - len(lines)} more")
    return lines


def entries_keyed(m: Map, limit: int) -> list[str]:
    """Map.entries_text: a keyed map's entries, or a global-data section's
    variables by name."""
    lines: list[str] = []
    total = 0
    if m.variables:  # global data: its variables by name
        for variable, (offset, codec) in m.variables.items():
            total += 1
            if len(lines) < limit:
                value = codec.decode(m.slab[offset : offset + codec.size])
                lines.append(f"{variable} = {_show_variable(value)}")
        return more(lines, total)
    typed = m.key_codec is not None and m.value_codec is not None
    keys: Any = m
    if m.is_array:
        keys = (slot.to_bytes(m.key_size, "little") for slot in _nonzero_slots(m))
    for key in keys:
        total += 1
        if len(lines) < limit:
            value = m[key]
            if typed:
                key, value = m.key_codec.decode(key), m.value_codec.decode(value)
            lines.append(f"{_show(key)} -> {_show(value)}")
    return more(lines, total)


def _raw(value: Any, size: int, what: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise MapError(f"{what} {value!r}: give an int or a hex string (the map has no BTF)")
    if isinstance(value, int):
        if not 0 <= value < 1 << (8 * size):
            raise BtfValueError(what, value, f"{value} does not fit {count_of(size, 'byte')} "
                                f"(0 to {(1 << (8 * size)) - 1})")
        return value.to_bytes(size, "little")
    try:
        data = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise BtfValueError(what, value, f"{value!r} is not hex bytes") from None
    if len(data) != size:
        raise BtfValueError(what, value, f"{value!r} is {count_of(len(data), 'byte')}, "
                            f"the map wants {size}")
    return data



def _json_key(key: Any) -> Any:
    if isinstance(key, str):
        try:
            return int(key, 0)
        except ValueError:
            return key
    return key


def _example(codec: Any) -> str:
    """A JSON sample of a codec's type: ``{"ethertype": 0, "proto": 0}`` or ``0``."""
    found = codec.type
    if found.kind in (BtfKind.STRUCT, BtfKind.UNION):
        return "{" + ", ".join(f'"{name}": 0' for name, _t, _o in found.items) + "}"
    if found.kind is BtfKind.ARRAY and found.array is not None:
        return "[0, ...]"
    return "0"


def expected_form(m: Map) -> str:
    """How `--map NAME=JSON` writes `m`'s entries, from its BTF types."""
    if m.key_codec is None or m.value_codec is None:
        return f'{{"0": VALUE}} with ints or hex strings of {m.key_size} and ' \
               f"{count_of(m.value_size, 'byte')}"
    key, value = _example(m.key_codec), _example(m.value_codec)
    if key.startswith(("{", "[")):
        return f"[[{key}, {value}]] (a list of [key, value] pairs)"
    return f'{{"0": {value}}}'


def _encode(codec: Any, value: Any, size: int, what: str) -> bytes:
    if codec is None or isinstance(value, str):  # a hex string: the raw bytes
        return _raw(value, size, what)
    raw: bytes = codec.encode(value, what)
    return raw


def preload(m: BpfMap, data: Any, programs: Collection[str] | None = None) -> int:
    """Put the entries of parsed JSON `data` into `m`; returns how many. A value
    that does not fit its type raises BtfValueError naming the map and the
    field; a program array refuses a name not in `programs` (when given)."""
    pairs = list(data.items()) if isinstance(data, dict) else data
    if not isinstance(pairs, list) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise MapError(f"map {getattr(m, 'name', '?')}: JSON must be an object or a list of "
                       "[key, value] pairs")
    for key, value in pairs:
        m.preload_entry(_json_key(key), value, programs)
    return len(pairs)


def preload_keyed(m: Map, key: Any, value: Any) -> None:
    """Map.preload_entry: encode `key` and `value` (BTF codecs, ints or hex
    strings) and store them."""
    try:
        raw_key = _encode(m.key_codec, key, m.key_size, "key")
        raw_value = _encode(m.value_codec, value, m.value_size, "value")
    except BtfValueError as exc:
        raise BtfValueError(exc.field, exc.value, f"{exc.reason}; expected "
                            f"{expected_form(m)}", m.name) from exc
    m[raw_key] = raw_value
