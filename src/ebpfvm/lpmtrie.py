"""The longest-prefix-match trie (BPF_MAP_TYPE_LPM_TRIE), the map type of
routing and firewall tables (RFC 9669 section 5.3: programs reach maps
through helper calls).

A key is ``struct bpf_lpm_trie_key``: a u32 prefix length, then the address
bytes (``key_size - 4`` of them, at most 256), most significant bit first. An
update stores (or replaces) the entry of exactly that prefix; a lookup, from
a program or from Python, finds the entry with the longest prefix matching
the key's address within the key's prefix length. As in the kernel, the trie
must be created with BPF_F_NO_PREALLOC, a full trie refuses a new prefix
with ENOSPC, and the key an entry keeps is the one last stored for it.
"""

from __future__ import annotations

from typing import Any

from .errors import MapError, MapFull, count_of
from .mapbase import MapSpec, MapType, as_bytes, register
from .maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, EEXIST, EINVAL, ENOENT, HASH_ENTRY_BYTES, Map

__all__ = ["BPF_F_NO_PREALLOC", "LPM_DATA_SIZE_MAX", "LpmTrie"]

BPF_F_NO_PREALLOC = 1
LPM_DATA_SIZE_MAX = 256
"""The longest address a key may hold (bytes)."""
ENOSPC = 28


class LpmTrie(Map):
    """An LPM trie: a keyed map whose lookups match the longest prefix."""

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """Keys of a u32 prefix length and 1 to 256 address bytes, and
        BPF_F_NO_PREALLOC (the kernel refuses anything else with EINVAL)."""
        if not 4 < spec.key_size <= 4 + LPM_DATA_SIZE_MAX or spec.value_size <= 0:
            raise MapError(f"map {spec.name!r}: an lpm_trie key is a u32 prefix length and "
                           f"1 to {LPM_DATA_SIZE_MAX} bytes, not {count_of(spec.key_size, 'byte')}")
        if spec.flags & ~BPF_F_NO_PREALLOC or not spec.flags & BPF_F_NO_PREALLOC:
            raise MapError(f"map {spec.name!r}: an lpm_trie needs BPF_F_NO_PREALLOC "
                           f"and no other flag (flags {spec.flags:#x})")

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> LpmTrie:
        """A new, empty trie."""
        return cls(spec.name, MapType.LPM_TRIE, spec.key_size, spec.value_size,
                   spec.max_entries, spec.flags, max_bytes=max_bytes)

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """Each entry's key, value and node."""
        return (spec.key_size + spec.value_size + HASH_ENTRY_BYTES) * spec.max_entries

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stored: dict[bytes, bytes] = {}
        """The key each entry keeps, by its canonical (masked) form."""
        self._lengths: dict[int, int] = {}
        """How many entries have each prefix length (lookups try these only)."""

    @property
    def max_prefixlen(self) -> int:
        """The longest prefix, in bits."""
        return 8 * (self.key_size - 4)

    def _canon(self, key: bytes, prefixlen: int | None = None) -> bytes | None:
        """`key` with the address bits past its prefix cleared, or None when
        the prefix is longer than the address."""
        length = int.from_bytes(key[:4], "little") if prefixlen is None else prefixlen
        if length > self.max_prefixlen or len(key) != self.key_size:
            return None
        address = int.from_bytes(key[4:], "big")
        drop = self.max_prefixlen - length
        address = address >> drop << drop
        return length.to_bytes(4, "little") + address.to_bytes(self.key_size - 4, "big")

    def _slot(self, key: bytes) -> int | None:
        """The slot of the longest prefix matching `key`, or None."""
        length = int.from_bytes(key[:4], "little") if len(key) == self.key_size else -1
        if length < 0 or length > self.max_prefixlen:
            return None
        for prefix in sorted((n for n in self._lengths if n <= length), reverse=True):
            stored = self._stored.get(self._canon(key, prefix) or b"")
            if stored is not None:
                return self._slots.get(stored)
        return None

    def update_elem(self, key: bytes, value: bytes, flags: int = BPF_ANY,
                    _cpu: int = 0) -> int:
        """Store `value` for exactly the key's prefix (on any CPU); 0 or a
        negative errno."""
        key = as_bytes(self.name, "key", key)
        value = as_bytes(self.name, "value", value)
        canon = self._canon(key)
        if canon is None or len(value) != self.value_size or flags not in (
                BPF_ANY, BPF_NOEXIST, BPF_EXIST):
            return -EINVAL
        old = self._stored.get(canon)
        if old is None:
            if flags == BPF_EXIST:
                return -ENOENT
            if len(self._slots) >= self.max_entries:
                return -ENOSPC
            slot = self._free.pop() if self._free else self._fresh
            if slot == self._fresh:
                self._fresh += 1
            length = int.from_bytes(key[:4], "little")
            self._lengths[length] = self._lengths.get(length, 0) + 1
        else:
            if flags == BPF_NOEXIST:
                return -EEXIST
            slot = self._slots.pop(old)
        self._slots[key] = slot
        self._stored[canon] = key
        start = slot * self.value_size
        self.slab[start : start + self.value_size] = value
        return 0

    def delete_elem(self, key: bytes) -> int:
        """Remove the entry of exactly the key's prefix; 0 or -ENOENT."""
        canon = self._canon(as_bytes(self.name, "key", key))
        stored = self._stored.pop(canon, None) if canon is not None else None
        if stored is None:
            return -ENOENT
        self._free.append(self._slots.pop(stored))
        length = int.from_bytes(stored[:4], "little")
        self._lengths[length] -= 1
        if not self._lengths[length]:
            del self._lengths[length]
        return 0

    def __setitem__(self, key: bytes, value: bytes) -> None:
        error = self.update_elem(self._key(key), value)
        if error == -ENOSPC:
            raise MapFull(self.name, self.max_entries)
        if error:
            raise MapError(f"map {self.name!r}: update failed with errno {-error}")


register(MapType.LPM_TRIE, LpmTrie)
