"""The controllable environment, per-CPU maps, map flags, frozen .rodata and
global variables by name (issue 13: state). Per-CPU semantics and map flag
checks are compared with the Linux kernel where bpf() works (skipped
cleanly elsewhere); the other expected values follow from the test programs'
sources (tests/data/elf/state.c, ringbuf.c)."""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

import kernel_oracle as kernel
from ebpfvm import load
from ebpfvm.errors import ArgumentError, ElfError, MapError, MemoryFault
from ebpfvm.externs import KCONFIG, KERNEL_VERSION
from ebpfvm.kernel import FixedClock, KernelEnv
from ebpfvm.mapflags import MapFlag, MapFlagError, MapFrozen
from ebpfvm.maps import MapTooLarge, MapType, create_map
from ebpfvm.percpu import POSSIBLE_CPUS, PerCpuMap

DATA = Path(__file__).parent / "data" / "elf"
STATE = DATA / "state.o"
UNAVAILABLE = kernel.available()
needs_kernel = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"bpf(): {UNAVAILABLE}")
FRAME = bytes(60)


def u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


# -- per-CPU maps from Python: libbpf's view --------------------------------------------


def test_a_per_cpu_value_is_the_list_of_every_cpus_value() -> None:
    m = create_map("p", MapType.PERCPU_ARRAY, 4, 8, 4)
    assert isinstance(m, PerCpuMap) and m.ncpus == POSSIBLE_CPUS == 2
    assert m[u32(0)] == [bytes(8), bytes(8)]
    m[u32(1)] = [u64(1), u64(2)]
    assert m[u32(1)] == [u64(1), u64(2)]
    m[u32(2)] = u64(7)  # one value: written to every CPU, as libbpf's users do
    assert m[u32(2)] == [u64(7), u64(7)]
    assert m.values_on(1)[u32(1)] == u64(2)
    with pytest.raises(MapError, match="1 value for 2 possible CPUs"):
        m[u32(0)] = [u64(1)]
    with pytest.raises(MapError, match="not 8"):
        m[u32(0)] = [u64(1), b"x"]
    h = create_map("h", MapType.PERCPU_HASH, 4, 8, 2)
    h[u32(5)] = [u64(5), u64(6)]
    assert dict(h) == {u32(5): [u64(5), u64(6)]}
    del h[u32(5)]
    assert len(h) == 0


def test_a_program_update_writes_its_cpu_and_zeroes_the_others_of_a_new_entry() -> None:
    h = create_map("h", MapType.PERCPU_HASH, 4, 8, 2)
    assert h.update_cpu(u32(1), u64(9), 0, 1) == 0
    assert h[u32(1)] == [bytes(8), u64(9)]
    h[u32(1)] = u64(3)
    assert h.update_cpu(u32(1), u64(4), 0, 0) == 0  # an existing entry: CPU 0 only
    assert h[u32(1)] == [u64(4), u64(3)]
    with pytest.raises(MapError, match="CPU 2"):
        h.lookup_cpu(u32(1), 2)


def test_possible_cpus_is_configurable() -> None:
    obj = load(STATE, possible_cpus=4)
    counts = obj.maps["counts"]
    assert isinstance(counts, PerCpuMap) and counts.ncpus == 4
    assert counts[u32(0)] == [bytes(8)] * 4
    with pytest.raises(ArgumentError):
        load(STATE, possible_cpus=0)


def test_the_typed_view_decodes_every_cpu() -> None:
    obj = load(STATE)
    counts = obj.maps["counts"]
    assert isinstance(counts, PerCpuMap)
    counts.typed[1] = [10, 20]
    assert counts.typed[1] == [10, 20]
    counts.typed[1] = 5
    assert counts.typed[1] == [5, 5]
    assert "1 -> [5, 5]" in counts.entries_text(10)


def test_programs_see_the_value_of_their_runs_cpu(engine: str) -> None:
    obj = load(STATE)
    obj.globals["step"] = 3
    env = KernelEnv(cpu=1)
    with obj.xdp("count", engine=engine, env=env) as runner:
        assert runner.run(FRAME).r0 == 1  # bpf_get_smp_processor_id
        env.cpu = 0
        assert runner.run(FRAME).r0 == 0
        assert runner.run(FRAME).r0 == 0
    counts, per_key = obj.maps["counts"], obj.maps["per_key"]
    assert counts[u32(0)] == [u64(6), u64(3)]
    assert per_key[u32(1)] == [bytes(8), u64(3)]
    assert per_key[u32(0)] == [u64(3), bytes(8)]


def _percpu_lookup(fd: int, key: bytes, value_size: int, ncpus: int) -> list[bytes]:
    stride = (value_size + 7) & ~7
    out = ctypes.create_string_buffer(stride * ncpus)
    kernel._elem(kernel.BPF_MAP_LOOKUP_ELEM, fd, key, out)
    return [out.raw[i * stride : i * stride + value_size] for i in range(ncpus)]


def _kernel_keys(fd: int, key_size: int) -> Iterator[bytes]:
    key: bytes | None = None
    while True:
        nxt = ctypes.create_string_buffer(key_size)
        attr = ctypes.create_string_buffer(160)
        key_buf = ctypes.create_string_buffer(key or b"\0", key_size)
        struct.pack_into("<IIQQ", attr, 0, fd, 0, ctypes.addressof(key_buf) if key else 0,
                         ctypes.addressof(nxt))
        try:
            kernel.bpf(kernel.BPF_MAP_GET_NEXT_KEY, attr)
        except OSError:
            return
        key = nxt.raw
        yield key


@needs_kernel
def test_per_cpu_maps_agree_with_the_kernel(checked_engine: str) -> None:
    ncpus = os.cpu_count() or 1
    cpus = sorted(os.sched_getaffinity(0))
    obj = load(STATE, possible_cpus=ncpus)
    program = obj.program("count")
    fds: list[int] = []
    kept = os.sched_getaffinity(0)
    try:
        map_fds = {}
        for name in program.maps:
            target = obj.maps[name]
            map_fds[name] = fd = kernel.map_create(int(target.type), target.key_size,
                                                   target.value_size, target.max_entries)
            fds.append(fd)
        rodata = kernel.map_create(2, 4, 8, 1)
        fds.append(rodata)
        kernel.map_update(rodata, bytes(4), u64(2))
        code = kernel.kernel_code(program.code, program.relocations, map_fds,
                                  {".rodata": rodata})
        prog = kernel.prog_load(code)
        fds.append(prog)
        runs = [(cpus[-1], 2), (cpus[0], 1)]
        for cpu, times in runs:
            os.sched_setaffinity(0, {cpu})
            for _ in range(times):
                assert kernel.test_run(prog, FRAME)[0] == cpu
        want_counts = _percpu_lookup(map_fds["counts"], u32(0), 8, ncpus)
        want_keys = {key: _percpu_lookup(map_fds["per_key"], key, 8, ncpus)
                     for key in _kernel_keys(map_fds["per_key"], 4)}
    finally:
        os.sched_setaffinity(0, kept)
        for fd in fds:
            os.close(fd)
    obj.globals["step"] = 2
    env = KernelEnv()
    with obj.xdp("count", engine=checked_engine, env=env) as runner:
        for cpu, times in runs:
            env.cpu = cpu
            for _ in range(times):
                assert runner.run(FRAME).r0 == cpu
    assert obj.maps["counts"][u32(0)] == want_counts
    assert dict(obj.maps["per_key"]) == want_keys


# -- the controllable environment --------------------------------------------------------


def _clocks(engine: str, env: KernelEnv) -> list[int]:
    obj = load(STATE)
    with obj.xdp("clocks", engine=engine, env=env) as runner:
        assert runner.run(FRAME).r0 == 2
    times: list[int] = obj.globals["times"]
    return times


def test_a_fixed_clock_makes_runs_repeatable(engine: str) -> None:
    def env() -> KernelEnv:
        return KernelEnv(clock=FixedClock(5_000_000_123, 1000), seed=9, cpu=1,
                         boot_offset_ns=7, numa_node=0)

    first = _clocks(engine, env())
    assert first == _clocks(engine, env())
    ktime, boot, coarse, tai, jiffies, _random, numa, cpu = first
    # One clock reading per helper call, each 1000 ns after the one before.
    assert ktime == 5_000_000_123
    assert boot == 5_000_001_123 + 7
    assert coarse == 5_000_000_000  # 5_000_002_123 at the last 4 ms tick (HZ 250)
    assert tai == 5_000_003_123 + 37_000_000_000
    assert jiffies == 5_000_004_123 // 4_000_000
    assert (numa, cpu) == (0, 1)
    other_seed = _clocks(engine, KernelEnv(clock=FixedClock(0), seed=10))
    assert other_seed[5] != first[5]


def test_a_callable_clock_and_the_default() -> None:
    readings = iter(range(10**9, 2 * 10**9, 10**6))
    times = _clocks("interp", KernelEnv(clock=lambda: next(readings), hz=1000))
    assert times[:2] == [10**9, 10**9 + 10**6]
    assert times[4] == (10**9 + 4 * 10**6) // 10**6  # jiffies at HZ 1000
    host = _clocks("interp", KernelEnv())
    assert host[0] > 0 and host[1] >= host[0]


# -- .rodata, BPF_F_RDONLY_PROG, global variables -----------------------------------------


def test_rodata_is_set_before_the_first_run_and_frozen_after(engine: str) -> None:
    # Issue 13 point 6: building runners does not freeze .rodata, the first
    # run does; the run sees the value set after the build (count adds step
    # to counts[0], state.c).
    obj = load(STATE)
    rodata = obj.maps[".rodata"]
    assert rodata.flags & MapFlag.RDONLY_PROG
    obj.globals["step"] = 4
    assert obj.globals.section(".rodata")["step"] == 4
    runner = obj.xdp("count", engine=engine)
    other = obj.xdp("clocks", engine=engine)
    obj.globals["step"] = 7  # after the builds, before any run
    runner.run(FRAME)
    assert obj.maps["counts"].values_on(0)[u32(0)] == u64(7)
    with pytest.raises(MapFrozen) as caught:
        obj.globals["step"] = 5
    assert caught.value.map_name == ".rodata" and caught.value.variable == "step"
    with pytest.raises(MapFrozen):
        rodata[u32(0)] = u64(5)
    assert obj.globals["step"] == 7
    obj.globals["times"] = [1] * 8  # .bss stays writable
    assert obj.globals["times"] == [1] * 8
    runner.close()
    other.close()


@pytest.mark.parametrize("how", ["vm", "skb", "another program"])
def test_any_first_run_of_the_object_freezes_rodata(engine: str, how: str) -> None:
    obj = load(STATE)
    counting = obj.xdp("count", engine=engine)
    if how == "vm":  # a bare VM of the object, run as the engine runs it
        from engines import run

        vm = obj.vm("clocks")
        obj.globals["step"] = 3
        run(vm, engine, bytearray(64))
        vm.close()
    elif how == "skb":  # an SkbRunner wrapping a VM of the object
        from ebpfvm.contexts import SkbRunner

        with SkbRunner(obj.vm("clocks"), engine=engine, prog_type="sched_cls") as skb:
            obj.globals["step"] = 3
            skb.run(FRAME)
    else:
        with obj.xdp("clocks", engine=engine) as clocks:
            obj.globals["step"] = 3
            clocks.run(FRAME)
    with pytest.raises(MapFrozen):
        obj.globals["step"] = 9
    counting.run(FRAME)  # built before the freeze: sees the value set before it
    assert obj.maps["counts"].values_on(0)[u32(0)] == u64(3)
    counting.close()


def test_a_program_store_to_rodata_is_a_typed_fault(checked_engine: str) -> None:
    obj = load(STATE)
    with obj.xdp("write_rodata", engine=checked_engine) as runner, \
            pytest.raises(MemoryFault) as caught:
        runner.run(FRAME)
    fault = caught.value
    start = ctypes.addressof(ctypes.c_char.from_buffer(obj.data[".rodata"]))
    assert (fault.access, fault.size, fault.address) == ("store", 8, start)
    assert fault.pc is not None
    assert obj.globals["step"] == 1


def test_the_unchecked_jit_lets_a_rodata_store_through_as_documented() -> None:
    # docs/guide.md, "Frozen .rodata": the unchecked JIT checks no access, so
    # the store of write_rodata (state.c: step = 5) lands in the section.
    from ebpfvm.engine import find_engine

    if find_engine("jit-unchecked").unavailable() is not None:
        pytest.skip("no unchecked JIT here")
    obj = load(STATE)
    with obj.xdp("write_rodata", engine="jit-unchecked") as runner:
        assert runner.run(FRAME).r0 == 2
    assert obj.globals["step"] == 5


def test_globals_by_name() -> None:
    obj = load(DATA / "globals.o")
    assert set(obj.globals) >= {"limit", "counter", "seen"}
    assert obj.globals["counter"] == 7
    obj.globals["counter"] = 99
    assert obj.variables(".data")["counter"] == 99
    with pytest.raises(KeyError):
        obj.globals["nothing"]
    with pytest.raises(MapError):
        del obj.globals["counter"]


# -- map flags: the kernel's checks --------------------------------------------------------

FLAG_CASES = [
    (MapType.HASH, 4, 8, 4, MapFlag.NO_PREALLOC),
    (MapType.PERCPU_HASH, 4, 8, 4, MapFlag.NO_PREALLOC),
    (MapType.LRU_HASH, 4, 8, 4, MapFlag.NO_PREALLOC),
    (MapType.LRU_HASH, 4, 8, 4, MapFlag.NO_COMMON_LRU),
    (MapType.HASH, 4, 8, 4, MapFlag.NO_COMMON_LRU),
    (MapType.ARRAY, 4, 8, 4, MapFlag.NO_PREALLOC),
    (MapType.ARRAY, 4, 8, 4, MapFlag.RDONLY_PROG),
    (MapType.ARRAY, 4, 8, 4, MapFlag.RDONLY_PROG | MapFlag.WRONLY_PROG),
    (MapType.ARRAY, 4, 8, 4, MapFlag.MMAPABLE),
    (MapType.PERCPU_ARRAY, 4, 8, 4, MapFlag.MMAPABLE),
    (MapType.PERCPU_ARRAY, 4, 8, 4, MapFlag.NUMA_NODE),
    (MapType.PERCPU_ARRAY, 4, 32768, 1, 0),
    (MapType.PERCPU_ARRAY, 4, 32769, 1, 0),
    (MapType.PERCPU_HASH, 4, 32769, 1, 0),
    (MapType.ARRAY, 4, 8, 4, MapFlag.PRESERVE_ELEMS),
    (MapType.HASH, 4, 8, 4, MapFlag.ZERO_SEED),
    (MapType.QUEUE, 0, 8, 4, MapFlag.NO_PREALLOC),
    (MapType.RINGBUF, 0, 0, 4096, MapFlag.RDONLY_PROG),
]


def _kernel_accepts(map_type: int, key: int, value: int, entries: int, flags: int) -> bool:
    attr = ctypes.create_string_buffer(160)
    struct.pack_into("<IIIII", attr, 0, map_type, key, value, entries, flags)
    try:
        fd = kernel.bpf(kernel.BPF_MAP_CREATE, attr)
    except OSError:
        return False
    os.close(fd)
    return True


def _we_accept(map_type: int, key: int, value: int, entries: int, flags: int) -> bool:
    try:
        create_map("m", map_type, key, value, entries, flags)
    except MapError:
        return False
    return True


@needs_kernel
@pytest.mark.parametrize("case", FLAG_CASES, ids=lambda c: f"{c[0].name}-{c[2]}-{int(c[4])}")
def test_map_flags_and_sizes_as_the_kernel_checks_them(
        case: tuple[MapType, int, int, int, int]) -> None:
    assert _we_accept(*case) == _kernel_accepts(*case)


def test_a_refused_flag_is_named() -> None:
    with pytest.raises(MapFlagError) as caught:
        create_map("m", MapType.ARRAY, 4, 8, 1, MapFlag.NO_PREALLOC)
    assert caught.value.flag == "BPF_F_NO_PREALLOC" and caught.value.map_name == "m"


def test_a_rdonly_prog_map_is_read_only_for_programs() -> None:
    m = create_map("ro", MapType.ARRAY, 4, 8, 1, MapFlag.RDONLY_PROG)
    assert not m.region.writable  # type: ignore[attr-defined]
    m[u32(0)] = u64(1)  # Python still writes it (it is not frozen)


# -- ring buffers: the discarded count -------------------------------------------------------


def test_the_ring_buffer_counts_discarded_records() -> None:
    obj = load(DATA / "ringbuf.o")
    vm = obj.vm("emit")
    for first in (1, 2, 3):  # odd first bytes: the reserved record is discarded
        assert vm.execute_program(bytes([first, 0, 0, 0])) == 0
    ring = obj.maps["events"]
    records = list(ring.consume())  # type: ignore[attr-defined]
    # In reservation order: output 1, event 2 (events 1 and 3 were discarded),
    # output 2, output 3.
    assert [len(r) for r in records] == [2, 8, 2, 2]
    assert (records[0], records[1][4], records[2], records[3]) == (b"\x01\x00", 2, b"\x02\x00",
                                                                   b"\x03\x00")
    assert ring.discarded == 2  # type: ignore[attr-defined]
    assert ring.take_discarded() == 2  # type: ignore[attr-defined]
    assert ring.discarded == 0  # type: ignore[attr-defined]


# -- .kconfig externs ----------------------------------------------------------------------


def test_kconfig_externs_get_documented_values(engine: str) -> None:
    obj = load(DATA / "kconfig.o")
    assert obj.globals["LINUX_KERNEL_VERSION"] == KERNEL_VERSION == (6 << 16) | (18 << 8)
    assert obj.globals["CONFIG_HZ"] == KCONFIG["CONFIG_HZ"] == KernelEnv().hz
    assert obj.globals["CONFIG_NOT_KNOWN"] == 0  # __weak and unknown: 0, as libbpf
    with obj.xdp("version", engine=engine) as runner:
        assert runner.run(FRAME).r0 == 0x612
    with obj.xdp("hz", engine=engine) as runner:
        assert runner.run(FRAME).r0 == 250
    with pytest.raises(MapFrozen):
        obj.globals["CONFIG_HZ"] = 100


def test_an_unknown_strong_kconfig_extern_is_a_load_error() -> None:
    with pytest.raises(ElfError, match="CONFIG_NOT_KNOWN"):
        load(DATA / "kconfig_bad.o")


def test_possible_cpus_stay_within_the_map_memory_limit() -> None:
    m = create_map("p", MapType.PERCPU_ARRAY, 4, 4096, 256, max_bytes=4 << 20)
    assert isinstance(m, PerCpuMap)
    m.set_possible_cpus(4)
    with pytest.raises(MapTooLarge):
        m.set_possible_cpus(8)  # 8 MiB of values over a 4 MiB limit
    assert m.ncpus == 4


def _peek_in_kernel(start: list[bytes]) -> int:
    obj = load(STATE)
    program = obj.program("peek")
    fd = kernel.map_create(int(MapType.PERCPU_ARRAY), 4, 8, 2)
    try:
        ncpus = os.cpu_count() or 1
        value = b"".join(start[:ncpus])
        kernel.map_update(fd, u32(0), value)
        code = kernel.kernel_code(program.code, program.relocations, {"counts": fd}, {})
        prog = kernel.prog_load(code)
        try:
            return kernel.test_run(prog, FRAME)[0]
        finally:
            os.close(prog)
    finally:
        os.close(fd)


def test_lookup_percpu_elem_reads_another_cpu(engine: str) -> None:
    start = [u64(5), u64(42)]
    obj = load(STATE)
    obj.maps["counts"][u32(0)] = start
    with obj.xdp("peek", engine=engine) as runner:
        got = runner.run(FRAME).r0
    assert got == 1042  # CPU 1's value; CPU 7 is not possible: NULL
    if UNAVAILABLE is None and os.cpu_count() == 2:
        assert _peek_in_kernel(start) == got
