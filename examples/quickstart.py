"""ebpfvm quick start: assemble a program, verify it, run it safely, trace it.

Run: python3 examples/quickstart.py
"""

from __future__ import annotations

import time

import ebpfvm
from ebpfvm.asm import assemble
from ebpfvm.disasm import disassemble
from ebpfvm.jit.execmem import jit_supported
from ebpfvm.vm import EbpfVmNoData, EbpfVmRaw

# Sum the bytes of the input: r1 = address of the input, r2 = its length (EbpfVmRaw).
SUM_BYTES = """
    mov r0, 0
    jeq r2, 0, done
loop:
    ldxb r3, [r1]
    add r0, r3
    add r1, 1
    sub r2, 1
    jne r2, 0, loop
done:
    exit
"""


def main() -> None:
    print(f"ebpfvm {ebpfvm.__version__}")
    code = assemble(SUM_BYTES)
    print(f"\nassembled {len(code) // 8} instructions; disassembly:")
    print(disassemble(code, style="rbpf"), end="")

    vm = EbpfVmRaw(code)
    packet = bytearray(range(1, 101))
    print(f"\nsum of bytes 1..100 = {vm.execute_program(packet)} "
          f"({vm.last_instruction_count} instructions)")

    print("\ntrace of a 2-byte run:")
    vm.execute_program(bytes([7, 9]), trace=lambda pc, regs: print(
        f"  pc {pc:2d}  r0={regs[0]:<3} r2={regs[2]}"))

    # The same program as checked x86-64 code, timed like BPF_PROG_TEST_RUN.
    if jit_supported() is None:
        vm.jit_compile()
        r0, ns = vm.test_run(packet, repeat=100_000)
        start = time.perf_counter_ns()
        vm.execute_program(packet)
        interp_ns = time.perf_counter_ns() - start
        print(f"\nJIT: r0 = {r0}, {ns:.0f} ns per run (interpreter: {interp_ns:,} ns)")
    else:
        print(f"\nJIT skipped: {jit_supported()}")

    # Safety: an out-of-bounds load is a typed error, not a crash, in both engines.
    wild = EbpfVmRaw(assemble("ldxdw r0, [r1+6]\nexit"))
    try:
        wild.execute_program(bytearray(8))
    except ebpfvm.MemoryFault as fault:
        print(f"\nMemoryFault: pc={fault.pc} address={fault.address:#x} size={fault.size} "
              f"access={fault.access}")

    # An endless loop stops at the instruction budget.
    spin = EbpfVmNoData(assemble("loop:\nja loop\nexit"), budget=10_000)
    try:
        spin.execute_program()
    except ebpfvm.BudgetExceeded as stop:
        print(f"BudgetExceeded: {stop.count} instructions, stopped at pc {stop.pc}")


if __name__ == "__main__":
    main()
