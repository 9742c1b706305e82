"""bpf_fib_lookup against a routing table a runner is given, for XDP and for
tc programs (RFC 9669 section 5.3, helper functions; the semantics are the
kernel's bpf_xdp_fib_lookup and bpf_skb_fib_lookup).

The table is a tuple of :class:`~ebpfvm.xdp_helpers.FibRoute`, the devices
(ifindex -> MTU) and whether the input device forwards. The steps and their
answers follow the kernel's, in its order, and like the kernel the helper
writes into the caller's ``struct bpf_fib_lookup`` as it goes (a NO_NEIGH
answer leaves the output device and next hop written):

1. -EINVAL for a `plen` under 64 bytes or an unknown flag, -EAFNOSUPPORT for
   a family other than AF_INET / AF_INET6, -ENODEV for an unknown input
   device, FWD_DISABLED when it does not forward;
2. the longest matching prefix (the lowest metric among equals) in the
   table the flags name (DIRECT, TBID; OUTPUT: through that device); none:
   NOT_FWDED; a blackhole, unreachable or prohibit route: BLACKHOLE,
   UNREACHABLE or PROHIBIT; another type than unicast: NOT_FWDED;
3. the MTU check: XDP always, tc when tot_len is not 0 (tot_len over the
   route's MTU: FRAG_NEEDED with mtu_result, nothing else written);
4. rt_metric and the output ifindex, the gateway in place of the
   destination, the source address with BPF_FIB_LOOKUP_SRC (an IPv6 route
   without one: NO_SRC_ADDR);
5. unless BPF_FIB_LOOKUP_SKIP_NEIGH: NO_NEIGH when the next hop has no
   neighbour entry, else the MAC addresses;
6. SUCCESS: the VLAN fields cleared, mtu_result the route's MTU when it was
   checked; a tc lookup without tot_len instead checks the packet's length
   against the output device (its MTU plus the Ethernet and VLAN headers:
   FRAG_NEEDED over it) and writes that device's MTU.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from .helpers import HelperContext

__all__ = ["BPF_FIB_LOOKUP_SIZE", "FIB_RESULTS", "fib_lookup"]

M64 = (1 << 64) - 1
EINVAL, ENODEV, EAFNOSUPPORT = 22, 19, 97
AF_INET, AF_INET6 = 2, 10
BPF_FIB_LOOKUP_SIZE = 64
"""sizeof(struct bpf_fib_lookup)."""
BPF_FIB_LOOKUP_FLAGS = 0x3F
"""DIRECT, OUTPUT, SKIP_NEIGH, TBID, SRC and MARK: the flags the kernel knows."""
DIRECT, OUTPUT, SKIP_NEIGH, TBID, LOOKUP_SRC = 1, 1 << 1, 1 << 2, 1 << 3, 1 << 4
MAIN_TABLE, LOCAL_TABLE = 254, 255
FIB_RESULTS = {"success": 0, "blackhole": 1, "unreachable": 2, "prohibit": 3,
               "not_fwded": 4, "fwd_disabled": 5, "unsupp_lwt": 6, "no_neigh": 7,
               "frag_needed": 8, "no_src_addr": 9}
"""BPF_FIB_LKUP_RET_* by name."""
_REJECTS = {"blackhole", "unreachable", "prohibit"}
SKB_HEADERS = 14 + 4
"""What an skb may carry beyond the device's MTU: the Ethernet header and a VLAN tag."""


def _err(errno: int) -> int:
    return -errno & M64


def _table(routes: Sequence[Any], flags: int, raw: bytearray) -> Sequence[Any] | None:
    """The routes a lookup searches: the runner's one table, as the kernel
    searches its local and main tables (merged while no policy rule is
    added), with or without BPF_FIB_LOOKUP_DIRECT; with BPF_FIB_LOOKUP_TBID
    the table `tbid` (main 254 or local 255: the same; another: None, no
    such table). TBID zeroes tbid in `raw`."""
    if flags & DIRECT and flags & TBID:
        tbid = int.from_bytes(raw[48:52], "little")
        raw[48:52] = bytes(4)
        if tbid not in (MAIN_TABLE, LOCAL_TABLE):
            return None
    return routes


def _route(routes: Sequence[Any], family: int, raw: bytes | bytearray, oif: int | None) -> Any:
    """The route for the destination in `raw`: the longest prefix, then the
    lowest metric; None when none matches. With an output device `oif`
    (BPF_FIB_LOOKUP_OUTPUT), routes through another device do not match
    (blackhole, unreachable and prohibit routes have no device: they do)."""
    dst = ipaddress.ip_address(bytes(raw[32:36] if family == AF_INET else raw[32:48]))
    matches = [r for r in routes if r.parsed.version == dst.version and dst in r.parsed
               and (oif is None or r.ifindex == oif or r.kind in _REJECTS)]
    if not matches:
        return None
    return min(matches, key=lambda r: (-int(r.parsed.prefixlen), r.metric))


def _forward(raw: bytearray, route: Any, family: int, flags: int) -> int:
    """Steps 4 and 5 on `raw`: the result so far (SUCCESS, NO_NEIGH or
    NO_SRC_ADDR)."""
    struct.pack_into("<II", raw, 8, route.ifindex, route.metric)  # ifindex, rt_metric
    if route.gateway is not None:
        gateway = ipaddress.ip_address(route.gateway).packed
        if len(gateway) == 16:
            raw[0] = AF_INET6
        raw[32 : 32 + len(gateway)] = gateway  # the next hop replaces the destination
    if flags & LOOKUP_SRC:
        if route.src is not None:
            src = ipaddress.ip_address(route.src).packed
            raw[16 : 16 + len(src)] = src
        elif family == AF_INET6:
            return FIB_RESULTS["no_src_addr"]
        else:
            raw[16:20] = bytes(4)  # no preferred source: 0.0.0.0
    if flags & SKIP_NEIGH:
        return FIB_RESULTS["success"]
    if not route.neighbour:
        return FIB_RESULTS["no_neigh"]
    raw[52:58] = route.smac[:6].ljust(6, b"\0")
    raw[58:64] = route.dmac[:6].ljust(6, b"\0")
    return FIB_RESULTS["success"]


def fib_lookup(ctx: HelperContext, params: int, plen: int, flags: int, routes: Sequence[Any],
               devices: Mapping[int, int], forwarding: bool, skb_len: int | None) -> int:
    """bpf_fib_lookup on the struct at `params` (see the module docstring):
    `skb_len` is the packet's length for tc's variant, None for XDP's."""
    if plen & 0x8000_0000 or plen & 0xFFFF_FFFF < BPF_FIB_LOOKUP_SIZE \
            or flags & 0xFFFF_FFFF & ~BPF_FIB_LOOKUP_FLAGS:
        return _err(EINVAL)
    raw = bytearray(ctx.read(params, BPF_FIB_LOOKUP_SIZE))
    family, ifindex = raw[0], int.from_bytes(raw[8:12], "little")
    if family not in (AF_INET, AF_INET6):
        return _err(EAFNOSUPPORT)
    if ifindex not in devices:
        return _err(ENODEV)
    if not forwarding:
        return FIB_RESULTS["fwd_disabled"]
    table = _table(routes, flags, raw)
    if flags & DIRECT and flags & TBID:
        ctx.write(params + 48, bytes(4))  # the kernel zeroes tbid as it reads it
    route = None if table is None else _route(table, family, raw,
                                              ifindex if flags & OUTPUT else None)
    if route is None or route.kind not in _REJECTS | {"unicast"}:
        return FIB_RESULTS["not_fwded"]
    if route.kind != "unicast":
        return FIB_RESULTS[route.kind]
    tot_len = int.from_bytes(raw[6:8], "little")
    out_mtu = devices.get(route.ifindex, devices[ifindex])
    mtu = route.mtu or out_mtu
    if tot_len > mtu:  # tc checks only a given tot_len: 0 never is over
        ctx.write(params + 6, (mtu & 0xFFFF).to_bytes(2, "little"))
        return FIB_RESULTS["frag_needed"]
    result = _forward(raw, route, family, flags)
    if result == FIB_RESULTS["success"]:
        raw[48:52] = bytes(4)  # h_vlan_proto, h_vlan_TCI
        if skb_len is None or tot_len:
            struct.pack_into("<H", raw, 6, mtu & 0xFFFF)
        else:
            struct.pack_into("<H", raw, 6, out_mtu & 0xFFFF)
            if skb_len > out_mtu + SKB_HEADERS:
                result = FIB_RESULTS["frag_needed"]
    ctx.write(params, bytes(raw))
    return result
