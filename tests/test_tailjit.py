"""Tail calls in the JIT are native jumps (issue 12, point 5): differential
tests against the interpreter, the reference, which keeps the Python chain.

The programs are written in assembly and put in an ELF object built here
(tests/hostile_elf.py's writer), so that each case targets one rule of
bpf_tail_call: the result of the last program, the packet it leaves, the
maps and global data, the instruction count of the whole run, the
-ENOENT / -E2BIG results of a failed call, the kernel's limit of 33, the run's
one budget, and the fault a callee makes (type, fields, chain)."""

from __future__ import annotations

import re
import struct
from typing import Any

import pytest

from ebpfvm import (
    HelperFault,
    TailCallFault,
    VmFault,
    assemble,
    load,
)
from ebpfvm.elf import E2BIG, ENOENT, MAX_TAIL_CALLS, R_BPF_64_64
from ebpfvm.encoding import SLOT, decode
from ebpfvm.helpers import HELPER_CALL_UNITS
from ebpfvm.maps import MapType
from engines import ALL_ENGINES, CHECKED_ENGINES, run
from hostile_elf import (
    MAP_DEF,
    REL,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHF_WRITE,
    SHT_NOBITS,
    SHT_PROGBITS,
    SHT_REL,
    SHT_STRTAB,
    SHT_SYMTAB,
    STB_GLOBAL,
    STT_FUNC,
    STT_OBJECT,
    SYM,
    Section,
    Strings,
    write_elf,
)

M64 = (1 << 64) - 1
JUMPS, COUNTS, BSS = 0x1111, 0x2222, 0x3333
"""lddw immediates the object builder relocates: the program array, an array
map only `counter` uses, and the .bss counters."""
WILD_ADDRESS = 0xDEAD000

# Input layout (r1 = the input): [0] first slot, [1] hops before switching,
# [2] slot after the hops, [3] unused, [4:8] spin loops.
PROGRAMS = {
    "entry": f"""
        mov r6, r1
        stdw [r10-8], 0x55
        lddw r7, {BSS}
        ldxdw r8, [r7+0]
        add r8, 1
        stxdw [r7+0], r8
        ldxb r3, [r6+0]
        mov r1, r6
        lddw r2, {JUMPS}
        call 12
        add r0, 1000
        exit
    """,
    "relay": f"""
        mov r6, r1
        lddw r7, {BSS}
        ldxdw r8, [r7+0]
        add r8, 1
        stxdw [r7+0], r8
        ldxb r3, [r6+1]
        jlt r8, r3, go
        ldxb r3, [r6+2]
        ja call
    go:
        ldxb r3, [r6+0]
    call:
        mov r1, r6
        lddw r2, {JUMPS}
        call 12
        add r0, 2000
        exit
    """,
    "wild": f"""
        lddw r1, {WILD_ADDRESS}
        ldxw r0, [r1+0]
        exit
    """,
    "spin": f"""
        mov r6, r1
        ldxw r4, [r6+4]
    loop:
        jeq r4, 0, done
        sub r4, 1
        ja loop
    done:
        ldxb r3, [r6+2]
        mov r1, r6
        lddw r2, {JUMPS}
        call 12
        mov r0, 3
        exit
    """,
    "peek": """
        ldxdw r0, [r10-8]
        ldxdw r1, [r10-400]
        add r0, r1
        stdw [r10-400], 9
        exit
    """,
    "poke": """
        stb [r1+5], 0x77
        mov r0, r2
        exit
    """,
    "counter": f"""
        stw [r10-4], 0
        mov r2, r10
        add r2, -4
        lddw r1, {COUNTS}
        call 1
        jeq r0, 0, none
        ldxdw r1, [r0+0]
        add r1, 7
        stxdw [r0+0], r1
        mov r0, r1
        exit
    none:
        mov r0, 99
        exit
    """,
    "notarray": f"""
        lddw r2, {BSS}
        mov r3, 0
        call 12
        exit
    """,
}
SLOTS = {"relay": 0, "wild": 1, "spin": 2, "peek": 3, "poke": 4, "counter": 5, "notarray": 6}
EMPTY = 7
"""The program-array slot each program is set in; EMPTY stays empty."""
JUMP_ENTRIES = 8
SPIN_BODY = 3
"""Instructions per spin loop (jeq, sub, ja)."""


def _relocated(text: str) -> tuple[bytes, list[tuple[int, str]]]:
    """The program's bytes with the marker lddws zeroed, and their relocations."""
    code = bytearray(assemble(text))
    relocs = []
    for insn in decode(bytes(code)):
        target = {JUMPS: "jumps", COUNTS: "counts", BSS: "counters"}.get(insn.imm)
        if insn.row is not None and insn.row.mnemonic == "lddw" and target is not None:
            struct.pack_into("<i", code, insn.pc * SLOT + 4, 0)
            relocs.append((insn.pc, target))
    return bytes(code), relocs


def build_object() -> bytes:
    """The test object: PROGRAMS in xdp sections, the maps, 16 bytes of .bss."""
    sections: list[Section] = [Section("", 0, 0, b"")]
    strtab = Strings()
    symbols = [bytes(SYM.size)]
    index_of: dict[str, int] = {}

    def symbol(name: str, kind: int, section: int, value: int, size: int) -> None:
        index_of[name] = len(symbols)
        symbols.append(SYM.pack(strtab.add(name), STB_GLOBAL << 4 | kind, 0, section, value, size))

    codes = []
    for name, text in PROGRAMS.items():
        code, relocs = _relocated(text)
        sections.append(Section(f"xdp/{name}", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, code))
        symbol(name, STT_FUNC, len(sections) - 1, 0, len(code))
        codes.append((len(sections) - 1, relocs))
    maps = [(MapType.PROG_ARRAY, 4, 4, JUMP_ENTRIES), (MapType.ARRAY, 4, 8, 1)]
    sections.append(Section("maps", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, b"".join(
        MAP_DEF.pack(kind, key, value, entries, 0) for kind, key, value, entries in maps)))
    for number, name in enumerate(("jumps", "counts")):
        symbol(name, STT_OBJECT, len(sections) - 1, number * MAP_DEF.size, MAP_DEF.size)
    sections.append(Section(".bss", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, b"", size=16))
    symbol("counters", STT_OBJECT, len(sections) - 1, 0, 16)
    sections.append(Section("license", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, b"GPL\0"))
    symtab = len(sections) + len(codes)
    for target, relocs in codes:
        rels = b"".join(REL.pack(pc * SLOT, index_of[name] << 32 | R_BPF_64_64)
                        for pc, name in relocs)
        sections.append(Section(".rel" + sections[target].name, SHT_REL, 0, rels,
                                link=symtab, info=target, entsize=REL.size))
    sections.append(Section(".symtab", SHT_SYMTAB, 0, b"".join(symbols), link=symtab + 1,
                            info=1, entsize=SYM.size))
    sections.append(Section(".strtab", SHT_STRTAB, 0, bytes(strtab.data)))
    return write_elf(sections)


@pytest.fixture(scope="module")
def object_path(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("tailjit") / "tailjit.o"
    path.write_bytes(build_object())
    return path


def _loaded(path: Any) -> Any:
    obj = load(path)
    for name, slot in SLOTS.items():
        obj.maps["jumps"][slot] = name
    return obj


def _packet(first: int, hops: int = 0, then: int = EMPTY, loops: int = 0) -> bytearray:
    return bytearray([first, hops, then, 0]) + struct.pack("<I", loops) + bytes(8)


def _outcome(path: Any, engine: str, packet: bytearray, root: str = "entry",
             budget: int | None = -1) -> dict[str, Any]:
    """Everything a run shows: result or fault, packet, maps, count."""
    obj = _loaded(path)
    vm = obj.vm(root) if budget == -1 else obj.vm(root, budget=budget)
    seen: dict[str, Any] = {}
    try:
        seen["r0"] = run(vm, engine, packet)
    except VmFault as exc:
        seen["error"] = _fields(exc)
    seen["packet"] = bytes(packet)
    seen["bss"] = bytes(obj.data[".bss"])
    seen["counts"] = bytes(obj.maps["counts"][bytes(4)])
    seen["count"] = vm.last_instruction_count
    return seen


def _fields(exc: VmFault) -> dict[str, Any]:
    # Host addresses (a map's .bss in a helper's message) differ between objects.
    fields = {"type": type(exc).__name__, "pc": exc.pc,
              "text": re.sub("0x[0-9a-f]{9,}", "0x...", str(exc))}
    for name in ("chain", "address", "size", "access", "count", "helper_id"):
        if hasattr(exc, name):
            fields[name] = getattr(exc, name)
    if isinstance(exc, TailCallFault):
        fields["fault"] = _fields(exc.fault)
    return fields


CASES = {
    "to_empty_slot": _packet(EMPTY),
    "out_of_range": _packet(200),
    "chain_of_3": _packet(SLOTS["relay"], hops=3),
    "chain_to_the_limit": _packet(SLOTS["relay"], hops=MAX_TAIL_CALLS + 5),
    "wild_after_5": _packet(SLOTS["relay"], hops=5, then=SLOTS["wild"]),
    "wild_at_the_limit": _packet(SLOTS["relay"], hops=MAX_TAIL_CALLS - 1, then=SLOTS["wild"]),
    "spin_then_empty": _packet(SLOTS["spin"], loops=50),
    "fresh_stack": _packet(SLOTS["peek"]),
    "packet_out": _packet(SLOTS["poke"]),
    "callee_map": _packet(SLOTS["counter"]),
    "not_a_program_array": _packet(SLOTS["notarray"]),
}


@pytest.mark.parametrize("engine", [e for e in CHECKED_ENGINES if e != "interp"])
@pytest.mark.parametrize("case", CASES)
def test_jit_tail_calls_match_the_interpreter(object_path: Any, engine: str, case: str) -> None:
    """r0, packet, .bss, map, instruction count and fault fields agree."""
    expected = _outcome(object_path, "interp", bytearray(CASES[case]))
    assert _outcome(object_path, engine, bytearray(CASES[case])) == expected


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_results_of_failed_tail_calls(object_path: Any, engine: str) -> None:
    """An empty slot or an index past max_entries: -ENOENT, and the caller goes
    on; the 34th call of a run: -E2BIG (independent of the interpreter: the
    kernel's values)."""
    for first in (EMPTY, JUMP_ENTRIES, 255):
        assert _outcome(object_path, engine, _packet(first))["r0"] == (-ENOENT + 1000) & M64
    seen = _outcome(object_path, engine, _packet(SLOTS["relay"], hops=100))
    assert seen["r0"] == (-E2BIG + 2000) & M64
    assert int.from_bytes(seen["bss"][:8], "little") == MAX_TAIL_CALLS + 1


@pytest.mark.parametrize("engine", CHECKED_ENGINES)
def test_fault_in_a_callee_names_the_chain(object_path: Any, engine: str) -> None:
    """A wild load after 4 relays: TailCallFault at the entry's tail call, the
    chain outermost first, the MemoryFault at wild's own pc."""
    seen = _outcome(object_path, engine, _packet(SLOTS["relay"], hops=5, then=SLOTS["wild"]))
    error = seen["error"]
    entry_call = [i.pc for i in decode(assemble(PROGRAMS["entry"])) if i.imm == 12]
    assert error["type"] == "TailCallFault"
    assert error["pc"] == entry_call[0]
    # entry counts 1, each relay one more and goes on while the count is below 5
    assert error["chain"] == ("entry", *["relay"] * 4, "wild")
    assert error["fault"]["type"] == "MemoryFault"
    assert (error["fault"]["pc"], error["fault"]["address"]) == (2, WILD_ADDRESS)


BUDGET_CASES = {
    "in_a_callee_loop": (500, 1000),
    "in_a_callee_loop_after_a_refill": (20 + HELPER_CALL_UNITS + 3, 1000),
    "at_the_root_tail_call_charge": (40, 0),
    "at_a_callee_tail_call_charge": (100, 0),
}
"""(budget, spin loops). entry runs 10 instructions up to its tail call, which
charges HELPER_CALL_UNITS; spin runs 7 up to its own when it does not loop."""


@pytest.mark.parametrize("engine", CHECKED_ENGINES)
@pytest.mark.parametrize("case", BUDGET_CASES)
def test_budget_runs_out_at_the_same_count(object_path: Any, engine: str, case: str) -> None:
    """One budget for the whole run, tail calls and their helper charge
    included: it runs out at the same place and count in every checked
    engine, as BudgetExceeded naming the whole budget."""
    budget, loops = BUDGET_CASES[case]
    packet = _packet(SLOTS["spin"], loops=loops)
    seen = _outcome(object_path, engine, bytearray(packet), budget=budget)
    assert seen == _outcome(object_path, "interp", bytearray(packet), budget=budget)
    assert seen["count"] == budget
    error = seen["error"]
    fault = error.get("fault", error)
    assert fault["type"] == "BudgetExceeded" and fault["count"] == budget
    calls = {name: next(i.pc for i in decode(assemble(PROGRAMS[name])) if i.imm == 12)
             for name in ("entry", "spin")}
    if case == "at_the_root_tail_call_charge":
        assert (error["type"], error["pc"]) == ("BudgetExceeded", calls["entry"])
    elif case == "at_a_callee_tail_call_charge":
        assert (error["pc"], error["chain"]) == (calls["entry"], ("entry", "spin"))
        assert fault["pc"] == calls["spin"]


def test_program_array_changes_reach_compiled_code(object_path: Any,
                                                   checked_engine: str) -> None:
    """Slots set or deleted after compiling apply to the next run."""
    obj = _loaded(object_path)
    vm = obj.vm("entry")
    entry_call = next(i.pc for i in decode(assemble(PROGRAMS["entry"])) if i.imm == 12)
    assert run(vm, checked_engine, _packet(SLOTS["poke"])) == len(_packet(0))
    obj.maps["jumps"][SLOTS["poke"]] = "wild"
    with pytest.raises(TailCallFault) as info:
        run(vm, checked_engine, _packet(SLOTS["poke"]))
    assert (info.value.pc, info.value.chain) == (entry_call, ("entry", "wild"))
    del obj.maps["jumps"][SLOTS["poke"]]
    assert run(vm, checked_engine, _packet(SLOTS["poke"])) == (-ENOENT + 1000) & M64
    obj.maps["jumps"][SLOTS["poke"]] = "no_such_program"
    with pytest.raises(HelperFault) as missing:
        run(vm, checked_engine, _packet(SLOTS["poke"]))
    assert missing.value.pc == entry_call


@pytest.mark.parametrize("engine", CHECKED_ENGINES)
def test_unknown_program_deep_in_a_chain(object_path: Any, engine: str) -> None:
    """A slot naming a program the object lacks, reached after two relays:
    the same error as the interpreter (its root fails to build the callee)."""
    def outcome(name: str) -> dict[str, Any]:
        obj = _loaded(object_path)
        obj.maps["jumps"][EMPTY] = "no_such_program"
        seen: dict[str, Any] = {}
        vm = obj.vm("entry")
        try:
            seen["r0"] = run(vm, name, _packet(SLOTS["relay"], hops=2, then=EMPTY))
        except VmFault as exc:
            seen["error"] = _fields(exc)
        seen["count"] = vm.last_instruction_count
        return seen

    seen = outcome(engine)
    assert seen == outcome("interp")
    assert seen["error"]["type"] == "HelperFault"


@pytest.mark.parametrize("engine", [e for e in ALL_ENGINES if e != "interp"])
def test_jit_tail_call_does_not_enter_python(object_path: Any, engine: str) -> None:
    """The JIT never calls the tail-call helper for a call it can make: a
    helper 12 that raises is not reached, and no callee VM is built."""
    obj = _loaded(object_path)
    vm = obj.vm("entry")
    vm.jit_compile(unchecked=engine == "jit-unchecked")
    helper = vm._helpers[12]

    def refuse(*_args: int) -> int:
        raise AssertionError("the Python tail-call helper ran")

    helper.fn.__self__._chain = refuse  # the helper's chain runner
    assert vm.execute_program_jit(_packet(SLOTS["relay"], hops=3)) == 2000 + (-ENOENT & M64) & M64
    assert vm._tail_calls.pool == {}


@pytest.mark.parametrize("engine", [e for e in ALL_ENGINES if e != "interp"])
def test_batch_runs_reset_the_tail_call_count(object_path: Any, engine: str) -> None:
    """Each run of a native batch starts with no tail calls made: every run
    gets to the limit, none starts at it."""
    obj = _loaded(object_path)
    vm = obj.vm("entry")
    vm.jit_compile(unchecked=engine == "jit-unchecked")
    size = len(_packet(0))
    # .bss counts across runs: 4 runs of 34 programs stay below 255 hops
    frames = b"".join(bytes(_packet(SLOTS["relay"], hops=255)) for _ in range(4))
    results = vm.execute_spans(bytearray(frames), [(at, size) for at in range(0, len(frames), size)])
    assert list(results) == [(-E2BIG + 2000) & M64] * 4


@pytest.mark.parametrize("engine", [e for e in ALL_ENGINES if e != "interp"])
def test_tail_call_charge_across_a_budget_slice(object_path: Any, engine: str) -> None:
    """A tail call's helper charge that finds fewer than HELPER_CALL_UNITS in
    the budget register (which holds a slice of the budget, BUDGET_SLICE)
    refills it from the rest: the run goes on and counts exactly. The count
    is entry's 10 instructions, its charge, spin's 7 + 3 per loop, its
    charge, and 2 after its failed call."""
    from ebpfvm.jit.context import BUDGET_SLICE

    near = (BUDGET_SLICE - 10 - HELPER_CALL_UNITS - 7) // SPIN_BODY
    for loops in (near - 30, near - 10, near, near + 10):
        obj = _loaded(object_path)
        vm = obj.vm("entry", budget=3 * BUDGET_SLICE)
        assert run(vm, engine, _packet(SLOTS["spin"], loops=loops)) == 3
        assert vm.last_instruction_count == 10 + 7 + SPIN_BODY * loops + 2 + 2 * HELPER_CALL_UNITS
