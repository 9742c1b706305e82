"""The XDP helpers that work on the packet of one run (Impl.XDP): adjust the
head, tail and metadata, read and write the frame, redirect, check the MTU
and look up the routing table.

:class:`XdpHelpers` holds what one :class:`~ebpfvm.contexts.XdpRunner` gives
them: where its frame is, how far a run may grow the packet, the redirect
maps, the devices and the routing table. Every pointer argument is read and
written through :class:`~ebpfvm.helpers.HelperContext` (checked against the
run's regions), and every copy is charged to the run's budget. Return values
and limits follow the kernel's BPF_PROG_TEST_RUN (RFC 9669 section 5.3 names
helper calls; their semantics are the kernel's): a frame of one 4096-byte page
with 256 bytes of headroom, of which ``struct xdp_frame`` takes the first 40,
and ``skb_shared_info`` the last 320 bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import MapError
from .fib import fib_lookup
from .helper_table import helper_number
from .helpers import HelperContext
from .mapbase import BpfMap
from .native.binding import native_version

__all__ = [
    "BPF_FIB_LOOKUP_SIZE",
    "DEFAULT_DEVICES",
    "XDP_FRAME_RESERVED",
    "XDP_METADATA_MAX",
    "XDP_PAGE",
    "XDP_SHARED_INFO",
    "FibRoute",
    "Redirect",
    "XdpHelpers",
]

M64 = (1 << 64) - 1
EINVAL = 22
EFAULT = 14
ENODEV = 19
EACCES = 13
EAFNOSUPPORT = 97
ETH_HLEN = 14
XDP_PAGE = 4096
"""The frame of one XDP test run: headroom, packet and tailroom in one page."""
XDP_SHARED_INFO = 320
"""SKB_DATA_ALIGN(sizeof(struct skb_shared_info)): the end of the page the
packet may not grow into."""
XDP_FRAME_RESERVED = 40
"""sizeof(struct xdp_frame): the start of the headroom that neither data nor
data_meta may move into."""
XDP_METADATA_MAX = 252
"""The most metadata bytes bpf_xdp_adjust_meta allows: a multiple of 4 that
fits skb_shared_info's u8 meta_len (the headroom limits it further)."""
XDP_ABORTED, XDP_REDIRECT = 0, 4
XDP_ACTION_MASK = 3
"""The fallback actions bpf_redirect_map takes from its flags' low bits."""
BPF_F_BROADCAST = 1 << 3
BPF_F_EXCLUDE_INGRESS = 1 << 4
BPF_MTU_CHK_RET_FRAG_NEEDED = 1
BPF_FIB_LOOKUP_SIZE = 64
"""sizeof(struct bpf_fib_lookup)."""
BPF_FIB_LOOKUP_FLAGS = 0x3F
"""DIRECT, OUTPUT, SKIP_NEIGH, TBID, SRC and MARK: the flags the kernel knows."""
BPF_FIB_LKUP_RET_SUCCESS = 0
BPF_FIB_LKUP_RET_NOT_FWDED = 4
BPF_FIB_LKUP_RET_FWD_DISABLED = 5
BPF_FIB_LKUP_RET_FRAG_NEEDED = 8
AF_INET, AF_INET6 = 2, 10
DEFAULT_DEVICES: Mapping[int, int] = {1: 65536}
"""ifindex -> MTU of the devices a run knows: the test-run device, loopback
(ifindex 1, MTU 65536)."""
_REDIRECT_MAPS = {14: BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS,  # devmap
                  25: BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS,  # devmap_hash
                  16: 0, 17: 0}  # cpumap, xskmap
"""Redirect map types and the flags bpf_redirect_map takes for each."""


@dataclass(frozen=True)
class Redirect:
    """Where an XDP_REDIRECT run sends the packet: a device (`ifindex`, from
    bpf_redirect) or a map slot (`map` and `key`, from bpf_redirect_map; `key`
    None for a broadcast). BPF_PROG_TEST_RUN performs no redirect: this is
    the target the kernel would use."""

    ifindex: int | None = None
    map: str | None = None
    key: int | None = None
    flags: int = 0


@dataclass(frozen=True)
class FibRoute:
    """One route of the table bpf_fib_lookup searches: the destination
    network (``"10.0.0.0/8"``, ``"2001:db8::/32"``), the output device, the
    next hop (None: the destination itself), the MAC addresses the helper
    writes and the route's MTU (0: the device's). helpers3: `kind`
    ("unicast", "blackhole", "unreachable", "prohibit", or another type such
    as "local", which is not forwarded), `metric` (rt_metric; the lowest wins
    among equal prefixes), `neighbour` (False: the next hop has no neighbour
    entry, NO_NEIGH) and `src` (the preferred source address,
    BPF_FIB_LOOKUP_SRC); ebpfvm.fib has the lookup."""

    network: str
    ifindex: int
    gateway: str | None = None
    smac: bytes = bytes(6)
    dmac: bytes = bytes(6)
    mtu: int = 0
    kind: str = "unicast"
    metric: int = 0
    neighbour: bool = True
    src: str | None = None
    parsed: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed", ipaddress.ip_network(self.network, strict=False))


def _s32(value: int) -> int:
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >> 31 else value


def _err(errno: int) -> int:
    return -errno & M64


class XdpHelpers:
    """The XDP helpers of one runner. The runner sets `hard_start` (where the
    headroom starts), `limit` (the end of the memory the run may use) and
    `redirect` (cleared before each run) in guest addresses."""

    def __init__(self, maps: Iterable[BpfMap] = (), devices: Mapping[int, int] | None = None,
                 routes: Iterable[FibRoute] = (), forwarding: bool | None = None) -> None:
        self.maps = {found.handle: found for found in maps}
        self.devices = dict(DEFAULT_DEVICES if devices is None else devices)
        self.routes = tuple(routes)
        self.forwarding = bool(self.routes) if forwarding is None else forwarding
        """Whether the input device forwards (net.ipv4/ipv6 forwarding):
        off by default, as on a kernel's loopback device, on once routes are given."""
        self.hard_start = 0
        self.limit = 0
        self.redirect: Redirect | None = None

    def functions(self) -> dict[int, tuple[str, Any]]:
        """helper number -> (name, function taking the HelperContext first)."""
        table = {
            "bpf_xdp_adjust_head": self.adjust_head, "bpf_xdp_adjust_tail": self.adjust_tail,
            "bpf_xdp_adjust_meta": self.adjust_meta, "bpf_xdp_get_buff_len": self.buff_len,
            "bpf_xdp_load_bytes": self.load_bytes, "bpf_xdp_store_bytes": self.store_bytes,
            "bpf_redirect": self.redirect_dev, "bpf_redirect_map": self.redirect_map,
            "bpf_check_mtu": self.check_mtu, "bpf_fib_lookup": self.fib_lookup,
            "bpf_csum_diff": self.csum_diff, "bpf_get_cgroup_classid": self.cgroup_classid,
        }
        return {helper_number(name): (name, fn) for name, fn in table.items()}

    @staticmethod
    def cgroup_classid(*_args: Any) -> int:
        """bpf_get_cgroup_classid (helpers4): the running task's net_cls
        class id, 0 (no net_cls cgroup, as under a kernel test run from a
        cgroup v2 task)."""
        return 0

    # -- the packet's bounds ---------------------------------------------------

    @staticmethod
    def bounds(ctx: HelperContext, xdp: int) -> tuple[int, int, int]:
        """(data, data_end, data_meta) of the xdp_md at `xdp`."""
        data, data_end, meta = struct.unpack("<III", ctx.read(xdp, 12))
        return data, data_end, meta

    @staticmethod
    def _set(ctx: HelperContext, xdp: int, offset: int, value: int) -> None:
        ctx.write(xdp + offset, struct.pack("<I", value))

    def adjust_head(self, ctx: HelperContext, xdp: int, delta: int, *_rest: int) -> int:
        """bpf_xdp_adjust_head: move data by `delta` (s32), carrying the
        metadata with it; data stays after the reserved xdp_frame and an
        Ethernet header before data_end."""
        data, data_end, meta = self.bounds(ctx, xdp)
        metalen = data - meta
        new = data + _s32(delta)
        if new < self.hard_start + XDP_FRAME_RESERVED + metalen or new > data_end - ETH_HLEN:
            return _err(EINVAL)
        if metalen:
            ctx.charge_bytes(metalen)
            ctx.write(meta + _s32(delta), ctx.read(meta, metalen))
        self._set(ctx, xdp, 0, new)
        self._set(ctx, xdp, 8, meta + _s32(delta))
        return 0

    def adjust_meta(self, ctx: HelperContext, xdp: int, delta: int, *_rest: int) -> int:
        """bpf_xdp_adjust_meta: move data_meta by `delta` (s32): not before the
        reserved xdp_frame nor after data (EINVAL), and the metadata a
        multiple of 4 bytes of at most XDP_METADATA_MAX (EACCES)."""
        data, _end, meta = self.bounds(ctx, xdp)
        new = meta + _s32(delta)
        if new < self.hard_start + XDP_FRAME_RESERVED or new > data:
            return _err(EINVAL)
        metalen = data - new
        if metalen % 4 or metalen > XDP_METADATA_MAX:
            return _err(EACCES)
        self._set(ctx, xdp, 8, new)
        return 0

    def adjust_tail(self, ctx: HelperContext, xdp: int, delta: int, *_rest: int) -> int:
        """bpf_xdp_adjust_tail: move data_end by `delta` (s32), growing into
        the page (cleared bytes) but not into its skb_shared_info, and leaving
        at least an Ethernet header."""
        data, data_end, _meta = self.bounds(ctx, xdp)
        new = data_end + _s32(delta)
        page_end = max(self.hard_start + XDP_PAGE - XDP_SHARED_INFO, data_end)
        if new > min(page_end, self.limit) or new - data < ETH_HLEN:
            return _err(EINVAL)
        if new > data_end:
            ctx.charge_bytes(new - data_end)
            ctx.write(data_end, bytes(new - data_end))
        self._set(ctx, xdp, 4, new)
        return 0

    def buff_len(self, ctx: HelperContext, xdp: int, *_rest: int) -> int:
        """bpf_xdp_get_buff_len: data_end - data (frames are linear)."""
        data, data_end, _meta = self.bounds(ctx, xdp)
        return data_end - data

    def _span(self, ctx: HelperContext, xdp: int, offset: int, size: int) -> int | None:
        """The guest address of [offset, offset + size) of the packet, or
        None past its end; a negative errno beyond the kernel's 0xffff."""
        offset &= 0xFFFF_FFFF
        size &= 0xFFFF_FFFF
        if offset > 0xFFFF or size > 0xFFFF:
            return -EFAULT
        data, data_end, _meta = self.bounds(ctx, xdp)
        if offset + size > data_end - data:
            return -EINVAL
        ctx.charge_bytes(size)
        return data + offset

    def load_bytes(self, ctx: HelperContext, xdp: int, offset: int, to: int, size: int,
                   *_rest: int) -> int:
        """bpf_xdp_load_bytes: copy packet bytes to `to`; -EINVAL past the end."""
        start = self._span(ctx, xdp, offset, size)
        if start is None or start < 0:
            return _err(-(start or -EINVAL))
        ctx.write(to, ctx.read(start, size & 0xFFFF_FFFF))
        return 0

    def store_bytes(self, ctx: HelperContext, xdp: int, offset: int, source: int, size: int,
                    *_rest: int) -> int:
        """bpf_xdp_store_bytes: copy `size` bytes from `source` into the packet."""
        start = self._span(ctx, xdp, offset, size)
        if start is None or start < 0:
            return _err(-(start or -EINVAL))
        ctx.write(start, ctx.read(source, size & 0xFFFF_FFFF))
        return 0

    @staticmethod
    @native_version
    def csum_diff(ctx: HelperContext, removed: int, removed_size: int, added: int,
                  added_size: int, seed: int) -> int:
        """bpf_csum_diff (XDP and tc programs call it): -EINVAL unless both
        sizes are multiples of 4 and together at most 512 (the kernel's
        scratch area); the bytes are charged to the budget."""
        from .contexts import csum_diff

        if removed_size % 4 or added_size % 4 or removed_size + added_size > 512:
            return _err(EINVAL)
        ctx.charge_bytes(removed_size + added_size)
        return csum_diff(ctx.read(removed, removed_size), ctx.read(added, added_size), seed)

    # -- redirects ----------------------------------------------------------------

    def redirect_dev(self, _ctx: HelperContext, ifindex: int, flags: int, *_rest: int) -> int:
        """bpf_redirect (XDP's): XDP_ABORTED for any flag, else XDP_REDIRECT
        to device `ifindex`."""
        if flags:
            return XDP_ABORTED
        self.redirect = Redirect(ifindex=ifindex & 0xFFFF_FFFF)
        return XDP_REDIRECT

    def redirect_map(self, _ctx: HelperContext, handle: int, key: int, flags: int,
                     *_rest: int) -> int:
        """bpf_redirect_map: XDP_REDIRECT to a set slot of a devmap,
        devmap_hash, cpumap or xskmap (or a broadcast); an empty slot returns
        the flags' low bits, unknown flags XDP_ABORTED."""
        target = self.maps.get(handle)
        if target is None or target.type not in _REDIRECT_MAPS:
            raise MapError(f"no redirect map (devmap, cpumap, xskmap) has handle {handle:#x}")
        if flags & ~(XDP_ACTION_MASK | _REDIRECT_MAPS[target.type]):
            return XDP_ABORTED
        key &= 0xFFFF_FFFF
        if flags & BPF_F_BROADCAST:
            self.redirect = Redirect(map=target.name, flags=flags)
            return XDP_REDIRECT
        if target.get(key.to_bytes(4, "little")) is None:  # type: ignore[attr-defined]
            return flags & XDP_ACTION_MASK
        self.redirect = Redirect(map=target.name, key=key, flags=flags)
        return XDP_REDIRECT

    # -- devices and routes -------------------------------------------------------

    def _device(self, ifindex: int) -> int | None:
        """The MTU of device `ifindex` (0: the test-run device, loopback)."""
        return self.devices.get(ifindex or 1)

    def check_mtu(self, ctx: HelperContext, xdp: int, ifindex: int, mtu_len: int,
                  len_diff: int, flags: int) -> int:
        """bpf_check_mtu (XDP's): compare the L3 length (*mtu_len when not 0,
        else the frame less its Ethernet header) plus `len_diff` (s32) with
        the device's MTU, and write the MTU to *mtu_len. 1 (FRAG_NEEDED) when
        it is over, -EINVAL for any flag, -ENODEV for an unknown device."""
        if flags:
            return _err(EINVAL)
        mtu = self._device(ifindex & 0xFFFF_FFFF)
        if mtu is None:
            return _err(ENODEV)
        data, data_end, _meta = self.bounds(ctx, xdp)
        given = int.from_bytes(ctx.read(mtu_len, 4), "little")
        length = (given + ETH_HLEN if given else data_end - data) + _s32(len_diff)
        ctx.write(mtu_len, mtu.to_bytes(4, "little"))
        return BPF_MTU_CHK_RET_FRAG_NEEDED if length > mtu + ETH_HLEN else 0

    def fib_lookup(self, ctx: HelperContext, _xdp: int, params: int, plen: int,
                   flags: int, *_rest: int) -> int:
        """bpf_fib_lookup (XDP's: the route's MTU is always checked) against
        the runner's routes, devices and forwarding (ebpfvm.fib)."""
        return fib_lookup(ctx, params, plen, flags, self.routes, self.devices, self.forwarding,
                          None)
