#!/usr/bin/env python3
"""Packets per second of the XDP examples over a generated capture.

Writes a capture of COUNT packets (default 1,000,000; tools/make_sample_pcap.py,
the same traffic mix as the sample) to /tmp once, then runs each example
through ebpfvm.capture.run_capture per engine, end to end: reading the file
with dpkt, running, counting verdicts. One process, one engine at a time.

    python3 benchmarks/pcap_speed.py [--count N] [--engines jit,interp]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from make_sample_pcap import write  # noqa: E402

from ebpfvm import load  # noqa: E402
from ebpfvm.capture import read_capture, run_capture  # noqa: E402
from ebpfvm.engine import find_engine  # noqa: E402

PROGRAMS = {"proto_count": ("proto_count", {}), "config": ("config", {}),
            "rate_limit": ("rate_limit", {}), "events": ("emit_events", {}),
            "dispatch": ("dispatch", {"handlers": {6: "handle_tcp", 17: "handle_udp"}})}
"""Object name -> (program function, maps to fill before the run)."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--engines", default="jit,jit-unchecked,interp")
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--interp-count", type=int, default=100_000,
                        help="packets for engines without batches, as the "
                             "interpreter (it is ~100x slower)")
    args = parser.parse_args()
    capture = Path(f"/tmp/ebpfvm-bench-{args.count}.pcap")
    if not capture.exists():
        write(capture, args.count)
    small = Path(f"/tmp/ebpfvm-bench-{args.interp_count}.pcap")
    if not small.exists():
        write(small, args.interp_count)
    print(f"{'program':<12} {'engine':<14} {'packets':>9} {'seconds':>8} {'packets/s':>11}  mode")
    for name in args.programs.split(","):
        function, tables = PROGRAMS[name]
        for engine in args.engines.split(","):
            obj = load(ROOT / "examples" / "bpf" / f"{name}.o")
            for map_name, entries in tables.items():
                for key, value in entries.items():
                    obj.maps[map_name][key] = value
            vm = obj.vm(function)
            path = capture if find_engine(engine).batches else small
            stats = run_capture(vm, read_capture(path), engine=engine)
            print(f"{name:<12} {engine:<14} {stats.packets:>9} {stats.seconds:>8.2f} "
                  f"{stats.packets_per_second:>11,.0f}  {stats.mode}", flush=True)


if __name__ == "__main__":
    main()
