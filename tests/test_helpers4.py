"""helpers4 (issue 13 point 3): the helpers added last, with expected values
reasoned from the kernel's documented behaviour (include/uapi/linux/bpf.h),
in every engine and without bpf(); tests/test_skb_helpers_kernel.py runs the
same programs against the kernel."""

from __future__ import annotations

import pytest

from ebpfvm.asm import assemble
from ebpfvm.contexts import SkbRunner
from test_skb_helpers_kernel import CASES
from test_skb_kernel import UDP

ENOENT, ENOMEM = 2, 12
FF = 0xFFFF << 16  # the buffer's bytes past the options the helper left alone
EXPECTED = {
    "get_tunnel_opt_none": -ENOENT & 0xFFFF_FFFF_FFFF_FFFF,  # the buffer zeroed
    "get_tunnel_opt": 8 | 0x11111111 << 32,  # 8 bytes back; the rest of 16 zeroed
    "get_tunnel_opt_exact": 12 | 0x11111111 << 32 | 0x3333 << 16,
    "get_tunnel_opt_small": (-ENOMEM & 0xFFFF) | FF,  # 4 bytes zeroed, the next untouched
    "get_tunnel_opt_no_opt": -ENOENT & 0xFFFF_FFFF_FFFF_FFFF,
    "set_hash_invalid": 0,  # both calls return 0; the hash reads 0 after
    "set_hash_invalid_recalc": 0,
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_expected_values(engine: str, case: str) -> None:
    source, packet = CASES[case]
    assert packet == UDP
    with SkbRunner(assemble(source), engine=engine, prog_type="sched_cls") as runner:
        assert runner.run(packet).r0 == EXPECTED[case]
