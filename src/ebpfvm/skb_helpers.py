"""The packet of an SkbRunner run and the helpers that read or change it.

:class:`SkbPacket` keeps the packet in the runner's frame between a headroom
and a tailroom: ``data`` and ``end`` are offsets in the frame, ``mac`` is
where the frame the runner was given starts (a socket filter's ``data`` is
14 bytes after it, at the network header). Frame-changing helpers
(``bpf_skb_change_head``, ``bpf_skb_adjust_room``...) rewrite the packet in
place and update the ``__sk_buff`` (``len``, ``data``, ``data_end``,
``protocol``...), as the kernel does; programs may not keep packet pointers
across such a call (the kernel's verifier invalidates them).

:class:`SkbHelpers` implements the helpers with the kernel's flags and return
values (helper calls: RFC 9669 section 4.3.1 leaves their semantics to the
platform; these follow Linux's). What a helper does that a test run cannot
show in the frame is recorded in :class:`SkbRecord`: the redirect target,
cloned packets, tunnel metadata.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .helpers import HelperContext
from .progtypes import ETH_HLEN, SKB_FIELDS, SKB_FIELDS64

__all__ = ["CSUM_NONE", "CSUM_UNNECESSARY", "Redirect", "SkbHelpers", "SkbPacket", "SkbRecord",
           "TunnelKey", "csum_replace", "packet_type"]

M64 = (1 << 64) - 1
ENOENT, EFAULT, ENOMEM, EACCES, ENODEV, EINVAL, EPROTO = 2, 14, 12, 13, 19, 22, 71
EOPNOTSUPP = 95
ENOTSUPP = 524
INT_MAX = 0x7FFF_FFFF
TC_ACT_SHOT, TC_ACT_REDIRECT = 2, 7
BPF_F_HDR_FIELD_MASK = 0xF
BPF_F_PSEUDO_HDR = 1 << 4
BPF_F_MARK_MANGLED_0 = 1 << 5
BPF_F_MARK_ENFORCE = 1 << 6
BPF_F_IPV6 = 1 << 7
BPF_F_RECOMPUTE_CSUM = 1
BPF_F_INVALIDATE_HASH = 2
BPF_F_INGRESS = 1
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
ETH_P_8021Q, ETH_P_8021AD = 0x8100, 0x88A8
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST = 0, 1, 2, 3
LOOPBACK_ADDRESS = bytes(6)
"""The test-run device's MAC address (the loopback device's)."""


def packet_type(frame: bytes) -> int:
    """skb->pkt_type as the kernel's Ethernet receive sets it from the
    destination address, on the loopback device."""
    dest = frame[:6]
    if dest == LOOPBACK_ADDRESS:
        return PACKET_HOST
    if dest[:1] and dest[0] & 1:  # (a frame shorter than a MAC address: other host)
        return PACKET_BROADCAST if dest == b"\xff" * 6 else PACKET_MULTICAST
    return PACKET_OTHERHOST
CSUM_NONE, CSUM_UNNECESSARY, CSUM_COMPLETE = 0, 1, 2
SKB_MAX_CSUM_LEVEL = 3
TUNNEL_KEY_SIZE = 44
"""sizeof(struct bpf_tunnel_key)."""
_TUNNEL_COMPAT_SIZES = (22, 24, 28)
"""offsetof(tunnel_ext), offsetof(tunnel_label), offsetof(local_ipv4): older
struct bpf_tunnel_key sizes the kernel still accepts (IPv4 only)."""
_TUNNEL_FLAGS = 0x1F
"""BPF_F_TUNINFO_IPV6 | ZERO_CSUM_TX | DONT_FRAGMENT | SEQ_NUMBER | NO_TUNNEL_KEY."""
IP_TUNNEL_OPTS_MAX = 255
ADJ_ROOM_FLAGS = 0x1FF | (0xFF << 56)
"""BPF_F_ADJ_ROOM_*: FIXED_GSO .. DECAP_L3_IPV6, and ENCAP_L2(len) in bits 56-63."""
ADJ_ENCAP_L3_IPV4, ADJ_ENCAP_L3_IPV6 = 2, 4
ADJ_ENCAP_L4_GRE, ADJ_ENCAP_L4_UDP = 8, 16
ADJ_NO_CSUM_RESET, ADJ_ENCAP_L2_ETH = 32, 64
ADJ_DECAP_L3_IPV4, ADJ_DECAP_L3_IPV6 = 128, 256
BPF_MTU_CHK_SEGS = 1
LOOPBACK_MTU = 65536
"""The test-run device: the loopback device, ifindex 1."""


def _s32(value: int) -> int:
    value &= 0xFFFF_FFFF
    return value - (1 << 32) if value >> 31 else value


def _err(errno: int) -> int:
    return -errno & M64


def _csum_add(total: int, value: int) -> int:
    total += value
    return (total & 0xFFFF_FFFF) + (total >> 32)


def _fold(total: int) -> int:
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return total & 0xFFFF


def csum_replace(old: int, removed: int, added: int, size: int) -> int:
    """RFC 1624 incremental update of a 16-bit ones'-complement checksum
    `old` (as it sits in memory, read little-endian): `removed` and `added`
    are 2- or 4-byte values as they sit in memory, or for `size` 0 `added` is
    a 32-bit checksum difference (bpf_csum_diff's result)."""
    total = ~old & 0xFFFF
    if size == 0:
        total = _csum_add(total, added & 0xFFFF_FFFF)
    else:
        mask = (1 << (size * 8)) - 1
        total = _csum_add(_csum_add(total, ~removed & mask), added & mask)
    return ~_fold(total) & 0xFFFF


@dataclass(frozen=True)
class Redirect:
    """A redirect the program asked for: the helper, the target ifindex and
    its flags (BPF_F_INGRESS...). A test run performs none."""

    helper: str
    ifindex: int
    flags: int = 0


@dataclass(frozen=True)
class TunnelKey:
    """The tunnel metadata bpf_skb_set_tunnel_key set (struct bpf_tunnel_key
    decoded; addresses as bytes in network order)."""

    tunnel_id: int
    remote: bytes
    tos: int
    ttl: int
    tunnel_ext: int
    label: int
    local: bytes
    flags: int
    options: bytes = b""
    options_present: bool = False
    """Whether a non-empty bpf_skb_set_tunnel_opt set the key's options flag
    (an empty one later keeps it: the kernel only ever sets the flag)."""


@dataclass
class SkbRecord:
    """What the helpers of one run did besides the frame and the context."""

    redirect: Redirect | None = None
    clones: list[Redirect] = field(default_factory=list)
    tunnel: TunnelKey | None = None
    hash: int = 0
    csum: tuple[int, int] = (CSUM_NONE, 0)
    """(ip_summed, csum_level): CHECKSUM_NONE under a test run."""


class SkbPacket:
    """The packet in its frame: [data, end) at offsets of `view`, between
    `low` (start of the headroom) and `high` (end of the tailroom); `mac`
    bytes of link-layer header lie before data (a socket filter's)."""

    def __init__(self, view: memoryview, base: int, low: int, high: int) -> None:
        self.view = view
        self.base = base
        self.low = low
        self.high = high
        self.data = low
        self.end = low
        self.mac = 0
        self.protocol = 0
        self.pkt_type = PACKET_HOST
        self.vlan: tuple[int, int] | None = None
        self.reach = (low, low)
        """The frame offsets the run's memory regions cover."""

    @property
    def length(self) -> int:
        """skb->len: the bytes from data to the end."""
        return self.end - self.data

    def span(self, offset: int, size: int) -> tuple[int, int] | None:
        """Frame offsets of [offset, offset + size) from data, or None past the end."""
        if offset < 0 or size < 0 or self.data + offset + size > self.end:
            return None
        return self.data + offset, self.data + offset + size

    def frame(self, start: int = 0) -> bytes:
        """The packet from data (start: the offset from data)."""
        return bytes(self.view[self.data + start : self.end])

    def replace(self, new: bytes) -> bool:
        """Make `new` the packet at data (False when it does not fit)."""
        if self.data + len(new) > self.high:
            return False
        self.view[self.data : self.data + len(new)] = new
        if self.data + len(new) < self.end:
            self.view[self.data + len(new) : self.end] = bytes(self.end - self.data - len(new))
        self.end = self.data + len(new)
        return True

    def sync(self, skb: memoryview) -> None:
        """Write the fields the packet decides into the __sk_buff."""
        data, end = self.base + self.data, self.base + self.end
        protocol = int.from_bytes((self.protocol & 0xFFFF).to_bytes(2, "big"), "little")
        for name, value in (("len", self.length), ("data", data), ("data_end", end),
                            ("data_meta", data), ("protocol", protocol),
                            ("pkt_type", self.pkt_type)):
            struct.pack_into("<I", skb, SKB_FIELDS[name], value & 0xFFFF_FFFF)
        proto, tci = self.vlan if self.vlan is not None else (0, 0)
        struct.pack_into("<III", skb, SKB_FIELDS["vlan_present"], self.vlan is not None, tci,
                         proto)

    def network_offset(self) -> int:
        """The network header's offset from data (negative: before it)."""
        return ETH_HLEN - self.mac


Fn = Callable[..., int]


class SkbHelpers:
    """The skb helpers of one runner, over its packet and record. `skb` is
    the __sk_buff view the packet's fields are written back to."""

    def __init__(self, packet: SkbPacket, skb: memoryview, mtus: dict[int, int],
                 cookie: int) -> None:
        self.packet = packet
        self.skb = skb
        self.mtus = mtus
        self.cookie = cookie
        self.record = SkbRecord()

    def functions(self) -> dict[str, Fn]:
        """Every helper, by kernel name (each takes the HelperContext first)."""
        return {"bpf_" + name: getattr(self, name) for name in self.NAMES}

    NAMES: tuple[str, ...] = (
        "skb_load_bytes", "skb_store_bytes", "l3_csum_replace", "l4_csum_replace", "redirect",
        "redirect_peer", "redirect_neigh", "clone_redirect", "skb_set_tunnel_key",
        "skb_get_tunnel_key", "skb_set_tunnel_opt", "skb_get_tunnel_opt", "skb_load_bytes_relative", "csum_update",
        "csum_level", "set_hash", "set_hash_invalid", "skb_set_tstamp", "get_hash_recalc", "check_mtu", "skb_ecn_set_ce",
        "get_cgroup_classid", "get_route_realm", "get_socket_cookie")
    """The helpers (kernel names without bpf_) this class implements."""

    def _changed(self, ctx: HelperContext) -> None:
        """After a frame change: charge it, rewrite the __sk_buff, and let the
        program reach a packet grown past what the run gave it."""
        packet = self.packet
        ctx.charge_bytes(packet.length)
        packet.sync(self.skb)
        low, high = packet.reach
        if packet.data < low or packet.end > high:
            low, high = min(low, packet.data), max(high, packet.end)
            ctx.add_region(packet.view[low:high], "packet")
            packet.reach = (low, high)
        ctx.set_packet(packet.view[packet.data : packet.end])  # LD_ABS/LD_IND read it

    # -- bytes ----------------------------------------------------------------------

    def skb_load_bytes(self, ctx: HelperContext, _skb: int, offset: int, to: int, size: int,
                       *_rest: int) -> int:
        """bpf_skb_load_bytes: copy from data + offset; past the end, zeros and -EFAULT."""
        size, offset = size & 0xFFFF_FFFF, offset & 0xFFFF_FFFF
        span = self.packet.span(offset, size) if offset <= INT_MAX else None
        ctx.charge_bytes(size)
        if span is None:
            ctx.write(to, bytes(size))
            return _err(EFAULT)
        ctx.write(to, bytes(self.packet.view[span[0] : span[1]]))
        return 0

    def skb_store_bytes(self, ctx: HelperContext, _skb: int, offset: int, source: int,
                        size: int, flags: int) -> int:
        """bpf_skb_store_bytes: write at data + offset (flags RECOMPUTE_CSUM,
        INVALIDATE_HASH)."""
        if flags & ~(BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH):
            return _err(EINVAL)
        size, offset = size & 0xFFFF_FFFF, offset & 0xFFFF_FFFF
        span = self.packet.span(offset, size) if offset <= INT_MAX else None
        if span is None:
            return _err(EFAULT)
        ctx.charge_bytes(size)
        self.packet.view[span[0] : span[1]] = ctx.read(source, size)
        if flags & BPF_F_INVALIDATE_HASH:
            self.record.hash = 0
        return 0

    def load_bytes_relative(self, ctx: HelperContext, offset: int, to: int, size: int,
                            header: int) -> int:
        size, offset = size & 0xFFFF_FFFF, offset & 0xFFFF_FFFF
        start = {0: -self.packet.mac, 1: self.packet.network_offset()}.get(header)
        ctx.charge_bytes(size)
        if start is None or offset > 0xFFFF:
            ctx.write(to, bytes(size))
            return _err(EFAULT)
        low = self.packet.data + start + offset
        if low < self.packet.data - self.packet.mac or low + size > self.packet.end:
            ctx.write(to, bytes(size))
            return _err(EFAULT)
        ctx.write(to, bytes(self.packet.view[low : low + size]))
        return 0

    def skb_load_bytes_relative(self, ctx: HelperContext, _skb: int, offset: int, to: int,
                                size: int, header: int) -> int:
        """bpf_skb_load_bytes_relative: from the MAC (0) or network (1) header."""
        return self.load_bytes_relative(ctx, offset, to, size, header)

    # -- checksums ------------------------------------------------------------------

    def _csum_field(self, offset: int) -> tuple[int, int] | None:
        offset &= 0xFFFF_FFFF
        return self.packet.span(offset, 2) if offset <= 0xFFFF and not offset & 1 else None

    def l3_csum_replace(self, _ctx: HelperContext, _skb: int, offset: int, removed: int,
                        added: int, flags: int) -> int:
        """bpf_l3_csum_replace: update the checksum at data + offset."""
        if flags & ~BPF_F_HDR_FIELD_MASK:
            return _err(EINVAL)
        span = self._csum_field(offset)
        if span is None:
            return _err(EFAULT)
        size = flags & BPF_F_HDR_FIELD_MASK
        if size not in (0, 2, 4) or (size == 0 and removed):
            return _err(EINVAL)
        view = self.packet.view
        old = int.from_bytes(view[span[0] : span[1]], "little")
        view[span[0] : span[1]] = csum_replace(old, removed, added, size).to_bytes(2, "little")
        return 0

    def l4_csum_replace(self, _ctx: HelperContext, _skb: int, offset: int, removed: int,
                        added: int, flags: int) -> int:
        """bpf_l4_csum_replace: as l3, with MARK_MANGLED_0 (a zero checksum,
        UDP's "none", stays zero unless MARK_ENFORCE; a result of zero is
        stored as 0xffff) and PSEUDO_HDR (no effect on the field without
        checksum offload)."""
        allowed = (BPF_F_MARK_MANGLED_0 | BPF_F_MARK_ENFORCE | BPF_F_PSEUDO_HDR
                   | BPF_F_HDR_FIELD_MASK | BPF_F_IPV6)
        if flags & ~allowed:
            return _err(EINVAL)
        span = self._csum_field(offset)
        if span is None:
            return _err(EFAULT)
        view = self.packet.view
        old = int.from_bytes(view[span[0] : span[1]], "little")
        mangled = bool(flags & BPF_F_MARK_MANGLED_0)
        if mangled and not flags & BPF_F_MARK_ENFORCE and old == 0:
            return 0
        size = flags & BPF_F_HDR_FIELD_MASK
        if size not in (0, 2, 4) or (size == 0 and removed):
            return _err(EINVAL)
        new = csum_replace(old, removed, added, size)
        if mangled and new == 0:
            new = 0xFFFF
        view[span[0] : span[1]] = new.to_bytes(2, "little")
        return 0

    def csum_update(self, _ctx: HelperContext, _skb: int, csum: int, *_rest: int) -> int:
        """bpf_csum_update: only for CHECKSUM_COMPLETE packets (-ENOTSUPP here)."""
        if self.record.csum[0] != CSUM_COMPLETE:
            return _err(ENOTSUPP)
        return csum & 0xFFFF_FFFF  # pragma: no cover - no run starts with COMPLETE

    def csum_level(self, _ctx: HelperContext, _skb: int, level: int, *_rest: int) -> int:
        """bpf_csum_level: query (0), inc (1), dec (2), reset (3) the
        CHECKSUM_UNNECESSARY level."""
        summed, count = self.record.csum
        unnecessary = summed == CSUM_UNNECESSARY
        if level == 0:
            return count if unnecessary else _err(EACCES)
        if level == 1:
            if unnecessary:
                count = min(count + 1, SKB_MAX_CSUM_LEVEL)
            elif summed == CSUM_NONE:
                summed, count = CSUM_UNNECESSARY, 0
        elif level == 2:
            if unnecessary:
                summed, count = (CSUM_NONE, 0) if count == 0 else (summed, count - 1)
        elif level == 3:
            if unnecessary:
                summed, count = CSUM_NONE, 0
        else:
            return _err(EINVAL)
        self.record.csum = (summed, count)
        return 0

    # -- redirects and tunnels -----------------------------------------------------

    def redirect(self, _ctx: HelperContext, ifindex: int, flags: int, *_rest: int) -> int:
        """bpf_redirect: TC_ACT_REDIRECT, the target recorded (TC_ACT_SHOT
        for flags other than BPF_F_INGRESS)."""
        if flags & ~BPF_F_INGRESS:
            return TC_ACT_SHOT
        self.record.redirect = Redirect("bpf_redirect", ifindex & 0xFFFF_FFFF, flags)
        return TC_ACT_REDIRECT

    def redirect_peer(self, _ctx: HelperContext, ifindex: int, flags: int, *_rest: int) -> int:
        """bpf_redirect_peer: as bpf_redirect, no flags allowed."""
        if flags:
            return TC_ACT_SHOT
        self.record.redirect = Redirect("bpf_redirect_peer", ifindex & 0xFFFF_FFFF, 0)
        return TC_ACT_REDIRECT

    def redirect_neigh(self, ctx: HelperContext, ifindex: int, params: int, size: int,
                       flags: int, *_rest: int) -> int:
        """bpf_redirect_neigh: params is NULL with size 0, or a 20-byte struct
        bpf_redir_neigh; no flags."""
        if flags or (not params and size) or (params and size != 20):
            return TC_ACT_SHOT
        if params:
            ctx.read(params, size)
        self.record.redirect = Redirect("bpf_redirect_neigh", ifindex & 0xFFFF_FFFF, 0)
        return TC_ACT_REDIRECT

    def clone_redirect(self, _ctx: HelperContext, _skb: int, ifindex: int, flags: int,
                       *_rest: int) -> int:
        """bpf_clone_redirect: the copy is recorded, not sent (-EINVAL for
        ifindex 0, which names no device, or flags besides BPF_F_INGRESS)."""
        if flags & ~BPF_F_INGRESS or not ifindex & 0xFFFF_FFFF:
            return _err(EINVAL)
        self.record.clones.append(Redirect("bpf_clone_redirect", ifindex & 0xFFFF_FFFF, flags))
        return 0

    def skb_set_tunnel_key(self, ctx: HelperContext, _skb: int, key: int, size: int,
                           flags: int, *_rest: int) -> int:
        """bpf_skb_set_tunnel_key: record struct bpf_tunnel_key (or an older,
        shorter one, IPv4 only)."""
        if flags & ~_TUNNEL_FLAGS:
            return _err(EINVAL)
        if size != TUNNEL_KEY_SIZE and (size not in _TUNNEL_COMPAT_SIZES or flags & 1):
            return _err(EINVAL)
        raw = ctx.read(key, size) + bytes(TUNNEL_KEY_SIZE - size)
        tunnel_id, remote, tos, ttl, ext, label, local = struct.unpack("<I16sBBHI16s", raw)
        ipv6 = bool(flags & 1)
        self.record.tunnel = TunnelKey(tunnel_id, remote if ipv6 else remote[:4], tos, ttl, ext,
                                       label & 0xFFFFF if ipv6 else 0,
                                       local if ipv6 else local[:4], flags)
        return 0

    def skb_get_tunnel_key(self, ctx: HelperContext, _skb: int, to: int, size: int,
                           flags: int, *_rest: int) -> int:
        """bpf_skb_get_tunnel_key: the key set in this run, else zeros and
        -EINVAL (no tunnel metadata: the kernel's answer under a test run)."""
        tunnel = self.record.tunnel
        fits = size == TUNNEL_KEY_SIZE or (size in _TUNNEL_COMPAT_SIZES and not flags & 1)
        if tunnel is None or not fits or flags & ~0x11:
            ctx.write(to, bytes(size))
            return _err(EINVAL)
        if bool(flags & 1) != bool(tunnel.flags & 1):
            ctx.write(to, bytes(size))
            return _err(EPROTO)
        raw = struct.pack("<I16sBBHI16s", tunnel.tunnel_id, tunnel.remote, tunnel.tos,
                          tunnel.ttl, tunnel.tunnel_ext, tunnel.label, tunnel.local)
        ctx.write(to, raw[:size])
        return 0

    def skb_set_tunnel_opt(self, ctx: HelperContext, _skb: int, source: int, size: int,
                           *_rest: int) -> int:
        """bpf_skb_set_tunnel_opt: options of the key set in this run."""
        tunnel = self.record.tunnel
        if tunnel is None:
            return _err(EINVAL)
        if size & 3:
            return _err(EINVAL)
        if size > IP_TUNNEL_OPTS_MAX:
            return _err(ENOMEM)
        options = ctx.read(source, size)
        present = tunnel.options_present or size > 0
        self.record.tunnel = TunnelKey(**{**tunnel.__dict__, "options": options,
                                          "options_present": present})
        return 0

    def skb_get_tunnel_opt(self, ctx: HelperContext, _skb: int, to: int, size: int,
                           *_rest: int) -> int:
        """bpf_skb_get_tunnel_opt: copy the options set in this run, zero the
        rest of the buffer and return their length; -ENOENT without options
        (a test run's packet has none), -ENOMEM when they do not fit (both
        with the buffer zeroed)."""
        tunnel = self.record.tunnel
        if tunnel is None or not tunnel.options_present:
            ctx.write(to, bytes(size))
            return _err(ENOENT)
        options = tunnel.options
        if size < len(options):
            ctx.write(to, bytes(size))
            return _err(ENOMEM)
        ctx.charge_bytes(size)
        ctx.write(to, options + bytes(size - len(options)))
        return len(options)

    # -- hashes, cookies, devices -------------------------------------------------

    def set_hash(self, _ctx: HelperContext, _skb: int, value: int, *_rest: int) -> int:
        """bpf_set_hash: skb->hash = value."""
        self.record.hash = value & 0xFFFF_FFFF
        struct.pack_into("<I", self.skb, SKB_FIELDS["hash"], self.record.hash)
        return 0

    def set_hash_invalid(self, _ctx: HelperContext, *_args: int) -> int:
        """bpf_set_hash_invalid: clear skb->hash (the next
        bpf_get_hash_recalc computes it again)."""
        self.record.hash = 0
        struct.pack_into("<I", self.skb, SKB_FIELDS["hash"], 0)
        return 0

    def skb_set_tstamp(self, _ctx: HelperContext, _skb: int, tstamp: int, tstamp_type: int,
                       *_rest: int) -> int:
        """bpf_skb_set_tstamp: __sk_buff.tstamp and tstamp_type for an IPv4
        or IPv6 packet (else -EOPNOTSUPP); the types are realtime (0, any
        time), monotonic (1) and TAI (2), these two with a time other than 0
        (else, and for other types, -EINVAL)."""
        if self.packet.protocol not in (ETH_P_IP, ETH_P_IPV6):
            return _err(EOPNOTSUPP)
        kind = tstamp_type & 0xFFFF_FFFF
        if kind > 2 or (kind and not tstamp):
            return _err(EINVAL)
        struct.pack_into("<Q", self.skb, SKB_FIELDS64["tstamp"], tstamp)
        self.skb[SKB_FIELDS["tstamp_type"]] = kind
        return 0

    def get_hash_recalc(self, ctx: HelperContext, *_args: int) -> int:
        """bpf_get_hash_recalc: the hash set, else a hash of the packet's
        headers (the kernel keys its flow hash with a per-boot random value:
        no run can repeat its number)."""
        if not self.record.hash:
            head = self.packet.frame()[:64]
            ctx.charge_bytes(len(head))
            self.record.hash = zlib.crc32(head) or 1
            struct.pack_into("<I", self.skb, SKB_FIELDS["hash"], self.record.hash)
        return self.record.hash

    def get_cgroup_classid(self, *_args: Any) -> int:
        """bpf_get_cgroup_classid: 0 (no net_cls cgroup)."""
        return 0

    def get_route_realm(self, *_args: Any) -> int:
        """bpf_get_route_realm: 0 (no route)."""
        return 0

    def get_socket_cookie(self, *_args: Any) -> int:
        """bpf_get_socket_cookie: the runner's cookie of the test run's socket."""
        return self.cookie

    def check_mtu(self, ctx: HelperContext, _skb: int, ifindex: int, mtu_len: int,
                  len_diff: int, flags: int) -> int:
        """bpf_check_mtu: 0 when the packet (or *mtu_len of L3 bytes), plus
        len_diff, fits the device's MTU, else 1 (FRAG_NEEDED); *mtu_len gets
        the MTU. ifindex 0 is the test-run device (1)."""
        if flags & ~BPF_MTU_CHK_SEGS or (flags & BPF_MTU_CHK_SEGS and len_diff):
            return _err(EINVAL)
        mtu = self.mtus.get(ifindex & 0xFFFF_FFFF or 1)
        if mtu is None:
            return _err(ENODEV)
        asked = struct.unpack("<I", ctx.read(mtu_len, 4))[0]
        length = asked + ETH_HLEN if asked else self.packet.length + self.packet.mac
        length += _s32(len_diff)
        result = 0 if length <= mtu + ETH_HLEN else 1
        ctx.write(mtu_len, struct.pack("<I", mtu))
        return result

    def skb_ecn_set_ce(self, _ctx: HelperContext, *_args: int) -> int:
        """bpf_skb_ecn_set_ce: mark an ECN-capable IPv4/IPv6 packet CE (1),
        else 0."""
        packet = self.packet
        net = packet.data + packet.network_offset()
        view = packet.view
        if packet.protocol == ETH_P_IP and net + 20 <= packet.end:
            tos = view[net + 1]
            if tos & 3 == 0:
                return 0
            if tos & 3 != 3:
                old_word = int.from_bytes(view[net : net + 2], "little")
                view[net + 1] = tos | 3
                new_word = int.from_bytes(view[net : net + 2], "little")
                old = int.from_bytes(view[net + 10 : net + 12], "little")
                view[net + 10 : net + 12] = csum_replace(old, old_word, new_word, 2).to_bytes(
                    2, "little")
            return 1
        if packet.protocol == ETH_P_IPV6 and net + 40 <= packet.end:
            word = int.from_bytes(view[net : net + 4], "big")
            if (word >> 20) & 3 == 0:
                return 0
            view[net : net + 4] = (word | 3 << 20).to_bytes(4, "big")
            return 1
        return 0
