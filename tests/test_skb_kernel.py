"""SkbRunner against the Linux kernel (BPF_PROG_TEST_RUN): socket filters and
LD_ABS/LD_IND, the __sk_buff with ctx_in, and the skb helpers, in every
engine. Expected values come from the kernel run of the same program and
input (skipped where bpf() is unavailable)."""

from __future__ import annotations

import struct

import pytest

import kernel_oracle
import skb_oracle
from ebpfvm import assemble
from ebpfvm.contexts import SkbRunner
from skb_oracle import CGROUP_SKB, SCHED_CLS, SOCKET_FILTER

pytestmark = pytest.mark.skipif(kernel_oracle.available() is not None,
                                reason=f"bpf() unavailable: {kernel_oracle.available()}")

TYPES = {SOCKET_FILTER: "socket_filter", SCHED_CLS: "sched_cls", CGROUP_SKB: "cgroup_skb"}
MAC = bytes.fromhex("02000000000b02000000000a")


def _ipv4_udp(checksum: int = 0x1234, tos: int = 0) -> bytes:
    ip = bytearray(bytes.fromhex("4500002c00010000401100000a0000010a000002"))
    ip[1] = tos
    total = sum(struct.unpack("!10H", ip))
    total = (total & 0xFFFF) + (total >> 16)
    ip[10:12] = struct.pack("!H", ~total & 0xFFFF)
    udp = struct.pack("!HHHH", 1000, 2000, 24, checksum) + b"sixteen bytes..."
    return MAC + b"\x08\x00" + bytes(ip) + udp


UDP = _ipv4_udp()
IPV6 = MAC + b"\x86\xdd" + bytes.fromhex("6000000000083a40") + bytes(32) + bytes(8)


def _compare(engine: str, source: str, prog_type: int, packet: bytes,
             ctx: bytes | None = None) -> None:
    """Run `source` in the kernel and in ebpfvm: same r0, packet and ctx_out."""
    code = assemble(source)
    retval, packet_out, ctx_out = skb_oracle.load_run(code, prog_type, packet, ctx)
    with SkbRunner(code, engine=engine, prog_type=TYPES[prog_type]) as runner:
        result = runner.run(packet, ctx=ctx)
    skip = 0 if prog_type == SCHED_CLS else 14
    assert (result.r0 & 0xFFFF_FFFF, result.packet[skip:].hex()) == (
        retval, packet_out[skip:].hex())
    assert result.ctx_out.hex() == ctx_out.hex()


# -- socket filters and LD_ABS / LD_IND ---------------------------------------------


@pytest.mark.parametrize("prog_type", [SOCKET_FILTER, SCHED_CLS])
@pytest.mark.parametrize("load", ["ldabsb 0", "ldabsh 0", "ldabsw 2", "ldabsb 47", "ldabsh 47",
                                  "ldabsw 60", "ldabsb 4000", "mov r7, 3\nldindw r7, 9",
                                  "mov r7, -1\nldindb r7, 0", "mov r7, 40\nldindh r7, 7"])
def test_legacy_loads_read_from_data(engine: str, prog_type: int, load: str) -> None:
    _compare(engine, f"mov r6, r1\n{load}\nexit", prog_type, UDP)


def test_the_issue_example_in_a_socket_filter(engine: str) -> None:
    frame = MAC + b"\x88\xb5" + bytes([0x45]) + bytes(19)
    _compare(engine, "mov r6, r1\nldabsb 0\nexit", SOCKET_FILTER, frame)
    with SkbRunner(assemble("mov r6, r1\nldabsb 0\nexit"), engine=engine,
                   prog_type="socket_filter") as runner:
        assert runner.run(frame).r0 == 0x45


def test_a_load_past_the_end_ends_the_program_with_zero(engine: str) -> None:
    _compare(engine, "mov r6, r1\nmov r0, 9\nldabsw 100\nmov r0, 7\nexit", SOCKET_FILTER, UDP)


@pytest.mark.parametrize("prog_type", [SOCKET_FILTER, SCHED_CLS])
@pytest.mark.parametrize("offset", [0, 4, 8, 16, 20, 32, 40, 44, 48, 68, 84, 164, 176])
def test_field_reads(engine: str, prog_type: int, offset: int) -> None:
    _compare(engine, f"ldxw r0, [r1+{offset}]\nexit", prog_type, UDP)


def test_socket_filter_sees_the_network_header(engine: str) -> None:
    _compare(engine, "ldxw r2, [r1+0]\nldxw r3, [r1+16]\nlsh r3, 16\nor r2, r3\nmov r0, r2\n"
             "exit", SOCKET_FILTER, UDP)


# -- context in and out --------------------------------------------------------------


def _ctx(**fields: int) -> bytes:
    offsets = {"mark": (8, "<I"), "priority": (32, "<I"), "ingress_ifindex": (36, "<I"),
               "cb0": (48, "<I"), "cb4": (64, "<I"), "tstamp": (152, "<Q"),
               "wire_len": (160, "<I"), "gso_segs": (164, "<I"), "gso_size": (176, "<I"),
               "hwtstamp": (184, "<Q")}
    raw = bytearray(192)
    for name, value in fields.items():
        offset, form = offsets[name]
        struct.pack_into(form, raw, offset, value)
    return bytes(raw)


CTX_PROGRAM = """
ldxw r2, [r1+8]
add r2, 1
stxw [r1+8], r2
ldxw r3, [r1+32]
stxw [r1+48], r3
stw [r1+64], 77
stw [r1+44], 5
ldxw r0, [r1+160]
ldxw r4, [r1+164]
add r0, r4
ldxw r4, [r1+176]
add r0, r4
ldxdw r4, [r1+152]
add r0, r4
exit
"""


@pytest.mark.parametrize("ctx", [
    _ctx(mark=7, priority=3, cb0=1, cb4=9),
    _ctx(tstamp=1000, wire_len=200, gso_segs=2, gso_size=1400, hwtstamp=5),
    _ctx(ingress_ifindex=1, mark=0xFFFF_FFFF),
])
def test_ctx_in_and_ctx_out(engine: str, ctx: bytes) -> None:
    _compare(engine, CTX_PROGRAM, SCHED_CLS, UDP, ctx)


def test_the_result_decodes_the_context_by_name(engine: str) -> None:
    with SkbRunner(assemble(CTX_PROGRAM), engine=engine) as runner:
        result = runner.run(UDP, ctx=_ctx(mark=7, priority=3))
    assert (result.mark, result.priority, result.cb) == (8, 3, (3, 0, 0, 0, 77))
    assert result.ctx["tc_index"] == 5 and result.ctx["len"] == len(UDP)


# -- checksum helpers -------------------------------------------------------------


def _csum_program(helper: int, offset: int, removed: int, added: int, flags: int) -> str:
    return (f"mov r6, r1\nmov r2, {offset}\nlddw r3, {removed:#x}\nlddw r4, {added:#x}\n"
            f"mov r5, {flags:#x}\ncall {helper}\nexit")


L3, L4 = 10, 11


@pytest.mark.parametrize("checksum", [0, 0x1234, 0xFFFF])
@pytest.mark.parametrize("flags", [2, 4, 0x22, 0x24, 0x62, 0x12, 0x32, 0x80 | 4, 0x100, 3])
@pytest.mark.parametrize("values", [(0x0100000A, 0x0200000A), (0x0100000A, 0xFEFFFFF5),
                                    (0x1234, 0x1234)])
def test_l4_csum_replace(engine: str, checksum: int, flags: int,
                         values: tuple[int, int]) -> None:
    packet = _ipv4_udp(checksum)
    _compare(engine, _csum_program(L4, 40, values[0], values[1], flags), SCHED_CLS, packet)


@pytest.mark.parametrize("flags", [0x20, 0x60])
@pytest.mark.parametrize("checksum", [0, 0x1234])
def test_l4_csum_replace_with_a_diff(engine: str, flags: int, checksum: int) -> None:
    _compare(engine, _csum_program(L4, 40, 0, 0x0000FFFF, flags), SCHED_CLS, _ipv4_udp(checksum))
    _compare(engine, _csum_program(L4, 40, 1, 0x0000FFFF, flags), SCHED_CLS, _ipv4_udp(checksum))


def test_a_result_of_zero_is_stored_as_ffff(engine: str) -> None:
    # ~(~0xfffe + ~0x0000 + 0x0001) = 0: MANGLED_0 stores 0xffff, without it 0 stays.
    packet = _ipv4_udp(0xFEFF)  # 0xfffe in memory order
    for flags in (0x22, 0x2):
        _compare(engine, _csum_program(L4, 40, 0, 0x0100, flags), SCHED_CLS, packet)


@pytest.mark.parametrize("flags", [0, 2, 4, 0x10, 8])
@pytest.mark.parametrize("offset", [24, 52, 53, 0x10000])
def test_l3_csum_replace(engine: str, flags: int, offset: int) -> None:
    _compare(engine, _csum_program(L3, offset, 0x0100000A, 0x0300000A, flags), SCHED_CLS, UDP)


@pytest.mark.parametrize("packet", [UDP, IPV6, MAC + b"\x88\xb5" + bytes(40)])
@pytest.mark.parametrize("offset", [0, 4, 8, 16, 36, 40, 88, 92, 96, 100, 112, 116, 128, 132])
def test_cgroup_skb_field_reads(engine: str, packet: bytes, offset: int) -> None:
    """cgroup_skb sees the test run's socket: family and addresses."""
    _compare(engine, f"ldxw r2, [r1+{offset}]\nstxw [r1+48], r2\nmov r0, 1\nexit",
             CGROUP_SKB, packet)
