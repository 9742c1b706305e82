#!/usr/bin/env python3
"""Write deterministic Ethernet traffic to a pcap (or pcapng) file.

The mix (fixed seed, so the file is the same on every machine): IPv4 TCP,
UDP and ICMP from a few busy and many quiet sources, IPv6 TCP and UDP, and
ARP, with payloads of 0-120 bytes. dpkt builds every header (lengths and
checksums included).

    python3 tools/make_sample_pcap.py                      # examples/data/sample.pcap
    python3 tools/make_sample_pcap.py OUT --count 1000000  # a large capture
    python3 tools/make_sample_pcap.py OUT --pcapng
"""

from __future__ import annotations

import argparse
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import dpkt  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "examples" / "data" / "sample.pcap"
DEFAULT_COUNT = 1200
SEED = 6
START_TIME = 1_700_000_000.0
GAP = 0.001
"""Seconds between packets."""
POOL = 2048
"""Distinct frames; a longer capture repeats them in a fixed random order."""
BUSY_SOURCES = 4
"""Sources that send most IPv4 packets (so rate limiting drops some)."""
MIX = (("tcp4", 40), ("udp4", 25), ("icmp4", 10), ("tcp6", 10), ("udp6", 10), ("arp", 5))
"""Kinds of frame and their weights (percent)."""


def _mac(rng: random.Random) -> bytes:
    return bytes([0x02, *(rng.randrange(256) for _ in range(5))])


def _ipv4_source(rng: random.Random) -> bytes:
    if rng.random() < 0.6:
        return socket.inet_aton(f"10.0.0.{1 + rng.randrange(BUSY_SOURCES)}")
    return socket.inet_aton(f"10.1.{rng.randrange(256)}.{1 + rng.randrange(254)}")


def _transport(kind: str, rng: random.Random) -> object:
    payload = bytes(rng.randrange(256) for _ in range(rng.randrange(121)))
    if kind.startswith("tcp"):
        return dpkt.tcp.TCP(sport=rng.randrange(1024, 65536),
                            dport=rng.choice((22, 80, 443, 8080, 0x9999)),
                            seq=rng.randrange(1 << 32), flags=dpkt.tcp.TH_ACK, data=payload)
    if kind.startswith("udp"):
        return dpkt.udp.UDP(sport=rng.randrange(1024, 65536), dport=rng.choice((53, 123, 4789)),
                            data=payload)
    return dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=1, seq=rng.randrange(
        65536), data=payload))


def frame(kind: str, rng: random.Random) -> bytes:
    """One Ethernet frame of `kind` (see MIX)."""
    eth = dpkt.ethernet.Ethernet(src=_mac(rng), dst=_mac(rng))
    if kind == "arp":
        eth.type = dpkt.ethernet.ETH_TYPE_ARP
        eth.data = dpkt.arp.ARP(sha=eth.src, spa=_ipv4_source(rng), tpa=socket.inet_aton(
            "10.0.0.254"))
    elif kind.endswith("4"):
        proto = {"tcp4": dpkt.ip.IP_PROTO_TCP, "udp4": dpkt.ip.IP_PROTO_UDP,
                 "icmp4": dpkt.ip.IP_PROTO_ICMP}[kind]
        eth.type = dpkt.ethernet.ETH_TYPE_IP
        eth.data = dpkt.ip.IP(src=_ipv4_source(rng), dst=socket.inet_aton("10.0.0.254"),
                              p=proto, ttl=64, data=_transport(kind, rng))
    else:
        proto = dpkt.ip.IP_PROTO_TCP if kind == "tcp6" else dpkt.ip.IP_PROTO_UDP
        eth.type = dpkt.ethernet.ETH_TYPE_IP6
        body = _transport(kind, rng)
        eth.data = dpkt.ip6.IP6(src=bytes(15) + bytes([rng.randrange(1, 256)]),
                                dst=bytes(15) + b"\x01", nxt=proto, hlim=64, data=body,
                                plen=len(bytes(body)))
    return bytes(eth)


def frames(count: int, seed: int = SEED) -> Iterator[tuple[float, bytes]]:
    """`count` (timestamp, frame) pairs: the first POOL are fresh, later ones
    repeat the pool in a seeded random order."""
    rng = random.Random(seed)
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    pool: list[bytes] = []
    for index in range(count):
        if index < POOL:
            pool.append(frame(rng.choice(kinds), rng))
            data = pool[-1]
        else:
            data = pool[rng.randrange(POOL)]
        yield START_TIME + index * GAP, data


def write(path: Path, count: int, pcapng: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        writer = (dpkt.pcapng.Writer(handle) if pcapng
                  else dpkt.pcap.Writer(handle, linktype=dpkt.pcap.DLT_EN10MB))
        for timestamp, data in frames(count):
            writer.writepkt(data, ts=timestamp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT)
    parser.add_argument("--pcapng", action="store_true", help="write pcapng instead of pcap")
    args = parser.parse_args()
    write(args.out, args.count, args.pcapng)
    print(f"wrote {args.count} packets to {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
