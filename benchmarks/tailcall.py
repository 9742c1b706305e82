#!/usr/bin/env python3
"""Per-packet time of the tail-call dispatch example against a program of the
same size without tail calls (issue 12: within 1.5x).

Both run over the same capture through ebpfvm.capture.run_capture, the path
``ebpfvm run ... --pcap`` takes, on the checked JIT (or ``--engine``):

* ``dispatch``: examples/bpf/dispatch.o with its program array filled
  (6 -> handle_tcp, 17 -> handle_udp), as the kernel cross-check does;
* ``inlined``: the same instructions as one program. The dispatcher's
  ``call 12`` becomes a jump to two compares on the index (r3) that go to
  copies of the handlers' code (their .bss addresses are already relocated),
  or back after the call when no handler matches, as a failed tail call does.
  Per packet it runs the same instructions as the dispatch chain plus one
  jump and up to two compares: the cost of the tail call itself is what the
  ratio shows. Inlining keeps the handlers' code and the packet work
  identical, which replacing the call by another helper would not.

The capture is examples/data/sample.pcap repeated (``--copies``), written
once with the project's capture writer. Prints each variant's median
per-packet time over ``--repeat`` runs and the ratio.

    python3 benchmarks/tailcall.py [--copies 50] [--repeat 7] [--engine jit]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from ebpfvm import assemble, load
from ebpfvm.capture import CaptureWriter, read_capture, run_capture
from ebpfvm.encoding import SLOT, decode

ROOT = Path(__file__).resolve().parents[1]
OBJECT = ROOT / "examples" / "bpf" / "dispatch.o"
SAMPLE = ROOT / "examples" / "data" / "sample.pcap"
HANDLERS = {6: "handle_tcp", 17: "handle_udp"}
"""IP protocol -> handler, the slots of `handlers` the benchmark fills."""
TAIL_CALL = 12


def _dispatch() -> tuple[Any, Any]:
    obj = load(OBJECT)
    for slot, name in HANDLERS.items():
        obj.maps["handlers"][slot] = name
    return obj, obj.vm("dispatch")


def inlined_code(obj: Any) -> bytes:
    """dispatch with its tail call replaced by compares and the handlers' code."""
    code = obj.program("dispatch").code
    calls = [insn.pc for insn in decode(code) if insn.row is not None
             and insn.row.mnemonic == "call" and insn.imm == TAIL_CALL]
    if len(calls) != 1:
        raise SystemExit(f"expected one tail call in dispatch, found {len(calls)}")
    call, end = calls[0], len(code) // SLOT
    handlers = [obj.program(name).code for name in HANDLERS.values()]
    select = []
    skip = len(HANDLERS)  # from the first compare's successor to the first handler
    for index, (slot, handler) in enumerate(zip(HANDLERS, handlers, strict=True)):
        select.append(f"jeq r3, {slot}, +{skip - index}")
        skip += len(handler) // SLOT
    select.append(f"ja {call + 1 - (end + len(select) + 1):+d}")
    head = code[: call * SLOT] + assemble(f"ja {end - call - 1:+d}") + code[(call + 1) * SLOT :]
    return head + assemble("\n".join(select)) + b"".join(handlers)


def _inlined() -> tuple[Any, Any]:
    obj = load(OBJECT)
    vm = obj.vm("handle_tcp")  # a VM that has the handlers' .bss as allowed memory
    vm.set_program(inlined_code(obj))
    return obj, vm


def _capture(copies: int, directory: Path) -> Path:
    frames = list(read_capture(SAMPLE))
    path = directory / f"dispatch-{copies}.pcap"
    writer = CaptureWriter(path)
    try:
        for _ in range(copies):
            for timestamp, frame in frames:
                writer.write(frame, timestamp)
    finally:
        writer.close()
    return path


def _run_once(make: Any, capture: Path, frames: list[Any] | None,
              engine: str) -> tuple[float, bytes, str]:
    """Seconds per packet of one run, the .bss after it, the capture mode."""
    obj, vm = make()
    stats = run_capture(vm, frames if frames is not None else read_capture(capture),
                        engine=engine)
    return stats.seconds / stats.packets, bytes(obj.data[".bss"]), stats.mode


def _compare(capture: Path, engine: str, repeat: int, in_memory: bool) -> list[str]:
    """Both variants, their runs interleaved (the machine's load changes over
    time): each one's median per-packet time and the median of the ratios of
    the runs made side by side. `in_memory`: the frames are read before the
    timed runs (no pcap parsing)."""
    frames = list(read_capture(capture)) if in_memory else None
    tails, flats, ratios = [], [], []
    modes = ("", "")
    for _ in range(repeat):
        tail, tail_bss, tail_mode = _run_once(_dispatch, capture, frames, engine)
        flat, flat_bss, flat_mode = _run_once(_inlined, capture, frames, engine)
        if tail_bss != flat_bss:
            raise SystemExit("the two programs counted different packets: not the same work")
        tails.append(tail)
        flats.append(flat)
        ratios.append(tail / flat)
        modes = (tail_mode, flat_mode)
    return [f"  dispatch (tail calls): {statistics.median(tails) * 1e9:9.1f} ns/packet ({modes[0]})",
            f"  inlined (no calls):    {statistics.median(flats) * 1e9:9.1f} ns/packet ({modes[1]})",
            f"  ratio: {statistics.median(ratios):.2f}x (median of {repeat} side-by-side pairs)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=50,
                        help="times the sample capture (1,200 packets) is repeated")
    parser.add_argument("--repeat", type=int, default=7, help="runs per variant (median)")
    parser.add_argument("--engine", default="jit")
    args = parser.parse_args()
    print(f"engine {args.engine}, {args.copies * 1200} packets, median of {args.repeat}")
    with tempfile.TemporaryDirectory() as directory:
        capture = _capture(args.copies, Path(directory))
        for in_memory, what in ((False, "read from the pcap file (as the CLI)"),
                                (True, "frames read beforehand (the engine's share)")):
            print(f"{what}:")
            print("\n".join(_compare(capture, args.engine, args.repeat, in_memory)), flush=True)

if __name__ == "__main__":
    main()
