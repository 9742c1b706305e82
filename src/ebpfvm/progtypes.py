"""The registry of program types: context layout, packet start, verdicts,
section names, runner and allowed helpers.

Each :class:`ProgType` says how a program of that type gets its input (its
context layout, and where the packet it sees starts), what its r0 means (a
:class:`Verdicts`), which ELF section names libbpf gives it, which runner
runs it, and which helpers it may call (from ebpfvm.helper_table). The
runners (ebpfvm.contexts), capture runs and the CLI read it.

To add a program type: register a ProgType (:func:`register`) naming its
context layout, verdicts, section names and runner (``"module:Class"``,
taking the VM and ``engine=``, with ``run(packet)`` and ``close()``); give
its helpers' rows the type's name in ebpfvm.helper_table.
"""

from __future__ import annotations

import fnmatch
import importlib
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .helper_table import allowed_helpers

__all__ = ["ETH_HLEN", "PROG_TYPES", "SKB_ARRAYS", "SKB_CB", "SKB_FIELDS", "SKB_FIELDS64",
           "SKB_LAYOUT", "XDP_MD",
           "XDP_MD_LAYOUT", "ContextLayout", "ProgType", "TcAction", "Verdicts", "XdpAction",
           "contexts", "pack_xdp_md", "prog_type", "prog_type_for_section", "register",
           "runner_class", "verdicts_of", "xdp_md_packer"]

ETH_HLEN = 14
"""The Ethernet header: where a socket filter's packet starts."""


class XdpAction(IntEnum):
    """XDP verdicts (enum xdp_action)."""

    ABORTED = 0
    DROP = 1
    PASS = 2
    TX = 3
    REDIRECT = 4


class TcAction(IntEnum):
    """tc verdicts (TC_ACT_*)."""

    UNSPEC = -1
    OK = 0
    RECLASSIFY = 1
    SHOT = 2
    PIPE = 3
    STOLEN = 4
    QUEUED = 5
    REPEAT = 6
    REDIRECT = 7


XDP_MD = struct.Struct("<6I")
"""struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
egress_ifindex (all u32). Packed only by :func:`xdp_md_packer`."""


def xdp_md_packer(slot: int = XDP_MD.size) -> Any:
    """``pack(buffer, offset, data, data_end, data_meta, ingress_ifindex,
    rx_queue_index, egress_ifindex)`` writing a struct xdp_md and zeros up to
    `slot` bytes (a Struct's bound pack_into: no Python frame per packet)."""
    return struct.Struct(XDP_MD.format + f"{slot - XDP_MD.size}x").pack_into


_PACK_XDP_MD = xdp_md_packer()


def pack_xdp_md(buffer: Any, offset: int, data: int, data_end: int,
                ingress_ifindex: int = 1, rx_queue_index: int = 0,
                data_meta: int | None = None) -> None:
    """Write the xdp_md of a packet at [data, data_end) (no egress device) at
    `offset` of `buffer`; without `data_meta` there is no metadata (data_meta
    is data)."""
    _PACK_XDP_MD(buffer, offset, data, data_end, data if data_meta is None else data_meta,
                 ingress_ifindex, rx_queue_index, 0)


@dataclass(frozen=True)
class ContextLayout:
    """A context struct: its C name, size, and the offsets of its u32 fields."""

    name: str
    size: int
    fields: dict[str, int]


XDP_MD_LAYOUT = ContextLayout("xdp_md", XDP_MD.size, {
    "data": 0, "data_end": 4, "data_meta": 8, "ingress_ifindex": 12, "rx_queue_index": 16,
    "egress_ifindex": 20})
SKB_FIELDS = {  # offsetof(struct __sk_buff, field), from linux/bpf.h
    "len": 0, "pkt_type": 4, "mark": 8, "queue_mapping": 12, "protocol": 16,
    "vlan_present": 20, "vlan_tci": 24, "vlan_proto": 28, "priority": 32,
    "ingress_ifindex": 36, "ifindex": 40, "tc_index": 44, "hash": 68, "tc_classid": 72,
    "data": 76, "data_end": 80, "napi_id": 84, "family": 88, "data_meta": 140, "wire_len": 160,
    "remote_ip4": 92, "local_ip4": 96, "remote_port": 132, "local_port": 136, "gso_segs": 164,
    "gso_size": 176, "tstamp_type": 180,
}
SKB_FIELDS64 = {"flow_keys": 144, "tstamp": 152, "sk": 168, "hwtstamp": 184}
"""The u64 fields (and pointers) of struct __sk_buff, by offset."""
SKB_ARRAYS = {"cb": (48, 5), "remote_ip6": (100, 4), "local_ip6": (116, 4)}
"""The u32 arrays of struct __sk_buff: (offset, count)."""
SKB_CB = 48
"""offsetof(struct __sk_buff, cb): five u32 words."""
SKB_LAYOUT = ContextLayout("__sk_buff", 192, SKB_FIELDS)


@dataclass(frozen=True)
class Verdicts:
    """What r0 means: `actions` names it (with `prefix`) and `passing` lets the
    packet go on; without `actions`, r0 is the bytes kept (0 drops)."""

    key: str
    """"xdp", "tc" or "none": the name capture runs and the CLI use."""
    actions: type[IntEnum] | None = None
    prefix: str = ""
    passing: int | None = None

    def name(self, r0: int) -> str:
        """``XDP_PASS``, ``TC_ACT_SHOT``..., or the number when r0 names none."""
        if self.actions is None:
            return str(r0)
        value = r0 & 0xFFFF_FFFF
        value = value - (1 << 32) if value >> 31 else value
        try:
            return self.prefix + self.actions(value).name
        except ValueError:
            return str(r0)

    def passes(self, r0: int) -> bool:
        """Whether the packet goes on (any nonzero r0 for bytes kept)."""
        if self.passing is None:
            return r0 != 0
        return r0 & 0xFFFF_FFFF == self.passing & 0xFFFF_FFFF


XDP_VERDICTS = Verdicts("xdp", XdpAction, "XDP_", XdpAction.PASS)
TC_VERDICTS = Verdicts("tc", TcAction, "TC_ACT_", TcAction.OK)
BYTES_KEPT = Verdicts("none")
"""A socket filter's r0: how many bytes of the packet to keep (0 drops it)."""
_VERDICTS = {v.key: v for v in (XDP_VERDICTS, TC_VERDICTS, BYTES_KEPT)}


def verdicts_of(key: str) -> Verdicts:
    """The Verdicts named `key` ("xdp", "tc"; anything else: bytes kept)."""
    return _VERDICTS.get(key, BYTES_KEPT)


@dataclass(frozen=True)
class ProgType:
    """One program type (the kernel's BPF_PROG_TYPE_*, in lower case)."""

    name: str
    context: str
    """How a runner hands the context: "xdp" (struct xdp_md) or "skb"."""
    layout: ContextLayout
    verdicts: Verdicts
    sections: tuple[str, ...]
    """Section names (before any "/"), fnmatch patterns ("xdp*")."""
    runner: str
    """The runner class, ``"module:Class"``."""
    packet_offset: int = 0
    """Where the packet the program sees starts in the frame: 0 (the Ethernet
    header), or ETH_HLEN for a socket filter (the network header)."""

    @property
    def allowed_helpers(self) -> frozenset[int]:
        """The implemented helpers this type may call (ebpfvm.helper_table)."""
        return allowed_helpers(self.name)

    def matches(self, section: str) -> bool:
        """Whether libbpf gives a program in `section` this type."""
        head = section.split("/")[0]
        return any(fnmatch.fnmatchcase(head, pattern) for pattern in self.sections)


PROG_TYPES: dict[str, ProgType] = {}
"""The program types, by name, in the order sections are matched."""


def register(prog_type: ProgType) -> None:
    """Add (or replace) a program type."""
    PROG_TYPES[prog_type.name] = prog_type


_XDP_RUNNER = "ebpfvm.contexts:XdpRunner"
_SKB_RUNNER = "ebpfvm.contexts:SkbRunner"
for _type in (
    ProgType("xdp", "xdp", XDP_MD_LAYOUT, XDP_VERDICTS, ("xdp*",), _XDP_RUNNER),
    ProgType("sched_cls", "skb", SKB_LAYOUT, TC_VERDICTS, ("tc", "tcx", "classifier",
                                                          ".classifier"), _SKB_RUNNER),
    ProgType("sched_act", "skb", SKB_LAYOUT, TC_VERDICTS, ("action",), _SKB_RUNNER),
    # A socket filter sees the packet from its network header and returns
    # the bytes kept (BYTES_KEPT).
    ProgType("socket_filter", "skb", SKB_LAYOUT, BYTES_KEPT, ("socket",), _SKB_RUNNER,
             packet_offset=ETH_HLEN),
    # r0 is SK_PASS/SK_DROP (sk_skb) or 1/0 (cgroup_skb); runs name it as tc's.
    ProgType("sk_skb", "skb", SKB_LAYOUT, TC_VERDICTS, ("sk_skb",), _SKB_RUNNER),
    ProgType("cgroup_skb", "skb", SKB_LAYOUT, TC_VERDICTS, ("cgroup_skb",), _SKB_RUNNER,
             packet_offset=ETH_HLEN),
):
    register(_type)


def prog_type(name: str) -> ProgType:
    """The program type called `name` (KeyError when none is)."""
    return PROG_TYPES[name]


def prog_type_for_section(section: str) -> ProgType | None:
    """The program type of a program in ELF section `section`, or None."""
    return next((found for found in PROG_TYPES.values() if found.matches(section)), None)


def contexts() -> tuple[str, ...]:
    """The context kinds of the registered program types ("xdp", "skb"...)."""
    return tuple(dict.fromkeys(found.context for found in PROG_TYPES.values()))


def runner_class(context: str) -> Any:
    """The runner class of the first program type with context `context`
    (KeyError when no program type has it)."""
    found = next((found for found in PROG_TYPES.values() if found.context == context), None)
    if found is None:
        raise KeyError(f"no program type has context {context!r}")
    module, _, name = found.runner.partition(":")
    return getattr(importlib.import_module(module), name)
