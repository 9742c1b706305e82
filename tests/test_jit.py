"""What only the JIT has: executable memory, native repeat and batch loops,
platform checks. Everything shared with the interpreter runs through the
engine-parametrized tests instead."""

from __future__ import annotations

import array
import gc
import sys
from pathlib import Path

import pytest

from ebpfvm import (
    BudgetExceeded,
    EbpfVmFixedMbuff,
    EbpfVmNoData,
    EbpfVmRaw,
    JitError,
    MemoryFault,
    assemble,
    buffer_address,
)
from ebpfvm.jit import execmem
from ebpfvm.jit.execmem import ExecMemory, jit_supported

pytestmark = pytest.mark.skipif(jit_supported() is not None, reason=str(jit_supported()))

SUM = assemble((Path(__file__).resolve().parents[1] / "examples" / "asm" / "sum_bytes.s")
               .read_text())
"""Sums the input's bytes: the example the CLI's asm command assembles."""


def _mapping(address: int) -> str | None:
    """The permissions of the mapping that holds `address`, from /proc/self/maps."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, perms = line.split()[:2]
        low, high = (int(part, 16) for part in span.split("-"))
        if low <= address < high:
            return perms
    return None


def test_code_is_read_execute_and_freed_on_close() -> None:
    vm = EbpfVmRaw(SUM)
    vm.jit_compile()
    address = vm.jit_code().memory.address
    perms = _mapping(address)
    assert perms is not None and perms.startswith("r-x"), perms  # never writable and executable
    assert vm.execute_program_jit(bytearray([1, 2, 3])) == 6
    vm.close()
    assert _mapping(address) is None
    with pytest.raises(JitError):
        vm.execute_program_jit(bytearray(1))
    assert vm.execute_program(bytearray([4])) == 4  # the interpreter still works


def test_code_is_freed_when_collected() -> None:
    vm = EbpfVmRaw(SUM)
    vm.jit_compile()
    address = vm.jit_code().memory.address
    del vm
    gc.collect()
    assert _mapping(address) is None


def test_recompiling_frees_the_old_code() -> None:
    vm = EbpfVmRaw(SUM)
    vm.jit_compile()
    first = vm.jit_code().memory.address
    vm.jit_compile(unchecked=True)
    assert vm.jit_unchecked
    assert _mapping(first) is None or vm.jit_code().memory.address == first
    vm.set_program(assemble("mov r0, 1\nexit"))
    assert not vm.jit_ready  # a new program needs a new compile


def test_exec_memory_is_read_execute_only() -> None:
    mem = ExecMemory(b"\xc3")
    perms = _mapping(mem.address)
    assert perms is not None and perms[:3] == "r-x"  # writing would fault: never W and X
    assert mem.read() == b"\xc3"
    mem.close()
    assert mem.closed
    assert _mapping(mem.address) is None


def test_jit_refuses_other_platforms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert execmem.jit_supported() is not None
    vm = EbpfVmRaw(SUM)
    with pytest.raises(JitError):
        vm.jit_compile()
    assert vm.execute_program(bytearray([5, 6])) == 11


@pytest.mark.parametrize("unchecked", [False, True])
def test_test_run_repeats_natively(unchecked: bool) -> None:
    vm = EbpfVmRaw(SUM)
    vm.jit_compile(unchecked=unchecked)
    r0, ns = vm.test_run(bytearray(range(10)), repeat=1000)
    assert r0 == 45
    assert 0 < ns < 1e6
    nodata = EbpfVmNoData(assemble("mov r0, 3\nexit"))
    nodata.jit_compile()
    assert nodata.test_run(repeat=10)[0] == 3


def test_test_run_counts_like_the_interpreter() -> None:
    vm = EbpfVmRaw(SUM)
    vm.execute_program(bytearray(5))
    expected = vm.last_instruction_count
    vm.jit_compile()
    vm.test_run(bytearray(5), repeat=7)
    assert vm.last_instruction_count == expected  # per run, not summed


def test_batch_matches_single_runs() -> None:
    vm = EbpfVmRaw(SUM)
    vm.jit_compile()
    inputs = [bytearray(range(n)) for n in range(20)] + [bytes([9, 9]), bytearray()]
    expected = [vm.execute_program(item) for item in inputs]
    assert vm.execute_batch(inputs) == expected
    assert expected[5] == 10 and expected[-2] == 18 and expected[-1] == 0


def test_batch_stops_at_the_faulting_input() -> None:
    vm = EbpfVmRaw(assemble("ldxw r0, [r1+0]\nexit"))
    vm.jit_compile()
    inputs = [bytearray(4), bytearray(8), bytearray(2), bytearray(4)]
    with pytest.raises(MemoryFault) as info:
        vm.execute_batch(inputs)
    assert info.value.batch_index == 2
    assert info.value.size == 4


def test_batch_with_fixed_mbuff() -> None:
    prog = assemble("""
        ldxdw r2, [r1+0]
        ldxdw r3, [r1+8]
        mov r0, r3
        sub r0, r2
        exit
    """)
    vm = EbpfVmFixedMbuff(prog, 0, 8)
    vm.jit_compile()
    inputs = [bytearray(n) for n in (0, 1, 5, 64)]
    assert vm.execute_batch(inputs) == [0, 1, 5, 64]
    assert vm.test_run(bytearray(3), repeat=5)[0] == 3


def test_budget_in_native_loops() -> None:
    vm = EbpfVmNoData(assemble("loop:\nja loop\nexit"), budget=100)
    vm.jit_compile()
    with pytest.raises(BudgetExceeded) as info:
        vm.test_run(repeat=3)
    assert (info.value.count, info.value.pc) == (100, 0)


def test_unchecked_code_is_smaller() -> None:
    vm = EbpfVmRaw(SUM)
    vm.jit_compile()
    checked = len(vm.jit_code().jit.code)
    vm.jit_compile(unchecked=True)
    assert len(vm.jit_code().jit.code) < checked


def test_spans_over_one_buffer() -> None:
    vm = EbpfVmRaw(SUM)
    vm.jit_compile()
    packets = [bytes(range(n)) for n in (3, 0, 7, 1)]
    buffer = bytearray(b"".join(packets))
    spans, offset = [], 0
    for packet in packets:
        spans.append((offset, len(packet)))
        offset += len(packet)
    expected = [vm.execute_program(packet) for packet in packets]
    assert list(vm.execute_spans(buffer, spans)) == expected == [3, 0, 21, 0]
    flat = array.array("Q", [value for pair in spans for value in pair])
    assert list(vm.execute_spans(buffer, flat)) == expected


def test_spans_must_lie_in_the_buffer() -> None:
    vm = EbpfVmRaw(SUM)
    vm.jit_compile()
    with pytest.raises(ValueError):
        vm.execute_spans(bytearray(10), [(0, 4), (8, 3)])  # ends at 11 > 10
    with pytest.raises(ValueError):
        vm.execute_spans(bytearray(10), [((1 << 64) - 1, 2)])  # offset + length overflows


def test_spans_confine_each_run_to_its_span() -> None:
    vm = EbpfVmRaw(assemble("ldxb r0, [r1+4]\nexit"))  # reads one byte past a 4-byte span
    vm.jit_compile()
    buffer = bytearray(range(16))
    assert list(vm.execute_spans(buffer, [(0, 8)])) == [4]
    with pytest.raises(MemoryFault) as info:
        vm.execute_spans(buffer, [(0, 8), (4, 4)])
    assert info.value.batch_index == 1
    assert info.value.address == buffer_address(buffer) + 8


def test_observable_stack() -> None:
    from ebpfvm.encoding import decode
    from ebpfvm.jit.translate import observable_stack

    def seen(text: str) -> int:
        return observable_stack(decode(assemble(text)), 512)

    assert seen("mov r0, 1\nexit") == 0
    assert seen("stb [r10-3], 1\nldxdw r0, [r10-16]\nexit") == 16
    assert seen("stb [r10-13], 1\nexit") == 16  # rounded up to whole qwords
    assert seen("mov r1, r10\nexit") == 512
    assert seen("stxdw [r10-8], r10\nexit") == 512  # stores the frame pointer itself
    assert seen("jeq r10, 0, +0\nexit") == 512



def _corpus() -> list[bytes]:
    from conftest import bench_dir, conformance_dir
    from ebpfvm.testdata import read_data_file
    programs = [read_data_file(path).program() for path in sorted(conformance_dir().glob("*.data"))]
    programs += [path.read_bytes() for path in sorted((bench_dir() / "out").glob("*.bin"))]
    return [SUM, *programs]


@pytest.mark.parametrize("checked", [True, False], ids=["checked", "unchecked"])
def test_cached_translation_is_the_code_a_cold_translation_makes(checked: bool) -> None:
    """Instructions, jumps, checked accesses, stubs and the entry are placed
    from caches filled by earlier programs; each program's code must be what a
    translation with every cache empty makes."""
    from ebpfvm.encoding import decode
    from ebpfvm.jit.plan import JitCaches
    from ebpfvm.jit.translate import translate
    programs = [decode(program) for program in _corpus()]
    assert len(programs) > 300
    context = 0x7F12_3456_7000
    warm = [translate(insns, context=context, checked=checked).code for insns in programs]
    for insns, code in zip(programs, warm, strict=True):
        cold = translate(insns, context=context, checked=checked, caches=JitCaches()).code
        assert cold == code


def test_a_run_after_a_batch_or_test_run_uses_its_own_input() -> None:
    """A run with the same input as the run before it writes nothing into the
    context; a batch or test_run in between must not leave theirs behind."""
    vm = EbpfVmRaw(SUM)
    vm.jit_compile()
    mine = memoryview(bytearray([1, 2, 3]))  # sum 6
    others = bytearray([10, 20, 30, 40])  # sum 100
    assert vm.execute_program_jit(mine) == 6
    assert list(vm.execute_spans(others, [(0, 4), (1, 3)])) == [100, 90]
    assert vm.execute_program_jit(mine) == 6
    assert vm.execute_batch([bytes([50, 50]), bytes([7])]) == [100, 7]
    assert vm.execute_program_jit(mine) == 6
    assert vm.test_run(others, repeat=3)[0] == 100
    assert vm.execute_program_jit(mine) == 6
    mine[0] = 4  # same object, new contents: read afresh
    assert vm.execute_program_jit(mine) == 9


def test_translation_layer_has_no_hex_literals() -> None:
    """Machine code comes from the encoder; the translation layer names
    registers, operations and fields, never bytes (the issue's rule)."""
    import io
    import tokenize
    jit = Path(__file__).resolve().parents[1] / "src" / "ebpfvm" / "jit"
    hex_literals = []
    for name in ("translate.py", "plan.py", "x86_codegen.py", "x86_emit.py", "x86_stubs.py"):
        tokens = tokenize.generate_tokens(io.StringIO((jit / name).read_text()).readline)
        hex_literals += [(name, token.start[0], token.string) for token in tokens
                         if token.type == tokenize.NUMBER and token.string.lower().startswith("0x")]
    assert hex_literals == []
