"""Maps whose slots the object fills at load: a BTF-defined
``BPF_MAP_TYPE_PROG_ARRAY`` declared with ``__array(values, int (void *))``
and initialised ``.values = { [0] = &prog }``, or a map of maps with
``.values = { [0] = &inner_map }``. The compiler leaves one relocation in
``.rel.maps`` per initialised slot, against the program's or the inner
map's symbol; loading puts that program or map in the slot, as libbpf does
(RFC 9669 section 5.4.1 names the map types)."""

from __future__ import annotations

from typing import Any

from .btf import Btf, BtfKind
from .errors import ElfError, MapError
from .mapinmap import MapOfMaps
from .maps import ProgArray

SLOT_BYTES = 8
"""Each ``values`` element is one pointer in the map's definition."""


def is_program_values(btf: Btf, array_element: int) -> bool:
    """Whether an ``__array(values, ...)`` element type is a pointer to a
    function prototype (a program array's values, each a 4-byte program fd)."""
    element = btf.strip(array_element)
    if element.kind is not BtfKind.PTR:
        return False
    return btf.strip(element.ref).kind is BtfKind.FUNC_PROTO


def _values_offset(btf: Btf, var_type: int) -> int | None:
    """The byte offset of the ``values`` member in a map definition, or None."""
    for member, _type, bits in btf.strip(var_type).items:
        if member == "values":
            return bits // 8
    return None


def fill_prog_arrays(elf: Any, symbols: list[Any], btf: Btf | None,
                     maps: dict[str, Any]) -> None:
    """Put in each program array's or map of maps' slots the programs or
    maps its ``.values`` initialiser names (the relocations of ``.rel.maps``)."""
    from elftools.elf.relocation import RelocationSection

    relocations = elf.get_section_by_name(".rel.maps")
    datasec = btf.datasec(".maps") if btf is not None else None
    if relocations is None or btf is None or datasec is None:
        return
    if not isinstance(relocations, RelocationSection):
        raise ElfError("not a relocation section", ".rel.maps")
    variables = [btf.get(var_id) for _name, var_id, _offset in datasec.items]
    var_types = {var.name: var.ref for var in variables}
    section = relocations["sh_info"]
    spans = [(sym["st_value"], sym["st_value"] + sym["st_size"], sym.name)
             for sym in symbols  # the symbol's size includes the values initialiser
             if sym["st_shndx"] == section and sym.name in var_types]
    for reloc in relocations.iter_relocations():
        at = reloc["r_offset"]
        if not 0 < reloc["r_info_sym"] < len(symbols):
            raise ElfError(f"relocation at offset {at} names symbol {reloc['r_info_sym']}, "
                           "which does not exist", ".rel.maps")
        target = symbols[reloc["r_info_sym"]]
        span = next((s for s in spans if s[0] <= at < s[1]), None)
        if span is None:
            raise ElfError(f"relocation at offset {at} is outside every map", ".rel.maps")
        start, _end, name = span
        found = maps.get(name)
        values = _values_offset(btf, var_types[name])
        if values is None or at - start < values or (at - start - values) % SLOT_BYTES:
            raise ElfError(f"map {name!r}: relocation at offset {at} is not a values slot",
                           ".rel.maps")
        _fill(found, (at - start - values) // SLOT_BYTES, target, maps)


def _fill(found: Any, slot: int, target: Any, maps: dict[str, Any]) -> None:
    """Slot `slot` of `found` holds the program or map symbol `target` names."""
    try:
        if isinstance(found, ProgArray) and target["st_info"]["type"] == "STT_FUNC":
            found[slot] = target.name
            return
        if isinstance(found, MapOfMaps) and target.name in maps:
            found[slot] = maps[target.name]
            return
    except MapError as exc:
        raise ElfError(str(exc), ".rel.maps") from exc
    raise ElfError(f"map {getattr(found, 'name', '?')!r}: slot {slot} initialised with "
                   f"{target.name!r}, which is not a program of a program array or a map "
                   "of a map of maps", ".rel.maps")
