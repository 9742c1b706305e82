"""Regressions found by running the kernel's BPF selftests against the kernel
(tools/selftest_sweep.py); expected values are the kernel's own results."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

import ebpfvm
from conftest import NEEDS_KBPF
from ebpfvm import EbpfVmRaw, HelperFault, assemble
from ebpfvm.contexts import XdpRunner
from ebpfvm.devmaps import DEVMAP, DEVMAP_HASH, XSKMAP, RedirectMap
from ebpfvm.kdiff import against_kernel
from ebpfvm.mapinmap import MapOfMaps
from ebpfvm.maps import ProgArray, create_map, map_helpers
from engines import run

needs_kernel = NEEDS_KBPF


def _csum_program(removed: int, added: int, removed_size: int, added_size: int,
                  seed: int) -> bytes:
    """bpf_csum_diff over a 4-byte word removed (at fp-8) and one added (at fp-4)."""
    return assemble(f"""
    lddw r1, {removed}
    stxw [r10-8], r1
    lddw r1, {added}
    stxw [r10-4], r1
    mov r1, {'r10' if removed_size else 0}
    {'add r1, -8' if removed_size else ''}
    mov r2, {removed_size}
    mov r3, {'r10' if added_size else 0}
    {'add r3, -4' if added_size else ''}
    mov r4, {added_size}
    lddw r5, {seed}
    call 28
    exit
    """)


# (removed word, added word, removed size, added size, seed) -> what Linux 6.18
# returned through BPF_PROG_TEST_RUN: the sum folded to 16 bits, and removing
# zeros alone gives 0 (the selftest verifier_array_access
# a_read_only_array_2_1 runs bpf_csum_diff over a zeroed map value).
CSUM_CASES = [
    ((0, 0, 4, 0, 0), 0x0),
    ((1, 0, 4, 0, 0), 0xFFFE),
    ((0x12345678, 0, 4, 0, 0), 0x9753),
    ((0, 0, 4, 0, 5), 0x5),
    ((0x1234, 0, 4, 0, 0x100), 0xEECB),
    ((0xFFFF, 0, 4, 0, 0), 0xFFFF),
    ((0x12345678, 0x12345678, 4, 4, 0), 0xFFFF),
    ((1, 1, 4, 4, 0), 0xFFFF),
]


@pytest.mark.parametrize(("args", "expected"), CSUM_CASES)
def test_csum_diff_is_folded_as_the_kernel_returns_it(
        engine: str, args: tuple[int, int, int, int, int], expected: int) -> None:
    result = XdpRunner(_csum_program(*args), engine=engine).run(bytes(64))
    assert result.r0 == expected


PROG_VALUES = Path(__file__).parent / "data" / "elf" / "progvalues.o"


def test_prog_array_values_fill_the_slots_at_load() -> None:
    """``.values = {[1] = &seven, [3] = &nine}`` (progvalues.c): libbpf puts
    those programs in the slots when it loads the object; so does ebpfvm.
    The map's value_size is 4, a program fd, as libbpf gives it."""
    with ebpfvm.load(PROG_VALUES) as obj:
        jumps = obj.maps["jumps"]
        assert isinstance(jumps, ProgArray)
        assert jumps.value_size == 4
        assert jumps.slots == {1: "seven", 3: "nine"}


def test_map_of_maps_values_fill_the_slots_at_load() -> None:
    """``outer``'s ``.values = {[1] = &inner_b}`` (progvalues.c): libbpf
    stores inner_b in slot 1 at load; so does ebpfvm."""
    with ebpfvm.load(PROG_VALUES) as obj:
        outer = obj.maps["outer"]
        assert isinstance(outer, MapOfMaps)
        assert outer[1] is obj.maps["inner_b"]
        with pytest.raises(KeyError):
            outer[0]


@pytest.mark.parametrize(("first", "expected"), [(0, 2), (1, 7), (2, 2), (3, 9), (5, 7)])
def test_prog_array_values_are_tail_called(engine: str, first: int, expected: int) -> None:
    """entry tail-calls slot (byte 0 & 3): seven returns 7, nine 9, an empty
    slot leaves entry to return 2 (progvalues.c)."""
    with ebpfvm.load(PROG_VALUES) as obj:
        result = obj.xdp("entry", engine=engine).run(bytes([first]) + bytes(59))
    assert result.r0 == expected


@needs_kernel
def test_prog_array_values_agree_with_the_kernel(engine: str) -> None:
    packets = [bytes([first]) + bytes(59) for first in range(8)]
    with ebpfvm.load(PROG_VALUES) as obj:
        diff = against_kernel(obj, packets, program="entry", engine=engine, source=PROG_VALUES)
    assert diff.packets == len(packets) and diff.divergences == [] and not diff.refused


XSK_LOOKUP = """
    mov r1, 0
    stxw [r10-8], r1
    lddw r1, {handle}
    mov r2, r10
    add r2, -8
    call 1
    jne r0, 0, +2
    mov r0, 5
    exit
    mov r0, 6
    exit
"""
"""Looks up key 0: 5 when the helper returns NULL."""


@pytest.mark.parametrize("map_type", [DEVMAP, XSKMAP, DEVMAP_HASH])
def test_an_empty_devmap_or_xskmap_slot_looks_up_as_null(engine: str, map_type: int) -> None:
    """bpf_map_lookup_elem on an empty xskmap slot returns NULL in the kernel
    (selftest verifier_jeq_infer_not_null null_ptr_to_map_value, retval 0 and
    the kernel's own run); ebpfvm refused the map as not keyed. A set slot
    holds a kernel object ebpfvm does not model: a typed fault, not a pointer."""
    redirect = create_map("redirect", map_type, 4, 4, 4)
    redirect.handle = 0x7B
    vm = EbpfVmRaw(assemble(XSK_LOOKUP.format(handle=redirect.handle)))
    for key, helper in map_helpers({redirect.handle: redirect}).items():
        vm.register_helper(key, helper)
    assert run(vm, engine, bytearray(8)) == 5
    cast(RedirectMap, redirect).set(0, 1)
    with pytest.raises(HelperFault):
        run(vm, engine, bytearray(8))


def _patched_rel_maps(entry: int, sym: int | None = None, offset: int | None = None) -> bytes:
    """progvalues.o with relocation `entry` of .rel.maps naming symbol `sym`
    or applying at `offset`."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(PROG_VALUES.read_bytes())
    with PROG_VALUES.open("rb") as handle:
        rel = ELFFile(handle).get_section_by_name(".rel.maps")
        at = rel["sh_offset"] + entry * rel["sh_entsize"]
    if offset is not None:
        data[at : at + 8] = offset.to_bytes(8, "little")
    if sym is not None:
        data[at + 12 : at + 16] = sym.to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize(("change", "message"), [
    ({"sym": 9999}, "does not exist"),
    ({"offset": 0x1000}, "outside every map"),
    ({"offset": 0x4}, "not a values slot"),
    ({"sym": 0x11}, "not a program of a program array"),  # inner_b into the program array
])
def test_bad_values_relocations_are_elf_errors(change: dict[str, int], message: str) -> None:
    with pytest.raises(ebpfvm.ElfError, match=message):
        ebpfvm.load(_patched_rel_maps(0, **change))
