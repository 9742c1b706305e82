"""The ELF loader: programs by section and name, bpf-to-bpf call linking, and
typed errors for malformed objects (never a crash or another exception type)."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import pytest

from conftest import bench_dir
from ebpfvm import EbpfVmRaw, ElfError, MapError, MemoryFault, assemble
from ebpfvm.elf import load
from ebpfvm.kernel import KERNEL_HELPER_NAMES
from ebpfvm.linkerrors import HelperNotAllowed, UnsupportedHelper, UnsupportedRelocation
from engines import run

DATA = Path(__file__).resolve().parent / "data" / "elf"
CALLS = DATA / "calls.o"  # built from calls.c by the Makefile beside it
GLOBALS = DATA / "globals.o"  # built from globals.c
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


def test_global_data_is_shared_and_settable(engine: str) -> None:
    obj = load(GLOBALS)
    assert sorted(obj.data) == [".bss", ".data", ".rodata"]
    assert obj.program("count").data_sections == (".bss", ".data", ".rodata")
    # globals.c: counter (.data) starts at 7; limit (.rodata) is 100.
    assert int.from_bytes(obj.data[".data"], "little") == 7
    vm = obj.vm("count")
    assert run(vm, engine, bytearray([50])) == 0  # counter 57 <= 100
    assert run(vm, engine, bytearray([50])) == 1  # counter 107 > 100
    assert int.from_bytes(obj.data[".data"], "little") == 107
    assert obj.data[".bss"][0] == ord("e")  # seen = greeting[1]
    # Like a libbpf skeleton's rodata: set from Python before the run.
    obj.data[".rodata"][:4] = (1000).to_bytes(4, "little")
    assert run(vm, engine, bytearray([1])) == 0  # counter 108 <= 1000


def test_rodata_is_read_only_for_programs(checked_engine: str) -> None:
    obj = load(GLOBALS)
    program = obj.program("count")
    # Rewrite the program to store into .rodata: take the address its lddw loads.
    from ebpfvm.encoding import decode
    from ebpfvm.isa import Form

    lddws = [insn for insn in decode(program.code) if insn.row and insn.row.form is Form.LDDW]
    rodata_address = lddws[-1].imm
    vm = obj.vm("count")
    vm.set_program(assemble(f"lddw r1, {rodata_address:#x}\nstw [r1+0], 5\nexit"))
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine, bytearray(1))
    assert info.value.access == "store"
    assert int.from_bytes(obj.data[".rodata"], "little") == 100


MAPS = DATA / "maps.o"  # built from maps.c


def test_legacy_maps_with_kernel_semantics(engine: str) -> None:
    obj = load(MAPS)
    assert sorted(obj.maps) == ["counts", "totals"]
    counts, totals = obj.maps["counts"], obj.maps["totals"]
    assert (counts.type.name, counts.key_size, counts.value_size, counts.max_entries) == (
        "HASH", 4, 8, 4)
    vm = obj.vm("count_first_byte")
    # maps.c: 0 created, 1 existed, 2 map full (4 entries), 3/4 delete of key 0
    # succeeded/failed (0xff).
    got = [run(vm, engine, bytearray([b])) for b in (1, 1, 2, 3, 4, 5, 1, 0xFF, 0)]
    assert got == [0, 1, 0, 0, 0, 2, 1, 4, 2]
    assert {int.from_bytes(k, "little"): int.from_bytes(v, "little")
            for k, v in counts.items()} == {1: 3, 2: 1, 3: 1, 4: 1}
    assert int.from_bytes(totals[bytes(4)], "little") == 9  # every run counted once
    # Python edits are what the program sees next.
    del counts[(1).to_bytes(4, "little")]
    assert run(vm, engine, bytearray([9])) == 0
    counts[(2).to_bytes(4, "little")] = (5).to_bytes(8, "little")  # replacing needs no room
    assert run(vm, engine, bytearray([2])) == 1
    assert int.from_bytes(counts[(2).to_bytes(4, "little")], "little") == 6
    with pytest.raises(MapError):  # full: {2, 3, 4, 9}
        counts[(0).to_bytes(4, "little")] = (5).to_bytes(8, "little")


BTF_MAPS = DATA / "btfmaps.o"  # built from btfmaps.c


def _flow(saddr: int, daddr: int, sport: int, dport: int, payload: int) -> bytearray:
    return bytearray(struct.pack("<IIHH", saddr, daddr, sport, dport) + bytes(payload))


def test_btf_defined_lru_map(engine: str) -> None:
    obj = load(BTF_MAPS)
    flows = obj.maps["flows"]
    # btfmaps.c: struct flow is 12 bytes, struct stats 16, LRU hash of 3 entries.
    assert (flows.type.name, flows.key_size, flows.value_size, flows.max_entries) == (
        "LRU_HASH", 12, 16, 3)
    vm = obj.vm("track")
    assert [run(vm, engine, _flow(1, 2, 3, 4, 10)) for _ in range(3)] == [1, 2, 3]
    for n in (5, 6, 7):  # three new flows: the LRU evicts flow 1 (least recent)
        assert run(vm, engine, _flow(n, n, n, n, 0)) == 1
    assert len(flows) == 3
    assert bytes(_flow(1, 2, 3, 4, 0)) not in flows
    assert struct.unpack("<QQ", flows[bytes(_flow(5, 5, 5, 5, 0))]) == (1, 12)


def test_corrupt_btf_is_an_elf_error() -> None:
    from elftools.elf.elffile import ELFFile

    original = BTF_MAPS.read_bytes()
    btf = ELFFile(io.BytesIO(original)).get_section_by_name(".BTF")
    start, size = btf["sh_offset"], btf["sh_size"]
    rng = random.Random(9)
    loaded, sections = 0, set()
    for _ in range(300):
        mutated = bytearray(original)
        for _ in range(rng.randint(1, 6)):
            mutated[start + rng.randrange(size)] ^= 1 << rng.randrange(8)
        try:
            load(bytes(mutated))
        except ElfError as error:
            sections.add(error.section)
        else:
            loaded += 1
    assert 0 < loaded < 300  # some flips hit names or padding, others the types
    assert ".BTF" in sections  # the BTF reader itself reports, naming its section


def test_unsupported_helper_fails_at_load_time() -> None:
    """The object loads; the program is a typed problem naming the helper
    (issue 13 point 9: the other programs of an object still run)."""
    data = bytearray(MAPS.read_bytes())
    lookup = bytes.fromhex("8500000001000000")  # call 1 (bpf_map_lookup_elem), no relocation
    at = data.index(lookup)
    data[at + 4 : at + 8] = (9999).to_bytes(4, "little")
    obj = load(bytes(data))
    with pytest.raises(HelperNotAllowed) as info:  # no kernel has it: "unknown func"
        obj.program()
    assert info.value.section == "xdp"
    assert (info.value.helper_id, info.value.prog_type) == (9999, "xdp")
    number = KERNEL_HELPER_NAMES.index("bpf_sk_lookup_tcp")  # a real helper we lack
    data[at + 4 : at + 8] = number.to_bytes(4, "little")
    with pytest.raises(UnsupportedHelper) as unsupported:
        load(bytes(data)).program()
    assert (unsupported.value.helper_id, unsupported.value.helper_name) == (
        number, "bpf_sk_lookup_tcp")


def test_queue_and_stack_maps(engine: str) -> None:
    obj = load(DATA / "queue.o")  # built from queue.c
    lengths, firsts = obj.maps["lengths"], obj.maps["firsts"]
    assert (lengths.type.name, lengths.value_size, lengths.max_entries) == ("QUEUE", 4, 3)
    assert (firsts.type.name, firsts.value_size, firsts.max_entries) == ("STACK", 1, 8)
    vm = obj.vm("record")
    # queue.c returns the queue's head; the 4th push (BPF_EXIST) drops the oldest.
    heads = [run(vm, engine, bytearray([b] * n)) for b, n in ((5, 10), (6, 20), (7, 30), (8, 40))]
    assert heads == [10, 10, 10, 20]
    assert [int.from_bytes(v, "little") for v in lengths] == [20, 30, 40]
    # A packet starting with 0 pops the stack: last in, first out, then empty.
    assert [run(vm, engine, bytearray([0])) for _ in range(5)] == [1008, 1007, 1006, 1005, 2000]
    firsts.push(b"\x2a")  # Python pushes what the program pops next
    assert run(vm, engine, bytearray([0])) == 1042


def test_ring_buffer_records(engine: str) -> None:
    obj = load(DATA / "ringbuf.o")  # built from ringbuf.c
    ring = obj.maps["events"]
    vm = obj.vm("emit")
    assert [run(vm, engine, bytearray([b, 9, 9])) for b in (2, 3, 4)] == [0, 0, 0]
    # Records come out in reservation order; the odd packet's event was discarded.
    event = struct.Struct("<IB3x")
    assert list(ring.consume()) == [
        event.pack(3, 2), b"\x02\x09", b"\x03\x09", event.pack(3, 4), b"\x04\x09"]
    assert list(ring.consume()) == []  # each record once
    # 16 bytes per event record and per 2-byte output (8-byte headers, 8-byte
    # alignment). The kernel keeps the producer less than the ring's size
    # ahead: the 128th packet's event fits (4080 bytes) but not its output,
    # the next reserve fails; 255 records (the kernel's count for the same
    # sequence of reserve, output and submit).
    assert [run(vm, engine, bytearray([2, 0])) for _ in range(129)][-2:] == [0, 1]
    assert len(list(ring.consume())) == 255
    assert run(vm, engine, bytearray([2, 0])) == 0  # consuming made room


def test_tail_calls(engine: str) -> None:
    obj = load(DATA / "tailcall.o")  # built from tailcall.c
    jumps = obj.maps["jumps"]
    vm = obj.vm("dispatch")
    assert run(vm, engine, bytearray([0, 21])) == 99  # empty slot: the caller goes on
    jumps[0] = "double_it"
    jumps[1] = "again"
    jumps[3] = "again"
    assert run(vm, engine, bytearray([0, 21])) == 42  # double_it's r0 ends the run
    # dispatch -> again -> again ...: the kernel allows a chain of 33 tail calls.
    assert run(vm, engine, bytearray([1, 0])) == 1000 + 33
    assert int.from_bytes(obj.data[".bss"], "little") == 33
    del jumps[0]
    assert run(vm, engine, bytearray([0, 21])) == 99


def test_btf_typed_map_values(engine: str) -> None:
    obj = load(BTF_MAPS)
    flows = obj.maps["flows"].typed
    vm = obj.vm("track")
    run(vm, engine, _flow(1, 2, 3, 4, 10))
    # btfmaps.c: struct flow {saddr, daddr, sport, dport}, struct stats {packets, bytes}.
    ((key, value),) = flows.items()
    assert key._asdict() == {"saddr": 1, "daddr": 2, "sport": 3, "dport": 4}
    assert value._asdict() == {"packets": 1, "bytes": 22}
    # Values set from Python are what the program sees and updates.
    flows[{"saddr": 9, "daddr": 8, "sport": 7, "dport": 6}] = {"packets": 5, "bytes": 500}
    assert run(vm, engine, _flow(9, 8, 7, 6, 0)) == 6
    assert flows[(9, 8, 7, 6)] == (6, 512)
    del flows[key]
    assert len(flows) == 1


def test_map_value_region_is_the_map_slab(checked_engine: str) -> None:
    # A lookup hands the program the map's slab, one region registered once per
    # run (issue 11 F3: a region per value made long runs quadratic), so the
    # bound is the slab's end: 4 slots of 8 bytes, key 1 in slot 0.
    obj = load(MAPS)  # counts: hash, 4-byte keys, 8-byte values, 4 entries
    counts = obj.maps["counts"]
    counts[(1).to_bytes(4, "little")] = (5).to_bytes(8, "little")
    counts[(2).to_bytes(4, "little")] = (6).to_bytes(8, "little")
    handle = counts.handle

    def program(offset: int) -> bytes:
        return assemble(f"""
            stw [r10-4], 1
            lddw r1, {handle:#x}
            mov r2, r10
            add r2, -4
            call 1
            jeq r0, 0, out
            ldxdw r0, [r0{offset:+d}]
        out:
            exit
        """)

    vm = obj.vm("count_first_byte")
    vm.set_program(program(0))
    assert run(vm, checked_engine) == 5
    vm.set_program(program(4 * 8))  # just past the slab
    with pytest.raises(MemoryFault) as info:
        run(vm, checked_engine)
    assert info.value.size == 8
    assert info.value.address == counts.base + 4 * 8


def test_global_data_sections_are_array_maps() -> None:
    obj = load(GLOBALS)
    rodata = obj.maps[".rodata"]
    assert (rodata.type.name, rodata.key_size, rodata.max_entries) == ("ARRAY", 4, 1)
    assert rodata[bytes(4)] == bytes(obj.data[".rodata"])
    rodata[bytes(4)] = (250).to_bytes(4, "little")  # the same memory as obj.data
    assert int.from_bytes(obj.data[".rodata"], "little") == 250


def _patched_relocation(field: str, value: int) -> bytes:
    """calls.o with the first relocation of .relxdp changed (type or symbol)."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(CALLS.read_bytes())
    rel = ELFFile(io.BytesIO(bytes(data))).get_section_by_name(".relxdp")
    at = rel["sh_offset"] + 8  # r_info of the first Elf64_Rel (r_offset, r_info)
    info = int.from_bytes(data[at : at + 8], "little")
    sym, kind = info >> 32, info & 0xFFFF_FFFF
    if field == "type":
        kind = value
    else:
        sym = value
    data[at : at + 8] = ((sym << 32) | kind).to_bytes(8, "little")
    return bytes(data)


def test_malformed_relocations_name_the_section() -> None:
    # A relocation type ebpfvm lacks is the program's typed problem, not a failed load.
    obj = load(_patched_relocation("type", 99))
    with pytest.raises(UnsupportedRelocation) as info:
        obj.program(section="xdp")
    assert (info.value.section, info.value.reloc_type, info.value.program) == (
        "xdp", 99, obj.problems[info.value.program].program)
    with pytest.raises(ElfError) as info:
        load(_patched_relocation("symbol", 0xFFFF))
    assert info.value.section == "xdp" and "out of range" in info.value.reason


def test_wrong_class_is_an_elf_error() -> None:
    data = bytearray(CALLS.read_bytes())
    data[4] = 1  # EI_CLASS = ELFCLASS32
    with pytest.raises(ElfError):
        load(bytes(data))
