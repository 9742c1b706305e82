"""Run the native hash-map runtime (src/ebpfvm/native/rt_hash.o) as plain
programs, without the JIT's linking: a stub reads the arguments from memory
and calls one of the object's functions (a bpf-to-bpf call), and Python
helpers play the intrinsics RT_ENV, RT_CHECK and RT_CHARGE at their ids.
The reference is the Python map helpers over a twin map (ebpfvm.maps)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile

from ebpfvm import EbpfVmRaw
from ebpfvm.errors import HelperFault, MemoryFault
from ebpfvm.helpers import HelperContext
from ebpfvm.maps import Map, MapType, map_helpers
from ebpfvm.memory import AddressSpace, Region, address_of
from ebpfvm.percpu import PerCpuMap
from engines import run

NATIVE = Path(__file__).resolve().parents[1] / "src" / "ebpfvm" / "native"
FUNCTIONS = ("nhash_lookup", "nhash_lookup_percpu", "nhash_update", "nhash_delete")
QUEUE_FUNCTIONS = ("nqueue_push", "nqueue_peek", "nqueue_pop")
OBJECTS = {FUNCTIONS: NATIVE / "rt_hash.o", QUEUE_FUNCTIONS: NATIVE / "rt_queue.o"}
RT_ENV, RT_CHECK, RT_CHARGE = 0x7E000000, 0x7E000001, 0x7E000002
ENV_SIZE = 96
SCRATCH = 4096
"""The scratch block: the call's arguments (48 bytes), then the key and value."""
KEY_AT, VALUE_AT = 64, 1024


def _insn(opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhI", opcode, dst | src << 4, off, imm & 0xFFFF_FFFF)


@cache
def runtime(functions: tuple[str, ...]) -> tuple[bytes, dict[str, int]]:
    """The .text of the object holding `functions` and the slot of each in it."""
    with OBJECTS[functions].open("rb") as handle:
        elf = ELFFile(handle)
        text = elf.get_section_by_name(".text")
        assert elf.get_section_by_name(".rel.text") is None  # no relocations to apply
        symbols = elf.get_section_by_name(".symtab")
        slots = {sym.name: sym["st_value"] // 8 for sym in symbols.iter_symbols()
                 if sym.name in functions}
        return bytes(text.data()), slots


def program(args: int, functions: tuple[str, ...]) -> bytes:
    """The stub, then the runtime: r1..r4 from the scratch block, the
    function chosen by its first word."""
    text, slots = runtime(functions)
    stub_slots = 2 + 5 + 3 * len(functions) - 1
    code = [_insn(0x18, 6, imm=args & 0xFFFF_FFFF), _insn(0, imm=args >> 32),
            _insn(0x79, 7, 6, 0)]
    code += [_insn(0x79, reg, 6, 8 * reg) for reg in range(1, 5)]
    for number, name in enumerate(functions):
        last = number == len(functions) - 1
        if not last:
            code.append(_insn(0x55, 7, off=2, imm=number))  # jne r7, number, +2
        pc = len(code)
        code.append(_insn(0x85, src=1, imm=stub_slots + slots[name] - (pc + 1)))
        code.append(_insn(0x95))
    assert len(code) == stub_slots
    return b"".join(code) + text


class Runtime:
    """One VM running the runtime on one engine, reused for many maps (the
    interpreter translates the runtime once): each map's block and slab are
    allowed as they come."""

    MAX_MAPS = 64

    def __init__(self, engine: str, functions: tuple[str, ...] = FUNCTIONS) -> None:
        self.engine = engine
        self.scratch = bytearray(SCRATCH)
        self.env = bytearray(ENV_SIZE)
        self._pins = (memoryview(self.scratch), memoryview(self.env))
        self.args = address_of(self.scratch)
        self.charged = 0
        self.maps = 0
        vm = EbpfVmRaw(program(self.args, functions))
        vm.register_helper(RT_ENV, lambda *_: address_of(self.env), name="rt_env")
        vm.register_helper(RT_CHECK, self._check, name="rt_check", context=True)
        vm.register_helper(RT_CHARGE, self._charge, name="rt_charge", context=True)
        vm.register_allowed_memory(self.scratch)
        vm.register_allowed_memory(self.env)
        self.vm = vm

    @staticmethod
    def _check(ctx: HelperContext, ptr: int, size: int, write: int, *_rest: int) -> int:
        if size:
            ctx.space.find(ptr, size, "store" if write else "load", ctx.pc)
        return ptr

    def _charge(self, ctx: HelperContext, units: int, *_rest: int) -> int:
        ctx.charge(units)
        self.charged += units
        return 0

    def attach(self, *memory: bytearray) -> None:
        """Let the runtime touch a map's block (and values)."""
        for one in memory:
            self.vm.register_allowed_memory(one)
        self.maps += 1


_RUNTIMES: dict[tuple[str, tuple[str, ...]], Runtime] = {}


def runtime_for(engine: str, functions: tuple[str, ...] = FUNCTIONS) -> Runtime:
    """The engine's Runtime (a new one once it has served MAX_MAPS maps)."""
    found = _RUNTIMES.get((engine, functions))
    if found is None or found.maps >= Runtime.MAX_MAPS:
        found = _RUNTIMES[engine, functions] = Runtime(engine, functions)
    return found


class Native:
    """One map run by the native runtime on one engine."""

    def __init__(self, the_map: Map, engine: str) -> None:
        self.map = the_map
        the_map.handle = 7
        self.rt = runtime_for(engine)
        assert the_map.native_hash is not None
        self.rt.attach(the_map.native_hash.mem, the_map.slab)
        self.cpu = 0
        self.args = self.rt.args

    @property
    def charged(self) -> int:
        return self.rt.charged

    def call(self, number: int, *args: int) -> int:
        """Run function `number` of FUNCTIONS with r1 = the map's descriptor."""
        struct.pack_into("<8Q", self.rt.env, 0, 1, self.cpu, getattr(self.map, "ncpus", 1),
                         0, 0, 0, 0, 0)
        native = self.map.native_hash
        assert native is not None
        words = (number, native.address, *args)
        struct.pack_into(f"<{len(words)}Q", self.rt.scratch, 0,
                         *(w & (1 << 64) - 1 for w in words))
        return run(self.rt.vm, self.rt.engine)

    def key(self, key: bytes) -> int:
        self.rt.scratch[KEY_AT : KEY_AT + len(key)] = key
        return self.args + KEY_AT

    def value(self, value: bytes) -> int:
        self.rt.scratch[VALUE_AT : VALUE_AT + len(value)] = value
        return self.args + VALUE_AT


@dataclass
class Reference:
    """The twin map, run by ebpfvm.maps' Python helpers."""

    map: Map
    cpu: int = 0
    scratch: bytearray = field(default_factory=lambda: bytearray(SCRATCH))
    """The key and value buffers (the dispatcher's fallback: the runtime's)."""
    charged: int = 0

    def __post_init__(self) -> None:
        self.map.handle = 7
        self.helpers = map_helpers({7: self.map}, lambda: self.cpu)
        self.args = address_of(self.scratch)
        self.space = AddressSpace([Region.of_buffer(self.scratch, "scratch")])

    def call(self, name: str, *args: int) -> int:
        from ebpfvm.helper_table import helper_number

        ctx = HelperContext(self.space)
        before = ctx.budget
        result = self.helpers[helper_number(name)].fn(ctx, 7, *args, *[0] * (4 - len(args)))
        self.charged += before - ctx.budget
        return result

    def key(self, key: bytes) -> int:
        self.scratch[KEY_AT : KEY_AT + len(key)] = key
        return self.args + KEY_AT

    def value(self, value: bytes) -> int:
        self.scratch[VALUE_AT : VALUE_AT + len(value)] = value
        return self.args + VALUE_AT


def make_map(percpu: bool, key_size: int, value_size: int, max_entries: int,
             ncpus: int = 2) -> Map:
    """A hash or per-CPU hash map."""
    if percpu:
        return PerCpuMap("h", MapType.PERCPU_HASH, key_size, value_size, max_entries,
                         ncpus=ncpus)
    return Map("h", MapType.HASH, key_size, value_size, max_entries)


def memory_fault_of(side: Any, native: Any, number: int, name: str,
                    args: list[int]) -> tuple[Any, ...]:
    """(address, size, access) of the MemoryFault raised on `side` with
    `args`: runtime function `number` when `side` is `native`, else the
    Python helper `name` (whose fault comes wrapped in a HelperFault)."""
    with pytest.raises((MemoryFault, HelperFault)) as caught:
        if side is native:
            native.call(number, *args)
        else:
            side.call(name, *args)
    fault = caught.value
    if isinstance(fault, HelperFault) and isinstance(fault.cause, MemoryFault):
        fault = fault.cause
    assert isinstance(fault, MemoryFault)
    return fault.address, fault.size, fault.access
