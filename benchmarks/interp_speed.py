"""Interpreter speed: a tight ALU loop, then the shared/bench programs.

Run: python benchmarks/interp_speed.py [--bench-dir ../shared/bench] [--seconds 1]
Prints million eBPF instructions per second (M insn/s) for each program.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from xdp32 import xdp32_region

from ebpfvm.asm import assemble
from ebpfvm.vm import EbpfVmNoData, EbpfVmRaw

ALU_LOOP = """
    mov r0, 0
    mov r1, {n}
loop:
    add r0, r1
    xor r0, 0x55
    sub r1, 1
    jne r1, 0, loop
    exit
"""


def alu_loop(iterations: int) -> float:
    vm = EbpfVmNoData(assemble(ALU_LOOP.format(n=iterations)), budget=None)
    vm.execute_program()  # translate once, outside the timing
    start = time.perf_counter()
    vm.execute_program()
    elapsed = time.perf_counter() - start
    return vm.last_instruction_count / elapsed / 1e6


def bench_programs(bench_dir: Path, seconds: float) -> None:
    spec = json.loads((bench_dir / "bench.json").read_text())
    print(f"{'program':<16} {'ns/run':>12} {'M insn/s':>9}  result")
    for entry in spec["benchmarks"]:
        prog = (bench_dir / entry["prog"]).read_bytes()
        mem = (bench_dir / entry["mem"]).read_bytes()
        region, view = xdp32_region(mem)
        vm = EbpfVmRaw(prog, budget=None)
        result = vm.execute_program(view)
        ok = (result & 0xFFFF_FFFF) == entry["expected_r0"]
        runs = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            vm.execute_program(view)
            runs += 1
        elapsed = time.perf_counter() - start
        ns = elapsed / runs * 1e9
        rate = entry["insns_per_run"] * runs / elapsed / 1e6
        print(f"{entry['name']:<16} {ns:>12.0f} {rate:>9.1f}  {'ok' if ok else 'WRONG'}")
        del view
        region.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bench-dir", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared" / "bench")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--iterations", type=int, default=2_000_000)
    args = parser.parse_args()
    rates = [alu_loop(args.iterations) for _ in range(3)]
    print(f"tight ALU loop: {max(rates):.1f} M insn/s (best of 3; median {sorted(rates)[1]:.1f})")
    if (args.bench_dir / "bench.json").is_file():
        bench_programs(args.bench_dir, args.seconds)
    else:
        print(f"{args.bench_dir} not found: shared/bench programs skipped")


if __name__ == "__main__":
    main()
