"""The ELF loader: programs by section and name, bpf-to-bpf call linking, and
typed errors for malformed objects (never a crash or another exception type)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import bench_dir
from ebpfvm import EbpfVmRaw, ElfError
from ebpfvm.elf import load
from engines import run

DATA = Path(__file__).resolve().parent / "data" / "elf"
CALLS = DATA / "calls.o"  # built from calls.c by the Makefile beside it
BENCH = bench_dir() / "out"
BENCH_OBJECTS = sorted(BENCH.glob("*.o")) if BENCH.is_dir() else []


def test_programs_by_section_and_name() -> None:
    obj = load(CALLS)
    assert sorted((p.section, p.name) for p in obj.programs) == [
        ("socket", "first_plus_ten"), ("xdp", "sum_twice")]
    assert obj.license == "Dual MIT/GPL"
    assert obj.program("sum_twice").section == "xdp"
    assert obj.program(section="socket").name == "first_plus_ten"
    with pytest.raises(ElfError):
        obj.program("missing")
    with pytest.raises(ElfError):
        obj.program()  # two programs: ambiguous


@pytest.mark.parametrize("data", [b"\x01\x02\x03", b"\x10\x20\xff", bytes(3)])
def test_linked_calls_run(engine: str, data: bytes) -> None:
    obj = load(CALLS.read_bytes())
    d0, d1, d2 = data
    # calls.c: 2 * (d0 + d1 + d2) + (1 + 2 + 3), and d0 + 4 + 6.
    assert run(EbpfVmRaw(obj.program("sum_twice").code), engine, bytearray(data)) == \
        2 * (d0 + d1 + d2) + 6
    assert run(EbpfVmRaw(obj.program("first_plus_ten").code), engine, bytearray(data)) == d0 + 10
    assert obj.program("sum_twice").subprograms == (".text",)


@pytest.mark.skipif(not BENCH_OBJECTS, reason=f"{BENCH} is absent")
def test_bench_objects_match_their_raw_bytes() -> None:
    for path in BENCH_OBJECTS:
        program = load(path).program(section="xdp")
        assert program.code == path.with_suffix(".bin").read_bytes(), path.name


def test_not_bpf() -> None:
    with pytest.raises(ElfError):
        load(b"not an elf at all")
    with pytest.raises(ElfError):
        load(Path("/nonexistent/x.o"))
    data = bytearray(CALLS.read_bytes())
    data[18] = 62  # e_machine = EM_X86_64
    with pytest.raises(ElfError) as info:
        load(bytes(data))
    assert "EM_BPF" in info.value.reason


def test_truncated_and_bit_flipped_objects() -> None:
    """Every outcome is a loaded object or an ElfError (the fuzz part of issue 4)."""
    original = CALLS.read_bytes()
    rng = random.Random(4)
    outcomes = {"loaded": 0, "error": 0}
    cases = [original[:n] for n in range(0, len(original), 97)]
    for _ in range(400):
        mutated = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        cases.append(bytes(mutated))
    for case in cases:
        try:
            load(case)
        except ElfError:
            outcomes["error"] += 1
        else:
            outcomes["loaded"] += 1
    assert outcomes["error"] > 0 and outcomes["loaded"] > 0
    assert sum(outcomes.values()) == len(cases)
