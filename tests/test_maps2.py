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
from ebpfvm.maps import create_map

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
