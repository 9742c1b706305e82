"""Which kernel helpers each packet program type may call, as the kernel's
``func_proto`` offers them, and why ebpfvm lacks the ones it does not
implement.

The lists are the kernel's (Linux 6.12's source, a privileged loader: CAP_BPF
and CAP_PERFMON, plus what the reference kernel, 6.18, added): ``bpf_base_func_proto`` for every type, ``bpf_sk_base_func_proto``
for the packet types, and each type's own function (``xdp_func_proto``,
``tc_cls_act_func_proto`` for sched_cls and sched_act, ``sk_filter_func_proto``,
``cg_skb_func_proto``, ``sk_skb_func_proto``). They are the one source of truth
for the load-time check: a program of a type listed here that calls a helper
its list lacks is refused (:class:`~ebpfvm.linkerrors.HelperNotAllowed`), as the
kernel's verifier refuses it ("unknown func"); one that calls a helper its
list has but ebpfvm does not implement is refused too
(:class:`~ebpfvm.linkerrors.UnsupportedHelper`), and :data:`UNSUPPORTED`
says why. Helpers are called by number (RFC 9669 section 4.3.1's "helper
functions"); the numbers come from ebpfvm.helper_table.
"""

from __future__ import annotations

from .helper_table import HELPERS, helper_number

__all__ = ["FUNC_PROTOS", "UNSUPPORTED", "kernel_allows", "unsupported_helpers",
           "unsupported_markdown"]


def _names(text: str) -> frozenset[str]:
    return frozenset("bpf_" + word for word in text.split())


_BASE = _names("""
    map_lookup_elem map_update_elem map_delete_elem map_push_elem map_pop_elem
    map_peek_elem map_lookup_percpu_elem get_prandom_u32 get_smp_processor_id
    get_numa_node_id tail_call ktime_get_ns ktime_get_boot_ns ktime_get_tai_ns
    ringbuf_output ringbuf_reserve ringbuf_submit ringbuf_discard ringbuf_query
    strncmp strtol strtoul get_current_pid_tgid get_ns_current_pid_tgid
    spin_lock spin_unlock jiffies64 per_cpu_ptr this_cpu_ptr timer_init
    timer_set_callback timer_start timer_cancel kptr_xchg for_each_map_elem loop
    user_ringbuf_drain ringbuf_reserve_dynptr ringbuf_submit_dynptr
    ringbuf_discard_dynptr dynptr_from_mem dynptr_read dynptr_write dynptr_data
    cgrp_storage_get cgrp_storage_delete get_current_cgroup_id
    get_current_ancestor_cgroup_id
    trace_printk get_current_task get_current_task_btf probe_read_user
    probe_read_kernel probe_read_user_str probe_read_kernel_str snprintf_btf
    snprintf task_pt_regs trace_vprintk
""")
"""bpf_base_func_proto: without capabilities, then with CAP_BPF, then CAP_PERFMON."""
_SK_BASE = _BASE | _names("""
    skc_to_tcp6_sock skc_to_tcp_sock skc_to_tcp_timewait_sock
    skc_to_tcp_request_sock skc_to_udp6_sock skc_to_unix_sock skc_to_mptcp_sock
    ktime_get_coarse_ns
""")
"""bpf_sk_base_func_proto: what every packet type falls back on."""
_SINCE_6_12 = _names("""
    get_current_uid_gid get_current_comm perf_event_read perf_event_read_value
    current_task_under_cgroup send_signal send_signal_thread get_task_stack copy_from_user
    copy_from_user_task find_vma get_branch_snapshot task_storage_get task_storage_delete
    get_cgroup_classid
""")
"""What the reference kernel (6.18, the corpus's) offers every packet type
beyond 6.12's lists: found by BPF_PROG_LOAD of a call to each helper
(tests/test_loaderr.py checks every helper of every type against the kernel
when bpf() is available)."""
_SK_BASE = _SK_BASE | _SINCE_6_12
_NETNS = _names("get_netns_cookie")
"""6.18 offers it to tc, socket filter and cgroup_skb programs."""
_SOCKET_LOOKUP = _names("sk_lookup_tcp sk_lookup_udp sk_release skc_lookup_tcp")
_SYNCOOKIES = _names("""
    tcp_check_syncookie tcp_gen_syncookie tcp_raw_gen_syncookie_ipv4
    tcp_raw_gen_syncookie_ipv6 tcp_raw_check_syncookie_ipv4 tcp_raw_check_syncookie_ipv6
""")
_SK_FILTER = _SK_BASE | _NETNS | _names("""
    skb_load_bytes skb_load_bytes_relative get_socket_cookie get_socket_uid
    perf_event_output
""")
_TC = _SK_BASE | _NETNS | _SOCKET_LOOKUP | _SYNCOOKIES | _names("""
    skb_store_bytes skb_load_bytes skb_load_bytes_relative skb_pull_data csum_diff
    csum_update csum_level l3_csum_replace l4_csum_replace clone_redirect
    get_cgroup_classid skb_vlan_push skb_vlan_pop skb_change_proto skb_change_type
    skb_adjust_room skb_change_tail skb_change_head skb_get_tunnel_key
    skb_set_tunnel_key skb_get_tunnel_opt skb_set_tunnel_opt redirect redirect_neigh
    redirect_peer get_route_realm get_hash_recalc set_hash_invalid set_hash
    perf_event_output skb_under_cgroup get_socket_cookie get_socket_uid fib_lookup
    check_mtu sk_fullsock sk_storage_get sk_storage_delete skb_get_xfrm_state
    skb_cgroup_classid skb_cgroup_id skb_ancestor_cgroup_id tcp_sock get_listener_sock
    skb_ecn_set_ce sk_assign skb_set_tstamp
""")
_XDP = _SK_BASE | _SOCKET_LOOKUP | _SYNCOOKIES | _names("""
    perf_event_output csum_diff xdp_adjust_head xdp_adjust_meta redirect redirect_map
    xdp_adjust_tail xdp_get_buff_len xdp_load_bytes xdp_store_bytes fib_lookup check_mtu
""")
_CG_SKB = _SK_FILTER | _names("""
    get_local_storage sk_fullsock sk_storage_get sk_storage_delete skb_cgroup_id
    skb_ancestor_cgroup_id sk_cgroup_id sk_ancestor_cgroup_id sk_lookup_tcp sk_lookup_udp
    sk_release skc_lookup_tcp tcp_sock get_listener_sock skb_ecn_set_ce
""")
"""cg_skb_func_proto (bpf_get_retval and bpf_set_retval are refused for the
ingress and egress attach types, the only ones a cgroup_skb program has)."""
_SK_SKB = _SK_BASE | _SOCKET_LOOKUP | _names("""
    skb_store_bytes skb_load_bytes skb_pull_data skb_change_tail skb_change_head
    skb_adjust_room get_socket_cookie get_socket_uid sk_redirect_map sk_redirect_hash
    perf_event_output
""")

FUNC_PROTOS: dict[str, frozenset[str]] = {
    "xdp": _XDP, "sched_cls": _TC, "sched_act": _TC, "socket_filter": _SK_FILTER,
    "cgroup_skb": _CG_SKB, "sk_skb": _SK_SKB,
}
"""The helper names each program type's kernel func_proto offers."""

_SOCKET = "needs a kernel socket (ebpfvm has no socket table)"
_CGROUP = "needs the kernel's cgroup hierarchy"
_TASK = "needs a kernel task"
_KERNEL_MEMORY = "needs kernel memory or kernel BTF objects"
_LATER = "not implemented yet"
_REASONS = {
    _SOCKET: """sk_lookup_tcp sk_lookup_udp sk_release skc_lookup_tcp tcp_sock
        get_listener_sock sk_fullsock sk_assign sk_storage_get sk_storage_delete
        get_socket_uid sk_cgroup_id sk_ancestor_cgroup_id skc_to_tcp6_sock skc_to_tcp_sock
        skc_to_tcp_timewait_sock skc_to_tcp_request_sock skc_to_udp6_sock skc_to_unix_sock
        skc_to_mptcp_sock tcp_check_syncookie tcp_gen_syncookie sk_redirect_map
        sk_redirect_hash""",
    "needs the kernel's SYN cookie secret": """tcp_raw_gen_syncookie_ipv4
        tcp_raw_gen_syncookie_ipv6 tcp_raw_check_syncookie_ipv4 tcp_raw_check_syncookie_ipv6""",
    _CGROUP: """skb_cgroup_id skb_ancestor_cgroup_id skb_under_cgroup skb_cgroup_classid
        cgrp_storage_get cgrp_storage_delete get_current_cgroup_id
        get_current_ancestor_cgroup_id""",
    _TASK: """get_current_task get_current_task_btf task_pt_regs get_ns_current_pid_tgid
        send_signal send_signal_thread get_task_stack copy_from_user copy_from_user_task
        find_vma task_storage_get task_storage_delete current_task_under_cgroup""",
    "needs a perf event": "perf_event_read perf_event_read_value",
    "needs the CPU's branch records": "get_branch_snapshot",
    _KERNEL_MEMORY: "per_cpu_ptr this_cpu_ptr kptr_xchg snprintf_btf",
    "needs the kernel's xfrm (IPsec) state": "skb_get_xfrm_state",
}
UNSUPPORTED: dict[str, str] = {name: reason for reason, text in _REASONS.items()
                               for name in _names(text)}
"""Why ebpfvm lacks a helper a packet program type may call, by helper name
(only those not implemented: an implemented helper's row wins)."""


_ALLOWED_NUMBERS = {prog_type: frozenset(helper_number(name) for name in names)
                    for prog_type, names in FUNC_PROTOS.items()}


def kernel_allows(prog_type: str, number: int) -> bool | None:
    """Whether the kernel lets a program of `prog_type` call helper `number`;
    None for a program type without a list here (no check is made)."""
    numbers = _ALLOWED_NUMBERS.get(prog_type)
    return None if numbers is None else number in numbers


def unsupported_helpers() -> dict[str, tuple[frozenset[str], str]]:
    """The helpers some packet program type may call that ebpfvm does not
    implement for it: name -> (those program types, why it is missing)."""
    rows = {spec.name: spec for spec in HELPERS.values()}
    found: dict[str, tuple[frozenset[str], str]] = {}
    for name in sorted(set().union(*FUNC_PROTOS.values())):
        row = rows.get(name)
        types = frozenset(t for t, names in FUNC_PROTOS.items()
                          if name in names and (row is None or t not in row.prog_types))
        if not types:
            continue
        if row is None:
            found[name] = (types, UNSUPPORTED.get(name, _LATER))
        else:
            implemented = ", ".join(sorted(row.prog_types & set(FUNC_PROTOS)))
            found[name] = (types, f"implemented for {implemented} only")
    return found


def _types_text(types: frozenset[str]) -> str:
    return "all" if types == frozenset(FUNC_PROTOS) else ", ".join(sorted(types))


def unsupported_markdown() -> str:
    """The guide's table of unsupported helpers, generated from :data:`FUNC_PROTOS`,
    :data:`UNSUPPORTED` and the helper registry."""
    lines = ["| number | helper | program types | why it is missing |", "|---|---|---|---|"]
    rows = sorted((helper_number(name), name, types, reason)
                  for name, (types, reason) in unsupported_helpers().items())
    for number, name, types, reason in rows:
        lines.append(f"| {number} | `{name}` | {_types_text(types)} | {reason} |")
    return "\n".join(lines)
