"""Cgroup local storage (map types 19 and 21, bpf_get_local_storage) and
spin locks (bpf_spin_lock, bpf_spin_unlock), in every engine, against the
kernel: tests/data/elf/cgroup_storage.c, whose results below are the ones
BPF_PROG_TEST_RUN gave (test_kernel_agrees checks them again where bpf()
works)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest

import ebpfvm
import kernel_oracle
from ebpfvm.cgroup_storage import CgroupStorage, LockMisuse
from ebpfvm.errors import HelperFault, MapError
from ebpfvm.maps import create_map

DATA = Path(__file__).parent / "data" / "elf"
OBJECT = DATA / "cgroup_storage.o"

FRAME = bytes.fromhex("02000000000b02000000000a0800")
PACKETS = (FRAME + bytes(100), FRAME + bytes(46))
"""Two frames: len (frame length - 14 for cgroup_skb) 100, then 46."""
KERNEL_RUNS = (
    (1, (11, 100, 7), bytes.fromhex("020000000000000001000000")),
    (0, (11, 46, 7), bytes.fromhex("040000000000000002000000")),
)
"""Per run, from the kernel: the return value (len > 50), out[0..2] (the
shared storage's cnt: 1 + 10 through two bpf_get_local_storage calls of one
run; its sum: this run's len only, as each run gets a fresh storage; the
per-CPU storage: 3 + 4) and counters[0] (before += 2, the lock word 0
again, cnt += 1)."""

MISUSE = {
    "double_lock": "function calls are not allowed while holding a lock",
    "unlock_unlocked": "bpf_spin_unlock without taking a lock",
    "nonzero_flags": "get_local_storage() doesn't support non-zero flags",
    "wrong_offset": "off 8 doesn't point to 'struct bpf_spin_lock' that is at 4",
}
"""Programs the kernel's verifier refuses, with the last line of its log."""


def _out(obj: Any) -> tuple[int, ...]:
    table = obj.maps["out"]
    return tuple(int.from_bytes(table[struct.pack("<I", i)], "little") for i in range(3))


def test_storage_and_locks_as_the_kernel(engine: str) -> None:
    with ebpfvm.load(OBJECT) as obj:
        runner = obj.skb("storage_prog", engine=engine)
        for packet, (retval, out, counter) in zip(PACKETS, KERNEL_RUNS, strict=True):
            assert runner.run(packet).r0 == retval
            assert _out(obj) == out
            assert obj.maps["counters"][bytes(4)] == counter
        # BPF_PROG_TEST_RUN's storages are not linked into the maps.
        assert len(obj.maps["shared"]) == 0 and list(obj.maps["percpu"]) == []


@pytest.mark.parametrize("name", sorted(MISUSE))
def test_what_the_verifier_refuses_faults(engine: str, name: str) -> None:
    """A run-time fault where the kernel refuses to load: a second lock
    while one is held, an unlock without a lock, non-zero flags, a lock
    that is not the map value's struct bpf_spin_lock (its BTF says where)."""
    with ebpfvm.load(OBJECT) as obj:
        runner = obj.skb(name, engine=engine)
        with pytest.raises(HelperFault) as info:
            runner.run(FRAME + bytes(101))  # len 101: flags len & 1 = 1
        assert isinstance(info.value.cause, (LockMisuse, MapError))
        # The run's lock was given back: a correct program runs after it.
        good = obj.skb("storage_prog", engine=engine)
        assert good.run(PACKETS[0]).r0 == 1


SHAPES = [
    # (map type, key size, value size, max_entries, the kernel accepts)
    (19, 16, 8, 0, True), (19, 8, 8, 0, True), (19, 12, 8, 0, False), (19, 16, 0, 0, False),
    (19, 16, 8, 1, False), (19, 16, 32769, 0, True),
    (21, 16, 8, 0, True), (21, 8, 8, 0, True), (21, 12, 8, 0, False), (21, 16, 8, 1, False),
    (21, 16, 32768, 0, True), (21, 16, 32769, 0, False),
]
"""BPF_MAP_CREATE's answers (EINVAL for the key, value and max_entries; E2BIG
for a per-CPU value over 32 KiB)."""


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_map_shapes(shape: tuple[int, int, int, int, bool]) -> None:
    map_type, key_size, value_size, max_entries, accepted = shape
    if accepted:
        made = create_map("m", map_type, key_size, value_size, max_entries)
        assert isinstance(made, CgroupStorage) and len(made) == 0
    else:
        with pytest.raises(MapError):
            create_map("m", map_type, key_size, value_size, max_entries)


def test_map_shapes_are_the_kernels() -> None:
    if (reason := kernel_oracle.available()) is not None:
        pytest.skip(f"bpf() is not available here: {reason}")
    for map_type, key_size, value_size, max_entries, accepted in SHAPES:
        try:
            os.close(kernel_oracle.map_create(map_type, key_size, value_size, max_entries))
            found = True
        except OSError:
            found = False
        assert found == accepted, (map_type, key_size, value_size, max_entries)


def test_kernel_agrees() -> None:
    """KERNEL_RUNS and MISUSE are what the kernel does with the object."""
    with kernel_oracle.kernel_object(OBJECT) as (maps, load):
        prog = load("storage_prog")
        for packet, (retval, out, counter) in zip(PACKETS, KERNEL_RUNS, strict=True):
            assert prog.test_run(packet)["retval"] == retval
            found = tuple(int.from_bytes(maps["out"].lookup(struct.pack("<I", i)), "little")
                          for i in range(3))
            assert found == out
            assert maps["counters"].lookup(bytes(4)) == counter
        prog.close()
        for name, message in MISUSE.items():
            with pytest.raises(OSError) as info:
                load(name)
            assert message in info.value.log
