"""LD_ABS/LD_IND after a helper changed the frame (bpf_skb_change_tail,
change_head, adjust_room, change_proto, vlan_push, vlan_pop): the kernel reads
skb->data and skb->len at each legacy load, so the load sees the packet as the
helper left it. Each program folds the load into r0 (plus 7, so that a load
that ends the program, r0 = 0, shows); expected values come from the kernel
(BPF_PROG_TEST_RUN of the same sched_cls program), in every engine. Skipped
where bpf() is unavailable."""

from __future__ import annotations

import pytest

import kernel_oracle
from ebpfvm.helper_table import helper_number
from skb_oracle import SCHED_CLS
from test_skb_helpers_kernel import VLAN_FRAME
from test_skb_kernel import IPV6, UDP, _compare

pytestmark = pytest.mark.skipif(kernel_oracle.available() is not None,
                                reason=f"bpf() unavailable: {kernel_oracle.available()}")


def _then_load(name: str, args: tuple[int, ...], load: str) -> str:
    """r6 = ctx; call `name`(ctx, *args); r0 = the load + 7 (0 past the end)."""
    lines = ["mov r6, r1"]
    for register, arg in enumerate(args, start=2):
        lines.append(f"lddw r{register}, {arg:#x}")
    lines += ["mov r1, r6", f"call {helper_number(name)}", "mov r7, r0", load,
              "add r0, 7", "exit"]
    return "\n".join(lines)


TAIL = "bpf_skb_change_tail"
CASES = {
    "tail_grow_last_byte": (_then_load(TAIL, (100, 0), "ldabsb 99"), UDP),
    "tail_grow_word": (_then_load(TAIL, (100, 0), "ldabsw 96"), UDP),
    "tail_grow_past": (_then_load(TAIL, (100, 0), "ldabsb 100"), UDP),
    "tail_grow_ind": (_then_load(TAIL, (100, 0), "mov r8, 90\nldindh r8, 8"), UDP),
    "tail_cut_past": (_then_load(TAIL, (20, 0), "ldabsb 30"), UDP),
    "tail_cut_last": (_then_load(TAIL, (20, 0), "ldabsb 19"), UDP),
    "tail_refused": (_then_load(TAIL, (100, 1), "ldabsb 70"), UDP),
    "head_grow": (_then_load("bpf_skb_change_head", (14, 0), "ldabsh 26"), UDP),
    "head_grow_end": (_then_load("bpf_skb_change_head", (14, 0), "ldabsb 71"), UDP),
    "adjust_grow_end": (_then_load("bpf_skb_adjust_room", (8, 0, 0), "ldabsw 62"), UDP),
    "adjust_shrink_past": (_then_load("bpf_skb_adjust_room", (-8 & 0xFFFF_FFFF, 1, 0),
                                      "ldabsb 52"), UDP),
    "proto_4to6": (_then_load("bpf_skb_change_proto", (0xDD86, 0), "ldabsb 77"), UDP),
    "proto_6to4_past": (_then_load("bpf_skb_change_proto", (0x0008, 0), "ldabsb 62"), IPV6),
    "vlan_push_offloaded": (_then_load("bpf_skb_vlan_push", (0x0081, 5), "ldabsh 12"), UDP),
    "vlan_pop_frame": (_then_load("bpf_skb_vlan_pop", (), "ldabsw 60"), VLAN_FRAME),
    "vlan_pop_frame_type": (_then_load("bpf_skb_vlan_pop", (), "ldabsh 12"), VLAN_FRAME),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_legacy_loads_see_the_frame_a_helper_changed(engine: str, case: str) -> None:
    source, packet = CASES[case]
    _compare(engine, source, SCHED_CLS, packet)


def test_a_pushed_tag_in_the_frame_is_what_ld_abs_reads(engine: str) -> None:
    # Two pushes: the first tag moves from offload into the frame (4 bytes
    # longer), so the ethertype at 12 becomes the first tag's protocol.
    push = helper_number("bpf_skb_vlan_push")
    source = (f"mov r6, r1\nmov r2, 0x0081\nmov r3, 5\ncall {push}\n"
              f"mov r1, r6\nmov r2, 0xa888\nmov r3, 9\ncall {push}\n"
              "ldabsh 12\nlsh r0, 16\nmov r7, r0\nldabsb 61\nor r0, r7\nadd r0, 7\nexit")
    _compare(engine, source, SCHED_CLS, UDP)
