"""bpf_snprintf's formatting, as the kernel does it in two passes (RFC 9669
section 5.3, helper functions).

The first pass checks the format and packs the arguments into a 512-byte
buffer: integers (4 bytes, 8 with l or ll; 4-byte aligned), characters (1
byte), strings (%s, %pks; %pus reads a user pointer, which a test run does
not have: empty; a string that cannot be read is empty; cut to the room
left), IPv4/IPv6 addresses already printed (%pI4 %pi4 %pI6 %pi6: the bytes
the argument points to, zeros if unreadable) and pointer values (%px). It
refuses (-EINVAL) a control character, a conversion with no argument left,
a precision, and conversions other than %d %i %u %x %X (l, ll) %c %s %p...
%%; flags are ``0 + - space`` and a width. -ENOSPC when the buffer is full.

The second pass prints the format from that buffer. Like the kernel it
counts every byte it would print, but it takes an address or a %pks/%pus
string from the buffer only while the output has room: past the end of the
output such a conversion prints and counts nothing and leaves the buffer
where it was (the next conversions read from there). Widths do not apply
to them. %p, %pK, %ps, %pS and %pB print kernel pointers or symbols, which
ebpfvm does not have: :class:`FormatUnsupported`.
"""

from __future__ import annotations

from .errors import EbpfError, MemoryFault
from .helpers import HelperContext

__all__ = ["BIN_ARGS_BYTES", "FormatUnsupported", "bpf_snprintf_text"]

EINVAL, ENOSPC = 22, 28
BIN_ARGS_BYTES = 512
"""MAX_BPRINTF_BIN_ARGS: the buffer the kernel packs the arguments in."""
_SPACES = frozenset(b" \t\n\v\f\r")
_PUNCT = frozenset(b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_FLAGS = frozenset(b"0+- ")


class FormatUnsupported(EbpfError):
    """A bpf_snprintf conversion that prints what ebpfvm does not have (a
    kernel pointer or symbol: %p, %pK, %ps, %pS, %pB); `conversion` names it."""

    def __init__(self, conversion: str) -> None:
        super().__init__(f"bpf_snprintf: %{conversion} prints a kernel pointer or symbol, "
                         "which ebpfvm does not have")
        self.conversion = conversion


class _Refused(Exception):
    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


def _ends_word(byte: int) -> bool:
    """What may follow %s or a bare %p: the end, a space or a punctuation mark."""
    return byte == 0 or byte in _SPACES or byte in _PUNCT


def _spec(fmt: bytes, at: int) -> tuple[int, bytes, bytes]:
    """(index after the flags and width, flags, width) of the conversion at `at`."""
    start = at
    while fmt[at] in _FLAGS:
        at += 1
    digits = at
    if 0x31 <= fmt[at] <= 0x39:
        while 0x30 <= fmt[at] <= 0x39:
            at += 1
    return at, fmt[start:digits], fmt[digits:at]


def _ip_text(kind: bytes, raw: bytes) -> bytes:
    if len(raw) == 4:
        return b".".join((b"%03d" if kind[:1] == b"i" else b"%d") % byte for byte in raw)
    if kind[:1] == b"i":
        return raw.hex().encode()
    return b":".join(raw[at:at + 2].hex().encode() for at in range(0, 16, 2))


class _Packer:
    """The first pass: the packed argument buffer of one call."""

    def __init__(self, ctx: HelperContext, values: list[int]) -> None:
        self.ctx, self.values, self.next = ctx, values, 0
        self.buf = bytearray()

    def take(self) -> int:
        value = self.values[self.next]
        self.next += 1
        return value

    def number(self, size: int) -> None:
        self.buf += bytes(-len(self.buf) % 4)
        if BIN_ARGS_BYTES - len(self.buf) < size:
            raise _Refused(ENOSPC)
        self.buf += (self.take() & ((1 << 8 * size) - 1)).to_bytes(size, "little")

    def char(self) -> None:
        if len(self.buf) == BIN_ARGS_BYTES:
            raise _Refused(ENOSPC)
        self.buf.append(self.take() & 0xFF)

    def string(self, user: bool) -> None:
        left = BIN_ARGS_BYTES - len(self.buf)
        if left == 0:
            raise _Refused(ENOSPC)
        address, text = self.take(), b""
        if not user:
            try:
                text = self.ctx.read_string(address, left - 1)[0]
            except MemoryFault:
                text = b""
        self.buf += text + b"\0"

    def address(self, kind: bytes) -> None:
        size = 4 if kind[1:] == b"4" else 16
        if BIN_ARGS_BYTES - len(self.buf) < size:
            raise _Refused(ENOSPC)
        try:
            raw = self.ctx.read(self.take(), size)
        except MemoryFault:
            raw = bytes(size)
        text = _ip_text(kind, raw)[:BIN_ARGS_BYTES - len(self.buf) - 1]
        self.buf += text + b"\0"

    def pointer(self, fmt: bytes, at: int) -> int:
        """A %p conversion (`at` at the p); the index after what it checked."""
        after = fmt[at + 1]
        if after in (0x6B, 0x75) and fmt[at + 2] == 0x73:  # %pks, %pus
            if not _ends_word(fmt[at + 3]):
                raise _Refused(EINVAL)
            self.string(after == 0x75)
            return at + 3
        if after == 0x78:  # %px
            self.number(8)
            return at + 2
        if _ends_word(after) or after in b"KsSB":
            raise FormatUnsupported("p" + (chr(after) if after in b"KsSB" else ""))
        if after not in b"iI" or fmt[at + 2] not in b"46":
            raise _Refused(EINVAL)
        self.address(fmt[at + 1:at + 3])
        return at + 3

    def conversion(self, fmt: bytes, at: int) -> int:
        """Check and pack the conversion after a % (`at` just after it)."""
        at = _spec(fmt, at)[0]
        conv = fmt[at]
        if conv == 0x70:  # p
            return self.pointer(fmt, at)
        if conv == 0x73:  # s
            if not _ends_word(fmt[at + 1]):
                raise _Refused(EINVAL)
            self.string(False)
            return at + 1
        if conv == 0x63:  # c
            self.char()
            return at + 1
        size = 4
        for _ in range(2):
            if fmt[at] == 0x6C:  # l
                size, at = 8, at + 1
        if not fmt[at] or fmt[at] not in b"iduxX":
            raise _Refused(EINVAL)
        self.number(size)
        return at + 1

    def pack(self, fmt: bytes) -> None:
        at = 0
        while fmt[at]:
            byte = fmt[at]
            if byte < 0x80 and not 0x20 <= byte < 0x7F and byte not in _SPACES:
                raise _Refused(EINVAL)
            if byte != 0x25:
                at += 1
            elif fmt[at + 1] == 0x25:
                at += 2
            elif self.next >= len(self.values) or fmt[at + 1] >= 0x80:
                raise _Refused(EINVAL)
            else:
                at = self.conversion(fmt, at + 1)


class _Printer:
    """The second pass: the bytes printed from the packed buffer, counted
    past the output's `size` as the kernel counts them."""

    def __init__(self, buf: bytes, size: int) -> None:
        self.buf, self.at, self.size = bytes(buf) + bytes(16), 0, size
        self.out = bytearray()

    def number(self, size: int) -> int:
        self.at += -self.at % 4
        value = int.from_bytes(self.buf[self.at:self.at + size], "little")
        self.at += size
        return value

    def cstring(self) -> bytes:
        end = self.buf.index(b"\0", self.at)
        text, self.at = self.buf[self.at:end], end + 1
        return text

    def pointer(self, fmt: bytes, at: int, flags: bytes, width: bytes) -> int:
        if fmt[at + 1] == 0x78:  # %px: the value, 16 digits unless a width is given
            value = self.number(8)
            self.out += ((b"%" + flags + width + b"x") % value if width
                         else b"%016x" % value)
        elif len(self.out) < self.size:  # an address or string printed in pass one
            self.out += self.cstring()
        at += 1
        while fmt[at] < 0x80 and chr(fmt[at]).isalnum():
            at += 1
        return at

    def conversion(self, fmt: bytes, at: int) -> int:
        at, flags, width = _spec(fmt, at)
        spec, conv = b"%" + flags + width, fmt[at]
        if conv == 0x70:
            return self.pointer(fmt, at, flags, width)
        if conv == 0x73:
            self.out += (spec + b"s") % self.cstring()
            return at + 1
        if conv == 0x63:
            self.out += (spec + b"c") % self.buf[self.at]
            self.at += 1
            return at + 1
        size = 4
        for _ in range(2):
            if fmt[at] == 0x6C:
                size, at = 8, at + 1
        value, bits = self.number(size), 8 * size
        if fmt[at] in b"di":
            self.out += (spec + b"d") % (value - ((value >> (bits - 1)) << bits))
        else:
            plain = b"%" + flags.replace(b"+", b"").replace(b" ", b"") + width
            self.out += (plain + fmt[at:at + 1]) % value
        return at + 1

    def print(self, fmt: bytes) -> bytes:
        at = 0
        while fmt[at]:
            if fmt[at] != 0x25:
                self.out.append(fmt[at])
                at += 1
            elif fmt[at + 1] == 0x25:
                self.out.append(0x25)
                at += 2
            else:
                at = self.conversion(fmt, at + 1)
        return bytes(self.out)


def bpf_snprintf_text(ctx: HelperContext, fmt: bytes, values: list[int],
                      size: int) -> bytes | int:
    """Every byte bpf_snprintf counts for `fmt` (without its NUL) and the
    argument `values`, for an output of `size` bytes; or a negative errno."""
    fmt += bytes(4)
    packer = _Packer(ctx, values)
    try:
        packer.pack(fmt)
    except _Refused as refused:
        return -refused.errno
    return _Printer(bytes(packer.buf), size).print(fmt)
