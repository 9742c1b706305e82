#!/usr/bin/env python3
"""Packets per second of the XDP examples over a generated capture, beside tcpdump.

Writes a capture of COUNT packets (default 1,000,000; tools/make_sample_pcap.py,
the same traffic mix as the sample) to /tmp once, then runs each example
through ebpfvm.capture.run_capture per engine, end to end: the capture is
memory-mapped and walked as it runs (nothing is read before the clock starts),
the program runs, verdicts are counted. Beside each row: tcpdump's time for
``tcpdump -r FILE -w /dev/null EXPR`` on the same file, with an expression of
comparable work, and the ratio (ours / tcpdump's packets per second). Peak RSS
(resource.getrusage) at the end.

    python3 benchmarks/pcap_speed.py [--count N] [--engines jit,interp] [--programs config]
    python3 benchmarks/pcap_speed.py --gigabytes 3     # resident memory on a 3 GB capture
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from make_sample_pcap import write  # noqa: E402

from ebpfvm import load  # noqa: E402
from ebpfvm.capture import read_capture, run_capture  # noqa: E402
from ebpfvm.capture_native import NativeCapture  # noqa: E402
from ebpfvm.engine import find_engine  # noqa: E402

PROGRAMS = {"config": ("config", {}, "ip proto 17"),
            "proto_count": ("proto_count", {}, "ip proto 6 or ip proto 17 or ip proto 1"),
            "rate_limit": ("rate_limit", {}, "ip src 10.0.0.1 or ip src 10.0.0.2"),
            "events": ("emit_events", {}, "tcp dst port 22"),
            "dispatch": ("dispatch", {"handlers": {6: "handle_tcp", 17: "handle_udp"}},
                         "tcp or udp")}
"""Object name -> (program function, maps to fill before the run, tcpdump
expression of comparable work)."""


def tcpdump() -> str | None:
    found = shutil.which("tcpdump")
    return found or ("/usr/sbin/tcpdump" if Path("/usr/sbin/tcpdump").exists() else None)


def tcpdump_rate(path: Path, expression: str, packets: int) -> tuple[float, float] | None:
    """tcpdump's packets/s reading `path` with `expression`, per wall-clock
    second and per CPU second (user + system; best of two runs each)."""
    binary = tcpdump()
    if binary is None:
        return None
    wall = cpu = float("inf")
    for _ in range(2):
        before = _children_cpu()
        start = time.perf_counter()
        subprocess.run([binary, "-r", str(path), "-w", "/dev/null", expression],
                       check=True, capture_output=True)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, _children_cpu() - before)
    return packets / wall, packets / cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_one(name: str, engine: str, path: Path, jobs: int = 1) -> tuple[int, float, str, float]:
    function, tables, _expression = PROGRAMS[name]
    obj = load(ROOT / "examples" / "bpf" / f"{name}.o")
    for map_name, entries in tables.items():
        for key, value in entries.items():
            obj.maps[map_name][key] = value
    vm = obj.vm(function)
    if not find_engine(engine).reference:
        vm.jit_compile(engine=engine)  # left out of the timing, as run_capture leaves it
    cpu = time.process_time()
    stats = run_capture(vm, read_capture(path), engine=engine, jobs=jobs)
    return stats.packets, stats.seconds, stats.mode, time.process_time() - cpu


def warm_up(path: Path) -> None:
    """Load the walker object and compile its routines once (process start-up
    costs, as the programs' own JIT compilation is left out of the timing)."""
    native = NativeCapture(read_capture(path), "jit", 32, 16, 1 << 16)
    native.close()
    native.capture.close()


def _versus(packets: int, seconds: float, theirs: tuple[float, float] | None, which: int) -> str:
    """Our rate, tcpdump's and the ratio (wall-clock: which 0; CPU: 1)."""
    rate = packets / seconds if seconds > 0 else 0.0
    if theirs is None:
        return f"{rate:>11,.0f} {'-':>11} {'-':>6}"
    return f"{rate:>11,.0f} {theirs[which]:>11,.0f} {rate / theirs[which]:>6.2f}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def big_capture(gigabytes: float, source: Path) -> Path:
    """A capture of about `gigabytes` GB: `source`'s records repeated."""
    path = Path(f"/tmp/ebpfvm-bench-{gigabytes:g}GB.pcap")
    target = int(gigabytes * (1 << 30))
    if path.exists() and path.stat().st_size >= target:
        return path
    with open(path, "wb") as handle, open(source, "rb") as records:
        handle.write(records.read(24))
        while handle.tell() < target:  # streamed: the copy adds nothing resident
            records.seek(24)
            shutil.copyfileobj(records, handle, 1 << 20)
    return path


def print_jobs(name: str, engine: str, path: Path, jobs: int, one: float) -> None:
    """The rate on `jobs` jobs beside the one-job rate `one`, with the ratio,
    the load average and the rate per CPU second."""
    packets, seconds, _mode, cpu = run_one(name, engine, path, jobs)
    rate = packets / seconds
    print(f"{name:<12} {engine + f' x{jobs}':<14} {packets:>9} {seconds:>8.2f} {rate:>11,.0f} "
          f"{jobs} jobs / 1 job: {rate / one:.2f}x  ({packets / cpu:,.0f} per CPU s, "
          f"load {os.getloadavg()[0]:.1f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--engines", default="jit,jit-unchecked,interp")
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    parser.add_argument("--interp-count", type=int, default=100_000,
                        help="packets for engines without batches, as the "
                             "interpreter (it is ~100x slower)")
    parser.add_argument("--gigabytes", type=float, default=0,
                        help="instead: run the helper-free example over a capture of this "
                             "many GB (the COUNT capture repeated) and print peak RSS")
    parser.add_argument("--jobs", type=int, default=0,
                        help="also run the batching engines on this many jobs and print "
                             "the rate beside the one-job rate, with their ratio")
    args = parser.parse_args()
    capture = Path(f"/tmp/ebpfvm-bench-{args.count}.pcap")
    if not capture.exists():
        write(capture, args.count)
    warm_up(capture)
    if args.gigabytes:
        path = big_capture(args.gigabytes, capture)
        engine = args.engines.split(",")[0]
        packets, seconds, mode, _cpu = run_one("config", engine, path)
        print(f"config over {path} ({path.stat().st_size / 1e9:.2f} GB), {engine}: "
              f"{packets:,} packets in {seconds:.1f} s ({packets / seconds:,.0f}/s, {mode}); "
              f"peak RSS {peak_rss_mb():.0f} MB")
        return
    small = Path(f"/tmp/ebpfvm-bench-{args.interp_count}.pcap")
    if not small.exists():
        write(small, args.interp_count)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; per CPU second: "
          f"packets over the process's (or tcpdump's) user + system time")
    print(f"{'program':<12} {'engine':<14} {'packets':>9} {'seconds':>8} {'packets/s':>11} "
          f"{'tcpdump/s':>11} {'ratio':>6} {'per CPU s':>11} {'tcpdump':>11} {'ratio':>6}  mode")
    for name in args.programs.split(","):
        expression = PROGRAMS[name][2]
        reference = {path: tcpdump_rate(path, expression, count)
                     for path, count in ((capture, args.count), (small, args.interp_count))}
        for engine in args.engines.split(","):
            path = capture if find_engine(engine).batches else small
            packets, seconds, mode, cpu = run_one(name, engine, path)
            print(f"{name:<12} {engine:<14} {packets:>9} {seconds:>8.2f} "
                  f"{_versus(packets, seconds, reference[path], 0)} "
                  f"{_versus(packets, cpu, reference[path], 1)}  {mode}", flush=True)
            if args.jobs > 1 and find_engine(engine).batches:
                print_jobs(name, engine, path, args.jobs, packets / seconds)
    print("tcpdump expressions: " + "; ".join(f"{name}: {PROGRAMS[name][2]!r}"
                                               for name in args.programs.split(",")))
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
