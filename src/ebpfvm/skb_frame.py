"""The skb helpers that change the frame: VLAN tags, head and tail room,
bpf_skb_adjust_room, bpf_skb_change_proto/type and bpf_skb_pull_data.

Each one builds the new packet and puts it back at ``data``
(:meth:`SkbPacket.replace`), then writes ``len``, ``data``, ``data_end`` and
``protocol`` into the ``__sk_buff``; the work is charged per byte. Semantics,
flags and errors are Linux's (helper calls: RFC 9669 section 4.3.1).
"""

from __future__ import annotations

from .helpers import HelperContext
from .progtypes import ETH_HLEN
from .skb_helpers import (
    ADJ_DECAP_L3_IPV4,
    ADJ_DECAP_L3_IPV6,
    ADJ_ENCAP_L2_ETH,
    ADJ_ENCAP_L3_IPV4,
    ADJ_ENCAP_L3_IPV6,
    ADJ_ENCAP_L4_GRE,
    ADJ_ENCAP_L4_UDP,
    ADJ_NO_CSUM_RESET,
    ADJ_ROOM_FLAGS,
    CSUM_NONE,
    CSUM_UNNECESSARY,
    EFAULT,
    EINVAL,
    ENOMEM,
    ENOTSUPP,
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_IP,
    ETH_P_IPV6,
    PACKET_OTHERHOST,
    SkbHelpers,
    _err,
    _s32,
)

__all__ = ["SkbFrameHelpers"]

VLAN_HLEN = 4
EALREADY = 114
IPV4_HLEN, IPV6_HLEN = 20, 40
_ADJ_ENCAP_L3 = ADJ_ENCAP_L3_IPV4 | ADJ_ENCAP_L3_IPV6
_ADJ_DECAP_L3 = ADJ_DECAP_L3_IPV4 | ADJ_DECAP_L3_IPV6
_ADJ_SHRINK_FLAGS = 1 | _ADJ_DECAP_L3 | ADJ_NO_CSUM_RESET
"""What a shrinking bpf_skb_adjust_room accepts: FIXED_GSO, DECAP_L3_*, NO_CSUM_RESET."""


def _swap16(value: int) -> int:
    return int.from_bytes((value & 0xFFFF).to_bytes(2, "little"), "big")


class SkbFrameHelpers(SkbHelpers):
    """SkbHelpers plus the helpers that change the frame."""

    NAMES = (*SkbHelpers.NAMES, "skb_vlan_push", "skb_vlan_pop", "skb_change_head",
             "skb_change_tail", "skb_adjust_room", "skb_change_proto", "skb_change_type",
             "skb_pull_data")
    encapsulated = False
    """Whether bpf_skb_adjust_room encapsulated the packet in this run."""

    @property
    def max_len(self) -> int:
        """The largest packet: the device's MTU plus its Ethernet header."""
        return self.mtus.get(1, 65536) + ETH_HLEN

    def _put(self, ctx: HelperContext, new: bytes) -> int:
        """Make `new` the packet; -ENOMEM when the runner's frame cannot hold it."""
        if not self.packet.replace(new):
            return _err(ENOMEM)
        self._changed(ctx)
        return 0

    # -- VLAN --------------------------------------------------------------------

    def skb_vlan_push(self, ctx: HelperContext, _skb: int, proto: int, tci: int,
                      *_rest: int) -> int:
        """bpf_skb_vlan_push: the tag becomes the packet's offloaded tag; an
        offloaded tag already there moves into the frame first. A protocol
        other than 802.1Q or 802.1ad means 802.1Q."""
        if _swap16(proto) not in (ETH_P_8021Q, ETH_P_8021AD):
            proto = _swap16(ETH_P_8021Q)  # the kernel's default for any other value
        packet = self.packet
        if packet.vlan is not None:
            old_proto, old_tci = packet.vlan
            frame = packet.frame()
            if len(frame) < ETH_HLEN:
                return _err(ENOMEM)
            tag = old_proto.to_bytes(2, "little") + old_tci.to_bytes(2, "big")
            failed = self._put(ctx, frame[:12] + tag + frame[12:])
            if failed:
                return failed
            packet.protocol = _swap16(old_proto)
        packet.vlan = (proto & 0xFFFF, tci & 0xFFFF)
        self._changed(ctx)
        return 0

    def skb_vlan_pop(self, ctx: HelperContext, *_args: int) -> int:
        """bpf_skb_vlan_pop: drop the offloaded tag, else the frame's outer
        tag (a second tag under it becomes the offloaded one)."""
        packet = self.packet
        if packet.vlan is not None:
            packet.vlan = None
            self._changed(ctx)
            return 0
        if packet.protocol not in (ETH_P_8021Q, ETH_P_8021AD):
            return 0
        failed = self._pop_tag(ctx)
        if failed or packet.protocol not in (ETH_P_8021Q, ETH_P_8021AD):
            return failed
        proto = _swap16(packet.protocol)
        tci = int.from_bytes(packet.frame()[14:16], "big")
        failed = self._pop_tag(ctx)
        if not failed:
            packet.vlan = (proto, tci)
            self._changed(ctx)
        return failed

    def _pop_tag(self, ctx: HelperContext) -> int:
        frame = self.packet.frame()
        if len(frame) < ETH_HLEN + VLAN_HLEN:
            return _err(ENOMEM)
        self.packet.protocol = int.from_bytes(frame[16:18], "big")
        return self._put(ctx, frame[:12] + frame[16:])

    # -- room ------------------------------------------------------------------

    def skb_change_head(self, ctx: HelperContext, _skb: int, room: int, flags: int,
                        *_rest: int) -> int:
        """bpf_skb_change_head: `room` zero bytes before data (a new MAC header)."""
        room &= 0xFFFF_FFFF
        if flags or self.packet.length + room > self.max_len:
            return _err(EINVAL)
        return self._put(ctx, bytes(room) + self.packet.frame())

    def skb_change_tail(self, ctx: HelperContext, _skb: int, new_len: int, flags: int,
                        *_rest: int) -> int:
        """bpf_skb_change_tail: cut or zero-extend the packet to `new_len`."""
        new_len &= 0xFFFF_FFFF
        if flags or new_len > self.max_len or new_len < self.packet.network_offset():
            return _err(EINVAL)
        frame = self.packet.frame()
        return self._put(ctx, frame[:new_len] + bytes(max(new_len - len(frame), 0)))

    def skb_adjust_room(self, ctx: HelperContext, _skb: int, len_diff: int, mode: int,
                        flags: int, *_rest: int) -> int:
        """bpf_skb_adjust_room: insert (len_diff > 0, zeros) or remove bytes
        after the MAC header (mode BPF_ADJ_ROOM_MAC) or after the network
        header (BPF_ADJ_ROOM_NET), with the encapsulation flags."""
        diff = _s32(len_diff)
        size, shrink = abs(diff), diff < 0
        packet = self.packet
        if flags & ~ADJ_ROOM_FLAGS:
            return _err(EINVAL)
        if size > 0xFFF:
            return _err(EFAULT)
        if packet.protocol not in (ETH_P_IP, ETH_P_IPV6):
            return _err(ENOTSUPP)
        base = IPV4_HLEN if packet.protocol == ETH_P_IP else IPV6_HLEN
        net = packet.network_offset()
        if mode not in (0, 1):
            return _err(ENOTSUPP)
        offset = net + (base if mode == 0 else 0)
        minimum = base
        if flags & _ADJ_DECAP_L3:
            if not shrink or flags & _ADJ_DECAP_L3 == _ADJ_DECAP_L3:
                return _err(EINVAL)
            minimum = IPV4_HLEN if flags & ADJ_DECAP_L3_IPV4 else IPV6_HLEN
        current = packet.length - net
        if shrink and (size >= current or current - size < minimum):
            return _err(ENOTSUPP)
        if not shrink and packet.length + size > self.max_len:
            return _err(ENOTSUPP)
        result = (self._shrink(ctx, offset, size, flags) if shrink
                  else self._grow(ctx, offset, size, flags))
        unnecessary = self.record.csum[0] == CSUM_UNNECESSARY
        if not result and not flags & ADJ_NO_CSUM_RESET and unnecessary:
            self.record.csum = (CSUM_NONE, 0)
        return result

    def _grow(self, ctx: HelperContext, offset: int, size: int, flags: int) -> int:
        packet = self.packet
        if flags & _ADJ_ENCAP_L3:
            inner_mac = flags >> 56 & 0xFF
            if (flags & _ADJ_ENCAP_L3 == _ADJ_ENCAP_L3
                    or flags & (ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP)
                    == ADJ_ENCAP_L4_GRE | ADJ_ENCAP_L4_UDP
                    or (flags & ADJ_ENCAP_L2_ETH and inner_mac < ETH_HLEN)):
                return _err(EINVAL)
            if self.encapsulated:
                return _err(EALREADY)
            if inner_mac > size:
                return _err(EINVAL)
        frame = packet.frame()
        failed = self._put(ctx, frame[:offset] + bytes(size) + frame[offset:])
        if failed:
            return failed
        if flags & _ADJ_ENCAP_L3:
            self.encapsulated = True
            if packet.protocol == ETH_P_IP and flags & ADJ_ENCAP_L3_IPV6:
                packet.protocol = ETH_P_IPV6
            elif packet.protocol == ETH_P_IPV6 and flags & ADJ_ENCAP_L3_IPV4:
                packet.protocol = ETH_P_IP
            self._changed(ctx)
        return 0

    def _shrink(self, ctx: HelperContext, offset: int, size: int, flags: int) -> int:
        packet = self.packet
        if flags & ~_ADJ_SHRINK_FLAGS:
            return _err(EINVAL)
        frame = packet.frame()
        failed = self._put(ctx, frame[:offset] + frame[offset + size :])
        if failed:
            return failed
        if packet.protocol == ETH_P_IP and flags & ADJ_DECAP_L3_IPV6:
            packet.protocol = ETH_P_IPV6
        elif packet.protocol == ETH_P_IPV6 and flags & ADJ_DECAP_L3_IPV4:
            packet.protocol = ETH_P_IP
        self._changed(ctx)
        return 0

    # -- protocol, type, pull ---------------------------------------------------

    def skb_change_proto(self, ctx: HelperContext, _skb: int, proto: int, flags: int,
                         *_rest: int) -> int:
        """bpf_skb_change_proto: IPv4 <-> IPv6 only; 20 bytes of room
        inserted (or removed) after the MAC header, the headers left to the
        program."""
        if flags:
            return _err(EINVAL)
        packet = self.packet
        target = _swap16(proto)
        net = packet.network_offset()
        frame = packet.frame()
        if packet.protocol == ETH_P_IP and target == ETH_P_IPV6:
            new = frame[:net] + bytes(IPV6_HLEN - IPV4_HLEN) + frame[net:]
        elif packet.protocol == ETH_P_IPV6 and target == ETH_P_IP:
            if len(frame) < net + IPV6_HLEN:
                return _err(ENOMEM)
            new = frame[:net] + frame[net + IPV6_HLEN - IPV4_HLEN :]
        else:
            return _err(ENOTSUPP)
        failed = self._put(ctx, new)
        if not failed:
            packet.protocol = target
            self.record.hash = 0
            self._changed(ctx)
        return failed

    def skb_change_type(self, ctx: HelperContext, _skb: int, pkt_type: int,
                        *_rest: int) -> int:
        """bpf_skb_change_type: PACKET_HOST .. PACKET_OTHERHOST only."""
        if self.packet.pkt_type > PACKET_OTHERHOST or pkt_type & 0xFFFF_FFFF > PACKET_OTHERHOST:
            return _err(EINVAL)
        self.packet.pkt_type = pkt_type & 0xFFFF_FFFF
        self._changed(ctx)
        return 0

    def skb_pull_data(self, ctx: HelperContext, _skb: int, size: int, *_rest: int) -> int:
        """bpf_skb_pull_data: the packet is linear; -ENOMEM past its end."""
        if size & 0xFFFF_FFFF > self.packet.length:
            return _err(ENOMEM)
        self._changed(ctx)
        return 0
