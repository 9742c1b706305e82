"""The native runtime (issue 15): rtcore's native helpers against the Python
ones they mirror. Every case runs on every engine with native helpers linked
(the default) and compares with the interpreter, which always calls the
Python implementations: same r0, same map contents, same instruction count,
same typed fault with the same fields. The expected values are the Python
reference's (an independent implementation: ebpfvm.maps, ebpfvm.kernel,
ebpfvm.xdp_helpers); the corpus compares both with the kernel."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import kernel_oracle
from conftest import NEEDS_KBPF
from ebpfvm import EbpfVmRaw, assemble
from ebpfvm.encoding import decode
from ebpfvm.errors import EbpfError, HelperFault, MemoryFault
from ebpfvm.helper_table import HELPERS, helper_number
from ebpfvm.jit.rtlink import link_runtime
from ebpfvm.kernel import FixedClock, KernelEnv, kernel_helpers
from ebpfvm.mapbase import MapType
from ebpfvm.maps import Map, QueueMap, map_helpers
from ebpfvm.memory import address_of
from ebpfvm.native.abi import RT_MAX_MAPS
from ebpfvm.native.env import RtEnvBlock
from ebpfvm.native.intrinsics import intrinsic_helpers, runtime_memory
from ebpfvm.native.registry import (
    HERE as NATIVE_DIR,
)
from ebpfvm.native.registry import (
    NATIVE_ENV,
    load_object,
    native_functions,
    native_helper_numbers,
)
from ebpfvm.percpu import PerCpuMap
from ebpfvm.xdp_helpers import XdpHelpers
from engines import run

ARRAY, PERCPU, HASH, BIG = 0x1000, 0x2000, 0x3000, 0x4000
PHASH, QUEUE, STACK = 0x5000, 0x6000, 0x7000
WILD = 0x1234
TOP = (1 << 64) - 2
"""A pointer whose access wraps around the address space."""
EXPECTED_NATIVE = {"bpf_map_lookup_elem", "bpf_map_update_elem", "bpf_map_delete_elem",
                   "bpf_get_prandom_u32", "bpf_get_smp_processor_id", "bpf_get_numa_node_id",
                   "bpf_ktime_get_ns", "bpf_csum_diff", "bpf_map_push_elem",
                   "bpf_map_pop_elem", "bpf_map_peek_elem", "bpf_map_lookup_percpu_elem"}


@contextmanager
def native(on: bool) -> Iterator[None]:
    """EBPFVM_NATIVE for the compiles inside."""
    old = os.environ.get(NATIVE_ENV)
    os.environ[NATIVE_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ[NATIVE_ENV]
        else:
            os.environ[NATIVE_ENV] = old


def _maps() -> dict[int, Any]:
    maps: dict[int, Any] = {
        ARRAY: Map("arr", MapType.ARRAY, 4, 12, 4),
        PERCPU: PerCpuMap("pcpu", MapType.PERCPU_ARRAY, 4, 8, 3, ncpus=2),
        HASH: Map("hash", MapType.HASH, 4, 8, 4),
        BIG: Map("big", MapType.ARRAY, 4, 64, 2),
        PHASH: PerCpuMap("phash", MapType.PERCPU_HASH, 4, 8, 3, ncpus=2),
        QUEUE: QueueMap("queue", MapType.QUEUE, 8, 3),
        STACK: QueueMap("stack", MapType.STACK, 8, 3),
    }
    for handle, target in maps.items():
        target.handle = handle
    maps[ARRAY][(1).to_bytes(4, "little")] = bytes(range(12))
    maps[PHASH][(1).to_bytes(4, "little")] = [b"\x11" * 8, b"\x22" * 8]
    for value in (b"first...", b"second.."):
        maps[QUEUE].push(value)
        maps[STACK].push(value)
    return maps


def _contents(maps: dict[int, Any]) -> dict[int, Any]:
    return {handle: list(target) if isinstance(target, QueueMap)
            else {bytes(key): target[key] for key in target} for handle, target in maps.items()}


Env = Callable[[], KernelEnv]


def _outcome(engine: str, source: str, make_env: Env | None = None,
             budget: int | None = None) -> tuple[Any, ...]:
    """(r0 or the fault's type and message, map contents, instructions run)."""
    env = make_env() if make_env is not None else None
    maps = _maps()
    vm = EbpfVmRaw(assemble(source))
    if budget is not None:
        vm.budget = budget
    for key, helper in kernel_helpers(env or KernelEnv(seed=5, cpu=1)).items():
        vm.register_helper(key, helper)
    for key, helper in map_helpers(maps, lambda: (env or KernelEnv(cpu=1)).cpu).items():
        vm.register_helper(key, helper)
    vm.register_helper(helper_number("bpf_csum_diff"), XdpHelpers.csum_diff, context=True)
    try:
        result: Any = run(vm, engine, bytearray(16))
    except EbpfError as error:
        cause = getattr(error, "cause", None)
        result = (type(error).__name__, str(error), getattr(error, "pc", None),
                  getattr(error, "helper_id", None), type(cause).__name__,
                  *(getattr(cause, name, None) for name in ("pc", "address", "size", "access")))
    return result, _contents(maps), vm.last_instruction_count


def _same(engine: str, source: str, env: Env | None = None,
          budget: int | None = None) -> tuple[Any, ...]:
    """The case on `engine` with native helpers, as the interpreter runs it."""
    expected = _outcome("interp", source, env, budget)
    with native(True):
        got = _outcome(engine, source, env, budget)
    assert got == expected
    return got


def _key(value: int, at: int = -4) -> str:
    return f"lddw r1, {value:#x}\nstxw [r10{at}], r1\n"


def _call(number: int, handle: int, r2: str = "mov r2, r10\nadd r2, -4",
          rest: str = "") -> str:
    return f"lddw r1, {handle:#x}\n{r2}\n{rest}\ncall {number}\n"


LOOKUP_READ = "jeq r0, 0, +2\nldxdw r0, [r0]\nexit\nmov r0, 0xdead\nexit\n"


@pytest.mark.parametrize("handle", [ARRAY, PERCPU, HASH, PHASH])
@pytest.mark.parametrize("index", [0, 1, 2, 3, 4, 0xFFFFFFFF])
def test_lookup(engine: str, handle: int, index: int) -> None:
    _same(engine, _key(index) + _call(1, handle) + LOOKUP_READ)


@pytest.mark.parametrize("handle", [ARRAY, PERCPU, HASH, BIG, PHASH])
@pytest.mark.parametrize("index", [0, 2, 3, 4])
@pytest.mark.parametrize("flags", [0, 1, 2, 3, 4, 5, 6, 7, 1 << 32])
def test_update_then_lookup(engine: str, handle: int, index: int, flags: int) -> None:
    value = "lddw r1, 0x1122334455667788\nstxdw [r10-88], r1\nstxdw [r10-80], r1\n"
    update = _key(index) + value + _call(2, handle, rest=f"mov r3, r10\nadd r3, -88\n"
                                         f"lddw r4, {flags:#x}")
    source = update + "mov r6, r0\n" + _call(1, handle) + "jeq r0, 0, +2\nldxdw r0, [r0]\n" \
        "add r0, r6\nexit\n"
    _same(engine, source)


@pytest.mark.parametrize("handle", [ARRAY, PERCPU, HASH, PHASH])
@pytest.mark.parametrize("index", [0, 1, 9])
def test_delete(engine: str, handle: int, index: int) -> None:
    _same(engine, _key(index) + _call(3, handle) + "exit\n")


@pytest.mark.parametrize("number", [1, 2, 3])
@pytest.mark.parametrize("key", [0, WILD, TOP])
@pytest.mark.parametrize("handle", [ARRAY, PERCPU, HASH, PHASH, QUEUE, 0x9999, 0])
def test_hostile_map_arguments(engine: str, number: int, key: int, handle: int) -> None:
    """Wild key pointers (one wraps around the address space) and forged
    handles: the same typed fault, with the same fields, as Python's."""
    rest = f"lddw r3, {TOP:#x}\nmov r4, 0" if number == 2 else ""
    outcome = _same(engine, _call(number, handle, f"lddw r2, {key:#x}", rest) + "exit\n")
    assert isinstance(outcome[0], tuple)


@pytest.mark.parametrize("handle", [PHASH, PERCPU, HASH, QUEUE])
@pytest.mark.parametrize("index", [0, 1, 5])
@pytest.mark.parametrize("cpu", [0, 1, 2, 1 << 40])
def test_lookup_percpu(engine: str, handle: int, index: int, cpu: int) -> None:
    """bpf_map_lookup_percpu_elem: a per-CPU hash natively, a CPU past the
    map's (0), and maps that are not per-CPU hashes (Python's answer or its
    typed error, through the fallback)."""
    _same(engine, _key(index) + _call(195, handle, rest=f"lddw r3, {cpu:#x}") + LOOKUP_READ)


QUEUE_OPS = {"push": 87, "pop": 88, "peek": 89}


@pytest.mark.parametrize("handle", [QUEUE, STACK, HASH])
@pytest.mark.parametrize("ops", [
    ("pop", "pop", "pop", "push"), ("peek", "push", "push", "push", "pop"),
    ("push", "push", "push_exist", "pop", "pop", "pop", "pop"), ("push_bad_flags", "peek"),
])
def test_queue_and_stack(engine: str, handle: int, ops: tuple[str, ...]) -> None:
    """Push (each flag: full is E2BIG, BPF_EXIST drops the oldest), pop and
    peek in sequence: every result and the values read, as Python's."""
    source = "mov r9, 0\n"
    for step, op in enumerate(ops):
        name, _, flag = op.partition("_")
        flags = {"": 0, "exist": 2, "bad": 5}[flag.split("_")[0]]
        value = f"lddw r1, {0x0101010101010101 * (step + 1):#x}\nstxdw [r10-16], r1\n"
        rest = f"mov r3, {flags}" if name == "push" else ""
        source += value + _call(QUEUE_OPS[name], handle, "mov r2, r10\nadd r2, -16", rest)
        source += "lsh r9, 8\nadd r9, r0\nldxdw r1, [r10-16]\nadd r9, r1\n"
    _same(engine, source + "mov r0, r9\nexit\n")


@pytest.mark.parametrize("op", ["push", "pop", "peek"])
@pytest.mark.parametrize("pointer", [WILD, TOP])
def test_queue_wild_pointers(engine: str, op: str, pointer: int) -> None:
    outcome = _same(engine, _call(QUEUE_OPS[op], QUEUE, f"lddw r2, {pointer:#x}",
                                  "mov r3, 0" if op == "push" else "") + "exit\n")
    assert isinstance(outcome[0], tuple)


@pytest.mark.parametrize("value", [WILD, TOP])
def test_wild_value_pointer(engine: str, value: int) -> None:
    outcome = _same(engine, _key(0) + _call(2, ARRAY, rest=f"lddw r3, {value:#x}\nmov r4, 0")
                    + "exit\n")
    assert outcome[0][0] == "HelperFault" and outcome[0][4:] == ("MemoryFault", 10, value, 12,
                                                                 "load")


def test_per_cpu_values_follow_the_env_cpu(engine: str) -> None:
    for cpu in (0, 1, 5):  # 5: not one of the map's CPUs (Python's MapError)
        def env(cpu: int = cpu) -> KernelEnv:
            return KernelEnv(cpu=cpu)

        _same(engine, _key(2) + "mov r1, 7\nstxdw [r10-16], r1\n" + _call(
            2, PERCPU, rest="mov r3, r10\nadd r3, -16\nmov r4, 0") + _call(1, PERCPU)
            + LOOKUP_READ, env)


def test_kernel_helpers(engine: str) -> None:
    source = "call 7\nmov r6, r0\ncall 7\nlsh r0, 32\nor r6, r0\ncall 8\nadd r6, r0\n" \
        "call 42\nadd r6, r0\ncall 5\nadd r0, r6\nexit\n"
    for env in (lambda: KernelEnv(seed=5, cpu=1, clock=FixedClock(10**9)),
                lambda: KernelEnv(seed=0, numa_node=0, clock=FixedClock(10**9, 3)),
                lambda: KernelEnv(seed=1 << 40, cpu=3, clock=FixedClock(0))):
        _same(engine, source, env)


@pytest.mark.parametrize(("removed", "added"), [
    (0, 0), (4, 0), (0, 8), (8, 8), (12, 4), (3, 0), (0, 2), (256, 256), (508, 8),
    (1 << 32, 0), ((1 << 64) - 4, 8)])
def test_csum_diff(engine: str, removed: int, added: int) -> None:
    fill = "".join(f"lddw r1, {0x0102030405060708 * (n + 1) & ((1 << 64) - 1):#x}\n"
                   f"stxdw [r10-{8 * (n + 1)}], r1\n" for n in range(64))
    source = fill + f"mov r1, r10\nadd r1, -512\nlddw r2, {removed:#x}\nmov r3, r10\n" \
        f"add r3, -256\nlddw r4, {added:#x}\nmov r5, 0x1234\ncall 28\nexit\n"
    _same(engine, source)


@pytest.mark.parametrize("pointer", [WILD, TOP])
def test_csum_diff_wild(engine: str, pointer: int) -> None:
    _same(engine, f"lddw r1, {pointer:#x}\nmov r2, 8\nmov r3, r10\nadd r3, -8\nmov r4, 4\n"
          "mov r5, 0\ncall 28\nexit\n")


@pytest.mark.parametrize("budget", [60, 64, 66, 67, 68, 69, 70, 140, 200])
def test_budget_charges(checked_engine: str, budget: int) -> None:
    """A native helper's call and work cost what the Python helper's do:
    the run stops at the same place, with the same count."""
    update = _key(1) + _call(2, BIG, rest="mov r3, r10\nadd r3, -128\nmov r4, 0")
    _same(checked_engine, update + "exit\n", budget=budget)
    _same(checked_engine, "call 7\ncall 7\nexit\n", budget=budget)


def test_the_switch_and_replaced_helpers() -> None:
    """EBPFVM_NATIVE=0 links nothing; a helper the user replaced is not linked."""
    program = decode(assemble("call 7\ncall 8\nexit"))
    helpers = kernel_helpers(KernelEnv())
    with native(False):
        assert link_runtime(program, helpers) is None
    with native(True):
        link = link_runtime(program, helpers)
        assert link is not None and sorted(link.units) == [7, 8]
        helpers[8] = type(helpers[8])(lambda *_args: 3, "mine")
        link = link_runtime(program, helpers)
        assert link is not None and sorted(link.units) == [7]


def test_the_helper_table_column_is_the_registry() -> None:
    names = {spec.name for spec in HELPERS.values() if spec.native}
    assert names == {HELPERS[number].name for number in native_helper_numbers()}
    assert names >= EXPECTED_NATIVE


def test_user_replacement_runs(engine: str) -> None:
    vm = EbpfVmRaw(assemble("call 8\nexit"))
    for key, helper in kernel_helpers(KernelEnv(cpu=1)).items():
        vm.register_helper(key, helper)
    vm.register_helper(8, lambda *_args: 77)
    with native(True):
        assert run(vm, engine, bytearray(4)) == 77


def _runtime_program(name: str, env: RtEnvBlock, maps: dict[int, Any],
                     python: dict[int, Any], prologue: str = "") -> EbpfVmRaw:
    """A runtime function as a plain program (after `prologue`, which may set
    r1..r5), with the intrinsics as helpers and what it reads as memory."""
    function = next(f for f in native_functions().values() if f.name == name)
    vm = EbpfVmRaw((assemble(prologue) if prologue else b"") + function.code)
    for key, helper in intrinsic_helpers(env, python).items():
        vm.register_helper(key, helper)
    env.set_maps(maps)
    for buffer in runtime_memory(env):
        vm.register_allowed_memory(buffer)
    for target in maps.values():
        if isinstance(target, Map):  # a queue's values are in its native block
            vm.register_allowed_memory(target.slab)
    return vm


def test_runtime_code_runs_as_a_plain_program(engine: str) -> None:
    """The runtime's eBPF, with the intrinsics as Python helpers, runs on
    every engine as a program: prandom steps the shared state as Python's
    helper does, a lookup finds the value's address, and a wild key pointer
    faults through RT_CHECK."""
    env, twin = RtEnvBlock(seed=7), RtEnvBlock(seed=7)
    maps = _maps()
    vm = _runtime_program("rt_get_prandom_u32", env, maps, {})
    assert [run(vm, engine, bytearray(4)) for _ in range(3)] == \
        [twin.prandom_u32() for _ in range(3)]
    key = bytearray((1).to_bytes(4, "little"))
    vm = _runtime_program("rt_map_lookup_elem", env, maps, map_helpers(maps),
                          f"lddw r1, {ARRAY:#x}\nlddw r2, {address_of(key):#x}")
    vm.register_allowed_memory(key)
    assert run(vm, engine, bytearray(4)) == maps[ARRAY].base + 12
    vm = _runtime_program("rt_map_lookup_elem", env, maps, map_helpers(maps),
                          f"lddw r1, {ARRAY:#x}\nlddw r2, {WILD:#x}")
    with pytest.raises(HelperFault) as caught:  # the intrinsic is a helper there
        run(vm, engine, bytearray(4))
    cause = caught.value.cause
    assert isinstance(cause, MemoryFault)
    assert (cause.address, cause.size, cause.access) == (WILD, 4, "load")


@pytest.mark.parametrize("handle", [0x1000, 0])
def test_the_handle_is_the_helper_tables_key(engine: str, handle: int) -> None:
    """A map is found by the handle the map helpers' table keys it by, not
    its own attribute (here 0: never set)."""
    table = Map("t", MapType.ARRAY, 4, 8, 2)
    table[(1).to_bytes(4, "little")] = (42).to_bytes(8, "little")
    source = _key(1) + _call(1, handle) + LOOKUP_READ

    def outcome(name: str) -> Any:
        vm = EbpfVmRaw(assemble(source))
        for key, helper in map_helpers({0x1000: table}).items():
            vm.register_helper(key, helper)
        try:
            return run(vm, name, bytearray(4))
        except EbpfError as error:
            return str(error)

    expected = outcome("interp")
    with native(True):
        assert outcome(engine) == expected
    assert (expected == 42) is (handle == 0x1000)


def test_maps_table_is_bounded() -> None:
    env = RtEnvBlock()
    many = [Map(f"m{n}", MapType.ARRAY, 4, 4, 1) for n in range(RT_MAX_MAPS + 3)]
    assert len(env.set_maps(many)) == RT_MAX_MAPS == env.env.nmaps


@pytest.mark.skipif(shutil.which("clang") is None, reason="no clang")
def test_the_committed_objects_are_built_from_the_sources(tmp_path: Path) -> None:
    """Each runtime object is what its C file compiles to (rt.h's command)."""
    for source in sorted(NATIVE_DIR.glob("*.c")):
        built = tmp_path / (source.stem + ".o")
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall",
                        "-Wno-unused-parameter", "-c", str(source), "-o", str(built)],
                       check=True, cwd=NATIVE_DIR)
        fresh = {f.name: f.code for f in load_object(built)}
        committed = {f.name: f.code for f in load_object(source.with_suffix(".o"))}
        assert fresh == committed, f"rebuild {source.name}: make -C src/ebpfvm/native"


UPDATE_FLAGS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 1 << 32]


def _update_program(index: int, flags: int) -> bytes:
    """An array update with `flags` at `index`, returning its result; the
    map is the lddw at slot 2 (patched to the kernel's map fd form)."""
    return assemble(f"""
        stw [r10-4], {index}
        stdw [r10-16], 7
        lddw r1, 0
        mov r2, r10
        add r2, -4
        mov r3, r10
        add r3, -16
        lddw r4, {flags:#x}
        call 2
        exit""")


@NEEDS_KBPF
@pytest.mark.parametrize("map_type", [MapType.ARRAY, MapType.PERCPU_ARRAY])
def test_array_update_flags_as_the_kernel(engine: str, map_type: MapType) -> None:
    """Every flag combination at an index inside and past the array: the
    errno the kernel's array_map_update_elem returns (BPF_PROG_TEST_RUN)."""
    fd = kernel_oracle.map_create(int(map_type), 4, 8, 2)
    try:
        for index in (1, 2):
            for flags in UPDATE_FLAGS:
                code = bytearray(_update_program(index, flags))
                code[17] = 0x11  # lddw r1 with src BPF_PSEUDO_MAP_FD
                code[20:24] = fd.to_bytes(4, "little")
                prog = kernel_oracle.prog_load(bytes(code))
                try:
                    expected = kernel_oracle.test_run(prog, bytes(64))[0]
                finally:
                    os.close(prog)
                table = (PerCpuMap("k", map_type, 4, 8, 2, ncpus=2)
                         if map_type is MapType.PERCPU_ARRAY else Map("k", map_type, 4, 8, 2))
                vm = EbpfVmRaw(_update_program(index, flags))
                for key, helper in map_helpers({0: table}).items():
                    vm.register_helper(key, helper)
                with native(True):
                    assert run(vm, engine, bytearray(64)) & 0xFFFF_FFFF == expected, (index, flags)
    finally:
        os.close(fd)
