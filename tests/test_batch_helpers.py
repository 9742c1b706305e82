"""Helpers inside the JIT's batch entry points (execute_spans, execute_batch):
each run's helpers see exactly that run's input, and a helper that ends its
program (as bpf_tail_call does) ends only that run, not the batch."""

from __future__ import annotations

import pytest

from ebpfvm import EbpfVmRaw, HelperFault, MemoryFault, assemble, buffer_address
from ebpfvm.helpers import HelperContext
from ebpfvm.jit.execmem import jit_supported

pytestmark = pytest.mark.skipif(jit_supported() is not None, reason=str(jit_supported()))

# r0 = helper 1(input, length + r0_extra): the helper reads the bytes through the VM.
READ_ALL = assemble("add r2, 0\ncall 1\nexit")
READ_ONE_MORE = assemble("add r2, 1\ncall 1\nexit")


def _sum_helper(ctx: HelperContext, address: int, size: int, *_rest: int) -> int:
    return sum(ctx.read(address, size))


def _vm(code: bytes) -> EbpfVmRaw:
    vm = EbpfVmRaw(code)
    vm.register_helper(1, _sum_helper, context=True)
    vm.jit_compile()
    return vm


def test_helpers_read_each_span_of_a_batch() -> None:
    buffer = bytearray([1, 2, 3, 10, 20, 7, 7, 7, 7])
    spans = [(0, 3), (3, 2), (5, 4), (0, 3)]
    expected = [sum(buffer[o : o + n]) for o, n in spans]
    assert expected == [6, 30, 28, 6]
    vm = _vm(READ_ALL)
    assert list(vm.execute_spans(buffer, spans)) == expected
    assert vm.execute_batch([bytes(buffer[o : o + n]) for o, n in spans]) == expected


def test_a_helper_cannot_read_past_its_span_into_the_next() -> None:
    buffer = bytearray(range(1, 13))
    vm = _vm(READ_ONE_MORE)
    with pytest.raises(HelperFault) as info:
        vm.execute_spans(buffer, [(0, 4), (4, 4), (8, 4)])
    assert info.value.batch_index == 0 and info.value.helper_id == 1
    cause = info.value.cause
    assert isinstance(cause, MemoryFault)
    assert (cause.address, cause.size) == (buffer_address(buffer), 5)


def test_a_helper_that_ends_its_run_does_not_end_the_batch() -> None:
    def stop_on_odd(ctx: HelperContext, address: int, size: int, *_rest: int) -> int:
        first = ctx.read(address, 1)[0]
        if first % 2:
            ctx.stop(100 + first)  # like bpf_tail_call: r0 of the program is this
        return first

    vm = EbpfVmRaw(assemble("call 1\nadd r0, 1\nexit"))
    vm.register_helper(1, stop_on_odd, context=True)
    vm.jit_compile()
    buffer = bytearray([2, 3, 4, 5, 5, 8])
    spans = [(i, 1) for i in range(len(buffer))]
    # Even bytes come back + 1 from the program; odd ones end it in the helper with 100 + b.
    assert list(vm.execute_spans(buffer, spans)) == [3, 103, 5, 105, 105, 9]


def test_repeated_runs_do_not_keep_the_regions_helpers_added() -> None:
    """test_run repeats in one native call; before the fix every repetition kept
    the regions earlier ones' helpers added, so a map-using program slowed down
    quadratically."""
    seen: list[int] = []
    extra = bytearray(8)

    def add_region(ctx: HelperContext, *_args: int) -> int:
        seen.append(len(ctx.space.regions))
        return ctx.add_region(extra, "extra")

    vm = EbpfVmRaw(assemble("call 1\nldxb r0, [r0]\nexit"))
    vm.register_helper(1, add_region, context=True)
    vm.jit_compile()
    r0, _ns = vm.test_run(bytearray(4), repeat=50)
    assert r0 == 0 and len(seen) == 50
    assert set(seen) == {seen[0]}  # stack, input: the same count at every repetition
