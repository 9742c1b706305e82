"""The one registry of kernel helpers: number, name, arguments, program types
and implementation.

A helper's number is its position in the kernel's list of names
(:data:`~ebpfvm.kernel_helper_names.KERNEL_HELPER_NAMES`, the order of
linux/bpf.h's ``__BPF_FUNC_MAPPER``): no module writes a helper number, they
ask :func:`helper_number` by name. :data:`HELPERS` holds a :class:`HelperSpec`
for each helper ebpfvm implements: its argument kinds, the program types whose
kernel ``func_proto`` offers it (net/core/filter.c: ``xdp_func_proto``,
``tc_cls_act_func_proto``, ``sk_filter_func_proto``, and
``bpf_base_func_proto`` for all of them) and which part of ebpfvm provides
its implementation (:class:`Impl`). The implementations are built per VM
(they close over its maps, runner or environment), once at setup: a helper
call never looks anything up here.

To add a helper: add its row to :data:`_ROWS` (or call :func:`register`),
and its function to the provider named by the row's `impl`, keyed by
``helper_number(name)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .kernel_helper_names import KERNEL_HELPER_NAMES

__all__ = ["BASE", "HELPERS", "TRACING", "ArgKind", "HelperSpec", "Impl", "allowed_helpers",
           "helper_name", "helper_number", "helpers_of", "markdown_table", "register",
           "supported_helpers"]


class ArgKind(Enum):
    """What one argument register of a helper holds (the kernel's ARG_* kinds,
    grouped)."""

    SCALAR = "scalar"
    POINTER = "pointer"
    """A pointer to memory the helper reads or writes."""
    SIZE = "size"
    """The size of the POINTER argument before it."""
    MAP = "map"
    CONTEXT = "context"
    """The program's context (r1 of the program: xdp_md, __sk_buff)."""
    CALLBACK = "callback"


class Impl(Enum):
    """Which part of ebpfvm builds a helper's function for a VM."""

    KERNEL = "ebpfvm.kernel.kernel_helpers"
    MAPS = "ebpfvm.maps.map_helpers"
    XDP = "ebpfvm.contexts.XdpRunner"
    SKB = "ebpfvm.contexts.SkbRunner"
    TAIL_CALL = "ebpfvm.objects (the object's tail calls)"
    RUNNER = "ebpfvm.contexts.XdpRunner and SkbRunner (each its own)"
    CALLBACKS = "ebpfvm.callbacks.callback_helpers"
    TIMERS = "ebpfvm.timers.timer_helpers"


TRACING = frozenset({"kprobe", "tracepoint", "perf_event", "raw_tracepoint"})
"""Program types of bpf_tracing_func_proto (none runs in ebpfvm yet)."""
BASE = frozenset({"xdp", "sched_cls", "sched_act", "socket_filter", "cgroup_skb",
                  "sk_skb"}) | TRACING
"""Program types whose func_proto falls back on bpf_base_func_proto."""
_TC = frozenset({"sched_cls", "sched_act"})
_SOCKET = frozenset({"socket_filter", "cgroup_skb"})
_SK_SKB = frozenset({"sk_skb"})  # loaderr: sk_skb_func_proto's skb helpers
_XDP = frozenset({"xdp"})


@dataclass(frozen=True)
class HelperSpec:
    """One helper: kernel name, number, argument kinds, the program types
    that may call it, and who implements it."""

    name: str
    args: tuple[ArgKind, ...]
    prog_types: frozenset[str]
    impl: Impl

    @property
    def number(self) -> int:
        """The kernel's number (its position in the __BPF_FUNC_MAPPER list)."""
        return helper_number(self.name)

    @property
    def native(self) -> bool:
        """Whether it has a native version: an rt_<helper> function in the
        runtime objects (ebpfvm.native.registry, the one list of them)."""
        from .native.registry import native_helper_numbers

        return self.number in native_helper_numbers()


_NUMBERS = {name: number for number, name in enumerate(KERNEL_HELPER_NAMES)}

S, P, Z, M, C = ArgKind.SCALAR, ArgKind.POINTER, ArgKind.SIZE, ArgKind.MAP, ArgKind.CONTEXT

_ROWS = (
    HelperSpec("bpf_map_lookup_elem", (M, P), BASE, Impl.MAPS),
    HelperSpec("bpf_map_update_elem", (M, P, P, S), BASE, Impl.MAPS),
    HelperSpec("bpf_map_delete_elem", (M, P), BASE, Impl.MAPS),
    HelperSpec("bpf_probe_read", (P, Z, S), TRACING, Impl.KERNEL),
    HelperSpec("bpf_ktime_get_ns", (), BASE, Impl.KERNEL),
    HelperSpec("bpf_trace_printk", (P, Z, S, S, S), BASE, Impl.KERNEL),
    HelperSpec("bpf_get_prandom_u32", (), BASE, Impl.KERNEL),
    HelperSpec("bpf_get_smp_processor_id", (), BASE, Impl.KERNEL),
    HelperSpec("bpf_skb_store_bytes", (C, S, P, Z, S), _TC | _SK_SKB, Impl.SKB),
    HelperSpec("bpf_l3_csum_replace", (C, S, S, S, S), _TC, Impl.SKB),
    HelperSpec("bpf_l4_csum_replace", (C, S, S, S, S), _TC, Impl.SKB),
    HelperSpec("bpf_tail_call", (C, M, S), BASE, Impl.TAIL_CALL),
    HelperSpec("bpf_get_current_pid_tgid", (), BASE, Impl.KERNEL),
    HelperSpec("bpf_get_current_uid_gid", (), BASE, Impl.KERNEL),
    HelperSpec("bpf_get_current_comm", (P, Z), BASE, Impl.KERNEL),
    HelperSpec("bpf_skb_load_bytes", (C, S, P, Z), _TC | _SOCKET | _SK_SKB, Impl.SKB),
    HelperSpec("bpf_csum_diff", (P, Z, P, Z, S), _TC | {"xdp"}, Impl.SKB),
    HelperSpec("bpf_xdp_adjust_head", (C, S), frozenset({"xdp"}), Impl.XDP),
    HelperSpec("bpf_probe_read_str", (P, Z, S), TRACING, Impl.KERNEL),
    HelperSpec("bpf_xdp_adjust_tail", (C, S), frozenset({"xdp"}), Impl.XDP),
    HelperSpec("bpf_map_push_elem", (M, P, S), BASE, Impl.MAPS),
    HelperSpec("bpf_map_pop_elem", (M, P), BASE, Impl.MAPS),
    HelperSpec("bpf_map_peek_elem", (M, P), BASE, Impl.MAPS),
    HelperSpec("bpf_probe_read_user", (P, Z, S), BASE, Impl.KERNEL),
    HelperSpec("bpf_probe_read_kernel", (P, Z, S), BASE, Impl.KERNEL),
    HelperSpec("bpf_probe_read_user_str", (P, Z, S), BASE, Impl.KERNEL),
    HelperSpec("bpf_probe_read_kernel_str", (P, Z, S), BASE, Impl.KERNEL),
    HelperSpec("bpf_jiffies64", (), BASE, Impl.KERNEL),
    HelperSpec("bpf_ktime_get_boot_ns", (), BASE, Impl.KERNEL),
    HelperSpec("bpf_ringbuf_output", (M, P, Z, S), BASE, Impl.MAPS),
    HelperSpec("bpf_ringbuf_reserve", (M, S, S), BASE, Impl.MAPS),
    HelperSpec("bpf_ringbuf_submit", (P, S), BASE, Impl.MAPS),
    HelperSpec("bpf_ringbuf_discard", (P, S), BASE, Impl.MAPS),
    # skb (issue 13): tc_cls_act_func_proto, sk_filter_func_proto, cg_skb_func_proto
    HelperSpec("bpf_clone_redirect", (C, S, S), _TC, Impl.SKB),
    HelperSpec("bpf_get_cgroup_classid", (C,), _TC | _SOCKET | _SK_SKB | _XDP,
               Impl.RUNNER),  # helpers4: every packet type (6.18; the task's outside tc)
    HelperSpec("bpf_skb_vlan_push", (C, S, S), _TC, Impl.SKB),
    HelperSpec("bpf_skb_vlan_pop", (C,), _TC, Impl.SKB),
    HelperSpec("bpf_skb_get_tunnel_key", (C, P, Z, S), _TC, Impl.SKB),
    HelperSpec("bpf_skb_set_tunnel_key", (C, P, Z, S), _TC, Impl.SKB),
    HelperSpec("bpf_get_route_realm", (C,), _TC, Impl.SKB),
    HelperSpec("bpf_get_hash_recalc", (C,), _TC, Impl.SKB),
    HelperSpec("bpf_skb_change_proto", (C, S, S), _TC, Impl.SKB),
    HelperSpec("bpf_skb_change_type", (C, S), _TC, Impl.SKB),
    HelperSpec("bpf_skb_change_tail", (C, S, S), _TC | _SK_SKB, Impl.SKB),
    HelperSpec("bpf_skb_set_tunnel_opt", (C, P, Z), _TC, Impl.SKB),
    HelperSpec("bpf_skb_pull_data", (C, S), _TC | _SK_SKB, Impl.SKB),
    HelperSpec("bpf_csum_update", (C, S), _TC, Impl.SKB),
    HelperSpec("bpf_set_hash", (C, S), _TC, Impl.SKB),
    HelperSpec("bpf_get_socket_cookie", (C,), _TC | _SOCKET | _SK_SKB, Impl.SKB),
    HelperSpec("bpf_skb_adjust_room", (C, S, S, S), _TC | _SK_SKB, Impl.SKB),
    HelperSpec("bpf_skb_change_head", (C, S, S), _TC | _SK_SKB, Impl.SKB),
    HelperSpec("bpf_skb_load_bytes_relative", (C, S, P, Z, S), _TC | _SOCKET, Impl.SKB),
    HelperSpec("bpf_skb_ecn_set_ce", (C,), _TC | {"cgroup_skb"}, Impl.SKB),
    HelperSpec("bpf_csum_level", (C, S), _TC, Impl.SKB),
    HelperSpec("bpf_redirect_neigh", (S, P, Z, S), _TC, Impl.SKB),
    HelperSpec("bpf_redirect_peer", (S, S), _TC, Impl.SKB),
    # xdp (issue 13): ebpfvm.xdp_helpers, registered by XdpRunner.
    HelperSpec("bpf_xdp_adjust_meta", (C, S), _XDP, Impl.XDP),
    HelperSpec("bpf_xdp_get_buff_len", (C,), _XDP, Impl.XDP),
    HelperSpec("bpf_xdp_load_bytes", (C, S, P, Z), _XDP, Impl.XDP),
    HelperSpec("bpf_xdp_store_bytes", (C, S, P, Z), _XDP, Impl.XDP),
    HelperSpec("bpf_redirect_map", (M, S, S), _XDP, Impl.XDP),
    # Both runners (issue 13), each with its own implementation for its context.
    HelperSpec("bpf_redirect", (S, S), _TC | _XDP, Impl.RUNNER),
    HelperSpec("bpf_check_mtu", (C, S, P, S, S), _TC | _XDP, Impl.RUNNER),
    HelperSpec("bpf_fib_lookup", (C, P, Z, S), _TC | _XDP, Impl.RUNNER),  # helpers3: tc's
    # callbacks (issue 13): helpers that call a function of the program
    HelperSpec("bpf_for_each_map_elem", (M, ArgKind.CALLBACK, P, S), BASE, Impl.CALLBACKS),
    HelperSpec("bpf_loop", (S, ArgKind.CALLBACK, P, S), BASE, Impl.CALLBACKS),
    # state (issue 13): the controllable environment's helpers
    HelperSpec("bpf_ktime_get_coarse_ns", (), BASE, Impl.KERNEL),
    HelperSpec("bpf_ktime_get_tai_ns", (), BASE, Impl.KERNEL),
    HelperSpec("bpf_get_numa_node_id", (), BASE, Impl.KERNEL),
    HelperSpec("bpf_map_lookup_percpu_elem", (M, P, S), BASE, Impl.MAPS),
    # cgroup (issue 13): cgroup local storage and spin locks, ebpfvm.cgroup_storage
    HelperSpec("bpf_get_local_storage", (M, S), frozenset({"cgroup_skb"}), Impl.MAPS),
    HelperSpec("bpf_spin_lock", (P,), BASE, Impl.MAPS),
    HelperSpec("bpf_spin_unlock", (P,), BASE, Impl.MAPS),
    # maps2 (issue 13): ebpfvm.perf (xdp, tc, socket filter and cgroup skb
    # func_protos offer it, as do tracing programs)
    HelperSpec("bpf_perf_event_output", (C, M, S, P, Z), BASE, Impl.MAPS),
    # helpers3 (issue 13 point 3): ebpfvm.strings, part of Impl.KERNEL
    HelperSpec("bpf_strtol", (P, Z, S, P), BASE, Impl.KERNEL),
    HelperSpec("bpf_strtoul", (P, Z, S, P), BASE, Impl.KERNEL),
    HelperSpec("bpf_strncmp", (P, Z, P), BASE, Impl.KERNEL),
    HelperSpec("bpf_snprintf", (P, Z, P, P, Z), BASE, Impl.KERNEL),
    # helpers4 (issue 13 point 3): the skb runner's
    HelperSpec("bpf_skb_get_tunnel_opt", (C, P, Z), _TC, Impl.SKB),
    HelperSpec("bpf_set_hash_invalid", (C,), _TC, Impl.SKB),
    HelperSpec("bpf_skb_set_tstamp", (C, S, S), _TC, Impl.SKB),
    HelperSpec("bpf_ringbuf_query", (M, S), BASE, Impl.MAPS),  # ebpfvm.dynptr
    HelperSpec("bpf_dynptr_from_mem", (P, Z, S, P), BASE, Impl.MAPS),
    HelperSpec("bpf_ringbuf_reserve_dynptr", (M, S, S, P), BASE, Impl.MAPS),
    HelperSpec("bpf_ringbuf_submit_dynptr", (P, S), BASE, Impl.MAPS),
    HelperSpec("bpf_ringbuf_discard_dynptr", (P, S), BASE, Impl.MAPS),
    HelperSpec("bpf_dynptr_read", (P, Z, P, S, S), BASE, Impl.MAPS),
    HelperSpec("bpf_dynptr_write", (P, S, P, Z, S), BASE, Impl.MAPS),
    HelperSpec("bpf_dynptr_data", (P, S, S), BASE, Impl.MAPS),
    HelperSpec("bpf_trace_vprintk", (P, Z, P, Z), BASE, Impl.KERNEL),
    # uringbuf: the user ring buffer's drain (ebpfvm.userringbuf) and the netns cookie
    HelperSpec("bpf_user_ringbuf_drain", (M, ArgKind.CALLBACK, P, S), BASE, Impl.CALLBACKS),
    HelperSpec("bpf_get_netns_cookie", (C,), _TC | _SOCKET, Impl.KERNEL),
    # timers: bpf_timer in map values, fired after runs (ebpfvm.timers)
    HelperSpec("bpf_timer_init", (P, M, S), BASE, Impl.TIMERS),
    HelperSpec("bpf_timer_set_callback", (P, ArgKind.CALLBACK), BASE, Impl.TIMERS),
    HelperSpec("bpf_timer_start", (P, S, S), BASE, Impl.TIMERS),
    HelperSpec("bpf_timer_cancel", (P,), BASE, Impl.TIMERS),
)

HELPERS: dict[int, HelperSpec] = {}
"""The helpers ebpfvm implements, by kernel number."""


def helper_number(name: str) -> int:
    """The kernel's number of helper `name` (``bpf_map_lookup_elem`` -> 1);
    KeyError for a name the kernel does not have."""
    return _NUMBERS[name]


def helper_name(number: int) -> str:
    """The kernel's name of helper `number` (``bpf_map_lookup_elem`` for 1)."""
    if 0 <= number < len(KERNEL_HELPER_NAMES):
        return KERNEL_HELPER_NAMES[number]
    return f"unknown helper {number}"


def register(spec: HelperSpec) -> None:
    """Add (or replace) a helper's row; its name must be a kernel helper's."""
    HELPERS[helper_number(spec.name)] = spec


for _spec in _ROWS:
    register(_spec)


def supported_helpers() -> frozenset[int]:
    """The numbers of every helper ebpfvm implements (the loader's check)."""
    return frozenset(HELPERS)


def helpers_of(impl: Impl) -> frozenset[int]:
    """The numbers of the helpers `impl` provides."""
    return frozenset(number for number, spec in HELPERS.items() if spec.impl is impl)


def allowed_helpers(prog_type: str) -> frozenset[int]:
    """The implemented helpers a program of type `prog_type` may call."""
    return frozenset(number for number, spec in HELPERS.items() if prog_type in spec.prog_types)


def _types_text(types: frozenset[str]) -> str:
    if types == BASE:
        return "all"
    if types == TRACING:
        return "tracing"
    return ", ".join(sorted(types))


def markdown_table() -> str:
    """The guide's helper table, generated from :data:`HELPERS`."""
    lines = ["| number | helper | arguments | program types | native |", "|---|---|---|---|---|"]
    for number, spec in sorted(HELPERS.items()):
        args = ", ".join(kind.value for kind in spec.args) or "none"
        native = "yes" if spec.native else ""
        lines.append(f"| {number} | `{spec.name}` | {args} | {_types_text(spec.prog_types)} "
                     f"| {native} |")
    return "\n".join(lines)
