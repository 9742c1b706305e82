"""Robustness: bounded fuzzing of every entry point (tests/fuzzing.py), the JIT's
memory over many compile cycles, and regression tests for what fuzzing found."""

from __future__ import annotations

import mmap
import os
import signal
import struct
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

import pytest

import fuzzing
import hostile
from conftest import REPO
from ebpfvm import EbpfError, EbpfVmRaw, ElfError, InvalidInstruction, MapError, load
from ebpfvm.jit.execmem import jit_supported
from ebpfvm.maps import (
    BPF_ANY,
    MAX_MAP_BYTES,
    MAX_VALUE_SIZE,
    MapType,
    ProgArray,
    QueueMap,
    RingBuf,
    create_map,
)
from engines import ALL_ENGINES, CHECKED_ENGINES, run

FUZZ_RAN: dict[str, Counter[tuple[str, str]]] = {}
"""Outcome counts of the bounded fuzzing runs, for the terminal summary (conftest)."""

# -- regressions found by the fuzzer -----------------------------------------------------------


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_empty_program_without_verifier_is_an_invalid_instruction(engine: str) -> None:
    # Found by fuzzing: b"" crashed the JIT (the entry fell through into
    # whatever followed) and made the interpreter generate invalid Python.
    vm = EbpfVmRaw(budget=100)
    vm.set_verifier(lambda code: None)
    vm.set_program(b"")
    with pytest.raises(InvalidInstruction) as info:
        run(vm, engine, bytearray(8))
    assert (info.value.pc, info.value.opcode) == (0, 0)
    vm.close()


def _hash() -> Any:
    return create_map("h", MapType.HASH, 4, 8, 4)


@pytest.mark.parametrize("call", [
    lambda m: m.lookup_elem(7),
    lambda m: m.update_elem(None, bytes(8), BPF_ANY),
    lambda m: m.update_elem(bytes(4), "eight by", BPF_ANY),
    lambda m: m.delete_elem([1, 2, 3, 4]),
    lambda m: m[1.5],
    lambda m: m.__setitem__(bytes(4), 8),
    lambda m: m.get(None),
    lambda m: 5 in m,
], ids=["lookup-int", "update-none-key", "update-str-value", "delete-list", "getitem-float",
        "setitem-int-value", "get-none", "contains-int"])
def test_map_operations_with_wrong_types_raise_map_error(call: Any) -> None:
    # Found by fuzzing: these raised TypeError (or took a list of ints as a key).
    the_map = _hash()
    the_map[b"\x01\x00\x00\x00"] = bytes(range(8))
    with pytest.raises(MapError, match="must be bytes"):
        call(the_map)
    assert dict(the_map) == {b"\x01\x00\x00\x00": bytes(range(8))}  # nothing changed


def test_bytearray_and_memoryview_keys_work_like_bytes() -> None:
    # Found by fuzzing: delete_elem(bytearray) raised "unhashable type".
    the_map = _hash()
    assert the_map.update_elem(bytearray(b"abcd"), memoryview(bytes(8)), BPF_ANY) == 0
    assert the_map.lookup_elem(memoryview(b"abcd")) == the_map.base
    assert the_map.delete_elem(bytearray(b"abcd")) == 0
    assert len(the_map) == 0


def test_queue_push_of_an_int_is_a_map_error_not_zero_bytes() -> None:
    # Found by fuzzing: push(7) pushed bytes(7), seven zero bytes.
    queue = create_map("q", MapType.QUEUE, 0, 7, 4)
    assert isinstance(queue, QueueMap)
    with pytest.raises(MapError, match="must be bytes"):
        queue.push(7)  # type: ignore[arg-type]
    assert len(queue) == 0


def test_ring_and_program_array_arguments_are_checked() -> None:
    ring = create_map("r", MapType.RINGBUF, 0, 0, 4096)
    assert isinstance(ring, RingBuf)
    with pytest.raises(MapError, match="must be bytes"):
        ring.output(3)  # type: ignore[arg-type]
    with pytest.raises(MapError, match="must be an int"):
        ring.reserve(None)  # type: ignore[arg-type]
    jumps = ProgArray("jumps", 4)
    with pytest.raises(MapError, match="must be an int"):
        jumps.get(1.0)  # type: ignore[arg-type]
    with pytest.raises(MapError, match="named by a str"):
        jumps[1] = 7  # type: ignore[assignment]
    assert len(jumps) == 0 and deque(ring.consume()) == deque()


# -- bounded fuzzing (tools/fuzz.py runs the long campaigns) ------------------------------------

FUZZ_SEED = int(os.environ.get("EBPFVM_FUZZ_SEED", "20251125"))
"""Fixed so CI is repeatable; set EBPFVM_FUZZ_SEED to explore other inputs."""
FUZZ_COUNTS = {"program": 1500, "asm": 3000, "elf": 400, "maps": 3000, "cli": 400}
"""Inputs per target in the test suite, about 30 s in all."""


@pytest.fixture(scope="module")
def worker() -> Iterator[fuzzing.Worker]:
    with fuzzing.Worker() as child:
        yield child


def _findings(report: fuzzing.Report) -> str:
    return "\n\n".join(f"{kind} in {target} on {payload!r:.300}\n{detail[:3000]}"
                       for target, kind, payload, detail in report.bugs)


@pytest.mark.parametrize("target", fuzzing.TARGETS)
def test_fuzzing_gives_only_results_and_typed_errors(target: str,
                                                     worker: fuzzing.Worker) -> None:
    count = FUZZ_COUNTS[target]
    report = fuzzing.campaign([target], count, None, FUZZ_SEED, worker=worker)
    FUZZ_RAN[target] = report.classes
    assert not report.bugs, _findings(report)
    assert report.count(target) == count
    # Both allowed outcomes occur, stage by stage: inputs reach past the first error.
    outcomes = Counter(outcome == "ok" for _t, _stage, outcome in report.stages.elements())
    assert outcomes[True] > count // 10 and outcomes[False] > count // 10, report.format()


HOSTILE_COUNT = int(os.environ.get("EBPFVM_FUZZ_HOSTILE", "300"))
"""Hostile inputs in the test suite (tools/fuzz.py --target hostile runs 100,000)."""
HOSTILE_WORKERS = 2
HOSTILE_MAX_FINDINGS = 10
"""The run stops after this many findings: each over-time finding costs the
whole time limit, and ten say enough."""


def test_hostile_inputs_stay_within_the_memory_and_time_limits() -> None:
    """Issue 11: crafted objects, maps, helpers and tail calls, run with the
    default budget and limits on every checked engine, end in a result or a
    typed error, under fuzzing.HOSTILE_MEMORY and fuzzing.HOSTILE_TIME."""
    pool = [fuzzing.Worker.hostile() for _ in range(HOSTILE_WORKERS)]
    try:
        report = fuzzing.campaign([fuzzing.HOSTILE], HOSTILE_COUNT, None, FUZZ_SEED,
                                  workers=pool, max_bugs=HOSTILE_MAX_FINDINGS)
    finally:
        for child in pool:
            child.close()
    FUZZ_RAN[fuzzing.HOSTILE] = report.classes
    assert not report.bugs, _findings(report)
    assert report.count(fuzzing.HOSTILE) == HOSTILE_COUNT
    # The inputs get past loading and reach the engines, and end both ways.
    ran = Counter(outcome == "ok" for (_t, stage, outcome), n in report.stages.items()
                  if stage != "load" for _ in range(n))
    assert ran[True] > HOSTILE_COUNT // 10 and ran[False] > HOSTILE_COUNT // 10, report.format()


@pytest.mark.parametrize(("what", "kind"), [
    ("memory", fuzzing.OVER_MEMORY),
    ("wrapped-memory", fuzzing.OVER_MEMORY),
    ("hang", fuzzing.OVER_TIME),
    ("crash", fuzzing.CRASH),
    ("typed", fuzzing.TYPED),
])
def test_the_hostile_harness_sees_memory_and_time_over_the_limits(what: str, kind: str) -> None:
    with fuzzing.Worker.hostile() as child:
        child.timeout = 3
        assert child.check("selftest", what)[0] == kind
        # A child over a limit is replaced, and the next input runs.
        assert child.check("selftest", "fine") == (fuzzing.RESULT, [("selftest", "ok", "")])
        assert child.restarts == (0 if kind == fuzzing.TYPED else 1)


def test_hostile_outcomes_name_what_is_wrong() -> None:
    from ebpfvm.errors import BudgetExceeded, HelperFault

    fault = HelperFault(3, 16, "raised OverflowError()", "bpf_get_current_comm")
    fault.cause = OverflowError("too big")
    recursion = EbpfError("decoding")
    recursion.__cause__ = RecursionError()
    assert [hostile.outcome(error) for error in (
        BudgetExceeded(7, 100), fault, recursion, EbpfError("x" * (hostile.MESSAGE_LIMIT + 1)),
        ValueError("untyped"),
    )] == ["BudgetExceeded", "BUG:HelperFault<-OverflowError", "BUG:EbpfError<-RecursionError",
           "BUG:MessageSize", "BUG:ValueError"]


@pytest.mark.parametrize("mode", ["vm", "xdp", "skb"])
def test_hostile_objects_load_and_run(mode: str) -> None:
    """The object writer makes what the loader takes: maps, .bss with BTF,
    relocations to both, a bpf-to-bpf call and a tail call to itself."""
    recipe = hostile.Recipe(
        maps=(hostile.MapDef("m0", 1, 4, 8, 64), hostile.MapDef(hostile.JUMPS, 3, 4, 4, 4)),
        programs=(hostile.ProgDef("p0", (hostile.Step("lookup", (0, 1)),
                                         hostile.Step("update", (0, 0)),
                                         hostile.Step("rec", (3,))), 10,
                                  (hostile.Step("tail", (0,)), hostile.Step("exit", (2,))),
                                  fill=64),),
        bss_size=4096, btf="plain", slots=((0, 0),), mode=mode, recursion=True)
    stages = hostile.check(recipe)
    assert [(stage, outcome) for stage, outcome, _detail in stages] == [
        ("load", "ok"), *((engine, "ok") for engine in CHECKED_ENGINES), ("variables", "ok")]
    obj = load(hostile.build_object(recipe))
    assert obj.variables(".bss") == {"big": bytes(4096)}
    assert sorted(obj.maps) == [".bss", hostile.JUMPS, "m0"]


@pytest.mark.parametrize(("what", "kind", "outcome"), [
    ("crash", fuzzing.CRASH, f"CRASH:{-signal.SIGSEGV}"),
    ("hang", fuzzing.HANG, "HANG"),
    ("raise", fuzzing.BUG, "BUG:TypeError"),
    ("typed", fuzzing.TYPED, "EbpfError"),
    ("fine", fuzzing.RESULT, "ok"),
])
def test_the_harness_sees_crashes_hangs_and_other_exceptions(what: str, kind: str,
                                                             outcome: str) -> None:
    with fuzzing.Worker(timeout=3) as child:
        found, stages = child.check("selftest", what)
        assert (found, stages[0][1]) == (kind, outcome)
        # The child is replaced after a crash or hang, and the next input runs.
        assert child.check("selftest", "fine") == (fuzzing.RESULT, [("selftest", "ok", "")])
        assert child.restarts == (1 if kind in (fuzzing.CRASH, fuzzing.HANG) else 0)
    if what == "crash":
        assert "Segmentation fault" in stages[0][2]  # faulthandler's report from the child


# -- JIT memory over many compile cycles --------------------------------------------------------

JIT_CYCLES = 2000
MAPPED_SLACK = 2 << 20
"""Bytes of mappings the process may gain over JIT_CYCLES compiles (allocator
arenas); one leaked code page per compile would be 8 MB."""


@pytest.mark.skipif(jit_supported() is not None, reason=str(jit_supported()))
@pytest.mark.parametrize("close", [True, False], ids=["close", "gc"])
def test_jit_compile_cycles_leak_no_mappings(close: bool) -> None:
    before, after = fuzzing.jit_cycles(JIT_CYCLES, close)
    assert after[0] - before[0] <= 16, (before, after)  # number of mappings
    assert after[1] - before[1] <= MAPPED_SLACK, (before, after)
    assert after[2] - before[2] <= 4 * MAPPED_SLACK, (before, after)  # resident memory


@pytest.mark.skipif(jit_supported() is not None, reason=str(jit_supported()))
def test_the_mapping_measure_sees_a_leak() -> None:
    kept: list[object] = []
    before, after = fuzzing.jit_cycles(JIT_CYCLES // 4, close=False, keep=kept)
    assert after[1] - before[1] >= (JIT_CYCLES // 4) * mmap.PAGESIZE
    for vm in kept:
        vm.close()  # type: ignore[attr-defined]


def test_object_with_a_huge_bss_is_refused_before_allocating() -> None:
    # Found by fuzzing ELF objects: a corrupted sh_size of .bss made the
    # loader allocate 1.6 GB for a 2 KB object (and MemoryError near the limit).
    blob = bytearray((REPO / "examples" / "bpf" / "config.o").read_bytes())
    ehdr = struct.unpack_from("<16sHHIQQQIHHHHHH", blob)
    shoff, shentsize, shnum, shstrndx = ehdr[6], ehdr[11], ehdr[12], ehdr[13]
    names = struct.unpack_from("<IIQQQQIIQQ", blob, shoff + shstrndx * shentsize)[4]
    for index in range(shnum):
        at = shoff + index * shentsize
        name_offset = struct.unpack_from("<I", blob, at)[0]
        if blob[names + name_offset : names + name_offset + 5] == b".bss\0":
            struct.pack_into("<Q", blob, at + 32, 1_694_498_832)  # sh_size
            break
    else:
        pytest.fail("config.o has no .bss")
    with pytest.raises(ElfError) as info:
        load(bytes(blob))
    assert info.value.section == ".bss"


@pytest.mark.parametrize(("map_type", "key", "value", "entries"), [
    (MapType.ARRAY, 4, MAX_VALUE_SIZE + 1, 1),
    (MapType.HASH, 8, 1024, (MAX_MAP_BYTES // 1024) + 1),
    (MapType.QUEUE, 0, MAX_VALUE_SIZE + 8, 2),
    (MapType.RINGBUF, 0, 0, MAX_MAP_BYTES),
])
def test_maps_too_large_to_allocate_are_map_errors(map_type: MapType, key: int, value: int,
                                                   entries: int) -> None:
    with pytest.raises(MapError):
        create_map("big", map_type, key, value, entries)
