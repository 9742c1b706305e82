"""The skb helpers against the Linux kernel (BPF_PROG_TEST_RUN of tc
programs), in every engine: return values, the frame after the run (length
changes included) and ctx_out. Each program's r0 is the helper's result,
with a field of the __sk_buff after the call folded in where it matters.
Skipped where bpf() is unavailable."""

from __future__ import annotations

import pytest

import kernel_oracle
from ebpfvm.helper_table import helper_number
from skb_oracle import SCHED_CLS
from test_skb_kernel import IPV6, MAC, UDP, _compare, _ipv4_udp

pytestmark = pytest.mark.skipif(kernel_oracle.available() is not None,
                                reason=f"bpf() unavailable: {kernel_oracle.available()}")

VLAN_FRAME = MAC + bytes.fromhex("81000005") + UDP[12:]
QINQ_FRAME = MAC + bytes.fromhex("88a8000781000005") + UDP[12:]
OTHER = MAC + b"\x88\xb5" + bytes(40)


def _call(name: str, *args: int | str, after: str = "", first: int = 2) -> str:
    """r6 = ctx; r2..r5 (from r`first`) = args (ints, or an instruction
    string); call; `after`."""
    lines = ["mov r6, r1", "stdw [r10-8], 0", "stdw [r10-16], 0", "stdw [r10-24], 0",
             "stdw [r10-32], 0", "stdw [r10-40], 0", "stdw [r10-48], 0"]
    if first == 2:
        lines.append("mov r1, r6")
    for register, arg in enumerate(args, start=first):
        if isinstance(arg, str):
            lines.append(arg.replace("R", f"r{register}"))
        else:
            lines.append(f"lddw r{register}, {arg:#x}")
    lines += [f"call {helper_number(name)}", after, "exit"]
    return "\n".join(line for line in lines if line)


WITH_PROTOCOL = "and r0, 0xffff\nldxw r2, [r6+16]\nlsh r2, 16\nor r0, r2"
WITH_VLAN = ("and r0, 0xff\nldxw r2, [r6+20]\nlsh r2, 8\nor r0, r2\nldxw r2, [r6+24]\n"
             "lsh r2, 16\nor r0, r2\nldxw r2, [r6+28]\nlsh r2, 32\nor r0, r2")
STACK = "mov R, r10\nadd R, -48"
WITH_TSTAMP = ("and r0, 0xff\nldxb r2, [r6+180]\nlsh r2, 8\nor r0, r2\nldxdw r2, [r6+152]\n"
               "lsh r2, 16\nor r0, r2")
STACK_PTR = "ldxw r2, [r10-48]\nlsh r2, 32\nor r0, r2"

def _tunnel_opt(set_size: int, get_size: int) -> str:
    """Set a key, then `set_size` bytes of options (0x11.., 0x22..), then
    read them back into a `get_size` buffer: r0 = the result, or'd with the
    buffer's first word << 32 and the word after the options << 16."""
    opt, get = helper_number("bpf_skb_set_tunnel_opt"), helper_number("bpf_skb_get_tunnel_opt")
    after = (f"stw [r10-32], 0x11111111\nstw [r10-28], 0x22222222\nstw [r10-24], 0x33333333\n"
             f"mov r1, r6\nmov r2, r10\nadd r2, -32\nmov r3, {set_size}\ncall {opt}\n"
             f"stdw [r10-24], -1\nstdw [r10-16], -1\n"
             f"mov r1, r6\nmov r2, r10\nadd r2, -24\nmov r3, {get_size}\ncall {get}\n"
             "and r0, 0xffff\nldxw r2, [r10-24]\nlsh r2, 32\nor r0, r2\n"
             "ldxh r2, [r10-16]\nlsh r2, 16\nor r0, r2")
    return _call("bpf_skb_set_tunnel_key", STACK, 44, 0, after=after)


CASES = {
    "change_head": (_call("bpf_skb_change_head", 14, 0, after=WITH_PROTOCOL), UDP),
    "change_head_flags": (_call("bpf_skb_change_head", 14, 1), UDP),
    "change_head_huge": (_call("bpf_skb_change_head", 70000, 0), UDP),
    "change_tail_grow": (_call("bpf_skb_change_tail", 100, 0), UDP),
    "change_tail_cut": (_call("bpf_skb_change_tail", 20, 0), UDP),
    "change_tail_short": (_call("bpf_skb_change_tail", 10, 0), UDP),
    "change_tail_huge": (_call("bpf_skb_change_tail", 100000, 0), UDP),
    "change_tail_flags": (_call("bpf_skb_change_tail", 60, 1), UDP),
    "adjust_net_grow": (_call("bpf_skb_adjust_room", 8, 0, 0, after=WITH_PROTOCOL), UDP),
    "adjust_mac_grow": (_call("bpf_skb_adjust_room", 8, 1, 0), UDP),
    "adjust_net_shrink": (_call("bpf_skb_adjust_room", -8 & 0xFFFF_FFFF, 0, 0), UDP),
    "adjust_mac_shrink": (_call("bpf_skb_adjust_room", -8 & 0xFFFF_FFFF, 1, 0), UDP),
    "adjust_too_much": (_call("bpf_skb_adjust_room", -40 & 0xFFFF_FFFF, 1, 0), UDP),
    "adjust_big": (_call("bpf_skb_adjust_room", 0x1000, 0, 0), UDP),
    "adjust_mode": (_call("bpf_skb_adjust_room", 8, 2, 0), UDP),
    "adjust_not_ip": (_call("bpf_skb_adjust_room", 8, 0, 0), OTHER),
    "adjust_ipv6": (_call("bpf_skb_adjust_room", 8, 0, 0, after=WITH_PROTOCOL), IPV6),
    "adjust_encap_udp": (_call("bpf_skb_adjust_room", 28, 1, 2 | 16, after=WITH_PROTOCOL), UDP),
    "adjust_encap_6in4": (_call("bpf_skb_adjust_room", 20, 1, 2 | 8, after=WITH_PROTOCOL), IPV6),
    "adjust_encap_4in6": (_call("bpf_skb_adjust_room", 40, 1, 4, after=WITH_PROTOCOL), UDP),
    "adjust_encap_eth": (_call("bpf_skb_adjust_room", 38, 1, 2 | 8 | 64 | (14 << 56)), UDP),
    "adjust_encap_eth_short": (_call("bpf_skb_adjust_room", 38, 1, 2 | 8 | 64 | (10 << 56)), UDP),
    "adjust_encap_both": (_call("bpf_skb_adjust_room", 28, 1, 2 | 4), UDP),
    "adjust_encap_l4_both": (_call("bpf_skb_adjust_room", 28, 1, 2 | 8 | 16), UDP),
    "adjust_decap_grow": (_call("bpf_skb_adjust_room", 8, 1, 128), UDP),
    "adjust_decap_6": (_call("bpf_skb_adjust_room", -20 & 0xFFFF_FFFF, 1, 256,
                             after=WITH_PROTOCOL), UDP),
    "adjust_bad_flags": (_call("bpf_skb_adjust_room", 8, 0, 1 << 20), UDP),
    "adjust_no_reset": (_call("bpf_skb_adjust_room", 8, 0, 32), UDP),
    "vlan_push": (_call("bpf_skb_vlan_push", 0x0081, 5, after=WITH_VLAN), UDP),
    "vlan_push_ad": (_call("bpf_skb_vlan_push", 0xA888, 0x1FFF, after=WITH_VLAN), UDP),
    "vlan_push_bad": (_call("bpf_skb_vlan_push", 0x8100, 5), UDP),
    "vlan_push_twice": (_call("bpf_skb_vlan_push", 0x0081, 5,
                              after="mov r1, r6\nmov r2, 0xa888\nmov r3, 9\ncall "
                              f"{helper_number('bpf_skb_vlan_push')}\n{WITH_PROTOCOL}"), UDP),
    "vlan_pop_none": (_call("bpf_skb_vlan_pop", after=WITH_VLAN), UDP),
    "vlan_pop_frame": (_call("bpf_skb_vlan_pop", after=WITH_PROTOCOL), VLAN_FRAME),
    "vlan_pop_qinq": (_call("bpf_skb_vlan_pop", after=WITH_VLAN), QINQ_FRAME),
    "change_proto_4to6": (_call("bpf_skb_change_proto", 0xDD86, 0, after=WITH_PROTOCOL), UDP),
    "change_proto_6to4": (_call("bpf_skb_change_proto", 0x0008, 0, after=WITH_PROTOCOL), IPV6),
    "change_proto_same": (_call("bpf_skb_change_proto", 0x0008, 0), UDP),
    "change_proto_flags": (_call("bpf_skb_change_proto", 0xDD86, 1), UDP),
    "change_type_3": (_call("bpf_skb_change_type", 3, after="ldxw r0, [r6+4]"), UDP),
    "change_type_4": (_call("bpf_skb_change_type", 4), UDP),
    "pull_data": (_call("bpf_skb_pull_data", 20), UDP),
    "pull_data_all": (_call("bpf_skb_pull_data", 0), UDP),
    "pull_data_past": (_call("bpf_skb_pull_data", 1000), UDP),
    "load_relative_mac": (_call("bpf_skb_load_bytes_relative", 6, STACK, 8, 0, after=STACK_PTR),
                          UDP),
    "load_relative_net": (_call("bpf_skb_load_bytes_relative", 12, STACK, 8, 1,
                                after=STACK_PTR), UDP),
    "load_relative_past": (_call("bpf_skb_load_bytes_relative", 50, STACK, 8, 1,
                                 after=STACK_PTR), UDP),
    "load_relative_header": (_call("bpf_skb_load_bytes_relative", 0, STACK, 8, 2), UDP),
    "load_bytes_past": (_call("bpf_skb_load_bytes", 55, STACK, 8, after=STACK_PTR), UDP),
    "csum_update": (_call("bpf_csum_update", 5), UDP),
    "csum_level_query": (_call("bpf_csum_level", 0), UDP),
    "csum_level_bad": (_call("bpf_csum_level", 9), UDP),
    "csum_level_inc": (_call("bpf_csum_level", 1, after="mov r1, r6\nmov r2, 1\ncall 135\n"
                             "mov r1, r6\nmov r2, 0\ncall 135"), UDP),
    "csum_level_dec": (_call("bpf_csum_level", 1, after="mov r1, r6\nmov r2, 2\ncall 135\n"
                             "mov r1, r6\nmov r2, 0\ncall 135"), UDP),
    "csum_level_adjust": (_call("bpf_csum_level", 1, after="mov r1, r6\nmov r2, 8\nmov r3, 0\n"
                                "mov r4, 0\ncall 50\nmov r1, r6\nmov r2, 0\ncall 135"), UDP),
    "check_mtu": (_call("bpf_check_mtu", 0, STACK, 0, 0, after=STACK_PTR), UDP),
    "check_mtu_lo": (_call("bpf_check_mtu", 1, STACK, 65500, 0, after=STACK_PTR), UDP),
    "check_mtu_exceed": (_call("bpf_check_mtu", 0, STACK, 65523, 0, after=STACK_PTR), UDP),
    "check_mtu_nodev": (_call("bpf_check_mtu", 999, STACK, 0, 0), UDP),
    "check_mtu_segs": (_call("bpf_check_mtu", 0, STACK, 4, 1), UDP),
    "check_mtu_flags": (_call("bpf_check_mtu", 0, STACK, 0, 2), UDP),
    "redirect": (_call("bpf_redirect", 1, 0, first=1), UDP),
    "redirect_ingress": (_call("bpf_redirect", 1, 1, first=1), UDP),
    "redirect_flags": (_call("bpf_redirect", 1, 2, first=1), UDP),
    "redirect_peer": (_call("bpf_redirect_peer", 1, 0, first=1), UDP),
    "redirect_peer_flags": (_call("bpf_redirect_peer", 1, 1, first=1), UDP),
    "redirect_neigh": (_call("bpf_redirect_neigh", 1, 0, 0, 0, first=1), UDP),
    "redirect_neigh_params": (_call("bpf_redirect_neigh", 1, STACK, 20, 0, first=1), UDP),
    "ecn_not_ect": (_call("bpf_skb_ecn_set_ce"), UDP),
    "ecn_ect1": (_call("bpf_skb_ecn_set_ce"), _ipv4_udp(tos=1)),
    "ecn_ect0": (_call("bpf_skb_ecn_set_ce"), _ipv4_udp(tos=0x2A)),
    "ecn_ce": (_call("bpf_skb_ecn_set_ce"), _ipv4_udp(tos=3)),
    "ecn_ipv6": (_call("bpf_skb_ecn_set_ce"), IPV6[:15] + b"\x10" + IPV6[16:]),
    "ecn_other": (_call("bpf_skb_ecn_set_ce"), OTHER),
    "get_tunnel_key_none": (_call("bpf_skb_get_tunnel_key", STACK, 44, 0, after=STACK_PTR), UDP),
    "set_tunnel_key": (_call("bpf_skb_set_tunnel_key", STACK, 44, 0), UDP),
    "set_tunnel_key_flags": (_call("bpf_skb_set_tunnel_key", STACK, 44, 0x40), UDP),
    "set_tunnel_key_size": (_call("bpf_skb_set_tunnel_key", STACK, 40, 0), UDP),
    "set_tunnel_key_compat": (_call("bpf_skb_set_tunnel_key", STACK, 24, 0), UDP),
    "set_tunnel_opt_none": (_call("bpf_skb_set_tunnel_opt", STACK, 8), UDP),
    "set_then_get_tunnel_key": (_call("bpf_skb_set_tunnel_key", STACK, 24, 0, after=(
        "mov r1, r6\nmov r2, r10\nadd r2, -48\nmov r3, 44\nmov r4, 0\n"
        f"call {helper_number('bpf_skb_get_tunnel_key')}\n{STACK_PTR}")), UDP),
    "set_tunnel_opt": (_call("bpf_skb_set_tunnel_key", STACK, 44, 0, after=(
        "mov r1, r6\nmov r2, r10\nadd r2, -48\nmov r3, 8\n"
        f"call {helper_number('bpf_skb_set_tunnel_opt')}")), UDP),
    "set_tunnel_opt_odd": (_call("bpf_skb_set_tunnel_key", STACK, 44, 0, after=(
        "mov r1, r6\nmov r2, r10\nadd r2, -48\nmov r3, 6\n"
        f"call {helper_number('bpf_skb_set_tunnel_opt')}")), UDP),
    "set_hash": (_call("bpf_set_hash", 0x1234, after="ldxw r0, [r6+68]"), UDP),
    # helpers4: bpf_skb_get_tunnel_opt and bpf_set_hash_invalid
    "get_tunnel_opt_none": (_call("bpf_skb_get_tunnel_opt", STACK, 8, after=STACK_PTR), UDP),
    "get_tunnel_opt": (_tunnel_opt(8, 16), UDP),
    "get_tunnel_opt_exact": (_tunnel_opt(12, 12), UDP),
    "get_tunnel_opt_small": (_tunnel_opt(8, 4), UDP),
    "get_tunnel_opt_no_opt": (_call("bpf_skb_set_tunnel_key", STACK, 44, 0, after=(
        f"mov r1, r6\nmov r2, r10\nadd r2, -48\nmov r3, 8\n"
        f"call {helper_number('bpf_skb_get_tunnel_opt')}")), UDP),
    "set_tstamp_realtime": (_call("bpf_skb_set_tstamp", 0, 0, after=WITH_TSTAMP), UDP),
    "set_tstamp_mono": (_call("bpf_skb_set_tstamp", 0x1234_5678_9ABC, 1, after=WITH_TSTAMP), UDP),
    "set_tstamp_tai": (_call("bpf_skb_set_tstamp", 77, 2, after=WITH_TSTAMP), IPV6),
    "set_tstamp_mono_zero": (_call("bpf_skb_set_tstamp", 0, 1, after=WITH_TSTAMP), UDP),
    "set_tstamp_bad_type": (_call("bpf_skb_set_tstamp", 5, 3, after=WITH_TSTAMP), UDP),
    "set_tstamp_type_64": (_call("bpf_skb_set_tstamp", 5, 1 << 32, after=WITH_TSTAMP), UDP),
    "set_tstamp_not_ip": (_call("bpf_skb_set_tstamp", 5, 1, after=WITH_TSTAMP), OTHER),
    "set_hash_invalid": (_call("bpf_set_hash", 0x1234, after=(
        f"mov r1, r6\ncall {helper_number('bpf_set_hash_invalid')}\nldxw r2, [r6+68]\n"
        "lsh r2, 32\nor r0, r2")), UDP),
    "set_hash_invalid_recalc": (_call("bpf_set_hash_invalid", after=(
        f"mov r1, r6\ncall {helper_number('bpf_get_hash_recalc')}\nmov r0, 0\n"
        f"mov r1, r6\ncall {helper_number('bpf_set_hash_invalid')}\nldxw r0, [r6+68]")), UDP),
    "cgroup_classid": (_call("bpf_get_cgroup_classid"), UDP),
    "route_realm": (_call("bpf_get_route_realm"), UDP),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_skb_helper_against_the_kernel(engine: str, case: str) -> None:
    source, packet = CASES[case]
    _compare(engine, source, SCHED_CLS, packet)


@pytest.mark.parametrize("offset", [-1 & 0xFFFF_FFFF_FFFF_FFFF, 0x1_0000_0002, 0x8000_0000])
@pytest.mark.parametrize("name", ["bpf_skb_load_bytes", "bpf_skb_store_bytes"])
def test_offsets_are_32_bit(engine: str, offset: int, name: str) -> None:
    extra = (0,) if name == "bpf_skb_store_bytes" else ()
    _compare(engine, _call(name, offset, STACK, 4, *extra, after=STACK_PTR), SCHED_CLS, UDP)
