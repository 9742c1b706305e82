"""Capture runs without a Python step per packet (issue 15, point 3).

The per-packet work around a program's runs is eBPF, written once in
``native/walker.c`` (compiled into ``native/walker.o``, package data) and run
by the same engine as the program, as a plain program (r1 = its control
block) with two more regions: the capture's bytes (read-only: the mapped file
or a stream's window, pcapmmap.CaptureFile) and the chunk buffer (writable):

- ``capture_walk`` walks records from a position and lays each packet out in
  the chunk buffer as the batch expects it (the struct xdp_md slot, the
  packet, its span, its timestamp), until the chunk is full or it meets a
  record it leaves to Python (a section header, an interface description, a
  record cut short or broken: pcapmmap reads those, and names the errors);
- the program then runs over the chunk in one native call (execute_spans);
- ``capture_tally`` counts the verdicts and writes the packets that pass (and
  those sent back) as pcap records into output buffers, from where each
  packet's xdp_md says it is now; Python writes each buffer with one call.

So a chunk of up to CHUNK_PACKETS packets costs a handful of Python calls.
"""

from __future__ import annotations

import functools
import mmap
import struct
from collections import Counter
from importlib import resources
from typing import Any

from .contexts import _Frame
from .engine import engines, find_engine, get_engine
from .errors import EbpfError, count_of
from .memory import address_of
from .pcapmmap import DLT_EN10MB, CaptureError, CaptureFile, Record
from .progtypes import verdicts_of, xdp_md_packer
from .vm import EbpfVmRaw

__all__ = ["NCOUNTS", "NativeCapture", "walker_code"]

MAX_PACKET = 65535
MAX_IFACES = 16
NCOUNTS = 16
"""Verdicts below this are counted natively; others (rare) by Python."""
MAX_UNITS = 4_000_000_000_000
"""Finer timestamps than this many units per second are read by Python."""
PCAP_RECORD = 16
CHUNK_SPARE = 64
"""Bytes kept free at the chunk's end: the walker copies packets by 32-byte
strides and the tally reads them by 16-byte ones."""
_WALK = struct.Struct(f"<16Q{2 * MAX_IFACES}Q")
_WALK_OUT = struct.Struct("<9Q3Q")
"""Fields 0-11 of struct walk (after: spans, stamps...)."""
_TALLY = struct.Struct(f"<16Q{NCOUNTS}Q")
TALLY_AT = 512
SPANS_AT = 1024
FULL, END, OTHER = 0, 1, 2


@functools.cache
def walker_code() -> dict[str, bytes]:
    """The walker object's programs (name -> linked bytecode), loaded once."""
    from .elf import load

    data = resources.files("ebpfvm").joinpath("native/walker.o").read_bytes()
    obj = load(data)
    try:
        return {name: obj.program(name).code for name in ("capture_walk", "capture_tally")}
    finally:
        obj.close()


class _Layout:
    """Offsets in the side buffer (control blocks, spans, timestamps,
    results, output buffers) for chunks of `packets` packets of `chunk_bytes`."""

    def __init__(self, packets: int, chunk_bytes: int) -> None:
        self.spans = SPANS_AT
        self.stamps = self.spans + 16 * packets
        self.results = self.stamps + 8 * packets
        self.out = self.results + 8 * packets
        out_bytes = chunk_bytes + PCAP_RECORD * packets + 64
        self.out2 = self.out + out_bytes
        self.size = self.out2 + out_bytes


def runtime_engine(engine: str) -> str:
    """The engine the routines run on for a program on `engine`: they are
    ebpfvm's own trusted code (every length they read from the capture is
    checked against the window and the chunk in the C), so a checked native
    engine runs them as its unchecked sibling (the same platforms, no region
    checks, no metering), as NATIVE15's runtime functions are compiled; the
    program itself keeps every check. The tests run them checked too."""
    chosen = find_engine(engine)
    if chosen.reference or not chosen.checked:
        return engine
    for info in engines():
        found = find_engine(info.name)
        if (not info.checked and info.batches and not found.reference
                and info.platforms == chosen.platforms and info.unavailable is None):
            return info.name
    return engine


class NativeCapture:
    """Runs a program over `capture` chunk by chunk (see the module); the
    routines run on `runtime` (default: runtime_engine(engine))."""

    def __init__(self, capture: CaptureFile, engine: str, slot: int, packets: int,
                 chunk_bytes: int, runtime: str | None = None) -> None:
        self.capture = capture
        self.slot = slot
        self.max_packets = packets
        self.frame = _Frame(chunk_bytes)
        self.chunk_cap = chunk_bytes - CHUNK_SPARE
        self.layout = _Layout(packets, chunk_bytes)
        self.side = mmap.mmap(-1, self.layout.size)
        self.side_view = memoryview(self.side)
        self.spans = self.side_view[self.layout.spans : self.layout.stamps].cast("Q")
        self.side_address = address_of(self.side)
        code = walker_code()
        self.routines: list[EbpfVmRaw] = []
        chosen = runtime or runtime_engine(engine)
        self._reference = get_engine(chosen).reference
        try:
            self.walk = self._routine(code["capture_walk"], chosen, writable=False)
            self.tally = self._routine(code["capture_tally"], chosen, writable=True)
        except BaseException:
            self.close()
            raise
        self.packets = 0
        self.used = 0
        self.pending: Record | None = None
        self.written = (0, 0)
        """Records in the last count's two outputs."""
        self.failure: EbpfError | None = None
        self.finished = False
        self._pack_md = xdp_md_packer(slot) if slot else None

    def _routine(self, code: bytes, engine: str, writable: bool) -> EbpfVmRaw:
        """A runtime routine: r1 = the side buffer; it may read the capture's
        bytes and write the chunk (the walker) or read it (the tally)."""
        vm = EbpfVmRaw(code, budget=None)
        source = self.capture.source
        vm.register_allowed_memory(range(source.address, source.address + len(source.data)),
                                   writable=False)
        vm.register_allowed_memory(range(self.frame.base, self.frame.base + len(self.frame.view)),
                                   writable=not writable)
        if writable:  # the tally's control block is inside the side buffer
            vm.register_allowed_memory(range(self.side_address, self.side_address + self.layout.size))
        if not self._reference:
            vm.jit_compile(engine=engine)
        self.routines.append(vm)
        return vm

    def _call(self, vm: EbpfVmRaw) -> int:
        if self._reference:
            return int(vm.execute_program(self.side_view))
        return int(vm.execute_program_jit(self.side_view))

    # -- filling a chunk ------------------------------------------------

    def fill(self) -> int:
        """Lay packets out until the chunk is full or the capture ends (or
        fails: `failure` is raised once the chunk before it ran). Returns the
        packets in the chunk."""
        self.packets = self.used = 0
        if self.pending is not None:
            if not self._place(self.pending):
                raise CaptureError(f"{self.capture.name}: a packet larger than the chunk")
            self.pending = None
        while not self.finished and self.failure is None:
            status = self._walk()
            if status == FULL:
                break
            try:
                record = self.capture.next_record()
            except CaptureError as error:
                self.failure = error
                break
            if record is None:
                self.finished = True
            elif len(record.frame) > MAX_PACKET:
                self.failure = CaptureError(
                    f"{self.capture.name}: packet {self.capture.packets - 1} has "
                    f"{count_of(len(record.frame), 'byte')}, more than {MAX_PACKET}",
                    self.capture.name, "", None, self.capture.packets - 1)
            elif not self._place(record):
                self.pending = record
                break
        self.capture.source.done(self.capture.pos)
        return self.packets

    def _walk(self) -> int:
        capture = self.capture
        units = [0] * MAX_IFACES
        offsets = [0] * MAX_IFACES
        for index, iface in enumerate(capture.interfaces[:MAX_IFACES]):
            if iface.linktype == DLT_EN10MB and 0 < iface.units <= MAX_UNITS:
                units[index] = iface.units
                offsets[index] = iface.offset & 0xFFFF_FFFF_FFFF_FFFF
        layout = self.layout
        base = self.side_address
        snaplen = capture.interfaces[0].snaplen if capture.interfaces else 0
        _WALK.pack_into(self.side, 0, capture.source.address, capture.source.length, capture.pos,
                        self.frame.base, self.chunk_cap, self.max_packets, self.slot,
                        int(capture.format == "pcapng"), int(capture.order != "<"),
                        self.packets, self.used, 0, base + layout.spans, base + layout.stamps,
                        len(capture.interfaces), snaplen, *units, *offsets)
        before = self.packets
        self._call(self.walk)
        fields = _WALK_OUT.unpack_from(self.side, 0)
        capture.pos, self.packets, self.used, status = fields[2], fields[9], fields[10], fields[11]
        capture.packets += self.packets - before
        return int(status)

    def _place(self, record: Record) -> bool:
        """Lay out a packet Python read (as the walker does); False when the
        chunk has no room."""
        size = (self.slot + len(record.frame) + 7) & ~7
        if self.packets >= self.max_packets or self.used + size > self.chunk_cap:
            return False
        offset = self.used
        data = self.frame.base + offset + self.slot
        if self._pack_md is not None:
            self._pack_md(self.frame.view, offset, data, data + len(record.frame), data, 1, 0, 0)
        self.frame.view[offset + self.slot : offset + self.slot + len(record.frame)] = record.frame
        self.spans[2 * self.packets] = offset
        self.spans[2 * self.packets + 1] = self.slot + len(record.frame)
        seconds, micro = divmod(record.usec, 1_000_000)
        struct.pack_into("<II", self.side, self.layout.stamps + 8 * self.packets,
                         seconds & 0xFFFF_FFFF, micro)
        self.packets += 1
        self.used = offset + size
        return True

    # -- running and counting --------------------------------------------

    def run(self, vm: Any) -> Any:
        """Run the program over the chunk's packets: their r0s (array 'Q')."""
        return vm.execute_spans(self.frame.view, self.spans[: 2 * self.packets])

    def count(self, results: Any, verdicts: str, outputs: tuple[bool, bool],
              counts: Counter[int]) -> tuple[memoryview, memoryview]:
        """Count the verdicts of the first len(results) packets into `counts`;
        returns the pcap records of those that pass and those sent back
        (when `outputs` asks for them)."""
        layout = self.layout
        done = len(results)
        self.side_view[layout.results : layout.results + 8 * done] = memoryview(results).cast("B")
        kind = verdicts_of(verdicts)
        base = self.side_address
        write, tx = outputs
        _TALLY.pack_into(self.side, TALLY_AT, done, base + layout.results, base + layout.spans,
                         base + layout.stamps, self.frame.base, self.slot,
                         int(kind.passing is None), kind.passing or 0, int(tx),
                         base + layout.out if write else 0, 0, base + layout.out2, 0, 0, 0, 0,
                         *([0] * NCOUNTS))
        self._call_tally()
        fields = _TALLY.unpack_from(self.side, TALLY_AT)
        out_len, out2_len, other = fields[10], fields[12], fields[13]
        self.written = fields[14], fields[15]
        for r0, found in enumerate(fields[16:]):
            if found:
                counts[r0] += found
        if other:
            counts.update(r0 for r0 in results if r0 >= NCOUNTS)
        return (self.side_view[layout.out : layout.out + out_len],
                self.side_view[layout.out2 : layout.out2 + out2_len])

    def _call_tally(self) -> None:
        view = self.side_view[TALLY_AT:]
        try:
            if self._reference:
                self.tally.execute_program(view)
            else:
                self.tally.execute_program_jit(view)
        finally:
            view.release()

    def close(self) -> None:
        for vm in self.routines:
            vm.close()
        self.spans.release()
        self.side_view.release()
        self.side.close()
        self.frame.close()

