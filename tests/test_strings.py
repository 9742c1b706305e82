"""bpf_strtol, bpf_strtoul, bpf_strncmp (ebpfvm.strings) and bpf_snprintf
(ebpfvm.bprintf) as the kernel runs them (RFC 9669 section 5.3, helper
functions).

tests/data/elf/strings.o parses a packet's buffer with both helpers and
compares it with three constant strings, and its program `format` prints
packet-driven arguments (integers, flags and widths, strings, characters,
addresses) with five constant formats into outputs of every size; the kernel
runs the same packets
and the map of results is compared after each one (ebpfvm.kdiff), in every
engine: the expected values are the kernel's. The table tests' values follow
from the kernel's documented rules (bases, sign, the 64-bit range).
"""

from __future__ import annotations

import random
import struct

import pytest

import ebpfvm
from conftest import NEEDS_KBPF, REPO
from ebpfvm.bprintf import FormatUnsupported, bpf_snprintf_text
from ebpfvm.kdiff import against_kernel
from ebpfvm.strings import EINVAL, ERANGE, strtol, strtoul

STRINGS_O = REPO / "tests" / "data" / "elf" / "strings.o"
EDGE = [b"0", b"-0", b"  42", b"\t\n\v\f\r 7", b"\xa09", b"+5", b"-", b" ", b"0x", b"0X1F",
        b"0xg", b"077", b"08", b"0b1", b"1234567890", b"9223372036854775807",
        b"9223372036854775808", b"-9223372036854775808", b"-9223372036854775809",
        b"18446744073709551615", b"18446744073709551616", b"0xffffffffffffffff",
        b"0x10000000000000000", b"-0x8000000000000000", b"0" * 70 + b"1", b"1" + b"0" * 70,
        b"12\x0034", b"abc", b"ff", b"0x1f", b"-12 abc", b"", b"1777777777777777777777",
        b"2000000000000000000000", b"- 1", b"--1"]
"""Inputs at the rules' edges: white space, signs, prefixes, the limits."""
FLAGS = [0, 8, 10, 16, 2, 1, 0x20, 0x30 | 10, 1 << 31, 17, 31]


needs_kernel = NEEDS_KBPF


def _packet(text: bytes, length: int, flags: int) -> bytes:
    """strings.c's packet: Ethernet header, length, flags, 72-byte buffer."""
    return (bytes(12) + b"\x08\x00" + bytes([length]) + struct.pack("<I", flags)
            + (text + bytes(72))[:72])


def _packets(randoms: int) -> list[bytes]:
    rng = random.Random(13)
    out = []
    for text in EDGE:
        out += [_packet(text, max(1, min(72, len(text))), flags) for flags in (0, 8, 10, 16)]
        out.append(_packet(text, 72, rng.choice(FLAGS)))
        if len(text) > 2:
            out.append(_packet(text, len(text) - 1, 0))
    alphabet = b"0123456789abcdefxX -\t\xa0+\x00zZ"
    for _ in range(randoms):
        text = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
        out.append(_packet(text, rng.randrange(1, 73), rng.choice(FLAGS)))
    return out


@needs_kernel
def test_string_helpers_agree_with_the_kernel(engine: str) -> None:
    """Every result (return values, parsed values, comparisons) is the kernel's."""
    packets = _packets(150 if engine == "interp" else 60)
    with ebpfvm.load(STRINGS_O) as obj:
        diff = against_kernel(obj, packets, program="parse", engine=engine, source=STRINGS_O)
        assert diff.packets == len(packets)
        assert diff.divergences == [], [str(d) for d in diff.divergences[:5]]


@pytest.mark.parametrize(("text", "flags", "signed", "unsigned"), [
    (b" \t-0x1f", 0, (7, -31), (-EINVAL, 0)),
    (b"0x", 0, (1, 0), (1, 0)),  # base 0: "0x" without a hex digit is octal 0
    (b"0x", 16, (-EINVAL, 0), (-EINVAL, 0)),
    (b"0755", 0, (4, 0o755), (4, 0o755)),
    (b"0755", 10, (4, 755), (4, 755)),
    (b"ff", 16, (2, 255), (2, 255)),
    (b"18446744073709551615", 0, (-ERANGE, 0), (20, (1 << 64) - 1)),
    (b"18446744073709551616", 0, (-ERANGE, 0), (-ERANGE, 0)),
    (b"-9223372036854775808", 10, (20, -(1 << 63)), (-EINVAL, 0)),
    (b"9223372036854775808", 10, (-ERANGE, 0), (19, 1 << 63)),
    (b"+1", 0, (-EINVAL, 0), (-EINVAL, 0)),
    (b"12", 2, (-EINVAL, 0), (-EINVAL, 0)),
    (b"12", 0x100 | 10, (-EINVAL, 0), (-EINVAL, 0)),
    (b"0" * 63 + b"1", 10, (63, 0), (63, 0)),  # 63 bytes after the sign at most
])
def test_parse_rules(text: bytes, flags: int, signed: tuple[int, int],
                     unsigned: tuple[int, int]) -> None:
    """The kernel's rules, value by value."""
    assert strtol(text, flags) == signed
    assert strtoul(text, flags) == unsigned


def test_results_through_a_program(engine: str) -> None:
    """The program sees the return values and the written results."""
    with ebpfvm.load(STRINGS_O) as obj, obj.skb("parse", engine=engine) as runner:
        assert runner.run(_packet(b"  -0x1fz", 8, 0)).r0 == 7
        values = struct.unpack("<7q", obj.maps["out"][bytes(4)])
        assert values == (7, -31, -EINVAL, 0, -1, -1, 1)  # " " < "0", " " < "-"
        assert runner.run(_packet(b"0x1f", 4, 16)).r0 == 4
        values = struct.unpack("<7q", obj.maps["out"][bytes(4)])
        assert values == (4, 31, 4, 31, 0, 1, 1)


def _format_packet(rng: random.Random) -> bytes:
    """strings.c's `format` packet: output size, twelve u64, 48 string bytes."""
    args = [rng.choice([0, 1, 255, (1 << 32) - 1, 1 << 31, (1 << 64) - 1, 1 << 63, 65, 0x7A,
                        rng.getrandbits(64), rng.getrandbits(16)]) for _ in range(12)]
    strs = bytes(rng.choice(b"abcXYZ 019%\x00\xff") for _ in range(48))
    size = rng.choice([0, 1, 2, 5, 17, 33, 40, 63, 64])
    return bytes(12) + b"\x08\x00" + bytes([size]) + struct.pack("<12Q", *args) + strs


@needs_kernel
def test_snprintf_agrees_with_the_kernel(engine: str) -> None:
    """Every return value and output (truncated, counted past the end as
    the kernel counts) is the kernel's."""
    rng = random.Random(5)
    packets = [_format_packet(rng) for _ in range(80 if engine == "interp" else 30)]
    with ebpfvm.load(STRINGS_O) as obj:
        diff = against_kernel(obj, packets, program="format", engine=engine, source=STRINGS_O)
        assert diff.packets == len(packets)
        assert diff.divergences == [], [str(d) for d in diff.divergences[:5]]


class _NoMemory:
    """A HelperContext stand-in for formats that read no memory."""


@pytest.mark.parametrize(("fmt", "values", "expected"), [
    (b"%d|%5d|%-5d|%05d|%+d|% d", [-1 & 0xFFFF_FFFF, 2, 3, 4, 5, 6],
     b"-1|    2|3    |00004|+5| 6"),
    (b"%u %x %X %lx %lld", [(1 << 32) - 1, 255, 255, 1 << 40, (1 << 64) - 1],
     b"4294967295 ff FF 10000000000 -1"),
    (b"%+u % x", [5, 5], b"5 5"),  # signs only for d and i
    (b"%c%c%3c", [65, 66 | 0x100, 67], b"AB  C"),
    (b"%px", [0x1234], b"0000000000001234"),
    (b"100%%", [], b"100%"),
    (b"%d", [], -EINVAL),  # no argument left
    (b"%.2d", [1], -EINVAL),  # no precision
    (b"%#x", [1], -EINVAL),
    (b"%q", [1], -EINVAL),
    (b"a\x01", [], -EINVAL),  # a control character
])
def test_snprintf_rules(fmt: bytes, values: list[int], expected: bytes | int) -> None:
    """The kernel's rules, format by format (vsprintf's flags and widths)."""
    assert bpf_snprintf_text(_NoMemory(), fmt, values, 64) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", [b"%p", b"%pK", b"%ps", b"%pS", b"%pB"])
def test_snprintf_kernel_pointers_are_unsupported(fmt: bytes) -> None:
    with pytest.raises(FormatUnsupported):
        bpf_snprintf_text(_NoMemory(), fmt, [1], 64)  # type: ignore[arg-type]
