#!/usr/bin/env python3
"""Native helpers against Python helpers (issue 15): runs per second of one
program calling bpf_map_lookup_elem on an array map (then a store through the
value) and bpf_get_prandom_u32, with EBPFVM_NATIVE=0 (every helper through
Python) and =1 (the runtime's eBPF linked into the JIT's code), through
``execute_program_jit`` (one Python call per run) and ``execute_batch``.

    python3 benchmarks/native_helpers.py [--runs N] [--engine jit]
"""

from __future__ import annotations

import argparse
import os
import time

from ebpfvm import EbpfVmRaw, assemble
from ebpfvm.kernel import KernelEnv, kernel_helpers
from ebpfvm.mapbase import MapType
from ebpfvm.maps import Map, map_helpers

PROGRAM = """
    stw [r10-4], 1
    lddw r1, 0x1000
    mov r2, r10
    add r2, -4
    call 1
    jeq r0, 0, +3
    ldxdw r1, [r0]
    add r1, 1
    stxdw [r0], r1
    call 7
    exit
"""


def measure(native: str, engine: str, runs: int) -> tuple[float, float]:
    """(single runs/s, batch runs/s), best of three each."""
    os.environ["EBPFVM_NATIVE"] = native
    table = Map("counts", MapType.ARRAY, 4, 8, 4)
    table.handle = 0x1000
    vm = EbpfVmRaw(assemble(PROGRAM))
    for key, helper in (*kernel_helpers(KernelEnv()).items(),
                        *map_helpers({table.handle: table}).items()):
        vm.register_helper(key, helper)
    vm.jit_compile(engine=engine)
    buffer = bytearray(64)
    inputs = [bytearray(64) for _ in range(runs)]
    single = batch = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(runs):
            vm.execute_program_jit(buffer)
        single = min(single, time.perf_counter() - start)
        start = time.perf_counter()
        vm.execute_batch(inputs)
        batch = min(batch, time.perf_counter() - start)
    return runs / single, runs / batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--engine", default="jit")
    args = parser.parse_args()
    print(f"{'helpers':<8} {'single runs/s':>14} {'batch runs/s':>14}")
    for native, label in (("0", "python"), ("1", "native")):
        single, batch = measure(native, args.engine, args.runs)
        print(f"{label:<8} {single:>14,.0f} {batch:>14,.0f}", flush=True)


if __name__ == "__main__":
    main()
