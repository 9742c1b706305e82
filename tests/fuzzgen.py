"""Input generators for the robustness fuzzing (tests/fuzzing.py runs them).

Random inputs and mutations of valid ones for each target: eBPF programs,
assembler text, ELF objects, and map definitions with Python operations.
Everything is drawn from a seeded ``random.Random``, so a campaign is
repeatable from its seed.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostile import random_recipe

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EBPFVM_SHARED_DIR", REPO.parent / "shared"))
MAX_PROGRAM_SLOTS = 4096
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
    "PerCpuMap": (("update_elem", "kvf"), ("lookup_elem", "k"), ("delete_elem", "k"),
                  ("__getitem__", "k"), ("__setitem__", "kv"), ("__delitem__", "k"),
                  ("__contains__", "k"), ("get", "k"), ("__len__", ""), ("__iter__", ""),
                  ("typed", "")),
    "QueueMap": (("push_elem", "vf"), ("pop_elem", ""), ("peek_elem", ""), ("push", "v"),
                 ("pop", ""), ("peek", ""), ("__len__", ""), ("__iter__", "")),
    "RingBuf": (("reserve", "i"), ("commit", "ib"), ("output", "v"), ("consume", ""),
                ("__len__", "")),
    "ProgArray": (("__setitem__", "is"), ("get", "i"), ("__getitem__", "i"),
                  ("__delitem__", "i"), ("__len__", "")),
    "RedirectMap": (("__getitem__", "k"), ("__setitem__", "kv"), ("__delitem__", "k"),
                    ("__contains__", "k"), ("get", "k"), ("set", "ii"), ("__len__", ""),
                    ("__iter__", "")),
}
MAP_OPS["LpmTrie"] = MAP_OPS["Map"]
MAP_OPS["BloomFilter"] = (("push_elem", "vf"), ("test_elem", "v"), ("add", "v"),
                          ("__contains__", "v"))
MAP_OPS["PerfEventArray"] = (("output", "ivi"), ("records", ""), ("consume", ""),
                             ("close_slot", "i"), ("open_slot", "i"))
MAP_OPS["MapOfMaps"] = (("__setitem__", "kv"), ("__getitem__", "k"), ("__delitem__", "k"),
                        ("__contains__", "k"), ("__len__", ""))
"""Each map kind's Python operations and their arguments: k key, v value,
f flags, i index or size or address, b flag, s program name."""


@dataclass(frozen=True)
class View:
    """Stands for memoryview(raw) in a script (memoryviews cannot be pickled)."""

    raw: bytes


def random_map_script(rng: random.Random) -> tuple[tuple[Any, ...], list[tuple[int, tuple[Any, ...]]]]:
    """A map definition (often wrong) and operations with keys and values of
    wrong sizes and types. An operation is (choice, arguments by letter); the
    child applies operation ``choice % n`` of the kind the definition made."""
    from ebpfvm.maps import MapType

    map_type: int
    if rng.random() < 0.7:  # a valid definition, so the operations get to run
        map_type, key_size, value_size, max_entries = rng.choice((
            (int(MapType.HASH), 4, 8, 4), (int(MapType.LRU_HASH), 8, 4, 2),
            (int(MapType.ARRAY), 4, 8, 4), (int(MapType.PERCPU_HASH), 1, 64, 16),
            (int(MapType.QUEUE), 0, 8, 2), (int(MapType.STACK), 0, 4, 4),
            (int(MapType.PROG_ARRAY), 4, 4, 4), (int(MapType.RINGBUF), 0, 0, 4096)))
    else:
        map_type = rng.choice([*(int(t) for t in MapType), 0, 99, -1])
        key_size = rng.choice((0, 1, 4, 8, 3, -1, 16))
        value_size = rng.choice((0, 1, 4, 8, 7, -4, 64))
        max_entries = rng.choice((0, 1, 2, 4, 16, -1, 4096, 8192, 3000))
    definition = ("fuzz", map_type, key_size, value_size, max_entries,
                  rng.choice((0, 0, 1, 1 << 40)))

    def blob() -> Any:
        size = rng.choice((0, 1, 3, 4, 8, 16, 64, 65, rng.randrange(0, 80)))
        raw = rng.randbytes(size) if rng.random() < 0.7 else bytes(size)
        if size >= 4 and rng.random() < 0.5:
            raw = rng.randrange(5).to_bytes(4, "little") + raw[4:]
        return rng.choice((raw, raw, raw, bytearray(raw), View(raw), 7, -1, "abcd", None,
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
        elif target == "hostile":
            yield random_recipe(rng)
        elif target == "cli":
            from fuzzcli import random_invocation

            yield random_invocation(rng)
        else:
            raise ValueError(f"unknown target {target!r}")
