"""Run a program over a packet capture (pcap or pcapng), streaming.

Captures are read in place (:mod:`ebpfvm.pcapmmap`: the file memory-mapped,
walked pages released), so memory stays bounded whatever the file size. XDP
programs (and the plain contexts) on an engine that batches run in chunks of
up to :data:`CHUNK_PACKETS` packets with no Python step per packet
(:mod:`ebpfvm.capture_native`): an eBPF walker lays the packets out in one
buffer below 4 GiB, each behind its own ``struct xdp_md``; the whole chunk
runs in one native call (:meth:`~ebpfvm.vm.EbpfVmRaw.execute_spans`): r1 = the
packet's context, and the run may touch only its own span (context + packet),
with every check of the chosen engine; an eBPF tally counts the verdicts and
lays out the passed packets as pcap records, written once per chunk. Helpers
(maps, ring buffers, tail calls, trace_printk) are called from the native
loop as usual. Frames from any other iterable run in the same chunks, copied
by Python. Everything else runs one packet at a time through
:class:`~ebpfvm.contexts.XdpRunner` or :class:`~ebpfvm.contexts.SkbRunner`:
the interpreter, skb programs, and XDP programs that move the packet's bounds
(``bpf_xdp_adjust_head`` and ``bpf_xdp_adjust_tail`` need headroom and a
context the helper can rewrite).
"""

from __future__ import annotations

import array
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .capture_jobs import forget_frames as _forget_frames
from .capture_jobs import jobs_for, run_jobs
from .capture_native import NativeCapture
from .contexts import XDP_HELPERS, _Frame
from .engine import find_engine, get_engine
from .errors import EbpfError, count_of
from .pcapmmap import BLOCK_SLACK as BLOCK_SLACK
from .pcapmmap import DLT_EN10MB, CaptureError, CaptureFile, Record
from .pcapmmap import MAX_SNAPLEN as MAX_SNAPLEN
from .progtypes import contexts, runner_class, verdicts_of, xdp_md_packer

__all__ = ["CHUNK_PACKETS", "CONTEXTS", "PLAIN_CONTEXTS", "CaptureError", "CaptureInterrupted", "CaptureStats",
           "CaptureWriter",
           "all_contexts", "batch_blocker", "called_helpers", "passes", "read_capture", "run_capture",
           "verdict_name"]

CHUNK_PACKETS = 4096
"""Packets per native call."""
CHUNK_BYTES = 8 << 20
"""Size of the chunk buffer (contexts and packets)."""
MAX_PACKET = 65535
CONTEXT_SLOT = 32
"""Bytes before each packet in a chunk: its xdp_md (24 bytes), 8-aligned."""
_PACK_SLOT_MD = xdp_md_packer(CONTEXT_SLOT)
"""Packs xdp_md and the zero padding after it: the whole slot is rewritten per packet,
so nothing a run stores there reaches a later packet."""
PLAIN_CONTEXTS = ("mbuff", "raw")
"""The contexts without a program type: an rbpf fixed mbuff
(EbpfVmFixedMbuff), or r1 = packet, r2 = length."""


def all_contexts() -> tuple[str, ...]:
    """How a program may get its packet: the contexts of the registered program
    types (ebpfvm.progtypes: a ``struct xdp_md``, a ``struct __sk_buff``...),
    then PLAIN_CONTEXTS."""
    return (*contexts(), *PLAIN_CONTEXTS)


CONTEXTS = all_contexts()
"""all_contexts() of the built-in program types."""


def verdict_name(r0: int, verdicts: str) -> str:
    """``XDP_PASS`` (`verdicts` "xdp"), ``TC_ACT_SHOT`` ("tc"), or the number
    when r0 names no verdict or `verdicts` is "none"."""
    return verdicts_of(verdicts).name(r0)


def passes(r0: int, verdicts: str) -> bool:
    """Whether the packet goes on: XDP_PASS, TC_ACT_OK, or any nonzero r0
    (a socket filter's byte count) when r0 names no verdict."""
    return verdicts_of(verdicts).passes(r0)


def read_capture(path: str | Path, handle: BinaryIO | None = None) -> CaptureFile:
    """(timestamp, frame) of each record of a pcap or pcapng file, one at a
    time (an iterator: a :class:`~ebpfvm.pcapmmap.CaptureFile` read in place,
    which run_capture walks natively on engines that batch)."""
    return CaptureFile(path, handle)


class CaptureWriter:
    """A pcap file (little-endian, microseconds, Ethernet, snap length
    MAX_PACKET) written a packet at a time or a chunk's records at once."""

    def __init__(self, path: str | Path | BinaryIO) -> None:
        self._owned = isinstance(path, (str, Path))
        """Whether close() closes the file (not a stream it was given: stdout)."""
        self._file: BinaryIO = open(path, "wb") if isinstance(path, (str, Path)) else path  # noqa: SIM115
        self._file.write(_PCAP_HEADER.pack(PCAP_MAGIC_USEC, 2, 4, 0, 0, MAX_PACKET, DLT_EN10MB))
        self.count = 0

    def write(self, frame: bytes, timestamp: float) -> None:
        """One packet at a float timestamp (seconds), rounded to microseconds
        as dpkt's writer rounds it."""
        self._file.write(_PCAP_RECORD.pack(int(timestamp) & _U32, round(timestamp % 1 * 1e6),
                                           len(frame), len(frame)) + frame)
        self.count += 1

    def write_usec(self, frame: bytes, usec: int) -> None:
        """One packet at an exact timestamp in microseconds."""
        seconds, micro = divmod(usec, 1_000_000)
        self._file.write(_PCAP_RECORD.pack(seconds & _U32, micro, len(frame), len(frame)) + frame)
        self.count += 1

    def write_records(self, records: memoryview, count: int) -> None:
        """`count` pcap records laid out already (the native tally's), in one write."""
        if count:
            self._file.write(records)
            self.count += count

    def close(self) -> None:
        if self._owned:
            self._file.close()
        else:
            self._file.flush()


_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")
PCAP_MAGIC_USEC = 0xA1B2C3D4
_U32 = 0xFFFF_FFFF


@dataclass
class CaptureStats:
    """What a run over a capture did."""

    context: str
    verdicts: str
    """How r0 is named: "xdp", "tc" or "none" (see verdict_name)."""
    mode: str
    """``"native"`` (JIT batches) or ``"per-packet"``, with the reason in `why`."""
    why: str = ""
    packets: int = 0
    seconds: float = 0.0
    """Wall time of the run: reading, running and writing (JIT compilation before it)."""
    histogram: Counter[str] = field(default_factory=Counter)
    """Packets per verdict name."""
    jobs: int = 1
    """Worker threads that ran the capture (capture_jobs)."""
    jobs_note: str = ""
    """Why fewer jobs ran than were asked for ("" when as many)."""

    @property
    def packets_per_second(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else 0.0


class CaptureInterrupted(KeyboardInterrupt):
    """Ctrl-C (a KeyboardInterrupt, RunInterrupted included) stopped
    run_capture: `stats` holds the packets that ran to the end before it,
    with their verdicts; the packet being run when it came is not counted."""

    def __init__(self, stats: CaptureStats) -> None:
        super().__init__(f"interrupted after {stats.packets} packets")
        self.stats = stats


Progress = Callable[[int], None]
"""Called with the number of packets just done."""


def called_helpers(vm: Any) -> set[int]:
    """The helper numbers the VM's program calls (``call imm`` instructions),
    from its program value."""
    return set(vm.image.helpers)


def batch_blocker(vm: Any, context: str, engine: str) -> str:
    """Why the native batch cannot run this program ("" when it can)."""
    if context == "skb":
        return "skb programs run one packet at a time (SkbRunner)"
    chosen = find_engine(engine)
    if not chosen.batches:
        return f"{chosen.title} runs one packet at a time"
    unsupported = chosen.unavailable()
    if unsupported is not None:
        return unsupported
    moving = sorted(XDP_HELPERS & called_helpers(vm))
    if context == "xdp" and moving:
        return f"the program calls helper(s) {moving} that move the packet bounds"
    if not hasattr(vm, "execute_spans"):
        return "this VM kind has no batch entry"
    return ""


def run_capture(vm: Any, frames: Iterable[tuple[float, bytes]], *, context: str = "xdp",
                verdicts: str = "xdp", engine: str = "jit",
                writer: CaptureWriter | None = None, progress: Progress | None = None,
                chunk: int = CHUNK_PACKETS, prog_type: str | None = None,
                tx_writer: CaptureWriter | None = None, jobs: int = 1) -> CaptureStats:
    """Run `vm`'s program once per frame; count verdicts, write passing frames
    (as the program left them) to `writer`, and those an XDP program sends
    back (XDP_TX) to `tx_writer`. Ctrl-C raises CaptureInterrupted
    with the statistics of the packets done so far. `prog_type` names the
    program type an skb runner runs (ebpfvm.progtypes: a socket filter sees
    the packet from its network header). `jobs` worker threads share the
    capture's chunks (ebpfvm.capture_jobs: native batches over a capture
    file only; stats.jobs and stats.jobs_note say how many ran and why
    fewer)."""
    if context not in all_contexts():
        raise ValueError(f"unknown context {context!r}; expected one of {all_contexts()}")
    why = batch_blocker(vm, context, engine)
    stats = CaptureStats(context, verdicts, "per-packet" if why else "native", why)
    if not why and vm.jit_engine != engine:
        vm.jit_compile(engine=engine)  # not part of the timed run
    start = time.perf_counter()
    try:
        if why:
            stats.jobs_note = jobs_for(vm, jobs, False)[1]
            options = {} if prog_type is None else {"prog_type": prog_type}
            _run_per_packet(vm, frames, stats, engine, (writer, tx_writer), progress, options)
        elif isinstance(frames, CaptureFile):
            stats.jobs, stats.jobs_note = jobs_for(vm, jobs, True)
            _run_native(vm, frames, stats, engine, (writer, tx_writer), progress, chunk)
        else:
            stats.jobs_note = "one job: frames from an iterable" if jobs > 1 else ""
            _run_batches(vm, frames, stats, (writer, tx_writer), progress, chunk)
    except KeyboardInterrupt as stop:
        stats.seconds = time.perf_counter() - start
        raise CaptureInterrupted(stats) from stop
    finally:
        stats.seconds = time.perf_counter() - start
    return stats


class _PlainRunner:
    """mbuff and raw contexts, one packet at a time: the VM runs on the frame."""

    def __init__(self, vm: Any, engine: str) -> None:
        self.vm = vm
        self.engine = get_engine(engine)
        if not self.engine.reference:
            vm.jit_compile(engine=engine)

    def run(self, frame: bytes) -> tuple[int, bytes]:
        packet = bytearray(frame)
        if self.engine.reference:
            return self.vm.execute_program(packet), bytes(packet)
        return self.vm.execute_program_jit(packet), bytes(packet)

    def close(self) -> None:
        pass


class _ContextRunner:
    """xdp and skb contexts, one packet at a time (XdpRunner, SkbRunner)."""

    def __init__(self, vm: Any, engine: str, context: str, options: dict[str, str]) -> None:
        self.runner: Any = runner_class(context)(vm, engine=engine, max_packet=MAX_PACKET,
                                                 **options)

    def run(self, frame: bytes) -> tuple[int, bytes]:
        result = self.runner.run(frame)
        return result.r0, getattr(result, "data", result.packet)  # XDP: without metadata

    def close(self) -> None:
        self.runner.close()


Writers = tuple["CaptureWriter | None", "CaptureWriter | None"]
"""Where passed packets go, and where those sent back (XDP_TX) go."""
XDP_TX = 3


def _write(writers: Writers, stats: CaptureStats, r0: int, packet: bytes,
           timestamp: float | Record) -> None:
    """Write a packet that passes, or is sent back; at its exact timestamp
    when it comes with its capture Record."""
    passed, sent_back = writers
    for writer, wanted in ((passed, passes(r0, stats.verdicts)),
                           (sent_back, r0 == XDP_TX and stats.verdicts == "xdp")):
        if writer is not None and wanted:
            if isinstance(timestamp, Record):
                writer.write_usec(packet, timestamp.usec)
            else:
                writer.write(packet, timestamp)


def _items(frames: Iterable[tuple[float, bytes]]) -> Iterator[tuple[float | Record, bytes]]:
    """(timestamp, frame) pairs; from a CaptureFile, (its Record, frame)."""
    if isinstance(frames, CaptureFile):
        try:
            for record in frames.records():
                yield record, record.frame
        finally:
            frames.close()
    else:
        yield from frames


def _run_per_packet(vm: Any, frames: Iterable[tuple[float, bytes]], stats: CaptureStats,
                    engine: str, writers: Writers, progress: Progress | None,
                    options: dict[str, str]) -> None:
    runner = (_ContextRunner(vm, engine, stats.context, options) if stats.context in contexts()
              else _PlainRunner(vm, engine))
    counts: Counter[int] = Counter()
    done = 0
    try:
        for timestamp, frame in _items(frames):
            r0, packet = runner.run(frame)
            counts[r0] += 1
            done += 1
            if writers != (None, None):
                _write(writers, stats, r0, packet, timestamp)
            if progress is not None and done % CHUNK_PACKETS == 0:
                progress(CHUNK_PACKETS)
    except EbpfError as error:
        error.packet_index = done  # type: ignore[attr-defined]
        raise
    except KeyboardInterrupt as stop:
        _forget_frames(stop)  # first: the runner's frame goes with its views
        raise
    finally:
        runner.close()
        _tally(stats, counts)
    if progress is not None:
        progress(done % CHUNK_PACKETS)


def _tally(stats: CaptureStats, counts: Counter[int]) -> None:
    for r0, count in counts.items():
        stats.histogram[verdict_name(r0, stats.verdicts)] += count
        stats.packets += count


def _run_batches(vm: Any, frames: Iterable[tuple[float, bytes]], stats: CaptureStats,
                 writer: Writers, progress: Progress | None, chunk: int) -> None:
    buffer = _Frame(CHUNK_BYTES)
    counts: Counter[int] = Counter()
    slot = CONTEXT_SLOT if stats.context == "xdp" else 0
    done = 0
    try:
        pending: list[tuple[float, bytes]] = []
        used = 0
        for item in frames:
            size = len(item[1])
            if size > MAX_PACKET:
                raise CaptureError(f"packet {done + len(pending)} has {count_of(size, 'byte')}, "
                                   f"more than {MAX_PACKET}")
            if len(pending) == chunk or used + slot + size + 8 > CHUNK_BYTES:
                _run_chunk(vm, buffer, slot, pending, counts, writer, stats, done)
                done += len(pending)
                if progress is not None:
                    progress(len(pending))
                pending, used = [], 0
            pending.append(item)
            used += slot + size + 8
        if pending:
            _run_chunk(vm, buffer, slot, pending, counts, writer, stats, done)
            if progress is not None:
                progress(len(pending))
    except KeyboardInterrupt as stop:
        _forget_frames(stop)  # first: then the buffer unmaps (no BufferError)
        raise
    finally:
        buffer.close()
        _tally(stats, counts)


def _run_chunk(vm: Any, buffer: _Frame, slot: int, frames: list[tuple[float, bytes]],
               counts: Counter[int], writer: Writers, stats: CaptureStats,
               done: int) -> None:
    """Lay out `frames` in `buffer` (each behind its xdp_md when `slot`) and
    run them all in one native call."""
    view, base = buffer.view, buffer.base
    spans = array.array("Q", [0]) * (2 * len(frames))
    offset = 0
    pack = _PACK_SLOT_MD
    for index, (_timestamp, frame) in enumerate(frames):
        data = offset + slot
        end = data + len(frame)
        if slot:
            pack(view, offset, base + data, base + end, base + data, 1, 0, 0)
        view[data:end] = frame
        spans[2 * index] = offset
        spans[2 * index + 1] = end - offset
        offset = (end + 7) & ~7
    try:
        results = vm.execute_spans(view, spans)
    except EbpfError as error:
        failed: int = getattr(error, "batch_index", None) or 0
        error.packet_index = done + failed  # type: ignore[attr-defined]
        if not isinstance(error, KeyboardInterrupt):
            raise
        # RunInterrupted: the packets before it ran to the end; they count.
        results = getattr(error, "batch_results", None) or array.array("Q")
        _count_chunk(results, spans, slot, view, frames, counts, writer, stats)
        raise
    _count_chunk(results, spans, slot, view, frames, counts, writer, stats)


def _count_chunk(results: array.array[int], spans: array.array[int], slot: int,
                 view: memoryview, frames: list[tuple[float, bytes]], counts: Counter[int],
                 writer: Writers, stats: CaptureStats) -> None:
    """Count the verdicts of a chunk's first len(results) packets; write
    those that pass, and those sent back."""
    counts.update(results)
    if writer != (None, None):
        for index, r0 in enumerate(results):
            start = spans[2 * index] + slot
            end = spans[2 * index] + spans[2 * index + 1]
            _write(writer, stats, r0, bytes(view[start:end]), frames[index][0])


def _run_native(vm: Any, capture: CaptureFile, stats: CaptureStats, engine: str,
                writers: Writers, progress: Progress | None, chunk: int) -> None:
    """Chunk by chunk, with the walker and the tally in native code
    (capture_native.py): a handful of Python calls per chunk."""
    native = NativeCapture(capture, engine, CONTEXT_SLOT if stats.context == "xdp" else 0,
                           chunk, CHUNK_BYTES)
    counts: Counter[int] = Counter()
    outputs = (writers[0] is not None, writers[1] is not None and stats.verdicts == "xdp")
    done = 0
    try:
        if stats.jobs > 1:
            run_jobs(vm, capture, engine, stats.jobs, lambda: NativeCapture(
                capture, engine, native.slot, chunk, CHUNK_BYTES), lambda job, results, found:
                _native_tally(job, results, stats, writers, outputs, found), counts, progress)
            return
        while native.fill():
            try:
                results = native.run(vm)
            except EbpfError as error:
                error.packet_index = done + (getattr(error, "batch_index", None) or 0)  # type: ignore[attr-defined]
                if not isinstance(error, KeyboardInterrupt):
                    raise
                # RunInterrupted: the packets before it ran to the end; they count.
                _native_count(native, getattr(error, "batch_results", None) or array.array("Q"),
                              stats, writers, outputs, counts)
                raise
            _native_count(native, results, stats, writers, outputs, counts)
            done += native.packets
            if progress is not None:
                progress(native.packets)
        if native.failure is not None:
            raise native.failure
    except KeyboardInterrupt as stop:
        _forget_frames(stop)  # first: then the buffers unmap (no BufferError)
        raise
    finally:
        native.close()
        capture.close()
        _tally(stats, counts)


def _native_count(native: NativeCapture, results: array.array[int], stats: CaptureStats,
                  writers: Writers, outputs: tuple[bool, bool], counts: Counter[int]) -> None:
    _native_tally(native, results, stats, writers, outputs, counts)()


def _native_tally(native: NativeCapture, results: array.array[int], stats: CaptureStats,
                  writers: Writers, outputs: tuple[bool, bool],
                  counts: Counter[int]) -> Callable[[], None]:
    """Count a chunk's verdicts; returns what writes its packets (the jobs
    call it in the capture's order)."""
    passed, sent_back = native.count(results, stats.verdicts, outputs, counts)

    def write() -> None:
        try:
            for writer, records, count in zip(writers, (passed, sent_back), native.written,
                                              strict=True):
                if writer is not None:
                    writer.write_records(records, count)
        finally:
            passed.release()
            sent_back.release()
    return write
