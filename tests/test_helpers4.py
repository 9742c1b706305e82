"""helpers4 (issue 13 point 3): the helpers added last, with expected values
reasoned from the kernel's documented behaviour (include/uapi/linux/bpf.h),
in every engine and without bpf(); tests/test_skb_helpers_kernel.py runs the
same programs against the kernel."""

from __future__ import annotations

import os

import pytest

import kernel_oracle
from ebpfvm.asm import assemble
from ebpfvm.contexts import SkbRunner, XdpRunner
from ebpfvm.dynptr import dynptr_helpers
from ebpfvm.errors import EbpfError
from ebpfvm.maps import MapType, create_map
from skb_oracle import CGROUP_SKB, SCHED_CLS, SOCKET_FILTER
from test_skb_helpers_kernel import CASES
from test_skb_kernel import UDP, _compare

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
    with XdpRunner(assemble(FORGED), engine=engine) as runner:
        for number, helper in dynptr_helpers({}).items():
            runner.vm.register_helper(number, helper)
        with pytest.raises(EbpfError, match="0xdead0000"):
            runner.run(bytes(64))


CLASSID = "mov r6, r1\ncall 17\n"


@pytest.mark.parametrize("prog_type", ["socket_filter", "cgroup_skb", "sched_cls", "xdp"])
def test_get_cgroup_classid_in_every_packet_type(engine: str, prog_type: str) -> None:
    """bpf_get_cgroup_classid: 0 in every packet type (no net_cls cgroup;
    the kernel answers the same under BPF_PROG_TEST_RUN, checked below)."""
    if prog_type == "xdp":
        with XdpRunner(assemble(CLASSID + "exit"), engine=engine) as xdp:
            assert xdp.run(bytes(64)).r0 == 0
        return
    source = CLASSID + "stxw [r6+48], r0\nmov r0, 1\nexit"
    with SkbRunner(assemble(source), engine=engine, prog_type=prog_type) as runner:
        result = runner.run(UDP)
    assert (result.r0, result.ctx["cb"][0]) == (1, 0)


@pytest.mark.skipif(kernel_oracle.available() is not None, reason="bpf() unavailable")
@pytest.mark.parametrize("prog_type", [SOCKET_FILTER, CGROUP_SKB, SCHED_CLS])
def test_get_cgroup_classid_against_the_kernel(engine: str, prog_type: int) -> None:
    _compare(engine, CLASSID + "stxw [r6+48], r0\nmov r0, 1\nexit", prog_type, UDP)


@pytest.mark.skipif(kernel_oracle.available() is not None, reason="bpf() unavailable")
def test_get_cgroup_classid_in_xdp_against_the_kernel(engine: str) -> None:
    code = assemble(CLASSID + "exit")
    fd = kernel_oracle.prog_load(code)
    try:
        expected = kernel_oracle.test_run(fd, bytes(64))
    finally:
        os.close(fd)
    with XdpRunner(code, engine=engine) as xdp:
        result = xdp.run(bytes(64))
    assert (result.r0, result.packet) == expected


def _reserve_then_discard(size: int, fd: int = 0) -> bytes:
    """r0 = 1 when bpf_ringbuf_reserve(`size`) succeeded (then discarded)."""
    code = bytearray(assemble(f"lddw r1, 0\nmov r2, {size}\nmov r3, 0\ncall 131\n"
                              "jeq r0, 0, +5\nmov r1, r0\nmov r2, 0\ncall 133\nmov r0, 1\n"
                              "exit\nexit"))
    code[1] |= 1 << 4  # BPF_PSEUDO_MAP_FD
    code[4:8] = fd.to_bytes(4, "little")
    return bytes(code)


@pytest.mark.parametrize("size", [4080, 4088])
def test_a_record_filling_the_whole_ring_is_refused(size: int) -> None:
    """The kernel keeps the producer less than the ring's size ahead of the
    consumer: in a 4096-byte ring a 4088-byte record (4096 with its header)
    does not fit, a 4080-byte one does."""
    from ebpfvm.maps import RingBuf

    ring = create_map("r", MapType.RINGBUF, 0, 0, 4096)
    assert isinstance(ring, RingBuf)
    assert bool(ring.reserve(size)) == (size == 4080)
    if kernel_oracle.available() is None:
        fd = kernel_oracle.map_create(27, 0, 0, 4096)
        try:
            prog = kernel_oracle.prog_load(_reserve_then_discard(size, fd))
            try:
                assert kernel_oracle.test_run(prog, bytes(64))[0] == (size == 4080)
            finally:
                os.close(prog)
        finally:
            os.close(fd)
