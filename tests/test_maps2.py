"""Map types of issue 13 point 4: the bloom filter (map type 30), in every
engine and against the kernel (BPF_MAP_CREATE and the syscall's push and
peek, and tests/data/elf/bloom.c under BPF_PROG_TEST_RUN)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

import ebpfvm
import kernel_oracle
from ebpfvm.bloom import BloomFilter, bitset_bits, jhash
from ebpfvm.errors import MapError
from ebpfvm.mapinmap import MapOfMaps
from ebpfvm.maps import create_map
from ebpfvm.percpu import POSSIBLE_CPUS
from ebpfvm.perf import ENOSPC, EOPNOTSUPP, PerfEventArray, PerfRecord, record_bytes

OBJECT = Path(__file__).parent / "data" / "elf" / "bloom.o"
ZERO_SEED = 0x40
BLOOM = 30

RUNS = (((5, 5), 1), ((0, 5), 1), ((0, 6), 2), ((7, 6), 2), ((0, 7), 1),
        ((0xFFFFFFFF, 1), 2022))
"""((add, test), return value) of bloom.c's runs in order, from the kernel
(test_kernel_runs_the_object checks them again where bpf() works): an added
value may be present, one never added is absent (with 3 hashes over 8192
bits a false positive has odds below 1e-8), BPF_EXIST is EINVAL."""


def _packet(add: int, test: int) -> bytes:
    return struct.pack("<II", add, test) + bytes(56)


def test_program_pushes_and_peeks(engine: str) -> None:
    with ebpfvm.load(OBJECT) as obj:
        seen = obj.maps["seen"]
        assert isinstance(seen, BloomFilter) and seen.hashes == 3  # map_extra from BTF
        runner = obj.xdp("bloom", engine=engine)
        for (add, test), retval in RUNS:
            assert runner.run(_packet(add, test)).r0 == retval
        assert struct.pack("<I", 7) in seen and struct.pack("<I", 0xFFFFFFFF) not in seen


def test_python_api() -> None:
    bloom = create_map("b", BLOOM, 0, 3, 50)
    assert bloom.hashes == 5 and b"abc" not in bloom  # map_extra 0: 5 hashes
    bloom.add(b"abc")
    assert b"abc" in bloom
    with pytest.raises(MapError):
        bloom.add(b"ab")
    with pytest.raises(MapError):
        _ = b"abcd" in bloom


def test_jhash_of_nothing_is_its_initial_value() -> None:
    """jhash of no bytes returns its start, 0xdeadbeef + length + seed."""
    assert jhash(b"", 0) == 0xDEADBEEF and jhash(b"", 1) == 0xDEADBEF0


@pytest.mark.parametrize(("entries", "hashes", "bits"), [
    (1, 1, 64), (9, 5, 64), (10, 5, 128), (100, 3, 512), (1000, 3, 8192), (1 << 30, 15, 1 << 32)])
def test_bit_array_sizes(entries: int, hashes: int, bits: int) -> None:
    """entries * hashes * 7 / 5 rounded up to a power of two, at least 64."""
    assert bitset_bits(entries, hashes) == bits


SHAPES = [
    # (key size, value size, max_entries, flags, map_extra)
    (4, 4, 10, 0, 0), (0, 0, 10, 0, 0), (0, 4, 0, 0, 0), (0, 4, 10, 0, 16),
    (0, 4, 10, 1, 0), (0, 4, 10, ZERO_SEED, 15)]


def _kernel() -> None:
    why = kernel_oracle.available()
    if why is not None:
        pytest.skip(f"bpf() is not available here: {why}")


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_as_the_kernel(shape: tuple[int, int, int, int, int]) -> None:
    _kernel()
    try:
        os.close(kernel_oracle.map_create_extra(BLOOM, *shape))
        kernel = True
    except OSError:
        kernel = False
    key_size, value_size, entries, flags, extra = shape
    try:
        create_map("b", BLOOM, key_size, value_size, entries, flags, map_extra=extra)
        ours = True
    except MapError:
        ours = False
    assert ours == kernel


@pytest.mark.parametrize(("value_size", "entries", "hashes"), [(4, 10, 1), (5, 40, 3), (16, 12, 0)])
def test_false_positives_as_a_zero_seed_kernel(value_size: int, entries: int,
                                              hashes: int) -> None:
    """With BPF_F_ZERO_SEED the kernel's hashes are ebpfvm's: the same values
    test present, false positives included (small arrays make many)."""
    _kernel()
    fd = kernel_oracle.map_create_extra(BLOOM, 0, value_size, entries, ZERO_SEED, hashes)
    ours = create_map("b", BLOOM, 0, value_size, entries, ZERO_SEED, map_extra=hashes)
    try:
        for number in range(0, 3 * entries, 3):
            value = number.to_bytes(value_size, "little")
            kernel_oracle.keyless_elem(kernel_oracle.BPF_MAP_UPDATE_ELEM, fd, value)
            ours.add(value)
        found = []
        for number in range(400):
            value = number.to_bytes(value_size, "little")
            try:
                kernel_oracle.keyless_elem(kernel_oracle.BPF_MAP_LOOKUP_ELEM, fd, value)
                found.append(number)
            except OSError:
                pass
        assert [n for n in range(400) if n.to_bytes(value_size, "little") in ours] == found
        assert len(found) > entries  # there were false positives to compare
    finally:
        os.close(fd)


def test_kernel_runs_the_object() -> None:
    """RUNS are what BPF_PROG_TEST_RUN gives (the map made as the object's
    BTF says: 1000 u32 values, 3 hashes)."""
    _kernel()
    obj = ebpfvm.load(OBJECT)
    program = obj.programs[0]
    fd = kernel_oracle.map_create_extra(BLOOM, 0, 4, 1000, 0, 3)
    try:
        code = kernel_oracle.kernel_code(program.code, program.relocations, {"seen": fd}, {})
        prog = kernel_oracle.prog_load(code)
        try:
            for (add, test), retval in RUNS:
                assert kernel_oracle.test_run(prog, _packet(add, test))[0] == retval
        finally:
            os.close(prog)
    finally:
        os.close(fd)
        obj.close()


# -- the perf event array ------------------------------------------------------

PERF_OBJECT = Path(__file__).parent / "data" / "elf" / "perf.o"
CURRENT = 0xFFFFFFFF
NO_BUFFERS = (((CURRENT, 4), 1002), ((0, 4), 1002), ((1, 4), 1002), ((2, 4), 1007),
              ((1 << 52 | 0, 4), 1022), ((1 << 63, 4), 1022))
"""((flags, size), return value) of perf.c on an array whose slots have no
perf event, from the kernel (test_kernel_without_buffers checks them again):
-ENOENT for an empty slot, -E2BIG past max_entries, -EINVAL for flags past
the context-length bits."""


def _perf_packet(flags: int, size: int) -> bytes:
    return struct.pack("<QI", flags, size) + bytes(range(1, 41))


def test_perf_errors_without_buffers(engine: str) -> None:
    with ebpfvm.load(PERF_OBJECT) as obj:
        events = obj.maps["events"]
        assert isinstance(events, PerfEventArray)
        events.close_slot(0)
        events.close_slot(1)
        runner = obj.xdp("emit", engine=engine)
        for (flags, size), retval in NO_BUFFERS:
            assert runner.run(_perf_packet(flags, size)).r0 == retval
        assert events.records() == [] and events.lost == 0


def test_perf_records(engine: str) -> None:
    """Records go to the run's CPU's buffer in order; another CPU's slot is
    -EOPNOTSUPP (a perf event takes output on its own CPU only)."""
    with ebpfvm.load(PERF_OBJECT) as obj:
        events = obj.maps["events"]
        assert isinstance(events, PerfEventArray)
        runner = obj.xdp("emit", engine=engine)
        assert runner.run(_perf_packet(CURRENT, 5)).r0 == 1000
        assert runner.run(_perf_packet(0, 0)).r0 == 1000
        assert runner.run(_perf_packet(1, 3)).r0 == 1000 + EOPNOTSUPP
        assert events.records() == [PerfRecord(0, bytes([1, 2, 3, 4, 5])), PerfRecord(0, b"")]
        assert events.consume(cpu=1) == [] and len(events.consume()) == 2
        assert events.records() == []


def test_perf_buffer_full_counts_lost() -> None:
    events = PerfEventArray("e", 2, buffer_bytes=64)
    assert record_bytes(5) == 24 and record_bytes(4) == 16
    assert [events.output(CURRENT, b"x" * 12, 1) for _ in range(4)] == [0, 0, -ENOSPC, -ENOSPC]
    assert events.lost == 2 and events.lost_by_cpu == [0, 2]  # 24 bytes each: two fit
    assert len(events.consume(cpu=1)) == 2
    assert events.output(1, b"y", 1) == 0 and events.records(1) == [PerfRecord(1, b"y")]
    with pytest.raises(MapError):
        events.output(5 << 32, b"", 0)  # packet bytes: only a runner's helper has a packet


def test_perf_shapes() -> None:
    made = create_map("e", 4, 4, 4, 0)
    assert isinstance(made, PerfEventArray) and made.max_entries == POSSIBLE_CPUS
    with pytest.raises(MapError):
        create_map("e", 4, 4, 8, 2)


def test_kernel_without_buffers() -> None:
    """NO_BUFFERS are what BPF_PROG_TEST_RUN gives."""
    _kernel()
    obj = ebpfvm.load(PERF_OBJECT)
    program = obj.programs[0]
    fd = kernel_oracle.map_create(4, 4, 4, 2)
    try:
        code = kernel_oracle.kernel_code(program.code, program.relocations, {"events": fd}, {})
        prog = kernel_oracle.prog_load(code)
        try:
            for (flags, size), retval in NO_BUFFERS:
                assert kernel_oracle.test_run(prog, _perf_packet(flags, size))[0] == retval
        finally:
            os.close(prog)
    finally:
        os.close(fd)
        obj.close()


# -- maps of maps --------------------------------------------------------------

MIM_OBJECT = Path(__file__).parent / "data" / "elf" / "mapinmap.o"
MIM_EMPTY = ((0, 0, 1), 1000)
MIM_RUNS = (((0, 0, 1), 1), ((1, 7, 1), 2), ((0, 0, 4), 2000), ((1, 8, 1), 1000),
            ((0, 1, 0), 1000))
"""((outer, key, index), return value) of mapinmap.c, from the kernel
(test_kernel_maps_of_maps checks them again): first with empty outer maps,
then with one inner array in outer_array[0] and outer_hash[7]: both reach
the same inner value, an index past the inner map is NULL, an empty slot
NULL."""


def _mim_packet(outer: int, key: int, index: int) -> bytes:
    return struct.pack("<III", outer, key, index) + bytes(60)


def test_maps_of_maps(engine: str) -> None:
    with ebpfvm.load(MIM_OBJECT) as obj:
        outer_array, outer_hash = obj.maps["outer_array"], obj.maps["outer_hash"]
        assert isinstance(outer_array, MapOfMaps) and isinstance(outer_hash, MapOfMaps)
        assert outer_array.inner is not None and outer_array.inner.value_size == 8
        assert len(outer_array) == 0 and len(outer_hash) == 0
        runner = obj.xdp("bump", engine=engine)
        assert runner.run(_mim_packet(*MIM_EMPTY[0])).r0 == MIM_EMPTY[1]
        inner = create_map("inner", 2, 4, 8, 4)
        outer_array[0] = inner
        outer_hash[7] = inner
        for packet, retval in MIM_RUNS:
            assert runner.run(_mim_packet(*packet)).r0 == retval
        assert inner[struct.pack("<I", 1)] == struct.pack("<Q", 2)
        assert outer_hash[7] is inner
        del outer_hash[7]
        assert runner.run(_mim_packet(1, 7, 1)).r0 == 1000


@pytest.mark.parametrize("shape", [(2, 4, 8, 5), (2, 4, 4, 4), (1, 4, 8, 4)])
def test_inner_map_of_another_shape(shape: tuple[int, int, int, int]) -> None:
    """The kernel refuses an inner map whose type, sizes or max_entries differ
    from the inner definition's (EINVAL from BPF_MAP_UPDATE_ELEM)."""
    with ebpfvm.load(MIM_OBJECT) as obj:
        with pytest.raises(MapError):
            obj.maps["outer_array"][0] = create_map("other", *shape)
        with pytest.raises(MapError):
            obj.maps["outer_array"][2] = create_map("inner", 2, 4, 8, 4)  # past max_entries


def test_kernel_maps_of_maps() -> None:
    """MIM_EMPTY and MIM_RUNS are what BPF_PROG_TEST_RUN gives."""
    _kernel()
    obj = ebpfvm.load(MIM_OBJECT)
    program = obj.programs[0]
    fds = [kernel_oracle.map_create(2, 4, 8, 4)]
    fds += [kernel_oracle.map_create_inner(kind, 4, 4, 2, fds[0]) for kind in (12, 13)]
    try:
        code = kernel_oracle.kernel_code(program.code, program.relocations,
                                         {"outer_array": fds[1], "outer_hash": fds[2]}, {})
        prog = kernel_oracle.prog_load(code)
        try:
            assert kernel_oracle.test_run(prog, _mim_packet(*MIM_EMPTY[0]))[0] == MIM_EMPTY[1]
            kernel_oracle.map_update(fds[1], struct.pack("<I", 0), struct.pack("<I", fds[0]))
            kernel_oracle.map_update(fds[2], struct.pack("<I", 7), struct.pack("<I", fds[0]))
            for packet, retval in MIM_RUNS:
                assert kernel_oracle.test_run(prog, _mim_packet(*packet))[0] == retval
        finally:
            os.close(prog)
    finally:
        for fd in fds:
            os.close(fd)
        obj.close()
