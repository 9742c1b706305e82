"""Capture files read in place: pcap and pcapng over a memory-mapped file.

A regular file is mapped whole, read-only; the pages already walked are
released (``madvise(MADV_DONTNEED)``) every :data:`RELEASE_BYTES`, so a
capture larger than memory streams with bounded resident memory (the page
cache keeps the file; the process does not). A stream that cannot be mapped
(a pipe, stdin) is read into a fixed window that slides over it. Either way
the bytes sit at a fixed address, which the native walker (capture_native.py)
reads as a read-only region; this module is the reference for what it does,
and does what it declines (section headers, interface descriptions, odd or
broken records).

Formats: pcap in both byte orders with micro- or nanosecond timestamps, and
pcapng (section headers in either byte order, several sections, interface
descriptions with ``if_tsresol`` and ``if_tsoffset``, enhanced, simple and
obsolete packet blocks; other blocks are skipped). A capture cut short in its
last record yields the packets before it, then raises a :class:`CaptureError`
with reason ``"truncated"`` ("truncated dump file", as tcpdump says) and the
number of packets read; a malformed one raises a :class:`CaptureError` naming
the byte offset of the bad record.
"""

from __future__ import annotations

import io
import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from .errors import EbpfError, count_of
from .memory import address_of

__all__ = ["BLOCK_SLACK", "MAX_BLOCK", "MAX_SNAPLEN", "RELEASE_BYTES", "CaptureError",
           "CaptureFile", "Interface", "Record"]

MAX_SNAPLEN = 262144
"""The largest record a capture may hold (tcpdump's MAXIMUM_SNAPLEN)."""
BLOCK_SLACK = 65536
"""Bytes a pcapng packet block may hold beyond its packet (header fields, options)."""
MAX_BLOCK = 16 << 20
"""The largest pcapng block of another kind (names, statistics, secrets)."""
RELEASE_BYTES = 32 << 20
"""Walked bytes of a mapped file are released from the process every this many."""
STREAM_WINDOW = 2 * MAX_BLOCK
"""Bytes of the window a stream (a pipe) is read through."""
DLT_EN10MB = 1
PCAPNG_MAGIC = 0x0A0D0D0A
BYTE_ORDER_MAGIC = 0x1A2B3C4D
USEC = 1_000_000
_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": ("<", USEC), b"\xa1\xb2\xc3\xd4": (">", USEC),
                b"\x4d\x3c\xb2\xa1": ("<", 10**9), b"\xa1\xb2\x3c\x4d": (">", 10**9)}
PCAP_HEADER = 24
PCAP_RECORD = 16
SHB, IDB, OPB, SPB, EPB = PCAPNG_MAGIC, 1, 2, 3, 6
OPT_TSRESOL, OPT_TSOFFSET = 9, 14
LINKTYPE_MASK = 0x03FF_FFFF
"""The link type bits of a pcap header's link type field (the rest: FCS length)."""


class CaptureError(EbpfError):
    """A capture file that cannot be read (not pcap/pcapng, cut short, not
    Ethernet, a record larger than :data:`MAX_SNAPLEN`, a malformed block).
    `reason` is ``"truncated"`` or ``"bad caplen"`` for those two cases,
    ``"malformed"`` for a bad record, else ``""``; `offset` is the byte offset
    of the record (None when it is not about one) and `packets` how many
    packets were read before it."""

    def __init__(self, message: str, path: str | None = None, reason: str = "",
                 offset: int | None = None, packets: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason
        self.offset = offset
        self.packets = packets


@dataclass(frozen=True)
class Interface:
    """A pcapng interface (or a pcap file's one): its link type, timestamp
    units per second, snap length and timestamp offset in seconds."""

    linktype: int
    units: int
    snaplen: int = 0
    offset: int = 0
    divisor: float = 1e6
    """The float the units are divided by for the record's float timestamp (as dpkt does)."""


class Record(NamedTuple):
    """One packet: its float timestamp, its exact timestamp in microseconds
    (rounded half up, as the output capture holds it), its bytes."""

    timestamp: float
    usec: int
    frame: bytes


def exact_usec(units: int, per_second: int) -> int:
    """`units` (of 1/per_second s) in whole microseconds, rounded half up; the
    native walker computes the same (seconds, then the fraction)."""
    seconds, fraction = divmod(units, per_second)
    return seconds * USEC + (fraction * 2 * USEC + per_second) // (2 * per_second)


class _Source:
    """The capture's bytes at a fixed address: the whole file mapped, or a
    window over a stream. `data[pos:length]` is what is there to read."""

    def __init__(self, handle: BinaryIO, name: str, release: int) -> None:
        self.name = name
        self._handle = handle
        self.release = release
        self.mapped = False
        self._released = 0
        """Bytes at the start of the mapping given back to the kernel."""
        self.base = 0
        """File offset of data[0]."""
        size = _regular_size(handle)
        if size:
            self.data = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)
            self.data.madvise(mmap.MADV_SEQUENTIAL)
            self.mapped = True
            self.length = size
            self.eof = True
        else:
            self.data = mmap.mmap(-1, STREAM_WINDOW)
            self.length = 0
            self.eof = False
            self.fill(0)
        self.address = address_of(self.data)

    def fill(self, pos: int) -> int:
        """A stream: keep data[pos:length], read more after it; returns where
        data[pos] went (0). A mapped file has nothing more: returns pos."""
        if self.eof:
            return pos
        kept = self.length - pos
        self.data.move(0, pos, kept)
        self.base += pos
        self.length = kept
        view = memoryview(self.data)
        try:
            while self.length < len(view):
                got = self._handle.readinto(view[self.length:])  # type: ignore[attr-defined]
                if not got:
                    self.eof = True
                    break
                self.length += got
        finally:
            view.release()
        return 0

    def done(self, pos: int, force: bool = False) -> None:
        """Bytes before `pos` are walked: release them from a mapping (every
        `release` bytes, or now with `force`) and move the file position, for
        progress bars reading the handle's tell()."""
        if not self.mapped:
            return
        page = (pos // mmap.PAGESIZE) * mmap.PAGESIZE
        if page - self._released >= self.release or (force and page > self._released):
            self.data.madvise(mmap.MADV_DONTNEED, self._released, page - self._released)
            self._released = page
        self._handle.seek(pos)

    def close(self) -> None:
        self.data.close()


def _regular_size(handle: BinaryIO) -> int:
    """The size of `handle` when it is a regular, non-empty file that can be
    mapped from its current position 0 (else 0: read it as a stream)."""
    try:
        fileno = handle.fileno()
        if not handle.seekable() or handle.tell() != 0:
            return 0
        import os
        import stat

        info = os.fstat(fileno)
    except (OSError, io.UnsupportedOperation, AttributeError, ValueError):
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


class CaptureFile:
    """A pcap or pcapng capture read in place: iterate for (timestamp,
    frame) pairs (read_capture's items), or call :meth:`next_record`.
    The native walker shares the state: `pos`, `format`, `order`, `interfaces`."""

    def __init__(self, path: str | Path, handle: BinaryIO | None = None, *,
                 release: int = RELEASE_BYTES) -> None:
        self.name = str(path)
        self._owned = handle is None
        self._handle: BinaryIO = handle if handle is not None else open(path, "rb")  # noqa: SIM115
        self.packets = 0
        self.interfaces: list[Interface] = []
        self.order = "<"
        self.format = "pcap"
        self.pos = 0
        try:
            self.source = _Source(self._handle, self.name, release)
            self._open()
        except BaseException:
            self.close()
            raise

    # -- errors ---------------------------------------------------------

    def error(self, message: str, pos: int, reason: str = "malformed") -> CaptureError:
        offset = self.source.base + pos
        return CaptureError(f"{self.name}: {message} (at byte {offset}, after "
                            f"{count_of(self.packets, 'packet')})", self.name, reason, offset,
                            self.packets)

    def _truncated(self, what: str, need: int, pos: int) -> CaptureError:
        left = self.source.length - pos
        return self.error(f"truncated dump file: {what} needs {count_of(need, 'byte')}, "
                          f"{count_of(left, 'byte')} left", pos, "truncated")

    def _have(self, need: int) -> bool:
        """Whether data[pos:pos+need] is there (a stream reads more first,
        which may move pos)."""
        if self.pos + need <= self.source.length:
            return True
        if not self.source.eof:
            self.pos = self.source.fill(self.pos)
            return self.pos + need <= self.source.length
        return False

    # -- the file header ------------------------------------------------

    def _open(self) -> None:
        if not self._have(4):
            raise CaptureError(f"{self.name}: not a pcap or pcapng capture (empty or "
                               f"{count_of(self.source.length, 'byte')})", self.name)
        magic = bytes(self.source.data[0:4])
        if int.from_bytes(magic, "little") == PCAPNG_MAGIC:
            self.format = "pcapng"
            return  # the section header is the first block: next_record reads it
        found = _PCAP_MAGICS.get(magic)
        if found is None or not self._have(PCAP_HEADER):
            raise CaptureError(f"{self.name}: not a pcap or pcapng capture (magic "
                               f"{magic.hex()})", self.name)
        self.order, units = found
        fields = struct.unpack_from(self.order + "HHiIII", self.source.data, 4)
        linktype = fields[5] & LINKTYPE_MASK
        if linktype != DLT_EN10MB:
            raise CaptureError(f"{self.name}: link type {linktype} is not Ethernet", self.name)
        self.interfaces = [Interface(linktype, units, fields[4], 0, float(units))]
        self._header = struct.Struct(self.order + "IIII").unpack_from
        self.pos = PCAP_HEADER

    # -- records --------------------------------------------------------

    def next_record(self) -> Record | None:
        """The next packet, or None at the end of the capture."""
        if self.format == "pcap":
            return self._pcap_record()
        while True:
            found = self._block()
            if found is None or isinstance(found, Record):
                return found

    def _pcap_record(self) -> Record | None:
        pos = self.pos
        data = self.source.data
        if pos + PCAP_RECORD > self.source.length and not self._have(PCAP_RECORD):
            if self.pos == self.source.length:
                return None
            raise self._truncated("a record header", PCAP_RECORD, self.pos)
        pos = self.pos
        sec, frac, caplen, _length = self._header(data, pos)
        if caplen > MAX_SNAPLEN:
            raise self.error(f"bad caplen: a record of {count_of(caplen, 'byte')} (at most "
                             f"{MAX_SNAPLEN})", pos, "bad caplen")
        if pos + PCAP_RECORD + caplen > self.source.length and not self._have(PCAP_RECORD + caplen):
            raise self._truncated("a record", caplen, self.pos + PCAP_RECORD)
        pos = self.pos
        start = pos + PCAP_RECORD
        frame = data[start : start + caplen]
        self.pos = start + caplen
        self.packets += 1
        units = self.interfaces[0].units
        if units == USEC:
            timestamp = sec + frac / 1e6
        else:
            timestamp = (sec * units + frac) / units
        return Record(timestamp, exact_usec(sec * units + frac, units), frame)

    def _block(self) -> Record | bool | None:
        """One pcapng block at pos: a packet, None at the end, False for a
        block that holds none (read, skipped)."""
        if not self._have(12):
            if self.pos == self.source.length:
                return None
            raise self._truncated("a block header", 12, self.pos)
        pos = self.pos
        data = self.source.data
        kind = int.from_bytes(data[pos : pos + 4], "little")
        if kind == SHB:
            self._section_order()
            pos = self.pos
        kind, total = struct.unpack_from(self.order + "II", data, pos)
        limit = MAX_SNAPLEN + BLOCK_SLACK if kind in (EPB, SPB, OPB) else MAX_BLOCK
        if total < 12 or total % 4 or total > limit:
            raise self.error(f"bad block length {total} (a multiple of 4 from 12 to {limit})",
                             pos)
        if self.source.base + pos == 0 and kind != SHB:
            raise CaptureError(f"{self.name}: not a pcapng capture (no section header)", self.name)
        if not self._have(total):
            raise self._truncated("a block", total, self.pos)
        pos = self.pos
        data = self.source.data
        (trailer,) = struct.unpack_from(self.order + "I", data, pos + total - 4)
        if trailer != total:
            raise self.error(f"bad block trailer {trailer} (the block's length is {total})", pos)
        body = memoryview(data)[pos + 8 : pos + total - 4]
        try:
            found = self._block_body(kind, body, pos)
        finally:
            body.release()
        self.pos = pos + total
        return found

    def _section_order(self) -> None:
        if not self._have(12):
            raise self._truncated("a section header", 12, self.pos)
        magic = self.source.data[self.pos + 8 : self.pos + 12]
        order = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}.get(bytes(magic))
        if order is None:
            if self.pos == 0:
                raise CaptureError(f"{self.name}: not a pcap or pcapng capture (byte-order "
                                   f"magic {bytes(magic).hex()})", self.name)
            raise self.error(f"bad byte-order magic {bytes(magic).hex()}", self.pos)
        self.order = order

    def _block_body(self, kind: int, body: memoryview, pos: int) -> Record | bool | None:
        order = self.order
        if kind == SHB:
            if len(body) < 16:
                raise self.error("section header too short", pos)
            self.interfaces = []
            return False
        if kind == IDB:
            if len(body) < 8:
                raise self.error("interface description too short", pos)
            self.interfaces.append(self._interface(body, pos))
            return False
        if kind == EPB:
            if len(body) < 20:
                raise self.error("enhanced packet block too short", pos)
            iface, high, low, caplen, _length = struct.unpack_from(order + "IIIII", body)
            return self._packet(iface, (high << 32) | low, body, 20, caplen, pos)
        if kind == OPB:
            if len(body) < 20:
                raise self.error("packet block too short", pos)
            iface, _drops, high, low, caplen, _length = struct.unpack_from(order + "HHIIII", body)
            return self._packet(iface, (high << 32) | low, body, 20, caplen, pos)
        if kind == SPB:
            if len(body) < 4:
                raise self.error("simple packet block too short", pos)
            (length,) = struct.unpack_from(order + "I", body)
            caplen = min(length, len(body) - 4)
            snaplen = self._iface(0, pos).snaplen
            return self._packet(0, None, body, 4, min(caplen, snaplen) if snaplen else caplen, pos)
        return False

    def _interface(self, body: memoryview, pos: int) -> Interface:
        linktype, _reserved, snaplen = struct.unpack_from(self.order + "HHI", body)
        units, divisor, offset = USEC, 1e6, 0
        at = 8
        while at + 4 <= len(body):
            code, size = struct.unpack_from(self.order + "HH", body, at)
            value = body[at + 4 : at + 4 + size]
            if code == 0 or len(value) < size:
                break
            if code == OPT_TSRESOL and size >= 1:
                exponent = value[0] & 0x7F
                base = 2 if value[0] & 0x80 else 10
                if exponent > 60:
                    raise self.error(f"if_tsresol {base}^-{exponent} is finer than ebpfvm reads",
                                     pos)
                units, divisor = base**exponent, float(base**exponent)
            elif code == OPT_TSOFFSET and size >= 8:
                (offset,) = struct.unpack_from(self.order + "q", value)
            at += 4 + (size + 3) // 4 * 4
        return Interface(linktype, units, snaplen, offset, divisor)

    def _iface(self, number: int, pos: int) -> Interface:
        if number >= len(self.interfaces):
            raise self.error(f"a packet of interface {number}, which the section does not "
                             f"describe ({count_of(len(self.interfaces), 'interface')})", pos)
        found = self.interfaces[number]
        if found.linktype != DLT_EN10MB:
            raise CaptureError(f"{self.name}: link type {found.linktype} is not Ethernet",
                               self.name, "", self.source.base + pos, self.packets)
        return found

    def _packet(self, number: int, units: int | None, body: memoryview, at: int, caplen: int,
                pos: int) -> Record:
        iface = self._iface(number, pos)
        if caplen > MAX_SNAPLEN:
            raise self.error(f"bad caplen: a record of {count_of(caplen, 'byte')} (at most "
                             f"{MAX_SNAPLEN})", pos, "bad caplen")
        if at + caplen > len(body):
            raise self.error(f"a packet of {count_of(caplen, 'byte')} in a block of "
                             f"{count_of(len(body) + 12, 'byte')}", pos)
        frame = bytes(body[at : at + caplen])
        self.packets += 1
        if units is None:  # a simple packet block has no timestamp
            return Record(0.0, 0, frame)
        timestamp = iface.offset + units / iface.divisor
        return Record(timestamp, exact_usec(units + iface.offset * iface.units, iface.units), frame)

    # -- iteration ------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        return self

    def __next__(self) -> tuple[float, bytes]:
        found = self.next_record()
        if found is None:
            self.close()
            raise StopIteration
        if self.packets % 4096 == 0:
            self.source.done(self.pos)
        return found.timestamp, found.frame

    def records(self) -> Iterator[Record]:
        """Every packet with its exact timestamp."""
        while (found := self.next_record()) is not None:
            if self.packets % 4096 == 0:
                self.source.done(self.pos)
            yield found

    def close(self) -> None:
        source: Any = getattr(self, "source", None)
        if source is not None:
            source.close()
        if self._owned:
            self._handle.close()

    def __enter__(self) -> CaptureFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
