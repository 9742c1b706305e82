"""helpers4 (issue 13 point 3): the helpers added last, with expected values
reasoned from the kernel's documented behaviour (include/uapi/linux/bpf.h),
in every engine and without bpf(); tests/test_skb_helpers_kernel.py runs the
same programs against the kernel."""

from __future__ import annotations

import pytest

from ebpfvm.asm import assemble
from ebpfvm.contexts import SkbRunner
from test_skb_helpers_kernel import CASES

ENOENT, ENOMEM, EINVAL, EOPNOTSUPP = 2, 12, 22, 95
FF = 0xFFFF << 16  # the buffer's bytes past the options the helper left alone
EXPECTED = {
    "get_tunnel_opt_none": -ENOENT & 0xFFFF_FFFF_FFFF_FFFF,  # the buffer zeroed
    "get_tunnel_opt": 8 | 0x11111111 << 32,  # 8 bytes back; the rest of 16 zeroed
    "get_tunnel_opt_exact": 12 | 0x11111111 << 32 | 0x3333 << 16,
    "get_tunnel_opt_small": (-ENOMEM & 0xFFFF) | FF,  # 4 bytes zeroed, the next untouched
    "get_tunnel_opt_no_opt": -ENOENT & 0xFFFF_FFFF_FFFF_FFFF,
    "set_hash_invalid": 0,  # both calls return 0; the hash reads 0 after
    "set_hash_invalid_recalc": 0,
    # bpf_skb_set_tstamp: r0's low byte, tstamp_type << 8, tstamp << 16
    "set_tstamp_realtime": 0,
    "set_tstamp_mono": (1 << 8 | 0x1234_5678_9ABC << 16) & 0xFFFF_FFFF_FFFF_FFFF,
    "set_tstamp_tai": 2 << 8 | 77 << 16,
    "set_tstamp_mono_zero": -EINVAL & 0xFF,  # monotonic and TAI need a time
    "set_tstamp_bad_type": -EINVAL & 0xFF,
    "set_tstamp_type_64": 5 << 16,  # the type is a u32: 1 << 32 is realtime
    "set_tstamp_not_ip": -EOPNOTSUPP & 0xFF,
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_expected_values(engine: str, case: str) -> None:
    source, packet = CASES[case]
    with SkbRunner(assemble(source), engine=engine, prog_type="sched_cls") as runner:
        assert runner.run(packet).r0 == EXPECTED[case]


FORGED = """
mov r6, r1
lddw r1, 0xdead0000
stxdw [r10-16], r1
lddw r1, 0x10000100
stxdw [r10-8], r1
mov r1, r10
add r1, -32
mov r2, 8
mov r3, r10
add r3, -16
mov r4, 0
mov r5, 0
call 201
exit
"""


def test_a_forged_dynptr_is_a_typed_fault(engine: str) -> None:
    """A dynptr the program wrote itself (the kernel's verifier forbids it;
    ebpfvm runs unverified code) points at memory the program may not
    touch: the read is a MemoryFault, never a host access."""
    from ebpfvm.contexts import XdpRunner
    from ebpfvm.dynptr import dynptr_helpers
    from ebpfvm.errors import EbpfError

    with XdpRunner(assemble(FORGED), engine=engine) as runner:
        for number, helper in dynptr_helpers({}).items():
            runner.vm.register_helper(number, helper)
        with pytest.raises(EbpfError, match="0xdead0000"):
            runner.run(bytes(64))
