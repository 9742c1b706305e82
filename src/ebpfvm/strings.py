"""The kernel's string helpers: bpf_strtol, bpf_strtoul and bpf_strncmp
(Impl.KERNEL in ebpfvm.helper_table; RFC 9669 section 5.3, helper
functions).

bpf_strtol and bpf_strtoul parse the integer at the start of a buffer as the
kernel does: leading white space (the kernel's isspace, which counts byte
0xA0 too) and one ``-`` are skipped, then at most 63 bytes are parsed, up to
the first NUL or byte that is not a digit of the base. The base is the low 5
bits of the flags: 0 (``0x``: 16, ``0``: 8, else 10), 8, 10 or 16 (a ``0x``
prefix is skipped); any other base or flag is -EINVAL. The return value is
the number of bytes consumed (white space, sign and prefix included), or
-EINVAL (nothing to parse; a negative number for strtoul) or -ERANGE (the
value does not fit). The result (0 on an error) goes to the 8-byte slot the
last argument points to.

bpf_strncmp compares the first argument (at most its size) with the NUL
terminated second: -1, 0 or 1, bytes compared unsigned.

bpf_snprintf: ebpfvm.bprintf formats (the kernel's rules are there); at
most 12 u64 arguments, else -EINVAL. The return value is the formatted
length plus one; at most `str_size` bytes are written, the last a NUL.
"""

from __future__ import annotations

from collections.abc import Callable

from .bprintf import bpf_snprintf_text
from .helpers import Helper, HelperContext, numbered

__all__ = ["parse_integer", "string_helpers", "strtol", "strtoul"]

EINVAL = 22
ERANGE = 34
MAX_ARGS = 12
"""MAX_BPRINTF_VARARGS: bpf_snprintf's most arguments."""
M64 = (1 << 64) - 1
BASE_MASK = 0x1F
"""The flags' bits that hold the base (BPF_STRTOX_BASE_MASK)."""
_DIGITS_MAX = 63
"""The kernel copies at most this many bytes after the sign to parse."""
_SPACE = frozenset(b" \t\n\v\f\r\xa0")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _digit(byte: int) -> int:
    """The value of a digit byte in base 16 (16 for any other byte)."""
    if 0x30 <= byte <= 0x39:
        return byte - 0x30
    lower = byte | 0x20
    return lower - 0x57 if 0x61 <= lower <= 0x66 else 16


def parse_integer(buf: bytes, flags: int) -> tuple[int, int, bool]:
    """(bytes consumed or -errno, magnitude, negative) of the integer at
    the start of `buf`, by the kernel's rules (see the module docstring)."""
    base = flags & BASE_MASK
    if base not in (0, 8, 10, 16) or flags & ~BASE_MASK or not buf:
        return -EINVAL, 0, False
    at = 0
    while at < len(buf) and buf[at] in _SPACE:
        at += 1
    negative = at < len(buf) and buf[at] == 0x2D
    at += negative
    if at == len(buf):
        return -EINVAL, 0, negative
    text = buf[at:at + _DIGITS_MAX].split(b"\0", 1)[0] + b"\0\0"
    start = 0
    if base == 0:
        if text[0] != 0x30:
            base = 10
        else:
            base = 16 if text[1] | 0x20 == 0x78 and text[2] in _HEX else 8
    if base == 16 and text[0] == 0x30 and text[1] | 0x20 == 0x78:
        start = 2
    end, value = start, 0
    while (digit := _digit(text[end])) < base:
        value = value * base + digit
        end += 1
    if value > M64:
        return -ERANGE, 0, negative
    if end == start:
        return -EINVAL, 0, negative
    return at + end, value, negative


def strtol(buf: bytes, flags: int) -> tuple[int, int]:
    """(return value, result) of bpf_strtol on `buf`: the result in the
    signed 64-bit range, else -ERANGE."""
    consumed, value, negative = parse_integer(buf, flags)
    if consumed < 0:
        return consumed, 0
    if value > (1 << 63) - (not negative):
        return -ERANGE, 0
    return consumed, -value if negative else value


def strtoul(buf: bytes, flags: int) -> tuple[int, int]:
    """(return value, result) of bpf_strtoul on `buf`: a negative number is
    -EINVAL."""
    consumed, value, negative = parse_integer(buf, flags)
    if consumed < 0:
        return consumed, 0
    if negative:
        return -EINVAL, 0
    return consumed, value


def _parse(ctx: HelperContext, parse: Callable[[bytes, int], tuple[int, int]], buf: int, size: int, flags: int,
           res: int) -> int:
    ctx.write(res, bytes(8))
    raw = ctx.read(buf, size) if size else b""
    ctx.charge_bytes(size)
    ret, value = parse(raw, flags)
    if ret >= 0:
        ctx.write(res, (value & M64).to_bytes(8, "little"))
    return ret & M64


def _strtol(ctx: HelperContext, buf: int, size: int, flags: int, res: int, *_rest: int) -> int:
    """bpf_strtol(buf, buf_len, flags, long *res)."""
    return _parse(ctx, strtol, buf, size, flags, res)


def _strtoul(ctx: HelperContext, buf: int, size: int, flags: int, res: int,
             *_rest: int) -> int:
    """bpf_strtoul(buf, buf_len, flags, unsigned long *res)."""
    return _parse(ctx, strtoul, buf, size, flags, res)


def _strncmp(ctx: HelperContext, s1: int, size: int, s2: int, *_rest: int) -> int:
    """bpf_strncmp(s1, s1_sz, s2): the first difference within `size`
    bytes, or 0 at a common NUL or after `size` bytes."""
    for at in range(size):
        first = ctx.read(s1 + at, 1)[0]
        second = ctx.read(s2 + at, 1)[0]
        if first != second:
            ctx.charge_bytes(at)
            return (-1 if first < second else 1) & M64
        if not first:
            break
    ctx.charge_bytes(size)
    return 0


def _snprintf(ctx: HelperContext, out: int, size: int, fmt: int, data: int, data_len: int,
              *_rest: int) -> int:
    """bpf_snprintf(str, str_size, fmt, data, data_len)."""
    size, data_len = size & 0xFFFF_FFFF, data_len & 0xFFFF_FFFF
    if data_len % 8 or data_len > MAX_ARGS * 8 or (data_len and not data):
        return -EINVAL & M64
    raw = ctx.read(data, data_len) if data_len else b""
    values = [int.from_bytes(raw[at:at + 8], "little") for at in range(0, data_len, 8)]
    text = bpf_snprintf_text(ctx, ctx.read_cstring(fmt), values, size)
    if isinstance(text, int):
        return text & M64
    ctx.charge_bytes(len(text))
    if size:
        ctx.write(out, text[:size - 1] + b"\0")
    return len(text) + 1


def string_helpers() -> dict[int, Helper]:
    """bpf_strtol, bpf_strtoul, bpf_strncmp and bpf_snprintf (part of
    ebpfvm.kernel.kernel_helpers)."""
    return numbered([
        Helper(_strtol, "bpf_strtol", context=True),
        Helper(_strtoul, "bpf_strtoul", context=True),
        Helper(_strncmp, "bpf_strncmp", context=True),
        Helper(_snprintf, "bpf_snprintf", context=True),
    ])
