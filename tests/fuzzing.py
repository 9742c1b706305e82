"""Robustness fuzzing shared by tests/test_robustness.py and tools/fuzz.py.

Four targets, each fed random inputs and mutations of valid ones:

* ``program``: eBPF bytes -> verifier, disassembler, interpreter and checked
  JIT (verifier off for the runs, small instruction budget), and the two
  engines must agree on the result, the error type and pc, and the memory;
  then the JIT's execute_batch over the same input twice must end the same way.
* ``asm``: text -> assembler; text that assembles is disassembled and
  assembled again, which must give the same bytes.
* ``elf``: object bytes -> loader; every program of an object that loads
  runs on the interpreter and the checked JIT.
* ``maps``: map creation and operations from Python with wrong key and value
  sizes and types.

The only outcomes allowed are a result or an :class:`~ebpfvm.errors.EbpfError`
(for maps, also ``KeyError`` for a well-formed key that is absent, as the
Mapping protocol requires). Everything runs in a child process (:class:`Worker`)
so that a segfault or a hang is observed, not fatal: the parent sends one
input at a time, so it always knows which input the child was running when
it died or stopped answering.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import pickle
import random
import resource
import select
import struct
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EBPFVM_SHARED_DIR", REPO.parent / "shared"))

TARGETS = ("program", "asm", "elf", "maps")
BUDGET = 5_000
"""Instruction budget of every fuzzed run: endless loops end with BudgetExceeded."""
TIMEOUT = 30.0
"""Seconds one input may take in the child before it counts as a hang."""
MEMORY_LIMIT = 4 << 30
"""Address-space limit of the child, so a runaway allocation cannot hurt the machine."""
MAX_PROGRAM_SLOTS = 4096

# Outcome classes of one input.
RESULT = "result"
TYPED = "typed-error"
BUG = "bug"  # an exception outside EbpfError, or the engines disagree
CRASH = "crash"  # the child died (signal or exit)
HANG = "hang"  # no answer within TIMEOUT
CLASSES = (RESULT, TYPED, BUG, CRASH, HANG)

INT_EDGES = (0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, -0x8000, 0xFFFF, 0x7FFF_FFFF, -0x8000_0000,
             0xFFFF_FFFF, 512, -512, 4096, 1 << 32, (1 << 63) - 1, -(1 << 63), (1 << 64) - 1)


# -- corpus ------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Valid inputs to mutate: program bytes, assembler text, object files."""

    programs: list[bytes] = field(default_factory=list)
    asm: list[str] = field(default_factory=list)
    objects: list[bytes] = field(default_factory=list)


def load_corpus() -> Corpus:
    """Conformance programs (shared/conformance), benchmark programs
    (shared/bench/out), and the repo's object files."""
    from ebpfvm.errors import EbpfError
    from ebpfvm.testdata import UnknownDirective, read_data_file

    corpus = Corpus()
    for path in sorted((SHARED / "conformance").glob("*.data")):
        try:
            data = read_data_file(path)
            code = data.program()
        except (UnknownDirective, EbpfError, ValueError):
            continue
        corpus.programs.append(code)
        if data.asm.strip():
            corpus.asm.append(data.asm)
    for path in sorted((SHARED / "bench" / "out").glob("*.bin")):
        corpus.programs.append(path.read_bytes())
    object_paths = [*sorted((REPO / "tests" / "data" / "elf").glob("*.o")),
                    *sorted((REPO / "examples" / "bpf").glob("*.o")),
                    *sorted((SHARED / "bench" / "out").glob("*.o"))]
    for path in object_paths:
        corpus.objects.append(path.read_bytes())
    if not corpus.programs:  # no shared folder: the repo's own objects still give programs
        from ebpfvm import load

        for blob in corpus.objects:
            corpus.programs.extend(p.code for p in load(blob).programs)
    if not corpus.asm:
        from ebpfvm import disassemble

        corpus.asm.extend(disassemble(code) for code in corpus.programs[:50])
    return corpus


# -- program mutations ---------------------------------------------------------------------

_SLOT = struct.Struct("<BBhi")


def _valid_opcodes() -> list[int]:
    from ebpfvm.isa import BY_OPCODE

    return [opcode for opcode, rows in enumerate(BY_OPCODE) if rows]


def random_slot(rng: random.Random, opcodes: list[int]) -> bytes:
    """One instruction slot: mostly a valid opcode with random fields."""
    if rng.random() < 0.2:
        return rng.randbytes(8)
    opcode = rng.choice(opcodes)
    regs = rng.randrange(11) | rng.randrange(11) << 4 if rng.random() < 0.9 else rng.randrange(256)
    off = rng.choice((0, 1, -1, 2, -2, rng.randrange(-8, 8), rng.randrange(-512, 512),
                      rng.randrange(-0x8000, 0x8000)))
    imm = rng.choice((*(v for v in INT_EDGES if -(1 << 31) <= v < 1 << 31), rng.randrange(-64, 64),
                      rng.randrange(-(1 << 31), 1 << 31)))
    return _SLOT.pack(opcode, regs, off, imm)


def random_program(rng: random.Random, opcodes: list[int]) -> bytes:
    """Random slots, ending with exit most of the time; sometimes a ragged length."""
    if rng.random() < 0.1:
        return rng.randbytes(rng.randrange(0, 200))
    slots = [random_slot(rng, opcodes) for _ in range(rng.randrange(1, 48))]
    if rng.random() < 0.7:
        slots.append(_SLOT.pack(0x95, 0, 0, 0))
    return b"".join(slots)


def _slots(code: bytes) -> list[bytearray]:
    return [bytearray(code[i : i + 8]) for i in range(0, len(code) - len(code) % 8, 8)]


def mutate_program(rng: random.Random, code: bytes, corpus: Corpus, opcodes: list[int]) -> bytes:
    """1-4 mutations: bit flips, byte and slot replacement, insertion, deletion,
    opcode swaps among table rows, register, offset and immediate tweaks,
    duplication, truncation, splicing."""
    slots = _slots(code) or [bytearray(random_slot(rng, opcodes))]
    tail = b""
    for _ in range(rng.randrange(1, 5)):
        kind = rng.randrange(12)
        i = rng.randrange(len(slots))
        slot = slots[i]
        if kind == 0:
            slot[rng.randrange(8)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            slot[rng.randrange(8)] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif kind == 2:
            slots[i] = bytearray(random_slot(rng, opcodes))
        elif kind == 3:
            slots.insert(i, bytearray(random_slot(rng, opcodes)))
        elif kind == 4 and len(slots) > 1:
            del slots[i]
        elif kind == 5:
            slot[0] = rng.choice(opcodes)
        elif kind == 6:
            slot[1] = rng.randrange(16) | rng.randrange(16) << 4 if rng.random() < 0.5 \
                else (slot[1] & 0xF0) | rng.randrange(11)
        elif kind == 7:
            off = _SLOT.unpack(slot)[2]
            off = rng.choice((off + rng.randrange(-3, 4), -off, 0x7FFF, -0x8000, -1,
                              len(slots) - i - 1, -i - 1))
            struct.pack_into("<h", slot, 2, max(-0x8000, min(0x7FFF, off)))
        elif kind == 8:
            imm = rng.choice((*INT_EDGES, rng.randrange(-(1 << 31), 1 << 31)))
            struct.pack_into("<I", slot, 4, imm & 0xFFFF_FFFF)
        elif kind == 9:
            start = rng.randrange(len(slots))
            slots[start:start] = [bytearray(s) for s in slots[start : start + rng.randrange(1, 8)]]
        elif kind == 10:
            if rng.random() < 0.5:
                del slots[rng.randrange(1, len(slots) + 1):]
            else:
                tail = rng.randbytes(rng.randrange(1, 8))
        else:
            other = _slots(rng.choice(corpus.programs))
            if other:
                cut = rng.randrange(len(other))
                slots[i:] = [bytearray(s) for s in other[cut:]]
    slots = slots[:MAX_PROGRAM_SLOTS]
    return b"".join(bytes(s) for s in slots) + tail


# -- assembler text -------------------------------------------------------------------------


def _asm_vocabulary() -> list[str]:
    from ebpfvm.isa import BY_MNEMONIC

    words = sorted(set(BY_MNEMONIC))
    words += [f"r{n}" for n in range(16)] + ["r", "r-1", "r99", "w1", "%r1"]
    words += [str(v) for v in INT_EDGES] + [hex(v) for v in INT_EDGES if v >= 0]
    words += ["0x", "-0x1", "+1", "-1", "1e3", "0b101", "0o7", "99999999999999999999999",
              "-0x10000000000000000", "0x1_0"]
    words += ["[", "]", "+", "-", ",", ":", ";", "#", "//", ".", "label", "label:", "exit",
              ".word", ".quad", ".raw", "\t", "  ", "\x00", "é", "\u202e", "\r"]
    return words


def random_asm(rng: random.Random, vocabulary: list[str]) -> str:
    lines = []
    for _ in range(rng.randrange(0, 12)):
        words = [rng.choice(vocabulary) for _ in range(rng.randrange(0, 7))]
        separator = rng.choice((" ", ", ", " ", ""))
        lines.append(separator.join(words))
    return "\n".join(lines)


def mutate_asm(rng: random.Random, text: str, vocabulary: list[str]) -> str:
    """Line, token and character mutations of a valid listing."""
    lines = text.splitlines() or [""]
    for _ in range(rng.randrange(1, 5)):
        kind = rng.randrange(7)
        i = rng.randrange(len(lines))
        line = lines[i]
        if kind == 0 and len(lines) > 1:
            del lines[i]
        elif kind == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif kind == 2:
            tokens = line.replace(",", " , ").split()
            if tokens:
                tokens[rng.randrange(len(tokens))] = rng.choice(vocabulary)
            lines[i] = " ".join(tokens)
        elif kind == 3 and line:
            pos = rng.randrange(len(line))
            lines[i] = line[:pos] + line[pos + 1 :]
        elif kind == 4:
            pos = rng.randrange(len(line) + 1)
            char = rng.choice((chr(rng.randrange(32, 127)), rng.choice(vocabulary)))
            lines[i] = line[:pos] + char + line[pos:]
        elif kind == 5:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        else:
            tokens = line.split()
            numbers = [k for k, t in enumerate(tokens) if any(c.isdigit() for c in t)]
            if numbers:
                k = rng.choice(numbers)
                tokens[k] = tokens[k].replace(tokens[k].strip("[],+-r"),
                                              str(rng.choice(INT_EDGES)), 1)
                lines[i] = " ".join(tokens)
    return "\n".join(lines)


# -- ELF objects -------------------------------------------------------------------------------

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_SHT_SYMTAB = 2
_SHT_REL = 9
_EHDR_FIELDS = {"e_shoff": 40, "e_shnum": 60, "e_shstrndx": 62, "e_shentsize": 58}
_SHDR_FIELDS = (("sh_name", 0, 4), ("sh_type", 4, 4), ("sh_flags", 8, 8), ("sh_offset", 24, 8),
                ("sh_size", 32, 8), ("sh_link", 40, 4), ("sh_info", 44, 4),
                ("sh_addralign", 48, 8), ("sh_entsize", 56, 8))


def _section_headers(blob: bytes) -> list[tuple[int, tuple[int, ...]]]:
    """(file offset, fields) of each section header of a well-formed object."""
    if len(blob) < _EHDR.size:
        return []
    ehdr = _EHDR.unpack_from(blob)
    shoff, shentsize, shnum = ehdr[6], ehdr[11], ehdr[12]
    out = []
    for index in range(shnum):
        at = shoff + index * shentsize
        if shentsize == _SHDR.size and at + _SHDR.size <= len(blob):
            out.append((at, _SHDR.unpack_from(blob, at)))
    return out


def _edge_value(rng: random.Random, size: int, blob: bytes, old: int) -> int:
    mask = (1 << (8 * size)) - 1
    choices = (0, 1, mask, mask >> 1, len(blob), len(blob) + 1, old + 1, old - 1, old ^ 8,
               rng.randrange(1 << (8 * size)), 0x1000_0000, 8, 24)
    return rng.choice(choices) & mask


def mutate_object(rng: random.Random, blob: bytes) -> bytes:
    """Byte flips, truncation, or one corrupted field of the ELF header, a
    section header, a symbol or a relocation."""
    data = bytearray(blob)
    kind = rng.randrange(6)
    headers = _section_headers(blob)
    if kind == 0 or not headers:
        for _ in range(rng.randrange(1, 9)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:
        del data[rng.randrange(len(data)) :]
    elif kind == 2:
        name, at = rng.choice(list(_EHDR_FIELDS.items()))
        size = 8 if name == "e_shoff" else 2
        old = int.from_bytes(data[at : at + size], "little")
        data[at : at + size] = _edge_value(rng, size, blob, old).to_bytes(size, "little")
    elif kind == 3:
        at, _fields = rng.choice(headers)
        _name, offset, size = rng.choice(_SHDR_FIELDS)
        old = int.from_bytes(data[at + offset : at + offset + size], "little")
        data[at + offset : at + offset + size] = _edge_value(rng, size, blob, old).to_bytes(
            size, "little")
    else:
        wanted = _SHT_SYMTAB if kind == 4 else _SHT_REL
        entries = [(f[4], f[5], f[9]) for _at, f in headers if f[1] == wanted and f[9]]
        if not entries:
            data[rng.randrange(len(data))] ^= 0xFF
        else:
            offset, size, entsize = rng.choice(entries)
            count = size // entsize
            if count:
                entry = offset + rng.randrange(count) * entsize
                field_at, field_size = rng.choice(((0, 4), (4, 1), (6, 2), (8, 8), (16, 8))
                                                  if wanted == _SHT_SYMTAB
                                                  else ((0, 8), (8, 4), (12, 4)))
                at = entry + field_at
                if at + field_size <= len(data):
                    old = int.from_bytes(data[at : at + field_size], "little")
                    data[at : at + field_size] = _edge_value(rng, field_size, blob, old).to_bytes(
                        field_size, "little")
    return bytes(data)


# -- map operations ---------------------------------------------------------------------------

MAP_OPS: dict[str, tuple[tuple[str, str], ...]] = {
    "Map": (("update_elem", "kvf"), ("lookup_elem", "k"), ("delete_elem", "k"),
            ("__getitem__", "k"), ("__setitem__", "kv"), ("__delitem__", "k"),
            ("__contains__", "k"), ("get", "k"), ("__len__", ""), ("__iter__", ""),
            ("typed", "")),
    "QueueMap": (("push_elem", "vf"), ("pop_elem", ""), ("peek_elem", ""), ("push", "v"),
                 ("pop", ""), ("peek", ""), ("__len__", ""), ("__iter__", "")),
    "RingBuf": (("reserve", "i"), ("commit", "ib"), ("output", "v"), ("consume", ""),
                ("__len__", "")),
    "ProgArray": (("__setitem__", "is"), ("get", "i"), ("__getitem__", "i"),
                  ("__delitem__", "i"), ("__len__", "")),
}
"""Each map kind's Python operations and their arguments: k key, v value,
f flags, i index or size or address, b flag, s program name."""


@dataclass(frozen=True)
class _View:
    """Stands for memoryview(raw) in a script (memoryviews cannot be pickled)."""

    raw: bytes


def _materialize(value: Any) -> Any:
    return memoryview(value.raw) if isinstance(value, _View) else value


def random_map_script(rng: random.Random) -> tuple[tuple[Any, ...], list[tuple[int, tuple[Any, ...]]]]:
    """A map definition (often wrong) and operations with keys and values of
    wrong sizes and types. An operation is (choice, arguments by letter); the
    child applies operation ``choice % n`` of the kind the definition made."""
    from ebpfvm.maps import MapType

    if rng.random() < 0.7:  # a valid definition, so the operations get to run
        map_type, key_size, value_size, max_entries = rng.choice((
            (MapType.HASH, 4, 8, 4), (MapType.LRU_HASH, 8, 4, 2), (MapType.ARRAY, 4, 8, 4),
            (MapType.PERCPU_HASH, 1, 64, 16), (MapType.QUEUE, 0, 8, 2), (MapType.STACK, 0, 4, 4),
            (MapType.PROG_ARRAY, 4, 4, 4), (MapType.RINGBUF, 0, 0, 4096)))
    else:
        map_type = rng.choice([*(int(t) for t in MapType), 0, 99, -1])
        key_size = rng.choice((0, 1, 4, 8, 3, -1, 16))
        value_size = rng.choice((0, 1, 4, 8, 7, -4, 64))
        max_entries = rng.choice((0, 1, 2, 4, 16, -1, 4096, 8192, 3000))
    definition = ("fuzz", int(map_type), key_size, value_size, max_entries,
                  rng.choice((0, 0, 1, 1 << 40)))

    def blob() -> Any:
        size = rng.choice((0, 1, 3, 4, 8, 16, 64, 65, rng.randrange(0, 80)))
        raw = rng.randbytes(size) if rng.random() < 0.7 else bytes(size)
        if size >= 4 and rng.random() < 0.5:
            raw = rng.randrange(5).to_bytes(4, "little") + raw[4:]
        return rng.choice((raw, raw, raw, bytearray(raw), _View(raw), 7, -1, "abcd", None,
                           [1, 2, 3, 4], 1.5, 1 << 70))

    def number() -> Any:
        return rng.choice((*INT_EDGES, rng.randrange(-4, 20), rng.randrange(-4, 20), 1 << 70,
                           "1", None, 1.0))

    makers: dict[str, Callable[[], Any]] = {
        "k": blob, "v": blob, "f": lambda: rng.choice((0, 1, 2, 3, -1, 1 << 40, None)),
        "i": number, "b": lambda: rng.choice((True, False, 0, None, "yes")),
        "s": lambda: rng.choice(("handler", "", "x" * 300, 7, None, b"handler")),
    }
    ops = [(rng.randrange(1 << 16), {letter: maker() for letter, maker in makers.items()})
           for _ in range(rng.randrange(1, 16))]
    return definition, [(choice, tuple(sorted(args.items()))) for choice, args in ops]


def _well_formed_key(the_map: Any, key: Any) -> bool:
    if type(the_map).__name__ == "ProgArray":
        return isinstance(key, int)
    return isinstance(key, (bytes, bytearray, memoryview)) and len(key) == the_map.key_size


def run_map_script(definition: tuple[Any, ...],
                   ops: list[tuple[int, tuple[Any, ...]]]) -> list[tuple[str, str]]:
    """Run a map script; (operation, outcome name) per step. Any exception other than
    MapError escapes, except KeyError from item access with a well-formed key
    (the Mapping protocol)."""
    from ebpfvm.errors import EbpfError
    from ebpfvm.maps import create_map

    try:
        the_map: Any = create_map(*definition)
    except EbpfError as error:
        return [("create", type(error).__name__)]
    outcomes = [("create", "ok")]
    table = MAP_OPS[type(the_map).__name__]
    for choice, arg_items in ops:
        args = {letter: _materialize(value) for letter, value in arg_items}
        name, letters = table[choice % len(table)]
        values = [args[letter] for letter in letters]
        try:
            if name == "typed":
                the_map.typed  # noqa: B018 (a property that raises for maps without BTF)
            else:
                result = getattr(the_map, name)(*values)
                if name in ("__iter__", "consume"):
                    list(result)
            outcomes.append((name, "ok"))
        except EbpfError as error:
            outcomes.append((name, type(error).__name__))
        except KeyError:
            if name not in ("__getitem__", "__delitem__") or not _well_formed_key(the_map,
                                                                               values[0]):
                raise
            outcomes.append((name, "KeyError"))
    return outcomes


# -- what the child runs on one input ------------------------------------------------------------

Stage = tuple[str, str, str]
"""(stage, outcome, detail): outcome is "ok", an EbpfError class name, or
"BUG:<class>" with a traceback as detail."""


def _stage(name: str, fn: Callable[[], Any]) -> tuple[Stage, Any]:
    from ebpfvm.errors import EbpfError

    try:
        return (name, "ok", ""), fn()
    except EbpfError as error:
        return (name, type(error).__name__, _fault_detail(error)), error
    except Exception as error:
        return (name, f"BUG:{type(error).__name__}", traceback.format_exc(limit=12)), error


def _fault_detail(error: BaseException) -> str:
    pc = getattr(error, "pc", None)
    return "" if pc is None else f"pc={pc}"


def _no_verifier(_code: bytes) -> None:
    return None


def _engine_vm(code: bytes) -> Any:
    from ebpfvm.helpers import ubpf_test_helpers
    from ebpfvm.vm import EbpfVmRaw

    vm = EbpfVmRaw(budget=BUDGET)
    vm.set_verifier(_no_verifier)
    vm.set_program(code)
    for key, helper in ubpf_test_helpers().items():
        vm.register_helper(key, helper)
    return vm


def _engine_run(vm: Any, mem: bytearray, jit: bool) -> tuple[int, bytes]:
    mem[:] = bytes(range(len(mem)))
    if jit:
        vm.jit_compile()
        result = vm.execute_program_jit(mem)
    else:
        result = vm.execute_program(mem)
    return result, bytes(mem)


def _batch_stage(vm: Any, mem: bytearray, jit: Stage, jit_value: Any) -> Stage:
    """execute_batch over the same input twice: the first run must end as the
    single JIT run did; the second too when that run left the input unchanged."""
    from ebpfvm.errors import VmFault

    pattern = bytes(range(len(mem)))
    mem[:] = pattern
    stage, value = _stage("batch", lambda: vm.execute_batch([mem, mem]))
    if stage[1].startswith("BUG"):
        return stage
    if jit[1] == "ok":
        result, after = jit_value
        same = stage[1] == "ok" and value[0] == result and (
            after != pattern or value[1] == result)
    else:
        same = (stage[1], stage[2]) == (jit[1], jit[2]) and (
            not isinstance(value, VmFault) or value.batch_index == 0)
    detail = "" if same else f"batch {stage[1:]} {value!r:.100} / jit {jit[1:]} {jit_value!r:.100}"
    return ("batch", stage[1] if same else "BUG:BatchDisagreement", detail)


def check_program(code: bytes) -> list[Stage]:
    """Both engines run on one VM and one input buffer, so the addresses a
    program computes (stack, input) are the same in both."""
    from ebpfvm import disassemble, verify

    stages = [_stage("verify", lambda: verify(code))[0], _stage("disasm", lambda: disassemble(code))[0]]
    setup, vm = _stage("setup", lambda: _engine_vm(code))
    if setup[1] != "ok":
        return [*stages, setup]
    mem = bytearray(64)
    try:
        interp, interp_value = _stage("interp", lambda: _engine_run(vm, mem, False))
        jit, jit_value = _stage("jit", lambda: _engine_run(vm, mem, True))
        if vm.jit_ready:
            stages.append(_batch_stage(vm, mem, jit, jit_value))
    finally:
        vm.close()
    stages += [interp, jit]
    if not interp[1].startswith("BUG") and not jit[1].startswith("BUG"):
        same = (interp[1], interp[2]) == (jit[1], jit[2]) and (
            interp[1] != "ok" or interp_value == jit_value)
        if interp[1] == "JitUnsupported" or jit[1] == "JitUnsupported":
            same = True
        detail = "" if same else f"interp {interp[1:]} {interp_value!r:.80} / jit {jit[1:]} {jit_value!r:.80}"
        stages.append(("agree", "ok" if same else "BUG:Disagreement", detail))
    return stages


def check_asm(text: str) -> list[Stage]:
    from ebpfvm import assemble, disassemble

    stage, code = _stage("assemble", lambda: assemble(text))
    stages = [stage]
    if stage[1] == "ok":
        text2_stage, text2 = _stage("disasm", lambda: disassemble(code))
        stages.append(text2_stage)
        if text2_stage[1] == "ok":
            again_stage, again = _stage("reassemble", lambda: assemble(text2))
            if again_stage[1] != "ok":
                again_stage = ("reassemble", f"BUG:{again_stage[1]}", again_stage[2] + text2[:400])
            elif again != code:
                again_stage = ("reassemble", "BUG:RoundTrip", f"{code.hex()} -> {text2!r:.300}")
            stages.append(again_stage)
    return stages


def _run_object_program(obj: Any, name: str, jit: bool) -> int:
    vm = obj.vm(name, budget=BUDGET)
    mem = bytearray(range(64))
    try:
        if jit:
            vm.jit_compile()
            return int(vm.execute_program_jit(mem))
        return int(vm.execute_program(mem))
    finally:
        vm.close()


def check_elf(blob: bytes) -> list[Stage]:
    from ebpfvm import load

    stage, obj = _stage("load", lambda: load(blob))
    stages = [stage]
    if stage[1] == "ok":
        for program in obj.programs[:4]:
            for jit in (False, True):
                stages.append(_stage("jit" if jit else "interp",
                                     lambda p=program, j=jit: _run_object_program(obj, p.name, j))[0])
    return stages


def check_maps(script: tuple[tuple[Any, ...], list[tuple[Any, ...]]]) -> list[Stage]:
    stage, outcomes = _stage("maps", lambda: run_map_script(*script))
    if stage[1] == "ok":
        return [(name, outcome, "") for name, outcome in outcomes]
    return [stage]


def check_selftest(what: str) -> list[Stage]:
    """Misbehaviour on purpose, to show the harness sees it: "crash" (SIGSEGV),
    "hang", "raise" (a TypeError), "typed" (an EbpfError), anything else is a result."""
    import ctypes
    import time

    from ebpfvm.errors import EbpfError

    def act() -> None:
        if what == "crash":
            ctypes.string_at(8)
        elif what == "hang":
            time.sleep(3600)
        elif what == "raise":
            raise TypeError("on purpose")
        elif what == "typed":
            raise EbpfError("on purpose")

    return [_stage("selftest", act)[0]]


CHECKS: dict[str, Callable[[Any], list[Stage]]] = {
    "program": check_program, "asm": check_asm, "elf": check_elf, "maps": check_maps,
    "selftest": check_selftest,
}


def classify(stages: list[Stage]) -> str:
    outcomes = [outcome for _stage, outcome, _detail in stages]
    if any(outcome.startswith("BUG") for outcome in outcomes):
        return BUG
    if all(outcome == "ok" for outcome in outcomes):
        return RESULT
    return TYPED


# -- input generation --------------------------------------------------------------------------


def generate(target: str, rng: random.Random, corpus: Corpus) -> Iterator[Any]:
    """Endless inputs for one target: half random, half mutated corpus entries."""
    opcodes = _valid_opcodes()
    vocabulary = _asm_vocabulary()
    while True:
        fresh = rng.random() < 0.3
        if target == "program":
            yield (random_program(rng, opcodes) if fresh or not corpus.programs
                   else mutate_program(rng, rng.choice(corpus.programs), corpus, opcodes))
        elif target == "asm":
            yield (random_asm(rng, vocabulary) if fresh or not corpus.asm
                   else mutate_asm(rng, rng.choice(corpus.asm), vocabulary))
        elif target == "elf":
            blob = rng.choice(corpus.objects)
            yield mutate_object(rng, blob) if rng.random() < 0.97 else blob
        elif target == "maps":
            yield random_map_script(rng)
        else:
            raise ValueError(f"unknown target {target!r}")


# -- the child process ----------------------------------------------------------------------------

_FRAME = struct.Struct("<I")


def _send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError
    (size,) = _FRAME.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def worker_main() -> None:
    """The child: reads (target, input) frames on stdin, answers with stages on
    the original stdout; programs that print (trace helpers) print to /dev/null."""
    answer = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    faulthandler.enable()
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or hard > MEMORY_LIMIT:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, hard))
    requests = sys.stdin.buffer
    while True:
        try:
            target, payload = _receive(requests)
        except EOFError:
            return
        _send(answer, CHECKS[target](payload))


@dataclass
class Report:
    """Counts of one campaign: per target and class, and per stage outcome."""

    classes: Counter[tuple[str, str]] = field(default_factory=Counter)
    stages: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    bugs: list[tuple[str, str, Any, str]] = field(default_factory=list)
    """(target, class, input, detail) of every bug, crash and hang."""

    def count(self, target: str, kind: str | None = None) -> int:
        return sum(n for (t, k), n in self.classes.items()
                   if t == target and (kind is None or k == kind))

    def format(self) -> str:
        lines = [f"{'target':8} {'inputs':>8} " + " ".join(f"{c:>11}" for c in CLASSES)]
        for target in sorted({t for t, _k in self.classes}):
            row = " ".join(f"{self.count(target, c):>11}" for c in CLASSES)
            lines.append(f"{target:8} {self.count(target):>8} {row}")
        lines.append("stage outcomes:")
        for (target, stage, outcome), n in sorted(self.stages.items()):
            lines.append(f"  {target}.{stage}: {outcome} {n}")
        return "\n".join(lines)


class Worker:
    """A child process that checks inputs one at a time; restarted after a crash or hang."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: Any = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen[bytes]:
        if self.stderr is not None:
            self.stderr.close()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 (kept until the next restart)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO / "src"), str(Path(__file__).resolve().parent),
             os.environ.get("PYTHONPATH", "")]))
        code = "import fuzzing; fuzzing.worker_main()"
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        return self.proc

    def check(self, target: str, payload: Any) -> tuple[str, list[Stage]]:
        """(class, stages) of one input; CRASH and HANG carry the child's stderr."""
        proc = self.proc if self.proc is not None and self.proc.poll() is None else self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _send(proc.stdin, (target, payload))
            ready, _w, _x = select.select([proc.stdout], [], [], self.timeout)
            if not ready:
                self._stop()
                return HANG, [("child", "HANG", f"no answer in {self.timeout} s")]
            stages: list[Stage] = _receive(proc.stdout)
            return classify(stages), stages
        except (EOFError, BrokenPipeError):
            status = proc.wait()
            detail = self._stderr_tail()
            self._stop()
            return CRASH, [("child", f"CRASH:{status}", detail)]

    def _stderr_tail(self) -> str:
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        text: str = self.stderr.read().decode(errors="replace")
        return text[-3000:]

    def _stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.restarts += 1

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        self.proc = None
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def campaign(targets: list[str], count: int | None, seconds: float | None, seed: int,
             report: Report | None = None, worker: Worker | None = None,
             progress: Callable[[str, int], None] | None = None) -> Report:
    """Run `count` inputs (or `seconds` of inputs) per target through a worker."""
    import time

    report = report or Report()
    corpus = load_corpus()
    own = worker is None
    worker = worker or Worker()
    try:
        for target in targets:
            rng = random.Random(f"{seed}:{target}")
            inputs = generate(target, rng, corpus)
            deadline = None if seconds is None else time.monotonic() + seconds
            done = 0
            while (count is None or done < count) and (deadline is None or time.monotonic() < deadline):
                payload = next(inputs)
                kind, stages = worker.check(target, payload)
                report.classes[target, kind] += 1
                for stage, outcome, _detail in stages:
                    report.stages[target, stage, outcome] += 1
                if kind in (BUG, CRASH, HANG):
                    detail = "\n".join(f"{s}: {o} {d}" for s, o, d in stages if o != "ok")
                    report.bugs.append((target, kind, payload, detail))
                done += 1
                if progress is not None and done % 1000 == 0:
                    progress(target, done)
    finally:
        if own:
            worker.close()
    return report


# -- JIT memory ---------------------------------------------------------------------------------------


def mapped_memory() -> tuple[int, int]:
    """(number of mappings, total mapped bytes) of this process, from /proc/self/maps."""
    count = total = 0
    with open("/proc/self/maps") as handle:
        for line in handle:
            start, end = line.split(None, 1)[0].split("-")
            count += 1
            total += int(end, 16) - int(start, 16)
    return count, total


def resident_memory() -> int:
    """Resident set size in bytes, from /proc/self/status."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


LEAK_PROGRAM = "ldxb r1, [r1]\nmov r2, 3\ncall 0\nadd r0, 4\nexit"


def jit_cycles(cycles: int, close: bool, keep: list[Any] | None = None,
               ) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Compile a program `cycles` times on fresh VMs, closing each (or dropping
    it and leaving it to the garbage collector, or, with `keep`, keeping it
    there: a leak on purpose); (mappings, mapped bytes, RSS) before and after."""
    from ebpfvm import EbpfVmRaw, HelperFault, assemble

    code = assemble(LEAK_PROGRAM)

    def helper(a: int, b: int, _c: int, _d: int, _e: int) -> int:
        return a + b if a else a // a  # ZeroDivisionError: a fault path each cycle

    def one() -> None:
        vm = EbpfVmRaw(code)
        vm.register_helper(0, helper)
        vm.jit_compile()
        if vm.execute_program_jit(bytearray([2])) != 2 + 3 + 4:  # helper(2, 3) = 5, plus 4
            raise AssertionError("the JIT program computed the wrong value")
        try:
            vm.execute_program_jit(bytearray([0]))
            raise AssertionError("the helper did not fail")
        except HelperFault:
            pass
        if close:
            vm.close()
        if keep is not None:
            keep.append(vm)

    for _ in range(50):  # warm up allocators and caches
        one()
    gc.collect()
    before = (*mapped_memory(), resident_memory())
    for _ in range(cycles):
        one()
    gc.collect()
    after = (*mapped_memory(), resident_memory())
    return before, after


if __name__ == "__main__":
    worker_main()
