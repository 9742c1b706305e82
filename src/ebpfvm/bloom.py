"""The bloom filter (BPF_MAP_TYPE_BLOOM_FILTER): a set that answers "maybe
present" or "absent", with no false negatives (RFC 9669 section 5.3:
programs reach maps through helper calls).

A bloom filter has no keys: ``bpf_map_push_elem`` adds a value (flags must
be BPF_ANY) and ``bpf_map_peek_elem`` tests one, returning 0 when it may be
present and -ENOENT when it is not; pop, lookup, update and delete are not
supported. From Python: ``m.add(value)`` and ``value in m``.

It is sized as the kernel sizes it: ``map_extra`` is the number of hash
functions (1 to 15; 0 means 5), and the bit array holds ``max_entries *
hashes / ln 2`` bits (computed as ``* 7 // 5``), rounded up to a power of two
of at least 64 bits, or 2**32 bits when that is more than 2**31. Bit `i` of
a value is set for each hash function `i`: the kernel's jhash of the value's
bytes (jhash2 over u32 words when the size is a multiple of 4, which gives
the same number) with seed ``seed + i``, masked to the array. The kernel
draws `seed` at random unless the map has BPF_F_ZERO_SEED; ebpfvm always
uses 0, so false positives are those of a kernel filter made with
BPF_F_ZERO_SEED, and otherwise only "no false negatives" can be compared.
"""

from __future__ import annotations

from typing import Any

from .errors import MapError, count_of
from .mapbase import BpfMap, MapSpec, MapType, as_bytes, register
from .maps import BPF_ANY, EINVAL, ENOENT

__all__ = ["DEFAULT_HASHES", "BloomFilter", "bitset_bits", "jhash"]

DEFAULT_HASHES = 5
"""The number of hash functions when map_extra is 0."""
_M32 = 0xFFFFFFFF
_JHASH_INITVAL = 0xDEADBEEF


def _rol(word: int, shift: int) -> int:
    return ((word << shift) | (word >> (32 - shift))) & _M32


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    """jhash's mixing of three words."""
    for shift_a, shift_b, shift_c in ((4, 6, 8), (16, 19, 4)):
        a = ((a - c) & _M32) ^ _rol(c, shift_a)
        c = (c + b) & _M32
        b = ((b - a) & _M32) ^ _rol(a, shift_b)
        a = (a + c) & _M32
        c = ((c - b) & _M32) ^ _rol(b, shift_c)
        b = (b + a) & _M32
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    """jhash's final mixing; the hash is the last c."""
    c = ((c ^ b) - _rol(b, 14)) & _M32
    a = ((a ^ c) - _rol(c, 11)) & _M32
    b = ((b ^ a) - _rol(a, 25)) & _M32
    c = ((c ^ b) - _rol(b, 16)) & _M32
    a = ((a ^ c) - _rol(c, 4)) & _M32
    b = ((b ^ a) - _rol(a, 14)) & _M32
    return ((c ^ b) - _rol(b, 24)) & _M32


def jhash(data: bytes, seed: int) -> int:
    """Bob Jenkins' lookup3 hash as the kernel's jhash computes it (words
    read little-endian)."""
    a = b = c = (_JHASH_INITVAL + len(data) + seed) & _M32
    rest = data
    while len(rest) > 12:
        a = (a + int.from_bytes(rest[0:4], "little")) & _M32
        b = (b + int.from_bytes(rest[4:8], "little")) & _M32
        c = (c + int.from_bytes(rest[8:12], "little")) & _M32
        a, b, c = _mix(a, b, c)
        rest = rest[12:]
    if not rest:
        return c
    tail = rest.ljust(12, b"\0")
    a = (a + int.from_bytes(tail[0:4], "little")) & _M32
    b = (b + int.from_bytes(tail[4:8], "little")) & _M32
    c = (c + int.from_bytes(tail[8:12], "little")) & _M32
    return _final(a, b, c)


def bitset_bits(max_entries: int, hashes: int) -> int:
    """The bit array's size, as the kernel computes it (a power of two)."""
    bits = max_entries * hashes
    if bits > _M32 or (bits // 5) * 7 > _M32 or (bits // 5) * 7 > 1 << 31:
        return 1 << 32
    bits = (bits // 5) * 7
    return 64 if bits <= 64 else 1 << (bits - 1).bit_length()


class BloomFilter(BpfMap):
    """A bloom filter: push adds a value, peek tests one."""

    kind = "bloom"

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """No key, a value, entries, and at most 15 hash functions (the
        kernel refuses anything else with EINVAL)."""
        if spec.key_size or spec.value_size <= 0 or spec.max_entries <= 0:
            raise MapError(f"map {spec.name!r}: a bloom filter has no key, and a value size "
                           f"and max_entries above 0")
        if spec.map_extra & ~0xF:
            raise MapError(f"map {spec.name!r}: a bloom filter takes 0 to 15 hash functions "
                           f"in map_extra, not {spec.map_extra}")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """The bit array."""
        return bitset_bits(spec.max_entries, spec.map_extra & 0xF or DEFAULT_HASHES) // 8

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> BloomFilter:
        """A new, empty filter."""
        del max_bytes  # create_map checked memory_bytes
        return cls(spec.name, spec.value_size, spec.max_entries, spec.flags, spec.map_extra)

    def __init__(self, name: str, value_size: int, max_entries: int, flags: int = 0,
                 map_extra: int = 0) -> None:
        self.check_shape(MapSpec(name, MapType.BLOOM_FILTER, 0, value_size, max_entries,
                                 flags, map_extra))
        self._init_shape(name, MapType.BLOOM_FILTER, 0, value_size, max_entries, flags)
        self.map_extra = map_extra
        self.hashes = map_extra & 0xF or DEFAULT_HASHES
        self.mask = bitset_bits(max_entries, self.hashes) - 1
        self.bits = 0
        """The bit array, as one int (bit n of the int is bit n of the array)."""
        self.handle = 0

    def _positions(self, value: bytes) -> list[int]:
        return [jhash(value, index) & self.mask for index in range(self.hashes)]

    def push_elem(self, value: bytes, flags: int = BPF_ANY) -> int:
        """Add `value` (bpf_map_push_elem): 0, or -EINVAL for flags other
        than BPF_ANY or a value of the wrong size."""
        value = as_bytes(self.name, "value", value)
        if flags != BPF_ANY or len(value) != self.value_size:
            return -EINVAL
        for position in self._positions(value):
            self.bits |= 1 << position
        return 0

    def test_elem(self, value: bytes) -> int:
        """bpf_map_peek_elem: 0 when `value` may be present, else -ENOENT."""
        value = as_bytes(self.name, "value", value)
        if len(value) != self.value_size:
            return -EINVAL
        if all(self.bits >> position & 1 for position in self._positions(value)):
            return 0
        return -ENOENT

    def add(self, value: bytes) -> None:
        """Add `value` from Python; MapError for a value of the wrong size."""
        if self.push_elem(value):
            raise MapError(f"map {self.name!r}: a value is {count_of(self.value_size, 'byte')}")

    def __contains__(self, value: Any) -> bool:
        """Whether `value` may be present (never False for an added value)."""
        result = self.test_elem(value)
        if result == -EINVAL:
            raise MapError(f"map {self.name!r}: a value is {count_of(self.value_size, 'byte')}")
        return result == 0

    def describe(self) -> str:
        """Name, kind, value size, limit, hash functions."""
        return (f"{self.name}: bloom_filter, value {count_of(self.value_size, 'byte')}, "
                f"max_entries {self.max_entries}, {self.hashes} hash functions")

    def entries_text(self, limit: int) -> list[str]:
        """How many bits are set."""
        return [f"{bin(self.bits).count('1')} of {self.mask + 1} bits set"][:limit]

    def __repr__(self) -> str:
        return (f"BloomFilter({self.name!r}, value_size={self.value_size}, "
                f"max_entries={self.max_entries}, hashes={self.hashes})")


register(MapType.BLOOM_FILTER, BloomFilter)
