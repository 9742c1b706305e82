"""Map contents for ``ebpfvm maps OBJ --dump`` and ``ebpfvm run ... --dump-maps``
(issue 14, point 4), as ``bpftool map dump`` shows them.

Every entry, its key and value decoded by BTF type: ints, structs as objects
of their members, arrays as lists, char arrays as strings (or hex), enums by
their enumerator's name. A member typed ``__be16``, ``__be32`` or ``__be64``
is read in network byte order; a ``__be32`` whose name says it is an IPv4
address (``saddr``, ``daddr``, ``addr``, ``ip``, ``src_ip``...) shows as a
dotted quad, and a ``__be16`` port (``port``, ``sport``, ``dport``...) as
its host-order number. Maps without BTF show hex bytes. Global data
sections show their variables by name. The same documents go into
``--json`` output.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from .btf import Btf, BtfKind
from .mapbase import BpfMap

__all__ = ["decode_btf", "dump_entries", "dump_lines", "map_document"]

_BIG_ENDIAN = {"__be16": 2, "__be32": 4, "__be64": 8}
_ADDRESS = re.compile(r"(^|_)(s|d)?(addr|ip|ipv4|ip4|src|dst|saddr|daddr|nexthop|gw)\d*$")
_MAX_DEPTH = 16
_ALL = 1 << 62
"""No limit on the entries dumped (the map's own size bounds them)."""


def _typedefs(btf: Btf, type_id: int) -> tuple[list[str], Any]:
    """The typedef names on the way to the type behind `type_id`, and that type."""
    names: list[str] = []
    for _ in range(_MAX_DEPTH):
        found = btf.get(type_id)
        if found.kind is BtfKind.TYPEDEF:
            names.append(found.name)
        if found.kind not in (BtfKind.TYPEDEF, BtfKind.CONST, BtfKind.VOLATILE,
                              BtfKind.RESTRICT, BtfKind.TYPE_TAG):
            return names, found
        type_id = found.ref
    return names, btf.strip(type_id)


def _network_int(data: bytes, size: int, name: str) -> Any:
    value = int.from_bytes(data[:size], "big")
    if size == 4 and _ADDRESS.search(name.lower()):
        return str(ipaddress.IPv4Address(value))
    return value


def _chars(data: bytes) -> str:
    text, _nul, rest = data.partition(b"\0")
    if text.isascii() and text.decode().isprintable() and not rest.strip(b"\0"):
        return text.decode()
    return data.hex()


def decode_btf(btf: Btf, type_id: int, data: bytes, name: str = "", depth: int = 0) -> Any:
    """`data` as a JSON value of BTF type `type_id` (the member's `name`
    decides whether a big-endian int is an address)."""
    typedefs, found = _typedefs(btf, type_id)
    size = btf.size(found.id) if found.kind is not BtfKind.FUNC_PROTO else 0
    big = next((_BIG_ENDIAN[t] for t in typedefs if t in _BIG_ENDIAN), None)
    if depth > _MAX_DEPTH:
        return data.hex()
    if found.kind is BtfKind.INT:
        if big == size:
            return _network_int(data, size, name)
        signed = bool((found.int_info >> 24) & 1)
        value = int.from_bytes(data[:size], "little", signed=signed)
        return bool(value) if (found.int_info >> 24) & 4 else value
    if found.kind in (BtfKind.ENUM, BtfKind.ENUM64):
        value = int.from_bytes(data[:size], "little")
        return next((item for item, number, _o in found.items if number == value), value)
    if found.kind is BtfKind.ARRAY and found.array is not None:
        element_id, _index, count = found.array
        element = btf.strip(element_id)
        step = btf.size(element.id)
        if element.kind is BtfKind.INT and step == 1:
            return _chars(data[:count])
        return [decode_btf(btf, element_id, data[i * step : (i + 1) * step], name, depth + 1)
                for i in range(count)]
    if found.kind in (BtfKind.STRUCT, BtfKind.UNION):
        out: dict[str, Any] = {}
        for member, member_type, bit_offset in found.items:
            start = (bit_offset & 0xFFFFFF) // 8
            width = btf.size(member_type)
            out[member or f"@{start}"] = decode_btf(btf, member_type, data[start : start + width],
                                                    member, depth + 1)
        return out
    return int.from_bytes(data[:size], "little") if 0 < size <= 8 else data.hex()


def _decode(codec: Any, data: bytes) -> Any:
    if codec is None:
        return data.hex()
    return decode_btf(codec.btf, codec.type.id, bytes(data))


def _keyed(m: Any) -> list[dict[str, Any]]:
    """A hash or array map's entries (an array's every slot, as bpftool)."""
    if getattr(m, "percpu", False):
        return []
    keys: Any = (slot.to_bytes(m.key_size, "little") for slot in range(m.max_entries)) \
        if m.is_array else list(m)
    return [{"key": _decode(m.key_codec, key), "value": _decode(m.value_codec, m[key])}
            for key in keys]


def dump_entries(m: BpfMap) -> dict[str, Any]:
    """The contents of `m` as JSON: ``variables`` (global data), ``entries``
    (keyed maps), or ``lines`` (other kinds, as the run listing shows them)."""
    from .maps import Map

    if isinstance(m, Map) and m.variables:
        return {"variables": {name: decode_btf(codec.btf, codec.type.id,
                                               bytes(m.slab[offset : offset + codec.size]), name)
                              for name, (offset, codec) in m.variables.items()}}
    if isinstance(m, Map) and not getattr(m, "percpu", False):
        return {"entries": _keyed(m)}
    return {"lines": m.entries_text(_ALL)}


def map_document(m: BpfMap, dump: bool) -> dict[str, Any]:
    """One map as JSON: its shape, its one-line description, and with `dump` its contents."""
    kind = getattr(m.type, "name", None)
    doc: dict[str, Any] = {
        "name": m.name, "type": kind.lower() if kind else int(m.type), "key_size": m.key_size,
        "value_size": m.value_size, "max_entries": m.max_entries, "flags": m.flags,
        "description": m.describe()}
    if dump:
        doc.update(dump_entries(m))
    return doc


def _text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)


def dump_lines(m: BpfMap) -> list[str]:
    """The text dump of `m`: ``key -> value`` per entry (JSON values),
    ``name = value`` per variable, and a count of entries."""
    found = dump_entries(m)
    if "variables" in found:
        return [f"{name} = {_text(value)}" for name, value in found["variables"].items()]
    if "entries" in found:
        lines = [f"{_text(e['key'])} -> {_text(e['value'])}" for e in found["entries"]]
        count = len(found["entries"])
        return [*lines, f"({count} entr{'y' if count == 1 else 'ies'})"]
    listed: list[str] = found["lines"]
    return listed
