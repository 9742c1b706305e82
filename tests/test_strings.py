"""bpf_strtol, bpf_strtoul and bpf_strncmp (ebpfvm.strings) as the kernel
runs them (RFC 9669 section 5.3, helper functions).

tests/data/elf/strings.o parses a packet's buffer with both helpers and
compares it with three constant strings; the kernel runs the same packets
and the map of results is compared after each one (ebpfvm.kdiff), in every
engine: the expected values are the kernel's. The table tests' values follow
from the kernel's documented rules (bases, sign, the 64-bit range).
"""

from __future__ import annotations

import random
import struct

import pytest

import ebpfvm
from conftest import REPO
from ebpfvm import kbpf
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


def _unavailable() -> str | None:
    try:
        kbpf.probe()
    except kbpf.KernelError as exc:
        return str(exc)
    return None


REASON = _unavailable()
needs_kernel = pytest.mark.skipif(REASON is not None, reason=f"no kernel bpf(): {REASON}")


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
        diff = against_kernel(obj, packets, engine=engine, source=STRINGS_O)
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
