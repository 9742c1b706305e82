"""Hostile inputs for the ``hostile`` fuzz target (tests/fuzzing.py runs them).

An input is a :class:`Recipe`: the maps, programs, global data and BTF of one
object, which program runs in which context (a plain VM, XDP or tc), the
packet, and the tail-call slots the harness fills in after loading.
:func:`build_object` turns it into the bytes of an EM_BPF relocatable object
(legacy ``maps`` section of ``struct bpf_map_def``, ``.bss``, ``.BTF`` with a
DATASEC, R_BPF_64_64 relocations on lddw, R_BPF_64_32 on local calls), the
way clang lays one out. Recipes are small and readable (their repr is the
reproduction), pickle to the worker, and are drawn from a seeded
``random.Random`` by :func:`random_recipe`.

What the programs do is what issue 11's hostile review did: loops of map
lookups, updates, pushes, pops and ring reservations; helpers given huge
sizes (probe_read_str, trace_printk with %s, get_current_comm,
map_update_elem with big values); tail-call chains through a program array
whose slots point at the object's programs, the entry included, ending in a
wild pointer or an endless loop; bpf-to-bpf recursion; wild pointers;
endless loops; huge maps of every type; self-referential and huge BTF types.
"""

from __future__ import annotations

import random
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    U32,
    Section,
    Strings,
    build_btf,
    write_elf,
)

# -- the recipe ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapDef:
    """One ``struct bpf_map_def`` of the legacy ``maps`` section."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0


@dataclass(frozen=True)
class Step:
    """One operation of a program: `kind` (see :data:`STEP_KINDS`) and its numbers."""

    kind: str
    args: tuple[int, ...] = ()


@dataclass(frozen=True)
class ProgDef:
    """A program: `body` runs `loops` times (0: forever), then the `end` steps
    (and an exit)."""

    name: str
    body: tuple[Step, ...]
    loops: int
    end: tuple[Step, ...]
    fill: int = 0
    """Bytes of the big buffer (.bss) set to 0x41 first, so strings there are long."""


@dataclass(frozen=True)
class Recipe:
    """One hostile object and how the harness runs it."""

    maps: tuple[MapDef, ...]
    programs: tuple[ProgDef, ...]
    bss_size: int = 0
    btf: str = "none"
    """none, plain (a char array), self (a struct containing itself), huge (an
    array of 2**32-1 empty structs)."""
    slots: tuple[tuple[int, int], ...] = ()
    """(program-array slot, program index) set through Python after loading."""
    mode: str = "vm"
    """vm (obj.vm, r1 = the packet), xdp (obj.xdp) or skb (obj.skb)."""
    packet: tuple[int, int] = (64, 0x41)
    """(size, fill byte) of the packet or input memory."""
    recursion: bool = False
    """Whether .text holds a function that calls itself (the rec step)."""
    pad: int = 0
    """Straight-line slots added to the entry program (interpreter translation size)."""
    tags: tuple[str, ...] = field(default=(), compare=False)


PROG_ARRAY = 3
"""BPF_MAP_TYPE_PROG_ARRAY; the recipe's program array is named JUMPS."""
JUMPS = "jumps"
MAP_TYPES = {"hash": 1, "array": 2, "prog_array": 3, "percpu_hash": 5, "percpu_array": 6,
             "lru_hash": 9, "lru_percpu_hash": 10, "queue": 22, "stack": 23, "ringbuf": 27}
KEYED = (1, 2, 5, 6, 9, 10)
QUEUES = (22, 23)
RINGBUF = 27

# -- eBPF encoding ---------------------------------------------------------------------------

SLOT = struct.Struct("<BBhi")
MOV_IMM, MOV_REG, ADD_IMM, SUB_IMM = 0xB7, 0xBF, 0x07, 0x17
LDXW, LDXDW, STXDW = 0x61, 0x79, 0x7B
JA, JEQ_IMM, JNE_IMM, CALL, EXIT, LDDW = 0x05, 0x15, 0x55, 0x85, 0x95, 0x18
R_BPF_64_64, R_BPF_64_32 = 1, 10
FP = 10
KEY_AT = -64
"""The stack slot holding map keys (room for keys up to 64 bytes)."""
FMT_AT = -80
"""Where trace_printk formats are stored on the stack."""
XDP_DATA, SKB_DATA = 0, 76
"""offsetof(struct xdp_md, data), offsetof(struct __sk_buff, data)."""
WILD = 0xDEAD_BEEF_0000
FORMATS = (b"%s\n\0", b"%s%s%s\0", b"%d %s\0")
FILL_WORD = 0x4141_4141_4141_4141
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
XDP_PASS = 2

# Helper numbers (include/uapi/linux/bpf.h).
LOOKUP, UPDATE, DELETE, PROBE_READ, TRACE_PRINTK, TAIL_CALL, GET_COMM = 1, 2, 3, 4, 6, 12, 16
PROBE_READ_STR, PUSH, POP, PEEK = 45, 87, 88, 89
RING_OUTPUT, RING_RESERVE, RING_SUBMIT, RING_DISCARD = 130, 131, 132, 133


class Code:
    """Instruction slots with the relocations the object needs."""

    def __init__(self) -> None:
        self.slots: list[bytes] = []
        self.relocs: list[tuple[int, str, int]] = []  # (slot, symbol, R_BPF_*)

    def op(self, opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> int:
        self.slots.append(SLOT.pack(opcode, dst | src << 4, off, imm))
        return len(self.slots) - 1

    def lddw(self, dst: int, value: int = 0, symbol: str | None = None) -> None:
        if symbol is not None:
            self.relocs.append((len(self.slots), symbol, R_BPF_64_64))
        value &= (1 << 64) - 1
        lo, hi = value & 0xFFFF_FFFF, value >> 32
        self.op(LDDW, dst, 0, 0, lo - (1 << 32) if lo >> 31 else lo)
        self.op(0, 0, 0, 0, hi - (1 << 32) if hi >> 31 else hi)

    def mov(self, dst: int, value: int) -> None:
        """dst = value, any 64-bit value."""
        if I32_MIN <= value <= I32_MAX:
            self.op(MOV_IMM, dst, imm=value)
        else:
            self.lddw(dst, value)

    def stack_pointer(self, dst: int, offset: int) -> None:
        self.op(MOV_REG, dst, FP)
        self.op(ADD_IMM, dst, imm=offset)

    def call(self, helper: int) -> None:
        self.op(CALL, imm=helper)

    def call_local(self, symbol: str) -> None:
        self.relocs.append((len(self.slots), symbol, R_BPF_64_32))
        self.op(CALL, src=1, imm=-1)

    def jump_to(self, opcode: int, dst: int, imm: int, target: int) -> None:
        self.op(opcode, dst, off=target - len(self.slots) - 1, imm=imm)

    def patch_jump(self, at: int) -> None:
        """Make the jump at `at` land here."""
        opcode, regs, _off, imm = SLOT.unpack(self.slots[at])
        self.slots[at] = SLOT.pack(opcode, regs, len(self.slots) - at - 1, imm)

    @property
    def bytes(self) -> bytes:
        return b"".join(self.slots)


def _map_ref(code: Code, recipe: Recipe, index: int) -> None:
    """r1 = the handle of map `index` (modulo the map count), or a wild handle."""
    if recipe.maps:
        code.lddw(1, 0, recipe.maps[index % len(recipe.maps)].name)
    else:
        code.lddw(1, WILD)


def _emit_map_step(code: Code, recipe: Recipe, step: Step) -> None:
    kind, args = step.kind, step.args
    if kind in ("lookup", "update", "delete"):
        code.op(STXDW, FP, 7, KEY_AT)  # key: the loop counter
        _map_ref(code, recipe, args[0])
        code.stack_pointer(2, KEY_AT)
        if kind == "lookup":
            code.call(LOOKUP)
            if args[1]:  # write the value, then read one word past it
                skip = code.op(JEQ_IMM, 0, imm=0)
                code.op(STXDW, 0, 7, 0)
                if args[1] > 1:
                    code.op(LDXDW, 3, 0, min(args[1], 0x7FFF))
                code.patch_jump(skip)
            return
        if kind == "update":
            code.op(MOV_REG, 3, 8)
            code.mov(4, args[1])
        code.call(UPDATE if kind == "update" else DELETE)
    elif kind == "push":
        _map_ref(code, recipe, args[0])
        code.op(MOV_REG, 2, 8)
        code.mov(3, args[1])
        code.call(PUSH)
    elif kind in ("pop", "peek"):
        _map_ref(code, recipe, args[0])
        code.op(MOV_REG, 2, 8)
        code.call(POP if kind == "pop" else PEEK)
    elif kind == "reserve":
        _map_ref(code, recipe, args[0])
        code.mov(2, args[1])
        code.mov(3, 0)
        code.call(RING_RESERVE)
        if args[2]:  # submit (1) or discard (2); 0 leaves the record reserved
            skip = code.op(JEQ_IMM, 0, imm=0)
            code.op(MOV_REG, 1, 0)
            code.mov(2, 0)
            code.call(RING_SUBMIT if args[2] == 1 else RING_DISCARD)
            code.patch_jump(skip)
    elif kind == "output":
        _map_ref(code, recipe, args[0])
        code.op(MOV_REG, 2, 8)
        code.mov(3, args[1])
        code.mov(4, 0)
        code.call(RING_OUTPUT)
    else:
        raise ValueError(f"unknown step {kind!r}")


def _emit_step(code: Code, recipe: Recipe, step: Step) -> None:
    """Registers: r6 the context, r7 the loop counter, r8 the big buffer,
    r9 the packet (a long string when its fill byte is not 0)."""
    kind, args = step.kind, step.args
    if kind == "probe_str" or kind == "probe":
        code.op(MOV_REG, 1, 8)
        code.mov(2, args[0])
        code.op(MOV_REG, 3, 9 if args[1] == 0 else 8)
        code.call(PROBE_READ_STR if kind == "probe_str" else PROBE_READ)
    elif kind == "printk":
        fmt = FORMATS[args[0] % len(FORMATS)].ljust(8, b"\0")
        code.lddw(1, int.from_bytes(fmt[:8], "little"))
        code.op(STXDW, FP, 1, FMT_AT)
        code.stack_pointer(1, FMT_AT)
        code.mov(2, 8)
        code.op(MOV_REG, 3, 9)
        code.op(MOV_REG, 4, 9 if args[0] != 2 else 7)
        code.op(MOV_REG, 5, 9)
        code.call(TRACE_PRINTK)
    elif kind == "comm":
        if args[1]:
            code.op(MOV_REG, 1, 8)
        else:
            code.stack_pointer(1, KEY_AT)
        code.mov(2, args[0])
        code.call(GET_COMM)
    elif kind == "tail":
        code.op(MOV_REG, 1, 6)
        if any(m.name == JUMPS for m in recipe.maps):
            code.lddw(2, 0, JUMPS)
        else:
            code.lddw(2, WILD)
        code.mov(3, args[0])
        code.call(TAIL_CALL)
    elif kind == "rec":
        code.mov(1, args[0])
        code.call_local("rec")
    elif kind == "wild":
        base = (1, 8, 9, FP)[args[0] % 4]
        if base == 1:
            code.lddw(1, WILD)
        code.op(LDXDW if args[1] % 2 == 0 else STXDW, *((0, base) if args[1] % 2 == 0
                                                         else (base, 7)), off=args[2])
    elif kind == "spin":
        code.jump_to(JA, 0, 0, len(code.slots))
    elif kind == "exit":
        code.mov(0, args[0] if args else XDP_PASS)
        code.op(EXIT)
    else:
        _emit_map_step(code, recipe, step)


def _prologue(code: Code, recipe: Recipe, prog: ProgDef) -> None:
    code.op(MOV_REG, 6, 1)
    if recipe.mode == "vm":
        code.op(MOV_REG, 9, 1)
    else:
        code.op(LDXW, 9, 1, XDP_DATA if recipe.mode == "xdp" else SKB_DATA)
    if recipe.bss_size:
        code.lddw(8, 0, "big")
    else:
        code.stack_pointer(8, -512)
    code.mov(7, 0)
    code.op(STXDW, FP, 7, KEY_AT)
    if prog.fill:
        code.lddw(2, FILL_WORD)
        code.op(MOV_REG, 1, 8)
        code.mov(3, max(1, prog.fill // 8))
        top = len(code.slots)
        code.op(STXDW, 1, 2, 0)
        code.op(ADD_IMM, 1, imm=8)
        code.op(SUB_IMM, 3, imm=1)
        code.jump_to(JNE_IMM, 3, 0, top)


def program_code(recipe: Recipe, index: int) -> Code:
    """The code of program `index`: prologue, the loop over its body, its end."""
    prog = recipe.programs[index]
    code = Code()
    _prologue(code, recipe, prog)
    if index == 0:
        for _ in range(recipe.pad):
            code.op(ADD_IMM, 0, imm=1)
    code.mov(7, prog.loops if prog.loops > 0 else 1)
    top = len(code.slots)
    for step in prog.body:
        _emit_step(code, recipe, step)
    if prog.loops > 0:
        code.op(SUB_IMM, 7, imm=1)
        code.jump_to(JNE_IMM, 7, 0, top)
    else:
        code.op(ADD_IMM, 7, imm=1)
        code.jump_to(JA, 0, 0, top)
    for step in prog.end:
        _emit_step(code, recipe, step)
    if not prog.end or prog.end[-1].kind != "exit":
        _emit_step(code, recipe, Step("exit"))
    return code


def recursion_code() -> Code:
    """rec(n): calls itself n times (.text, a bpf-to-bpf call)."""
    code = Code()
    code.mov(0, 0)
    done = code.op(JEQ_IMM, 1, imm=0)
    code.op(SUB_IMM, 1, imm=1)
    code.call_local("rec")
    code.patch_jump(done)
    code.op(EXIT)
    return code


# -- the object -----------------------------------------------------------------------------------


def build_object(recipe: Recipe) -> bytes:
    """The object file of a recipe."""
    sections: list[Section] = [Section("", 0, 0, b"")]
    strtab = Strings()
    symbols: list[bytes] = [bytes(SYM.size)]
    symbol_index: dict[str, int] = {}

    def symbol(name: str, kind: int, section: int, value: int, size: int) -> None:
        symbol_index[name] = len(symbols)
        symbols.append(SYM.pack(strtab.add(name), STB_GLOBAL << 4 | kind, 0, section, value, size))

    codes: list[tuple[int, Code]] = []
    if recipe.recursion:
        code = recursion_code()
        sections.append(Section(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, code.bytes))
        symbol("rec", STT_FUNC, len(sections) - 1, 0, len(code.bytes))
        codes.append((len(sections) - 1, code))
    for index, prog in enumerate(recipe.programs):
        code = program_code(recipe, index)
        sections.append(Section(f"prog/{prog.name}", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR,
                                 code.bytes))
        symbol(prog.name, STT_FUNC, len(sections) - 1, 0, len(code.bytes))
        codes.append((len(sections) - 1, code))
    if recipe.maps:
        sections.append(Section("maps", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, b"".join(
            MAP_DEF.pack(*(v & U32 for v in (m.type, m.key_size, m.value_size, m.max_entries,
                                              m.flags))) for m in recipe.maps)))
        for number, the_map in enumerate(recipe.maps):
            symbol(the_map.name, STT_OBJECT, len(sections) - 1, number * MAP_DEF.size,
                   MAP_DEF.size)
    if recipe.bss_size:
        sections.append(Section(".bss", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, b"",
                                 size=recipe.bss_size))
        symbol("big", STT_OBJECT, len(sections) - 1, 0, recipe.bss_size)
    if recipe.btf != "none":
        sections.append(Section(".BTF", SHT_PROGBITS, 0, build_btf(recipe.btf, recipe.bss_size)))
    sections.append(Section("license", SHT_PROGBITS, SHF_ALLOC | SHF_WRITE, b"GPL\0"))
    symtab_index = len(sections) + sum(1 for _i, code in codes if code.relocs)
    for target, code in codes:
        if code.relocs:
            rels = b"".join(REL.pack(slot * SLOT.size, symbol_index.get(name, 0) << 32 | kind)
                            for slot, name, kind in code.relocs)
            sections.append(Section(".rel" + sections[target].name, SHT_REL, 0, rels,
                                     link=symtab_index, info=target, entsize=REL.size))
    sections.append(Section(".symtab", SHT_SYMTAB, 0, b"".join(symbols), link=symtab_index + 1,
                             info=1, entsize=SYM.size))
    sections.append(Section(".strtab", SHT_STRTAB, 0, bytes(strtab.data)))
    return write_elf(sections)


# -- checking one input (in the fuzzing worker) ------------------------------------------

STAGE_TIME = 5.0
"""Seconds one stage (the load, one engine's run, the BTF decoding) may take;
a run of the default budget of 10 million instructions takes under a second."""
MESSAGE_LIMIT = 1 << 16
"""Characters an error message may have (a longer one is a bug: F1)."""


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what it wraps: __cause__, __context__, HelperFault.cause,
    TailCallFault.fault (each once)."""
    found: list[BaseException] = []
    pending = [error]
    while pending and len(found) < MAX_CHAIN:
        item = pending.pop()
        if any(item is seen for seen in found):
            continue
        found.append(item)
        for name in ("__cause__", "__context__", "cause", "fault"):
            linked = getattr(item, name, None)
            if isinstance(linked, BaseException):
                pending.append(linked)
    return found


MAX_CHAIN = 100


def outcome(error: Exception) -> str:
    """The outcome of a hostile stage that raised `error`: an EbpfError class
    name when it is fine; "OVER-MEMORY:..." when a MemoryError is anywhere in
    its chain; "BUG:..." for an untyped error, a RecursionError anywhere, a
    HelperFault wrapping a Python exception (all the helpers are built in),
    or a message over MESSAGE_LIMIT."""
    from ebpfvm.errors import EbpfError, HelperFault

    chain = _chain(error)
    name = type(error).__name__
    if any(isinstance(item, MemoryError) for item in chain):
        return f"OVER-MEMORY:{name}"
    if not isinstance(error, EbpfError):
        return f"BUG:{name}"
    for item in chain:
        if isinstance(item, RecursionError):
            return f"BUG:{name}<-RecursionError"
        cause = getattr(item, "cause", None)
        if isinstance(item, HelperFault) and cause is not None and not isinstance(cause,
                                                                                  EbpfError):
            return f"BUG:{name}<-{type(cause).__name__}"
    if len(str(error)) > MESSAGE_LIMIT:
        return "BUG:MessageSize"
    return name


Stage = tuple[str, str, str]
"""(stage, outcome, detail), as tests/fuzzing.py's targets report them."""
STAGE_MARK = "@@stage "
"""Written to the child's stderr as a hostile stage starts: the parent names the
stage a killed child was in."""


def stage(name: str, fn: Callable[[], Any]) -> tuple[Stage, Any]:
    """(name, outcome, detail) of running `fn`, and its value or error; the
    stage's name goes to stderr first (STAGE_MARK)."""
    sys.stderr.write(f"{STAGE_MARK}{name}\n")
    sys.stderr.flush()
    started = time.monotonic()
    try:
        value = fn()
    except Exception as error:
        found = outcome(error)
        seconds = time.monotonic() - started
        pc = getattr(error, "pc", None)
        detail = f"{seconds:.2f} s " + (_describe(error) if found.startswith(("BUG", "OVER"))
                                        else "" if pc is None else f"pc={pc}")
        return (name, _timed(found, seconds), detail), error
    seconds = time.monotonic() - started
    return (name, _timed("ok", seconds), f"{seconds:.2f} s"), value


def _describe(error: BaseException) -> str:
    """The last frames of the error's traceback, its chain of types and the
    start of its message (never the whole of a huge message: F1)."""
    try:
        frames = "".join(traceback.format_tb(error.__traceback__)[-DESCRIBED_FRAMES:])
        chain = " <- ".join(type(item).__name__ for item in _chain(error)[:DESCRIBED_FRAMES])
        message = str(error)
        return f"{frames}{chain}: {message[:DESCRIBED_CHARS]} ({len(message)} characters)"
    except MemoryError:
        return f"{type(error).__name__} (no memory left to describe it)"


DESCRIBED_FRAMES = 8
DESCRIBED_CHARS = 400


def _timed(found: str, seconds: float) -> str:
    """The outcome, marked OVER-TIME when the stage took over STAGE_TIME."""
    return f"OVER-TIME:{found}" if seconds > STAGE_TIME else found


def _checked_engines() -> list[str]:
    from engines import CHECKED_ENGINES

    return CHECKED_ENGINES


def _run(obj: Any, recipe: Recipe, engine: str) -> int:
    """Fill the program array's slots, then run the first program once, the
    way the recipe says, with the default budget and limits."""
    jumps = obj.maps.get(JUMPS)
    for slot, index in recipe.slots:
        if jumps is not None:
            jumps[slot] = recipe.programs[index].name
    name = recipe.programs[0].name
    size, fill = recipe.packet
    if recipe.mode == "vm":
        vm = obj.vm(name)
        try:
            mem = bytearray([fill]) * size
            if engine == "interp":
                return int(vm.execute_program(mem))
            vm.jit_compile()
            return int(vm.execute_program_jit(mem))
        finally:
            vm.close()
    runner = (obj.xdp if recipe.mode == "xdp" else obj.skb)(name, engine=engine)
    try:
        return int(runner.run(bytes([fill]) * size).r0)
    finally:
        runner.close()
        runner.vm.close()


def check(recipe: Recipe) -> list[Stage]:
    """Build and load the object; run it on each checked engine (one object:
    a second load would double the cost of most inputs, and what one run left
    in the maps is just more hostile state for the next); decode the global
    data's variables with the object's BTF."""
    from ebpfvm import load

    blob = build_object(recipe)
    loaded, obj = stage("load", lambda: load(blob))
    stages = [loaded]
    if loaded[1] != "ok":
        return stages
    for engine in _checked_engines():
        stages.append(stage(engine, lambda: _run(obj, recipe, engine))[0])  # noqa: B023
    if recipe.btf != "none":
        stages.append(stage("variables", lambda: obj.variables(".bss"))[0])
    return stages


# -- generation ------------------------------------------------------------------------------------

HUGE_SIZES = (1 << 16, 1 << 20, 4 << 20, 1 << 30, (1 << 32) - 1, 1 << 62)
SANE_SIZES = (1, 8, 16, 64, 256)
VALUE_SIZES = (1, 8, 64, 4096, 1 << 20, 4 << 20, (4 << 20) + 8)
ENTRY_COUNTS = (1, 16, 1024, 1 << 16, 1 << 20, 1 << 24, 1 << 30, (1 << 32) - 1)
RING_SIZES = (4096, 1 << 16, 1 << 20, 1 << 24, 1 << 30, 1 << 31)
PACKET_SIZES = (64, 1500, 65536)


def _random_map(rng: random.Random, name: str, kind: int, hostile: bool) -> MapDef:
    if kind == PROG_ARRAY:
        return MapDef(name, kind, 4, 4, rng.choice((1, 4, 64)) if not hostile
                      else rng.choice(ENTRY_COUNTS))
    if kind == RINGBUF:
        return MapDef(name, kind, 0, 0, rng.choice(RING_SIZES if hostile else RING_SIZES[:2]))
    key = 0 if kind in QUEUES else (4 if kind in (2, 6) else rng.choice((4, 8)))
    if not hostile:
        return MapDef(name, kind, key, rng.choice((8, 64, 4096)), rng.choice((4, 64, 1024)))
    return MapDef(name, kind, key, rng.choice(VALUE_SIZES), rng.choice(ENTRY_COUNTS))


def _size(rng: random.Random, hostile: bool) -> int:
    return rng.choice(HUGE_SIZES) if hostile else rng.choice(SANE_SIZES)


def _random_step(rng: random.Random, recipe_maps: tuple[MapDef, ...], hostile: bool,
                 programs: int) -> Step:
    """One body step; map steps pick a map of the right kind when there is one."""
    def pick(kinds: tuple[int, ...]) -> int:
        fitting = [i for i, m in enumerate(recipe_maps) if m.type in kinds]
        return rng.choice(fitting) if fitting and rng.random() < 0.95 else rng.randrange(8)

    kind = rng.choice(("lookup", "lookup", "update", "delete", "push", "pop", "peek", "reserve",
                       "output", "probe_str", "probe", "printk", "comm", "tail", "rec"))
    if kind == "lookup":
        return Step(kind, (pick(KEYED), rng.choice((0, 1, 1, 8, 4096, 0x7FFF))))
    if kind in ("update", "delete"):
        return Step(kind, (pick(KEYED), rng.choice((0, 0, 1, 2))))
    if kind == "push":
        return Step(kind, (pick(QUEUES), rng.choice((0, 2))))
    if kind in ("pop", "peek"):
        return Step(kind, (pick(QUEUES),))
    if kind == "reserve":
        return Step(kind, (pick((RINGBUF,)), _size(rng, hostile), rng.randrange(3)))
    if kind == "output":
        return Step(kind, (pick((RINGBUF,)), _size(rng, hostile)))
    if kind in ("probe_str", "probe"):
        return Step(kind, (_size(rng, hostile), rng.randrange(2)))
    if kind == "printk":
        return Step(kind, (rng.randrange(len(FORMATS)),))
    if kind == "comm":
        return Step(kind, (_size(rng, hostile), rng.randrange(2)))
    if kind == "tail":
        return Step(kind, (rng.randrange(programs + 1),))
    return Step(kind, (rng.choice((1, 8, 64, 1 << 20)),))


def _loops(rng: random.Random) -> int:
    """Mostly short; sometimes tens of thousands; rarely huge or endless (0)."""
    roll = rng.random()
    if roll < 0.50:
        return 1
    if roll < 0.80:
        return rng.randrange(2, 64)
    if roll < 0.95:
        return rng.randrange(64, 1 << 10)
    if roll < 0.99:  # enough map lookups for F3's quadratic regions
        return rng.randrange(1 << 12, 1 << 14)
    if roll < LONG_LOOPS[0]:  # about a budget's worth: a tail-call chain of them runs many budgets
        return rng.randrange(1 << 17, 1 << 20)
    if roll < LONG_LOOPS[1]:
        return rng.randrange(1 << 20, 1 << 31)
    return 0


LONG_LOOPS = (0.9965, 0.9985)
"""Where the rolls for loops of about a budget, of many budgets, and endless
start: rare, because each costs a whole default budget (1 to 2 s interpreted)
once the engines stop it, and a campaign must run 100,000 inputs in 20 minutes."""
SPIN_END = 0.005
"""How often a program ends in an endless loop (when the run gets there)."""
TAIL_CALLS = 0.4
"""How often an object has a program array. A chain of 33 tail calls costs
about 0.15 s (each level is a new VM today), ten times an average input."""


def _random_end(rng: random.Random, programs: int) -> tuple[Step, ...]:
    """An exit, a wild pointer or an endless loop, after a tail call 30% of
    the time (which runs when the call fails: a missing slot, or 33 deep)."""
    roll = rng.random()
    if roll < SPIN_END:
        last = Step("spin")
    elif roll < 0.6:
        last = Step("exit", (rng.choice((0, 1, 2, 3)),))
    else:
        last = Step("wild", (rng.randrange(4), rng.randrange(2),
                             rng.choice((0, 8, -8, 4096, 0x7FFF, -0x8000))))
    if rng.random() < 0.3:
        return (Step("tail", (rng.randrange(programs + 1),)), last)
    return (last,)


def random_recipe(rng: random.Random) -> Recipe:
    """One hostile object: half the time its maps are all of sane sizes (so
    its programs get to run), else each map is hostile with probability 1/2."""
    sane = rng.random() < 0.5
    maps = [_random_map(rng, f"m{n}", MAP_TYPES[rng.choice(list(MAP_TYPES))],
                        not sane and rng.random() < 0.5) for n in range(rng.randrange(0, 4))]
    maps = [m for m in maps if m.type != PROG_ARRAY]
    count = rng.choice((1, 1, 2, 3))
    if rng.random() < TAIL_CALLS:
        maps.append(_random_map(rng, JUMPS, PROG_ARRAY, not sane and rng.random() < 0.2))
    hostile = rng.random() < 0.4
    programs = tuple(ProgDef(f"p{i}", tuple(_random_step(rng, tuple(maps), hostile, count)
                                            for _ in range(rng.randrange(0, 4))),
                             _loops(rng), _random_end(rng, count),
                             rng.choice((0, 0, 0, 64, 4096, 1 << 16)))
                     for i in range(count))
    jumps = next((m for m in maps if m.name == JUMPS), None)
    slots: tuple[tuple[int, int], ...] = ()
    if jumps is not None:
        slots = tuple((rng.randrange(min(jumps.max_entries, count + 1)), rng.randrange(count))
                      for _ in range(rng.randrange(0, count + 2)))
    bss = rng.choice((0, 64, 4096, 1 << 16, 4 << 20, (4 << 20) + 8))
    uses_rec = any(s.kind == "rec" for p in programs for s in (*p.body, *p.end))
    return Recipe(
        maps=tuple(maps), programs=programs, bss_size=bss,
        btf=rng.choice(("none",) * 12 + ("plain", "self", "huge")) if bss else "none",
        slots=slots, mode=rng.choice(("vm", "xdp", "skb")),
        packet=(rng.choice(PACKET_SIZES), rng.choice((0x41, 0x41, 0))),
        recursion=uses_rec or rng.random() < 0.1,
        pad=rng.choice((1 << 15, 1 << 17)) if rng.random() < 0.003 else 0)
