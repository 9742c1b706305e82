"""bpf_spin_lock misuse the kernel's verifier refuses, as typed faults in
every engine (tests/data/elf/locks.c): a helper call while a lock is held is
a HelperFault whose cause is a LockMisuse, an exit while a lock is held a
LockHeldAtExit at the bpf_spin_lock call; the kernel's refusals (its log
lines) and its result for the correct program are checked where bpf()
works (through the corpus's loader, which gives the map its BTF)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

import ebpfvm
import kernel_oracle
from ebpfvm.cgroup_storage import LockMisuse
from ebpfvm.errors import HelperFault, LockHeldAtExit
from ebpfvm.helper_table import helper_number

OBJECT = Path(__file__).parent / "data" / "elf" / "locks.o"
FRAME = bytes.fromhex("02000000000b02000000000a0800") + bytes(46)
REFUSED = {
    "call_inside": "function calls are not allowed while holding a lock",
    "exit_inside": "BPF_EXIT instruction in main prog cannot be used inside bpf_spin_lock-ed region",
}
"""Programs the kernel refuses, with the line of its verifier log."""


def _count(obj: Any) -> int:
    value = obj.maps["vals"][bytes(4)]
    return int(struct.unpack_from("<I", value, 4)[0])


def test_the_correct_program_runs(engine: str) -> None:
    # locks.c: correct counts under the lock and returns the count.
    with ebpfvm.load(OBJECT) as obj, obj.skb("correct", engine=engine) as runner:
        assert [runner.run(FRAME).r0 for _ in range(3)] == [1, 2, 3]
        assert _count(obj) == 3


def test_a_helper_call_while_holding_a_lock_is_a_typed_fault(engine: str) -> None:
    with ebpfvm.load(OBJECT) as obj, obj.skb("call_inside", engine=engine) as runner:
        with pytest.raises(HelperFault) as info:
            runner.run(FRAME)
        fault = info.value
        assert fault.helper_id == helper_number("bpf_get_prandom_u32")
        assert isinstance(fault.cause, LockMisuse)
        assert REFUSED["call_inside"] in fault.reason
        # The run's lock was given back: the correct program runs after it.
        with obj.skb("correct", engine=engine) as good:
            assert good.run(FRAME).r0 == 1


def test_an_exit_while_holding_a_lock_is_a_typed_fault(engine: str) -> None:
    with ebpfvm.load(OBJECT) as obj, obj.skb("exit_inside", engine=engine) as runner:
        with pytest.raises(LockHeldAtExit) as info:
            runner.run(FRAME)
        program = obj.program("exit_inside")
        lock_call = next(pc for pc in range(len(program.code) // 8)
                         if program.code[8 * pc] == 0x85 and struct.unpack_from(
                             "<i", program.code, 8 * pc + 4)[0] == helper_number(
                                 "bpf_spin_lock"))
        assert info.value.pc == lock_call
        assert info.value.address % 4 == 0
        with obj.skb("correct", engine=engine) as good:  # the lock was given back
            assert good.run(FRAME).r0 == 2  # exit_inside counted once before its exit


def test_kernel_agrees() -> None:
    """The kernel refuses call_inside and exit_inside (REFUSED) and runs
    correct with the results test_the_correct_program_runs expects."""
    with kernel_oracle.kernel_object(OBJECT) as (_maps, load):
        prog = load("correct")
        assert [prog.test_run(FRAME)["retval"] for _ in range(3)] == [1, 2, 3]
        prog.close()
        for name, message in REFUSED.items():
            with pytest.raises(OSError) as info:
                load(name)
            assert message in info.value.log
