"""An LRU map's key table over its native block (issue 15).

lru_hash and lru_percpu_hash maps keep their keys in the same native block
as hash maps (ebpfvm.nativehash: buckets, elements, the key index the
native runtime's lookup walks; RFC 9669 section 5.4.1: the map helpers'
calls), plus one reference byte a slot. Their LRU lists (ebpfvm.lru) stay in
Python and choose which element (slot) a key takes and which key is
evicted: :class:`NativeSlots` is the key -> slot table the lists update,
written through to the block, and lends the lists the block's reference
bytes (``refs``), which native lookups set.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from .nativehash import NativeHash

__all__ = ["NativeSlots"]


class NativeSlots(MutableMapping[bytes, int]):
    """The key -> slot table of an LRU map, kept in `block` (one truth with
    the native runtime). Setting a key places it in the given slot."""

    def __init__(self, block: NativeHash) -> None:
        self.block = block
        self.refs: Any = block.refs
        """The block's reference bytes, one a slot (ebpfvm.lru reads them)."""

    def __getitem__(self, key: bytes) -> int:
        slot = self.block.find(key)
        if slot is None:
            raise KeyError(key)
        return slot

    def get(self, key: bytes, default: Any = None) -> Any:
        """The slot of `key`, else `default`."""
        slot = self.block.find(key)
        return default if slot is None else slot

    def __setitem__(self, key: bytes, slot: int) -> None:
        self.block.remove(key, free=False)
        self.block.insert_at(key, slot)

    def __delitem__(self, key: bytes) -> None:
        if self.block.remove(key, free=False) is None:
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self.block.find(key) is not None

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.block.keys())

    def __len__(self) -> int:
        return self.block.count
