"""Cgroup local storage and spin locks: the cgroup_storage and
percpu_cgroup_storage map types, bpf_get_local_storage, bpf_spin_lock and
bpf_spin_unlock (Impl.MAPS in ebpfvm.helper_table; RFC 9669 section 5.3,
helper functions, and section 4, maps).

A cgroup storage map holds one value per (cgroup, attach type) a program is
attached to; its key is ``struct bpf_cgroup_storage_key {u64
cgroup_inode_id; u32 attach_type;}`` (16 bytes) or the bare u64 cgroup id.
ebpfvm attaches programs to no cgroup, so the map lists no entry: like the
kernel's BPF_PROG_TEST_RUN, each run gets a fresh zeroed storage of its own
(one per map, for the attach type of the run) that bpf_get_local_storage
returns and that is dropped when the run ends.

A VM run is single-threaded, so a spin lock only has to be taken and given
back: bpf_spin_lock sets the lock word (1, as the kernel's queued spin lock
does) and bpf_spin_unlock clears it. What the kernel's verifier refuses at
load time (a second lock while one is held, an unlock of a lock not held or
of another lock, a lock word that is not in a map value) is a
:class:`LockMisuse` here, at run time; a lock still held when the run ends is
given back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from .errors import EbpfError, MapError, count_of
from .helpers import Helper, HelperContext, numbered
from .mapbase import BpfMap, MapSpec, register

__all__ = ["CGROUP_STORAGE", "PERCPU_CGROUP_STORAGE", "CgroupStorage", "LockMisuse",
           "cgroup_helpers", "lock_helpers", "lock_offsets"]

CGROUP_STORAGE = 19
PERCPU_CGROUP_STORAGE = 21
_KEY_SIZES = (8, 16)
_LOCK_SIZE = 4
PERCPU_MAX_VALUE = 32 << 10
"""The largest percpu_cgroup_storage value: the kernel refuses larger ones
(above its per-CPU allocator's minimum unit size) with E2BIG."""


class LockMisuse(EbpfError):
    """bpf_spin_lock / bpf_spin_unlock used as the kernel's verifier forbids
    (RFC 9669 section 5.3): `reason` says how, `address` is the lock's."""

    def __init__(self, reason: str, address: int) -> None:
        super().__init__(f"{reason} (lock at {address:#x})")
        self.reason = reason
        self.address = address


class CgroupStorage(BpfMap):
    """A cgroup_storage or percpu_cgroup_storage map: `storages` maps
    (cgroup id, attach type) to the value of each attachment (none in
    ebpfvm); a run's own storage comes from :meth:`run_storage`."""

    kind = "cgroup_storage"

    @classmethod
    def check_shape(cls, spec: MapSpec) -> None:
        """The kernel's checks: a 16- or 8-byte key, a value, max_entries 0."""
        if spec.key_size not in _KEY_SIZES:
            raise MapError(f"map {spec.name!r}: cgroup storage keys are 16 or 8 bytes, "
                           f"not {spec.key_size}")
        if spec.value_size <= 0:
            raise MapError(f"map {spec.name!r}: cgroup storage needs a value")
        if spec.type == PERCPU_CGROUP_STORAGE and spec.value_size > PERCPU_MAX_VALUE:
            raise MapError(f"map {spec.name!r}: percpu cgroup storage values are at most "
                           f"{PERCPU_MAX_VALUE} bytes, not {spec.value_size}")
        if spec.max_entries != 0:
            raise MapError(f"map {spec.name!r}: cgroup storage max_entries must be 0")

    @classmethod
    def memory_bytes(cls, spec: MapSpec) -> int:
        """One value: the storage of a run."""
        return spec.value_size

    @classmethod
    def create(cls, spec: MapSpec, _max_bytes: int) -> CgroupStorage:
        """A new, empty cgroup storage map."""
        return cls(spec.name, spec.type, spec.key_size, spec.value_size, spec.flags)

    def __init__(self, name: str, map_type: int, key_size: int, value_size: int,
                 flags: int = 0) -> None:
        self.check_shape(MapSpec(name, map_type, key_size, value_size, 0, flags))
        self._init_shape(name, map_type, key_size, value_size, 0, flags)
        self.handle = 0
        self.storages: dict[tuple[int, int], bytearray] = {}
        """(cgroup id, attach type) -> value of each attachment."""
        self._run: dict[int, int] = {}
        self.value_codec: Any = None
        """The BTF codec of the value type, when the object describes it."""

    def set_btf(self, _key_codec: Any, value_codec: Any) -> None:
        """Keep the value codec: where its struct bpf_spin_lock is."""
        self.value_codec = value_codec

    def describe(self) -> str:
        """Name, type, key and value sizes."""
        kind = "percpu_cgroup_storage" if self.type == PERCPU_CGROUP_STORAGE else "cgroup_storage"
        return (f"{self.name}: {kind}, key {count_of(self.key_size, 'byte')}, "
                f"value {count_of(self.value_size, 'byte')}")

    def entries_text(self, limit: int) -> list[str]:
        """``(cgroup, attach type) -> value`` lines."""
        return [f"{key} -> {bytes(value).hex()}" for key, value in
                list(self.storages.items())[:limit]]

    def key_of(self, key: bytes) -> tuple[int, int]:
        """(cgroup id, attach type) of a map key (an 8-byte key: any attach type, 0)."""
        if len(key) != self.key_size:
            raise MapError(f"map {self.name!r}: key must be {self.key_size} bytes")
        cgroup = int.from_bytes(key[:8], "little")
        return cgroup, int.from_bytes(key[8:12], "little") if self.key_size == 16 else 0

    def __iter__(self) -> Iterator[bytes]:
        for cgroup, attach in list(self.storages):
            key = cgroup.to_bytes(8, "little")
            yield key + attach.to_bytes(4, "little") + bytes(4) if self.key_size == 16 else key

    def __len__(self) -> int:
        return len(self.storages)

    def __getitem__(self, key: bytes) -> bytes:
        found = self.storages.get(self.key_of(bytes(key)))
        if found is None:
            raise KeyError(key)
        return bytes(found)

    def run_storage(self, ctx: HelperContext, attach_type: int = 0) -> int:
        """The address of this run's storage for `attach_type`: a zeroed
        value the first time in a run (BPF_PROG_TEST_RUN allocates one per
        run), dropped when the run ends."""
        address = self._run.get(attach_type)
        if address is None:
            address = ctx.add_region(bytearray(self.value_size), f"map {self.name}", True)
            if not self._run:
                ctx.at_exit(self._run.clear)
            self._run[attach_type] = address
        return address


def lock_offsets(value_codec: Any) -> frozenset[int] | None:
    """The offsets of the struct bpf_spin_lock members of a map's BTF value
    type (the value itself when it is one); None without BTF."""
    from .btf import BtfKind  # btf imports the maps

    if value_codec is None:
        return None
    found = value_codec.type
    if found.kind is BtfKind.STRUCT and found.name == "bpf_spin_lock":
        return frozenset({0})
    if found.kind not in (BtfKind.STRUCT, BtfKind.UNION):
        return frozenset()
    return frozenset((offset & 0xFFFFFF) // 8 for _name, member, offset in found.items
                     if (kind := value_codec.btf.strip(member)).kind is BtfKind.STRUCT
                     and kind.name == "bpf_spin_lock")


class _LockHelpers:
    """bpf_get_local_storage and the spin lock helpers over one VM's maps."""

    def __init__(self, maps: dict[int, Any]) -> None:
        self.maps = maps
        self.held: int | None = None

    def get_local_storage(self, ctx: HelperContext, handle: int, flags: int, *_rest: int) -> int:
        """The run's storage of the cgroup storage map `handle`; the kernel's
        verifier refuses non-zero flags, a MapError here."""
        found = self.maps.get(handle)
        if found is None or found.kind != "cgroup_storage":
            raise MapError(f"no cgroup storage map has handle {handle:#x}")
        if flags != 0:
            raise MapError(f"bpf_get_local_storage: flags must be 0, not {flags:#x}")
        return cast(CgroupStorage, found).run_storage(ctx)

    def _check(self, ctx: HelperContext, address: int) -> None:
        if address % _LOCK_SIZE:
            raise LockMisuse("a bpf_spin_lock is 4-byte aligned", address)
        region, offset = ctx.space.find(address, _LOCK_SIZE, "store", ctx.pc)
        if not (region.name.startswith("map ") or region.name == "allowed"):
            raise LockMisuse("a bpf_spin_lock must be in a map value", address)
        for table in self.maps.values():
            if region.name == f"map {table.name}" and table.value_size > 0:
                offsets = lock_offsets(getattr(table, "value_codec", None))
                if offsets is not None and offset % table.value_size not in offsets:
                    raise LockMisuse(f"map {table.name!r}: not the struct bpf_spin_lock of "
                                     "its value", address)

    def lock(self, ctx: HelperContext, address: int, *_rest: int) -> int:
        """Take the lock at `address` (none may be held)."""
        self._check(ctx, address)
        if self.held is not None:
            raise LockMisuse("a second bpf_spin_lock while one is held", address)
        ctx.write(address, (1).to_bytes(_LOCK_SIZE, "little"))
        self.held = address
        ctx.held_lock = (address, ctx.pc)
        ctx.at_exit(self._release)
        return 0

    def unlock(self, ctx: HelperContext, address: int, *_rest: int) -> int:
        """Give back the lock at `address` (the one held)."""
        self._check(ctx, address)
        if self.held != address:
            reason = ("bpf_spin_unlock without a lock held" if self.held is None
                      else "bpf_spin_unlock of a lock not held")
            raise LockMisuse(reason, address)
        ctx.write(address, bytes(_LOCK_SIZE))
        self.held = ctx.held_lock = None
        return 0

    def _release(self) -> None:
        self.held = None


def cgroup_helpers(maps: dict[int, Any]) -> dict[int, Helper]:
    """bpf_get_local_storage, bpf_spin_lock and bpf_spin_unlock over `maps`
    (handle -> map), part of ebpfvm.maps.map_helpers."""
    table = _LockHelpers(maps)
    return numbered([
        Helper(table.get_local_storage, "bpf_get_local_storage", context=True),
        Helper(table.lock, "bpf_spin_lock", context=True),
        Helper(table.unlock, "bpf_spin_unlock", context=True),
    ])


def lock_helpers(maps: dict[int, Any]) -> dict[int, Helper]:
    """bpf_spin_lock and bpf_spin_unlock alone, for a program that uses no
    map but locks a struct bpf_spin_lock of its global data (the kernel's
    .data sections are array maps)."""
    table = _LockHelpers(maps)
    return numbered([
        Helper(table.lock, "bpf_spin_lock", context=True),
        Helper(table.unlock, "bpf_spin_unlock", context=True),
    ])


register(CGROUP_STORAGE, CgroupStorage)
register(PERCPU_CGROUP_STORAGE, CgroupStorage)
