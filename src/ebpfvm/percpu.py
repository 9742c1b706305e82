"""Per-CPU maps (percpu_array, percpu_hash, lru_percpu_hash): one value per
possible CPU for each key, as the kernel keeps them.

A program sees, looks up and updates the value of the CPU its run is on
(:attr:`ebpfvm.kernel.KernelEnv.cpu`, 0 by default). From Python a value is
the list of every CPU's value, as libbpf's ``bpf_map_lookup_elem`` returns it:
``m[key]`` is a list of bytes, ``m.typed[key]`` a list of decoded values, and
``m[key] = value`` takes such a list or one value, written to every CPU.

The number of possible CPUs is :data:`POSSIBLE_CPUS` (2, the corpus's
reference machine) unless the map is made with another
(``ebpfvm.load(..., possible_cpus=N)``, :meth:`PerCpuMap.set_possible_cpus`).

Layout: the slab holds every CPU's values, CPU by CPU: the value of slot `s`
on CPU `c` starts at ``(c * max_entries + s) * value_size``, so one region
covers the map, as for the other maps.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .errors import ArrayIndexError, MapError, count_of
from .lru import Lru, lru_max_entries
from .mapbase import MAX_MAP_BYTES, MapSpec, MapTooLarge, MapType, register
from .mapbase import as_bytes as _as_bytes
from .maps import BPF_ANY, E2BIG, EINVAL, Map, MapFull, TypedMap
from .memory import Region, address_of

__all__ = ["MAX_PERCPU_VALUE", "POSSIBLE_CPUS", "PerCpuMap", "PerCpuTypedMap"]

POSSIBLE_CPUS = 2
"""Possible CPUs of a per-CPU map by default (the corpus reference machine's)."""
MAX_PERCPU_VALUE = 32768
"""The largest per-CPU value: the kernel refuses values above
PCPU_MIN_UNIT_SIZE (32 KiB) with E2BIG."""
MAX_POSSIBLE_CPUS = 4096


class PerCpuMap(Map):
    """A per-CPU array or hash map: each key has one value per possible CPU."""

    percpu: ClassVar[bool] = True

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """The keyed checks, and values of at most MAX_PERCPU_VALUE bytes."""
        super().check_shape(spec)
        if spec.value_size > MAX_PERCPU_VALUE:
            raise MapError(f"map {spec.name!r}: per-CPU value size {spec.value_size} exceeds "
                           f"{MAX_PERCPU_VALUE}")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """Every CPU's values, and for hash maps each entry's key and bookkeeping."""
        return super().memory_bytes(spec) + \
            spec.value_size * spec.max_entries * (POSSIBLE_CPUS - 1)

    @classmethod
    def create(cls, spec: MapSpec, max_bytes: int) -> PerCpuMap:
        """A new per-CPU map with POSSIBLE_CPUS CPUs."""
        return cls(spec.name, MapType(spec.type), spec.key_size, spec.value_size,
                   spec.max_entries, spec.flags, max_bytes=max_bytes)

    def __init__(self, name: str, map_type: MapType, key_size: int, value_size: int,
                 max_entries: int, flags: int = 0, *, max_bytes: int = MAX_MAP_BYTES,
                 ncpus: int = POSSIBLE_CPUS) -> None:
        if map_type == MapType.LRU_PERCPU_HASH:
            max_entries = lru_max_entries(max_entries, flags, ncpus)
        super().__init__(name, map_type, key_size, value_size, max_entries, flags,
                         slab=bytearray(max(value_size, 0) * max(max_entries, 0) * ncpus),
                         max_bytes=max_bytes, ncpus=ncpus)
        self.ncpus = ncpus
        self.max_bytes = max_bytes

    def set_possible_cpus(self, ncpus: int) -> None:
        """Give the map `ncpus` possible CPUs (before any program uses it:
        the slab moves); every value is kept on the CPUs both counts have."""
        if not isinstance(ncpus, int) or not 1 <= ncpus <= MAX_POSSIBLE_CPUS:
            raise MapError(f"map {self.name!r}: possible CPUs must be 1..{MAX_POSSIBLE_CPUS}, "
                           f"not {ncpus!r}")
        block = self.value_size * self.max_entries
        spec = MapSpec(self.name, self.type, self.key_size, self.value_size, self.max_entries)
        size = Map.memory_bytes(spec) + block * (ncpus - 1)
        if size > self.max_bytes:
            raise MapTooLarge("map memory", self.max_bytes, size, self.name)
        slab = bytearray(block * ncpus)
        keep = min(ncpus, self.ncpus) * block
        slab[:keep] = self.slab[:keep]
        self.slab = slab
        self._pin = memoryview(slab)
        self.base = address_of(slab)
        self.region = Region(self.base, memoryview(slab), self.region.writable, self.region.name)
        self.ncpus = ncpus
        if self.native_hash is not None:
            self.native_hash.set_slab(self.base, ncpus)
        if self._lru is not None and not self._slots:  # the lists are per CPU
            self._lru = Lru(self.max_entries, ncpus, self._lru.percpu_lists, self._slots)

    def _offset(self, slot: int, cpu: int) -> int:
        if not 0 <= cpu < self.ncpus:
            raise MapError(f"map {self.name!r}: CPU {cpu} is not one of its "
                           f"{self.ncpus} possible CPUs")
        return (cpu * self.max_entries + slot) * self.value_size

    # -- what helpers call --------------------------------------------------------

    def lookup_cpu(self, key: bytes, cpu: int) -> int:
        """The address of `cpu`'s value for `key`, or 0."""
        address = self.lookup_elem(key)
        if not address:
            return 0
        slot = (address - self.base) // self.value_size
        return self.base + self._offset(slot, cpu)

    def update_cpu(self, key: bytes, value: bytes, flags: int, cpu: int) -> int:
        """A program's update on `cpu`: that CPU's value; a new entry's other
        CPUs are zeroed."""
        key = _as_bytes(self.name, "key", key)
        value = _as_bytes(self.name, "value", value)
        if len(key) != self.key_size or len(value) != self.value_size or not self._flags_ok(flags):
            return -EINVAL
        self._offset(0, cpu)  # a CPU past the possible ones is an error
        slot, new = self._place(key, flags, cpu)
        if slot < 0:
            return slot
        size = self.value_size
        if new:
            for other in range(self.ncpus):
                start = self._offset(slot, other)
                self.slab[start : start + size] = bytes(size)
        start = self._offset(slot, cpu)
        self.slab[start : start + size] = value
        return 0

    # -- the Python mapping: a list of every CPU's value --------------------------

    def __getitem__(self, key: bytes) -> list[bytes]:  # type: ignore[override]
        slot = self._slot(self._key(key))
        if slot is None:
            raise KeyError(key)
        return [bytes(self.slab[self._offset(slot, cpu) : self._offset(slot, cpu)
                                + self.value_size]) for cpu in range(self.ncpus)]

    def __setitem__(self, key: bytes, value: Any) -> None:
        values = self._values(value)
        key = self._key(key)
        if self.is_array and self._slot(key) is None:
            raise ArrayIndexError(self.name, int.from_bytes(key[:4], "little"), self.max_entries)
        error = self.update_elem(key, values[0], BPF_ANY)
        if error == -E2BIG:
            raise MapFull(self.name, self.max_entries)
        if error:
            raise MapError(f"map {self.name!r}: update failed with errno {-error}")
        slot = self._slot(key)
        assert slot is not None
        for cpu, data in enumerate(values):
            start = self._offset(slot, cpu)
            self.slab[start : start + self.value_size] = data

    def _values(self, value: Any) -> list[bytes]:
        """One value for every CPU, or a list of one per CPU, as bytes."""
        if isinstance(value, (list, tuple)):
            if len(value) != self.ncpus:
                raise MapError(f"map {self.name!r}: {count_of(len(value), 'value')} for "
                               f"{self.ncpus} possible CPUs")
            values = [_as_bytes(self.name, "value", one) for one in value]
        else:
            values = [_as_bytes(self.name, "value", value)] * self.ncpus
        for one in values:
            if len(one) != self.value_size:
                raise MapError(f"map {self.name!r}: value is {count_of(len(one), 'byte')}, "
                               f"not {self.value_size}")
        return values

    def values_on(self, cpu: int) -> dict[bytes, bytes]:
        """Every key's value on `cpu` (arrays: every index)."""
        return {key: self[key][cpu] for key in self}

    @property
    def typed(self) -> PerCpuTypedMap:
        """The map with keys and each CPU's value decoded from BTF."""
        if self.key_codec is None or self.value_codec is None:
            raise MapError(f"map {self.name!r} has no BTF key and value types")
        return PerCpuTypedMap(self)

    def entries_text(self, limit: int) -> list[str]:
        """``key -> [cpu0, cpu1, ...]`` lines (arrays: the indexes not all zero)."""
        from .mapview import _show, more

        lines: list[str] = []
        keys = [key for key in self if not self.is_array or any(any(v) for v in self[key])]
        for key in keys[:limit]:
            values: list[Any] = list(self[key])
            shown: Any = key
            if self.key_codec is not None and self.value_codec is not None:
                shown = self.key_codec.decode(key)
                values = [self.value_codec.decode(v) for v in values]
            lines.append(f"{_show(shown)} -> [{', '.join(_show(v) for v in values)}]")
        return more(lines, len(keys))

    def __repr__(self) -> str:
        return (f"PerCpuMap({self.name!r}, {self.type.name}, key_size={self.key_size}, "
                f"value_size={self.value_size}, max_entries={self.max_entries}, "
                f"ncpus={self.ncpus})")


class PerCpuTypedMap(TypedMap):
    """A per-CPU map through its BTF types: each value is a list, one per
    CPU (deleting, iterating and the length are TypedMap's)."""

    raw: PerCpuMap

    def __init__(self, raw: PerCpuMap) -> None:
        super().__init__(raw)

    def __getitem__(self, key: Any) -> list[Any]:
        try:
            found = self.raw[self.raw.key_codec.encode(key)]
        except KeyError:
            raise KeyError(key) from None
        return [self.raw.value_codec.decode(value) for value in found]

    def __setitem__(self, key: Any, value: Any) -> None:
        codec = self.raw.value_codec
        encoded: Any
        try:  # one value for every CPU (a value may itself be a list: an array)
            encoded = codec.encode(value)
        except Exception:
            if not isinstance(value, (list, tuple)):
                raise
            encoded = [codec.encode(one) for one in value]
        self.raw[self.raw.key_codec.encode(key)] = encoded


for _number in (MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH):
    register(_number, PerCpuMap)
