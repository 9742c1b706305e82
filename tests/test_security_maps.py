"""Issue 11, maps and helpers: what a hostile program or object can make the
maps and helpers hold or do (F3, F4, F7, F8, F13, F19, F20).

Tests whose old behaviour ate memory or time run in a child process under a
memory limit and a timeout (tests/bounded.py)."""

from __future__ import annotations

import struct
from pathlib import Path
from textwrap import dedent

import pytest

from bounded import run_bounded
from ebpfvm import (
    ArgumentError,
    ArgumentTypeError,
    BudgetExceeded,
    EbpfVmRaw,
    ElfError,
    HelperFault,
    MapError,
    MemoryFault,
    ResourceLimit,
    assemble,
    load,
)
from ebpfvm.helpers import HELPER_BYTES_PER_UNIT, NO_BUDGET, HelperContext
from ebpfvm.kernel import (
    MAX_TRACE_LINES,
    TRACE_PRINTK_STRING_BYTES,
    KernelEnv,
    kernel_helpers,
)
from ebpfvm.maps import (
    MAX_MAP_BYTES,
    MAX_VALUE_SIZE,
    MapMemory,
    MapTooLarge,
    MapType,
    QueueMap,
    RingBuf,
    create_map,
    map_helpers,
)
from ebpfvm.memory import AddressSpace, Region
from engines import run

DATA = Path(__file__).resolve().parent / "data" / "elf"
MAPS = DATA / "maps.o"  # legacy maps: counts (hash) and totals (array)
GLOBALS = DATA / "globals.o"  # .data, .rodata and .bss sections
WILD = 0x10  # an address in no region
LOOKUPS = 100_000
CHILD_SECONDS = 90.0
"""Time limit of a child run: the fixed code takes a few seconds on a busy
machine; the old code took minutes to hours."""
CHILD_MEMORY_MB = 1024
MIB = 1 << 20


def _vm(code: str, maps: dict[int, object], env: KernelEnv | None = None) -> EbpfVmRaw:
    """A VM running `code` with the map helpers over `maps` (and the kernel's)."""
    vm = EbpfVmRaw(assemble(code))
    for number, helper in kernel_helpers(env or KernelEnv()).items():
        vm.register_helper(number, helper)
    for number, helper in map_helpers(maps).items():  # type: ignore[arg-type]
        vm.register_helper(number, helper)
    return vm


def _memory_fault(exc: BaseException) -> MemoryFault:
    """The MemoryFault a helper's bad pointer gave: raised as is, or as the
    cause of a HelperFault."""
    if isinstance(exc, MemoryFault):
        return exc
    assert isinstance(exc, HelperFault) and isinstance(exc.cause, MemoryFault), exc
    return exc.cause


def _bounded_run(body: str, engine: str, *, memory_mb: int = CHILD_MEMORY_MB,
                 timeout: float = CHILD_SECONDS) -> object:
    """Run `body` in a child (`engine` and `run` defined for it); its report()."""
    outcome = run_bounded(f"engine = {engine!r}\nfrom engines import run\n{dedent(body)}",
                          memory_mb=memory_mb, timeout=timeout)
    assert not outcome.timed_out, f"over {timeout} s: {outcome.stderr[-2000:]}"
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    return outcome.result()


# -- F3: a lookup registers the map's slab once, not a region per lookup -------

COUNT_REGIONS = 1000
"""A test helper: records how many regions the run has."""

LOOKUP_LOOP = """
    call 1000
    mov r6, 0
    stw [r10-4], 3
loop:
    lddw r1, {handle:#x}
    mov r2, r10
    add r2, -4
    call 1
    jeq r0, 0, out
    ldxdw r1, [r0]
    add r1, 1
    stxdw [r0], r1
    add r6, 1
    jlt r6, {count}, loop
out:
    call 1000
    mov r0, r6
    exit
"""

CHILD_VM = """
from ebpfvm import EbpfVmRaw, assemble
from ebpfvm.maps import MapType, create_map, map_helpers
seen = []
def count_regions(ctx, *_args):
    seen.append(len(ctx.space.regions))
    return 0
def make_vm(code, maps):
    vm = EbpfVmRaw(assemble(code), budget=None)
    for number, helper in map_helpers(maps).items():
        vm.register_helper(number, helper)
    vm.register_helper(1000, count_regions, context=True)
    return vm
"""
"""Child code: make_vm() with the map helpers and helper 1000, which appends
the run's region count to `seen`."""


def test_repeated_lookups_register_one_region(checked_engine: str) -> None:
    """F3: 100,000 lookups of one key in one run finish in seconds (each used
    to add a region: quadratic time, hours at the default budget). The loop
    adds one region to the run, the map's slab."""
    result = _bounded_run(CHILD_VM + dedent(f"""
        counts = create_map("counts", MapType.HASH, 4, 8, 4)
        counts.handle = 0x77
        counts[(3).to_bytes(4, "little")] = bytes(8)
        vm = make_vm({LOOKUP_LOOP!r}.format(handle=0x77, count={LOOKUPS}), {{0x77: counts}})
        r0 = run(vm, engine, bytearray(8))
        report([r0, int.from_bytes(counts[(3).to_bytes(4, "little")], "little"),
                seen[1] - seen[0]])
    """), checked_engine)
    # One region on the interpreter; none when the native lookup is linked (the
    # slab is then a region of every run, registered once at link time).
    assert result[:2] == [LOOKUPS, LOOKUPS] and result[2] <= 1


def test_lookup_region_is_bounded_by_the_slab(checked_engine: str) -> None:
    """F3: the one region a lookup gives is the map's slab, no more: the
    bytes just past its end and just before its start fault."""
    counts = create_map("counts", MapType.HASH, 4, 8, 4)
    counts.handle = 0x77
    counts[(3).to_bytes(4, "little")] = (41).to_bytes(8, "little")  # slot 0
    slab_end = counts.base + 4 * 8

    def program(offset: int) -> str:
        return f"""
            stw [r10-4], 3
            lddw r1, 0x77
            mov r2, r10
            add r2, -4
            call 1
            jeq r0, 0, out
            ldxdw r0, [r0{offset:+d}]
        out:
            exit
        """

    assert run(_vm(program(0), {0x77: counts}), checked_engine, bytearray(8)) == 41
    for offset, address in ((4 * 8, slab_end), (-8, counts.base - 8)):
        with pytest.raises(MemoryFault) as info:
            run(_vm(program(offset), {0x77: counts}), checked_engine, bytearray(8))
        assert (info.value.address, info.value.size, info.value.access) == (address, 8, "load")


def test_add_once_registers_a_region_once() -> None:
    """F3: AddressSpace.add_once keeps one entry per region object."""
    buffer = bytearray(16)
    region = Region.of_buffer(buffer, "slab")
    space = AddressSpace()
    assert space.add_once(region) and not space.add_once(region)
    assert space.regions == [region]
    space.add_once(Region.of_buffer(buffer, "another object"))
    assert len(space.regions) == 2


RING_LOOP = """
    call 1000
    mov r6, 0
loop:
    lddw r1, {handle:#x}
    mov r2, 8
    mov r3, 0
    call 131
    jeq r0, 0, out
    stxdw [r0], r6
    mov r1, r0
    mov r2, 0
    call 132
    add r6, 1
    jlt r6, {count}, loop
out:
    call 1000
    mov r0, r6
    exit
"""


def test_ring_reserves_register_one_region(checked_engine: str) -> None:
    """F3: 100,000 reserve/submit pairs in one run finish in seconds (each
    reserve used to add a region), every record arrives, and the run gained
    one region, the ring's data area."""
    result = _bounded_run(CHILD_VM + dedent(f"""
        ring = create_map("events", MapType.RINGBUF, 0, 0, 4 << 20)
        ring.handle = 0x5A
        vm = make_vm({RING_LOOP!r}.format(handle=0x5A, count={LOOKUPS}), {{0x5A: ring}})
        r0 = run(vm, engine, bytearray(8))
        records = list(ring.consume())
        report([r0, len(records), int.from_bytes(records[-1], "little"), len(ring),
                seen[1] - seen[0]])
    """), checked_engine)
    # One region on the interpreter; none when the native reserve is linked
    # (the ring's data area is then a region of every run, registered once).
    assert result[:4] == [LOOKUPS, LOOKUPS, LOOKUPS - 1, 0] and result[4] <= 1


SCRIBBLE = """
    lddw r1, 0x5A
    mov r2, 8
    mov r3, 0
    call 131
    jeq r0, 0, out
    mov r6, r0
    lddw r1, 0x5A
    mov r2, 8
    mov r3, 0
    call 131
    jeq r0, 0, out
    mov r7, r0
    stdw [r6], 0x11
    stdw [r7], 0x22
    mov r1, r6
    mov r2, 0
    call 132
    mov r1, r7
    mov r2, 0
    call 132
    stw [r6-8], {first_header:#x}
out:
    mov r0, 0
    exit
"""
"""Reserves and submits two 8-byte records, then overwrites the first one's header."""


@pytest.mark.parametrize("first_header", [1 << 31 | 8, 1 << 29, 0x3FFF_FFF0])
def test_ring_consume_survives_overwritten_headers(checked_engine: str,
                                                   first_header: int) -> None:
    """F3: the program may write the ring's whole data area, headers too.
    A BUSY bit it sets does not block the ring; a length past what was
    produced is a MapError, never a read outside the ring or an endless loop,
    and the ring works again after it."""
    ring = create_map("events", MapType.RINGBUF, 0, 0, 4096)
    assert isinstance(ring, RingBuf)
    ring.handle = 0x5A
    vm = _vm(SCRIBBLE.format(first_header=first_header), {0x5A: ring})
    assert run(vm, checked_engine, bytearray(8)) == 0
    if first_header & (1 << 31):  # BUSY written on a submitted record: ignored
        assert list(ring.consume()) == [(0x11).to_bytes(8, "little"),
                                        (0x22).to_bytes(8, "little")]
    else:
        with pytest.raises(MapError):
            list(ring.consume())
    assert len(ring) == 0
    assert ring.output(b"after") == 0
    assert list(ring.consume()) == [b"after"]


# -- F4: every map type's whole size counts, per map and per object -----------

@pytest.mark.parametrize(("map_type", "key", "value", "entries"), [
    (MapType.QUEUE, 0, 4 * MIB, 1 << 30),
    (MapType.STACK, 0, 1, MAX_MAP_BYTES + 1),
    (MapType.HASH, 4, 1, MAX_MAP_BYTES + 1),
    (MapType.LRU_HASH, 4, 1, MAX_MAP_BYTES + 1),
    (MapType.ARRAY, 4, 1, MAX_MAP_BYTES + 1),
    (MapType.PROG_ARRAY, 4, 4, MAX_MAP_BYTES // 4 + 1),
    (MapType.RINGBUF, 0, 0, 2 * MAX_MAP_BYTES),
])
def test_queue_and_every_map_type_count_their_entries(map_type: MapType, key: int, value: int,
                                                      entries: int) -> None:
    """F4: max_entries x value_size (at least) counts against the per-map
    limit for every type; queues and stacks used to check value_size only.
    Each case's values (a ring's bytes) alone exceed MAX_MAP_BYTES."""
    with pytest.raises(MapTooLarge) as info:
        create_map("big", map_type, key, value, entries)
    error = info.value
    assert isinstance(error, MapError) and isinstance(error, ResourceLimit)
    assert (error.resource, error.limit, error.map_name) == ("map memory", MAX_MAP_BYTES, "big")
    assert error.requested >= (value * entries or entries) > MAX_MAP_BYTES


def test_map_limit_is_configurable() -> None:
    """F4: create_map(max_bytes=) sets the per-map limit."""
    assert len(create_map("q", MapType.QUEUE, 0, 8, 1000, max_bytes=1 << 20)) == 0
    with pytest.raises(MapTooLarge) as info:
        create_map("q", MapType.QUEUE, 0, 8, 1000, max_bytes=8000)
    assert info.value.limit == 8000 and info.value.requested > 8000


def test_object_memory_is_shared_by_its_maps() -> None:
    """F4: a MapMemory is the budget of several maps together."""
    memory = MapMemory(3 * MIB)
    create_map("a", MapType.ARRAY, 4, MIB, 2, memory=memory)
    with pytest.raises(MapTooLarge) as info:
        create_map("b", MapType.ARRAY, 4, MIB, 2, memory=memory)
    error = info.value
    assert (error.resource, error.limit, error.map_name) == ("object map memory", 3 * MIB, "b")
    assert error.requested == 4 * MIB  # two 2-value arrays of 1 MiB values


def _patched_map_defs(*defs: tuple[int, int, int, int]) -> bytes:
    """maps.o with its `maps` section's struct bpf_map_def entries replaced
    (type, key_size, value_size, max_entries), in section order."""
    from elftools.elf.elffile import ELFFile

    blob = bytearray(MAPS.read_bytes())
    with MAPS.open("rb") as handle:
        section = ELFFile(handle).get_section_by_name("maps")
        offset = section["sh_offset"]
    for index, fields in enumerate(defs):
        struct.pack_into("<4I", blob, offset + 20 * index, *fields)
    return bytes(blob)


def test_object_with_a_huge_queue_is_refused() -> None:
    """F4: the issue's object, a queue of 4 MiB values with 2^30 entries,
    loaded and let each push copy a value; now load() refuses it, naming the
    map, before allocating anything."""
    blob = _patched_map_defs((MapType.QUEUE, 0, 4 * MIB, 1 << 30))
    with pytest.raises(ElfError) as info:
        load(blob)
    assert info.value.section == "maps"
    cause = info.value.__cause__
    assert isinstance(cause, MapTooLarge)
    assert (cause.resource, cause.limit, cause.map_name) == ("map memory", MAX_MAP_BYTES,
                                                             "counts")
    assert cause.requested >= 4 * MIB << 30


def test_object_map_memory_has_a_total_limit() -> None:
    """F4: two queues that each fit the per-map limit, 200 MiB of values
    each, exceed a total of 300 MiB together; with a larger total they load
    (queues allocate nothing up front)."""
    queue = (MapType.QUEUE, 0, 4096, 200 * MIB // 4096)
    blob = _patched_map_defs(queue, queue)
    with pytest.raises(ElfError) as info:
        load(blob, max_object_map_bytes=300 * MIB)
    cause = info.value.__cause__
    assert isinstance(cause, MapTooLarge)
    assert (cause.resource, cause.limit) == ("object map memory", 300 * MIB)
    assert cause.requested >= 400 * MIB and cause.map_name in ("counts", "totals")
    obj = load(blob, max_object_map_bytes=1 << 30)
    assert {type(m) for m in obj.maps.values()} == {QueueMap}
    with pytest.raises(ElfError):
        load(blob, max_map_bytes=100 * MIB)


def test_global_data_counts_against_the_object_limit() -> None:
    """F4: global-data sections are maps too (a .bss costs nothing in the file)."""
    assert load(GLOBALS).data
    with pytest.raises(ElfError) as info:
        load(GLOBALS, max_object_map_bytes=1)
    assert isinstance(info.value.__cause__, MapTooLarge)
    assert info.value.section in (".data", ".rodata", ".bss")


# -- F20: creating a map costs its slab, nothing per entry --------------------

def test_map_creation_builds_nothing_per_entry() -> None:
    """F20: every map built a free list of max_entries Python ints (about
    40 bytes each, outside the size cap). An array of 200 million one-byte
    values (a 200 MB slab) and a program array of 30 million slots now fit
    in 600 MB; the old free lists alone needed 8 GB."""
    outcome = run_bounded("""
        from ebpfvm.maps import MapType, create_map
        array = create_map("a", MapType.ARRAY, 4, 1, 200_000_000)
        jumps = create_map("j", MapType.PROG_ARRAY, 4, 4, 30_000_000)
        hash_map = create_map("h", MapType.HASH, 4, 1, 1_000_000)
        hash_map[(7).to_bytes(4, "little")] = b"x"
        jumps[29_999_999] = "last"
        report([len(array), len(jumps), len(hash_map), jumps.get(29_999_999)])
    """, memory_mb=600, timeout=CHILD_SECONDS)
    assert not outcome.timed_out and outcome.returncode == 0, outcome.stderr[-2000:]
    assert outcome.result() == [200_000_000, 1, 1, "last"]


def test_listing_a_large_array_scans_its_slab() -> None:
    """F20: listing an array's entries (the CLI prints them after a run) took
    a Python step per entry, a minute for an array at the map memory limit;
    now the slab is compared in chunks. 64 million 4-byte values, two set."""
    outcome = run_bounded("""
        from ebpfvm.mapview import entries
        from ebpfvm.maps import MapType, create_map
        array = create_map("a", MapType.ARRAY, 4, 4, 64 << 20)
        array[(5).to_bytes(4, "little")] = (0x11).to_bytes(4, "little")
        array[((64 << 20) - 1).to_bytes(4, "little")] = (0x22).to_bytes(4, "little")
        report(entries(array, limit=1))
    """, memory_mb=800, timeout=20)
    assert not outcome.timed_out and outcome.returncode == 0, outcome.stderr[-2000:]
    assert outcome.result() == ["05000000 -> 11000000", "... 1 more"]


def test_lazy_slots_keep_the_old_order() -> None:
    """F20: lazily handed-out slots fill the slab from the start, and a freed
    slot is reused first (the addresses lookups return show which slot)."""
    m = create_map("h", MapType.HASH, 4, 8, 3)
    for n in range(3):
        m[n.to_bytes(4, "little")] = bytes(8)
    assert [m.lookup_elem(n.to_bytes(4, "little")) - m.base for n in range(3)] == [0, 8, 16]
    del m[(1).to_bytes(4, "little")]
    m[(9).to_bytes(4, "little")] = bytes(8)
    assert m.lookup_elem((9).to_bytes(4, "little")) - m.base == 8
    assert m.update_elem((10).to_bytes(4, "little"), bytes(8)) == -7  # full: -E2BIG


# -- F7: helper work is charged and fast ---------------------------------------

def _context(size: int) -> tuple[HelperContext, Region]:
    buffer = bytearray(size)
    region = Region.of_buffer(buffer, "mem")
    ctx = HelperContext(AddressSpace([region]))
    ctx.budget = ctx.budget_total = 1_000_000
    return ctx, region


def test_map_helpers_charge_the_bytes_they_copy() -> None:
    """F7: update charges its key and value, lookup and delete the key,
    push and pop the value, at HELPER_BYTES_PER_UNIT bytes a unit."""
    hash_map = create_map("h", MapType.HASH, 64, 4096, 4)
    queue = create_map("q", MapType.QUEUE, 0, 4096, 4)
    helpers = map_helpers({1: hash_map, 2: queue})
    ctx, region = _context(8192)
    key, value = region.start, region.start + 64

    def charged(number: int, *args: int) -> int:
        before = ctx.budget
        helpers[number].fn(ctx, *args, *(0,) * (5 - len(args)))
        return before - ctx.budget

    assert charged(2, 1, key, value, 0) == (64 + 4096) // HELPER_BYTES_PER_UNIT
    assert charged(1, 1, key) == 64 // HELPER_BYTES_PER_UNIT
    assert charged(3, 1, key) == 64 // HELPER_BYTES_PER_UNIT
    assert charged(87, 2, value, 0) == 4096 // HELPER_BYTES_PER_UNIT
    assert charged(88, 2, value) == 4096 // HELPER_BYTES_PER_UNIT


def test_a_charge_over_the_budget_stops_the_helper() -> None:
    """F7: a helper whose work exceeds the run's budget raises BudgetExceeded
    at its pc before doing the work."""
    hash_map = create_map("h", MapType.HASH, 4, MAX_VALUE_SIZE, 1)
    ctx, region = _context(MAX_VALUE_SIZE + 8)
    ctx.budget, ctx.budget_total, ctx.pc = 10, 100, 7
    with pytest.raises(BudgetExceeded) as info:
        map_helpers({1: hash_map})[2].fn(ctx, 1, region.start, region.start + 4, 0, 0)
    assert info.value.pc == 7 and len(hash_map) == 0


def test_string_helpers_charge_what_they_read() -> None:
    """F7: probe_read_str charges the string it copies (read and written),
    trace_printk its format, strings and line."""
    env = KernelEnv(printk=lambda _line: None)
    helpers = kernel_helpers(env)
    ctx, region = _context(4096)
    text = b"a" * 1000
    region.view[:1000] = text
    region.view[2000:2003] = b"%s\0"
    before = ctx.budget
    assert helpers[45].fn(ctx, region.start + 3000, 1001, region.start, 0, 0) == 1001
    assert before - ctx.budget == 2 * 1000 // HELPER_BYTES_PER_UNIT
    assert bytes(region.view[3000:4001]) == text + b"\0"
    before = ctx.budget
    helpers[6].fn(ctx, region.start + 2000, 3, region.start, 0, 0)
    assert before - ctx.budget >= 2 * (TRACE_PRINTK_STRING_BYTES - 1) // HELPER_BYTES_PER_UNIT


def test_helper_charges_reach_the_run_budget(checked_engine: str) -> None:
    """F7: through a run, a helper's charge comes off the run's budget (where
    the engine takes the charge back from HelperContext)."""
    def expensive(ctx: HelperContext, *_args: int) -> int:
        ctx.charge(10_000)
        return 0

    vm = EbpfVmRaw(assemble("call 1\nexit"), budget=1000)
    vm.register_helper(1, expensive, context=True)
    try:
        run(vm, checked_engine, bytearray(8))
    except BudgetExceeded as exc:
        assert exc.pc == 0
        return
    except HelperFault as exc:
        assert isinstance(exc.cause, BudgetExceeded)
        return
    pytest.skip("this engine does not take helper charges off the budget yet")


HEAVY_HELPERS = """
    mov r6, 0
loop:
    mov r1, r10
    add r1, -64
    mov r2, 64
    lddw r3, {text:#x}
    call 45
    lddw r1, {fmt:#x}
    mov r2, 3
    lddw r3, {text:#x}
    call 6
    lddw r1, 0x77
    mov r2, r10
    add r2, -4
    lddw r3, {value:#x}
    mov r4, 0
    call 2
    add r6, 1
    jlt r6, 100, loop
    mov r0, r6
    exit
"""


def test_string_and_copy_helpers_are_fast(checked_engine: str) -> None:
    """F7: 100 calls each of probe_read_str over a 1 MiB string (64-byte
    destination), trace_printk("%s") of it and map_update of a 4 MiB value
    used to read a byte per checked load (minutes); now seconds."""
    result = _bounded_run(f"""
        from ebpfvm import EbpfVmRaw, assemble
        from ebpfvm.kernel import KernelEnv, kernel_helpers
        from ebpfvm.maps import MapType, create_map, map_helpers
        text = bytearray(b"s" * (1 << 20) + b"\\0")
        fmt = bytearray(b"%s\\0")
        value = bytearray({MAX_VALUE_SIZE})
        big = create_map("big", MapType.ARRAY, 4, {MAX_VALUE_SIZE}, 1)
        pins = [memoryview(b) for b in (text, fmt, value)]
        from ebpfvm.memory import address_of
        code = {HEAVY_HELPERS!r}.format(text=address_of(text), fmt=address_of(fmt),
                                         value=address_of(value))
        vm = EbpfVmRaw(assemble(code), budget=None)
        env = KernelEnv(printk=lambda line: None)
        for number, helper in kernel_helpers(env).items():
            vm.register_helper(number, helper)
        for number, helper in map_helpers({{0x77: big}}).items():
            vm.register_helper(number, helper)
        for buffer in (text, fmt, value):
            vm.register_allowed_memory(buffer)
        r0 = run(vm, engine, bytearray(8))
        report([r0, len(env.lines), len(env.lines[-1])])
    """, checked_engine)
    assert result == [100, 100, TRACE_PRINTK_STRING_BYTES - 1]


def test_trace_printk_strings_are_cut_at_the_kernel_bound() -> None:
    """F7: the kernel copies a call's %s strings into one 512-byte buffer,
    NULs included: a 1000-byte string prints as its first 511 bytes."""
    env = KernelEnv(printk=lambda _line: None)
    ctx, region = _context(4096)
    region.view[:1000] = b"x" * 1000
    region.view[2000:2005] = b"%s|\n\0"
    kernel_helpers(env)[6].fn(ctx, region.start + 2000, 5, region.start, 0, 0)
    assert env.lines == ["x" * (TRACE_PRINTK_STRING_BYTES - 1) + "|"]


def test_read_cstring_faults_where_the_old_byte_loop_did() -> None:
    """F7: the NUL search keeps read_cstring's faults: a string running off
    its region faults at the first byte outside it, one without a NUL within
    the limit names the limit."""
    space = AddressSpace([Region.of_buffer(bytearray(b"abc"), "mem")])
    start = space.regions[0].start
    with pytest.raises(MemoryFault) as info:
        space.read_cstring(start, pc=3)
    assert (info.value.address, info.value.size, info.value.pc) == (start + 3, 1, 3)
    with pytest.raises(MemoryFault) as info:
        space.read_cstring(start, pc=3, limit=2)
    assert (info.value.address, info.value.size) == (start, 2)
    assert space.read_string(start, 2, pc=3) == (b"ab", False)


# -- F8: get_current_comm builds no more than its destination -----------------

@pytest.mark.parametrize("helper", [16, 4])
def test_get_current_comm_checks_its_destination_first(checked_engine: str,
                                                       helper: int) -> None:
    """F8: bpf_get_current_comm(buf, 1 GiB) with a 16-byte buffer built 1 GiB
    before the checked write; probe_read with a bad source built a zeroed
    destination of its size the same way. Under 512 MB both now fault on
    the destination."""
    result = _bounded_run(f"""
        from ebpfvm import EbpfVmRaw, HelperFault, MemoryFault, assemble
        from ebpfvm.kernel import KernelEnv, kernel_helpers
        vm = EbpfVmRaw(assemble(\"\"\"
            mov r1, r10
            add r1, -16
            mov r2, {1 << 30}
            mov r3, {WILD}
            call {helper}
            exit
        \"\"\"))
        for number, helper in kernel_helpers(KernelEnv()).items():
            vm.register_helper(number, helper)
        try:
            run(vm, engine, bytearray(8))
            report("no fault")
        except (HelperFault, MemoryFault) as exc:
            fault = exc if isinstance(exc, MemoryFault) else exc.cause
            report([type(fault).__name__, fault.size, fault.access])
    """, checked_engine, memory_mb=512)
    assert result == ["MemoryFault", 1 << 30, "store"]


def test_get_current_comm_still_fills_its_buffer() -> None:
    """F8: the name, cut to size - 1, then NULs to the end of the buffer."""
    ctx, region = _context(32)
    region.view[:] = b"\xff" * 32
    helper = kernel_helpers(KernelEnv(comm=b"longname"))[16]
    assert helper.fn(ctx, region.start, 5, 0, 0, 0) == 0
    assert bytes(region.view[:6]) == b"long\0\xff"
    assert helper.fn(ctx, region.start, 16, 0, 0, 0) == 0
    assert bytes(region.view[:17]) == b"longname" + bytes(8) + b"\xff"


# -- F13: trace lines are bounded ----------------------------------------------

PRINTK_LOOP = """
    stw [r10-4], 0x000a6425
    mov r6, 0
loop:
    mov r1, r10
    add r1, -4
    mov r2, 4
    mov r3, r6
    call 6
    add r6, 1
    jlt r6, {count}, loop
    mov r0, 0
    exit
"""
"""trace_printk("%d\\n", i) for i in 0..count-1."""


def test_trace_lines_are_bounded(checked_engine: str) -> None:
    """F13: KernelEnv kept every line forever; now the last max_lines, and a
    count of the dropped ones. The default keeps MAX_TRACE_LINES."""
    env = KernelEnv(printk=lambda _line: None, max_lines=10)
    run(_vm(PRINTK_LOOP.format(count=25), {}, env), checked_engine, bytearray(8))
    assert env.lines == [str(n) for n in range(15, 25)]
    assert env.dropped_lines == 15
    env = KernelEnv(printk=lambda _line: None)
    count = MAX_TRACE_LINES + 100
    run(_vm(PRINTK_LOOP.format(count=count), {}, env), checked_engine, bytearray(8))
    assert len(env.lines) == MAX_TRACE_LINES and env.lines[-1] == str(count - 1)
    assert env.dropped_lines == 100


# -- F19: pop into a bad pointer keeps the element ----------------------------

@pytest.mark.parametrize(("map_type", "helper"), [
    (MapType.QUEUE, 88), (MapType.STACK, 88), (MapType.QUEUE, 89),
])
def test_pop_into_a_wild_pointer_keeps_the_element(checked_engine: str, map_type: MapType,
                                                   helper: int) -> None:
    """F19: pop removed the element before the checked write, so a fault lost
    it. Now the write comes first: the fault names the wild address, and the
    queue still holds both elements in order."""
    queue = create_map("q", map_type, 0, 8, 4)
    assert isinstance(queue, QueueMap)
    queue.handle = 0x33
    queue.push(b"first...")
    queue.push(b"second..")
    vm = _vm(f"lddw r1, 0x33\nmov r2, {WILD}\ncall {helper}\nexit", {0x33: queue})
    with pytest.raises((HelperFault, MemoryFault)) as info:
        run(vm, checked_engine, bytearray(8))
    fault = _memory_fault(info.value)
    assert (fault.address, fault.size, fault.access) == (WILD, 8, "store")
    assert list(queue) == ([b"first...", b"second.."] if map_type is MapType.QUEUE
                           else [b"second..", b"first..."])


def test_push_and_ring_output_from_a_wild_pointer_change_nothing(checked_engine: str) -> None:
    """F19: the other helpers that move values read before they change the map."""
    queue = create_map("q", MapType.QUEUE, 0, 8, 4)
    ring = create_map("r", MapType.RINGBUF, 0, 0, 4096)
    queue.handle, ring.handle = 0x33, 0x34
    for code in (f"lddw r1, 0x33\nmov r2, {WILD}\nmov r3, 0\ncall 87\nexit",
                 f"lddw r1, 0x34\nmov r2, {WILD}\nmov r3, 8\nmov r4, 0\ncall 130\nexit"):
        with pytest.raises((HelperFault, MemoryFault)) as info:
            run(_vm(code, {0x33: queue, 0x34: ring}), checked_engine, bytearray(8))
        assert _memory_fault(info.value).address == WILD
    assert len(queue) == 0 and len(ring) == 0


def test_no_budget_constant_is_what_helpers_see_without_a_budget() -> None:
    """F7: a context outside any run has no budget to exhaust."""
    ctx, _region = _context(8)
    ctx.budget = NO_BUDGET
    ctx.charge_bytes(MAX_VALUE_SIZE)
    assert ctx.budget == NO_BUDGET - MAX_VALUE_SIZE // HELPER_BYTES_PER_UNIT


@pytest.mark.parametrize(("limits", "error"), [
    ({"max_map_bytes": -5}, ArgumentError),
    ({"max_map_bytes": 0}, ArgumentError),
    ({"max_object_map_bytes": "x"}, ArgumentTypeError),
    ({"max_object_map_bytes": True}, ArgumentTypeError),
])
def test_load_limits_are_checked_when_given(limits: dict[str, object], error: type) -> None:
    """F4: the map limits of load() are checked before the object is read: a
    negative or non-int limit used to surface as an ElfError about the first
    map (or a TypeError inside the loader, wrapped as a malformed object)."""
    with pytest.raises(error) as info:
        load(b"not even an object", **limits)  # type: ignore[arg-type]
    assert info.value.argument == next(iter(limits))


def test_a_ring_buffer_counts_its_native_block() -> None:
    """A ring of N bytes holds 2N of data (the area mapped twice) and N of
    native bookkeeping (one u64 per 8-byte position: nativering's busy
    table), so 3N counts against the per-map limit: a 128 MiB ring (384 MiB
    in all) is over the 256 MiB default, a 64 MiB one (192 MiB) is not."""
    with pytest.raises(MapTooLarge) as info:
        create_map("big", MapType.RINGBUF, 0, 0, 128 << 20)
    assert info.value.requested == 3 * (128 << 20)
    ring = create_map("fits", MapType.RINGBUF, 0, 0, 64 << 20)
    assert ring.max_entries == 64 << 20
