"""Maps of maps (BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS):
outer maps whose values are inner maps (RFC 9669 section 5.3: programs reach
maps through helper calls).

An outer map has 4-byte values (the kernel's inner map fds) and the shape of
its inner maps: a BTF map's ``__array(values, struct inner)`` gives it (the
ELF loader calls :meth:`MapOfMaps.set_inner`). It starts empty. From Python,
``outer[key] = inner_map`` stores a map of that shape (the type, key and
value sizes, flags and, unless the inner definition has BPF_F_INNER_MAP,
max_entries must be equal, as the kernel's bpf_map_meta_equal asks; a
mismatch is a MapError), ``outer[key]`` is the inner map and ``del
outer[key]`` removes it; a key is ``key_size`` bytes or an int (little-endian).
A program's ``bpf_map_lookup_elem`` on the outer map
returns the inner map's handle, which it passes to the map helpers like any
map (NULL when the slot is empty).
"""

from __future__ import annotations

from typing import Any

from .errors import MapError, count_of
from .mapbase import BpfMap, MapSpec, MapType, register

__all__ = ["BPF_F_INNER_MAP", "MapOfMaps"]

BPF_F_INNER_MAP = 1 << 12
_NOT_INNER = frozenset({MapType.PROG_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS})
"""Map types the kernel refuses as inner maps (no map_meta_equal)."""


class MapOfMaps(BpfMap):
    """An array or hash of maps: key -> inner map."""

    kind = "map_of_maps"

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """4-byte values (inner map fds); 4-byte keys for an array."""
        if spec.value_size != 4 or spec.key_size <= 0 or spec.max_entries <= 0 or (
                spec.type == MapType.ARRAY_OF_MAPS and spec.key_size != 4):
            raise MapError(f"map {spec.name!r}: a map of maps has 4-byte values (4-byte keys "
                           f"for an array) and max_entries above 0")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """Each slot's key and reference."""
        return (spec.key_size + 8) * spec.max_entries

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> MapOfMaps:
        """A new, empty outer map (without an inner shape until set_inner)."""
        del max_bytes  # create_map checked memory_bytes
        made = cls()
        made.name, made.type = spec.name, MapType(spec.type)
        made.key_size, made.value_size = spec.key_size, spec.value_size
        made.max_entries, made.flags, made.handle = spec.max_entries, spec.flags, 0
        return made

    def __init__(self) -> None:
        self.inner: MapSpec | None = None
        """The shape of the inner maps."""
        self.slots: dict[bytes, BpfMap] = {}

    def set_inner(self, spec: MapSpec) -> None:
        """Take the inner maps' shape (the BTF definition's). A program array
        or a map of maps cannot be an inner map (the kernel refuses them:
        their map types have no inner-map check), a MapError."""
        if spec.type in _NOT_INNER:
            raise MapError(f"map {self.name!r}: a {MapType(spec.type).name.lower()} cannot be "
                           "an inner map (the kernel refuses it)")
        self.inner = spec

    def _key(self, key: Any) -> bytes:
        if isinstance(key, int) and not isinstance(key, bool) and \
                0 <= key < 1 << 8 * self.key_size:
            return key.to_bytes(self.key_size, "little")
        if isinstance(key, (bytes, bytearray)) and len(key) == self.key_size:
            return bytes(key)
        raise MapError(f"map {self.name!r}: a key is an int or "
                       f"{count_of(self.key_size, 'byte')}")

    def check_inner(self, inner: BpfMap) -> None:
        """MapError unless `inner` has the inner maps' shape."""
        want = self.inner
        if want is None:
            raise MapError(f"map {self.name!r} has no inner map definition")
        size_free = bool(want.flags & BPF_F_INNER_MAP)
        got = (inner.type, inner.key_size, inner.value_size, inner.flags,
               0 if size_free else inner.max_entries)
        need = (want.type, want.key_size, want.value_size, want.flags,
                0 if size_free else want.max_entries)
        if got != need or inner.kind == "map_of_maps":
            raise MapError(f"map {self.name!r}: inner map {inner.name!r} is not of the inner "
                           f"definition's shape (type, key and value sizes, flags, max_entries "
                           f"{need} vs {got})")

    def __setitem__(self, key: Any, inner: BpfMap) -> None:
        slot = self._key(key)
        if not isinstance(inner, BpfMap):
            raise MapError(f"map {self.name!r}: a value is a map, not {type(inner).__name__}")
        self.check_inner(inner)
        if self.type == MapType.ARRAY_OF_MAPS and int.from_bytes(slot, "little") >= \
                self.max_entries:
            raise MapError(f"map {self.name!r}: index {int.from_bytes(slot, 'little')} is past "
                           f"max_entries {self.max_entries}")
        if slot not in self.slots and len(self.slots) >= self.max_entries:
            raise MapError(f"map {self.name!r} is full ({self.max_entries} entries)")
        if not inner.handle:
            inner.handle = id(inner)
        self.slots[slot] = inner

    def __getitem__(self, key: Any) -> BpfMap:
        found = self.slots.get(self._key(key))
        if found is None:
            raise KeyError(key)
        return found

    def __delitem__(self, key: Any) -> None:
        if self.slots.pop(self._key(key), None) is None:
            raise KeyError(key)

    def __len__(self) -> int:
        return len(self.slots)

    def __contains__(self, key: Any) -> bool:
        return self._key(key) in self.slots

    def lookup_map(self, key: bytes, maps: dict[int, Any]) -> int:
        """bpf_map_lookup_elem: the inner map's handle (added to `maps`, the
        helpers' table, so the map helpers take it), or 0."""
        found = self.slots.get(bytes(key))
        if found is None:
            return 0
        maps[found.handle] = found
        return found.handle

    def describe(self) -> str:
        """Name, kind, key size, limit, inner shape."""
        inner = "no inner definition" if self.inner is None else \
            f"inner type {self.inner.type}"
        return (f"{self.name}: {MapType(self.type).name.lower()}, key "
                f"{count_of(self.key_size, 'byte')}, max_entries {self.max_entries}, {inner}")

    def entries_text(self, limit: int) -> list[str]:
        """key -> inner map name."""
        return [f"{key.hex()} -> {inner.name}" for key, inner in
                list(self.slots.items())[:limit]]

    def __repr__(self) -> str:
        return f"MapOfMaps({self.name!r}, {MapType(self.type).name}, max_entries={self.max_entries})"


register(MapType.ARRAY_OF_MAPS, MapOfMaps)
register(MapType.HASH_OF_MAPS, MapOfMaps)
