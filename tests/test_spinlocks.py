"""bpf_spin_lock and bpf_spin_unlock on a lock in a map value (array and
hash) and in global data, in every engine, against the kernel (RFC 9669
section 5.3, helper functions).

tests/data/elf/spinlocks.o's map_values locks an array element and a hash
element around their counters; global_lock takes a .data lock in a static
subprogram and gives it back in the caller. The kernel runs the same
packets and every map (the .data section too) is compared after each one
(ebpfvm.kdiff): the expected contents are the kernel's.
"""

from __future__ import annotations

import random

import pytest

import ebpfvm
from conftest import NEEDS_KBPF, REPO
from ebpfvm.kdiff import against_kernel

SPINLOCKS_O = REPO / "tests" / "data" / "elf" / "spinlocks.o"


needs_kernel = NEEDS_KBPF


def _packets(count: int) -> list[bytes]:
    """IPv4-typed frames of random lengths (the length picks the elements)."""
    rng = random.Random(15)
    return [bytes(12) + b"\x08\x00" + rng.randbytes(rng.randrange(20, 90))
            for _ in range(count)]


@needs_kernel
@pytest.mark.parametrize("program", ["map_values", "global_lock"])
def test_locks_in_map_values_and_global_data_agree_with_the_kernel(
        engine: str, program: str) -> None:
    """Every packet's return value and every map after it are the kernel's."""
    with ebpfvm.load(SPINLOCKS_O) as obj:
        diff = against_kernel(obj, _packets(40), program=program, engine=engine,
                              source=SPINLOCKS_O)
        assert diff.packets == 40
        assert diff.divergences == [], [str(d) for d in diff.divergences[:5]]


@pytest.mark.parametrize("program", ["map_values", "global_lock"])
def test_counts_under_the_lock(engine: str, program: str) -> None:
    """Independent count: each run adds 1 to an array element (2 to a hash
    element), or 1 to the global counter, and leaves every lock word 0."""
    packets = _packets(10)
    with ebpfvm.load(SPINLOCKS_O) as obj, obj.skb(program, engine=engine) as runner:
        for packet in packets:
            runner.run(packet)
        if program == "map_values":
            counts = [int.from_bytes(obj.maps["arr"][key.to_bytes(4, "little")][12:16], "little")
                      for key in range(4)]
            assert sum(counts) == 10
            values = [obj.maps["hmap"][key] for key in obj.maps["hmap"]]
            assert sum(int.from_bytes(v[12:16], "little") for v in values) == 20
            assert all(v[8:12] == bytes(4) for v in values)
        else:
            data = bytes(obj.data[".data.G"])
            words = sorted(int.from_bytes(data[at:at + 4], "little") for at in (0, 4))
            assert len(data) == 8 and words == [0, 10]  # the lock and gcount
