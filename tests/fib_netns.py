"""Run in a new network namespace (``unshare -n``) by tests/test_fib.py:
builds a small network (a veth pair, routes of every kind, one neighbour),
then runs tests/data/elf/fib.o's bpf_fib_lookup requests in the kernel and in
ebpfvm (the same network as FibRoutes) in the engines given, and prints one
JSON line: the requests, and for each engine the ones that differ.
"""

from __future__ import annotations

import ipaddress
import json
import struct
import subprocess
import sys
from pathlib import Path

import ebpfvm
from ebpfvm.kdiff import KernelSession
from ebpfvm.xdp_helpers import FibRoute

FIB_O = Path(__file__).parent / "data" / "elf" / "fib.o"
V0_MAC, PEER_MAC, NEIGH_MAC = "02:00:00:00:00:02", "02:00:00:00:00:03", "02:00:00:00:00:01"
SETUP = [
    "link set lo up",
    f"link add v0 address {V0_MAC} mtu 1400 type veth peer name v1 address {PEER_MAC}",
    "link set v0 up", "link set v1 up",
    "addr add 10.1.0.2/24 dev v0",
    f"neigh add 10.1.0.1 lladdr {NEIGH_MAC} dev v0 nud permanent",
    "route add 10.2.0.0/16 via 10.1.0.1 dev v0",
    "route add 10.3.0.0/16 via 10.1.0.9 dev v0",
    "route add 10.4.0.0/16 via 10.1.0.1 dev v0 mtu lock 1000",  # FibRoute.mtu: a locked MTU
    "route add 10.5.0.0/16 via 10.1.0.1 dev v0 metric 7",
    "route add blackhole 10.9.0.0/16", "route add unreachable 10.10.0.0/16",
    "route add prohibit 10.11.0.0/16",
]


def _network() -> tuple[int, list[FibRoute]]:
    for command in SETUP:
        subprocess.run(["ip", *command.split()], check=True)
    Path("/proc/sys/net/ipv4/conf/all/forwarding").write_text("1")
    shown = subprocess.run(["ip", "-j", "link", "show", "v0"], check=True, capture_output=True)
    v0 = int(json.loads(shown.stdout)[0]["ifindex"])
    mac, neigh = bytes.fromhex(V0_MAC.replace(":", "")), bytes.fromhex(NEIGH_MAC.replace(":", ""))
    via = {"smac": mac, "dmac": neigh, "src": "10.1.0.2"}
    routes = [FibRoute("10.1.0.0/24", v0, **via), FibRoute("10.1.0.2/32", v0, kind="local"),
              FibRoute("10.1.0.255/32", v0, kind="broadcast"),
              FibRoute("127.0.0.0/8", 1, kind="local"),
              FibRoute("10.2.0.0/16", v0, gateway="10.1.0.1", **via),
              FibRoute("10.3.0.0/16", v0, gateway="10.1.0.9", neighbour=False, **via),
              FibRoute("10.4.0.0/16", v0, gateway="10.1.0.1", mtu=1000, **via),
              FibRoute("10.5.0.0/16", v0, gateway="10.1.0.1", metric=7, **via),
              FibRoute("10.9.0.0/16", 1, kind="blackhole"),
              FibRoute("10.10.0.0/16", 1, kind="unreachable"),
              FibRoute("10.11.0.0/16", 1, kind="prohibit")]
    return v0, routes


def requests(v0: int) -> list[bytes]:
    """Packets: every destination from every input device, with tot_len
    under and over the MTUs and without, each flag, padded to lengths
    under and over the output device's MTU."""
    out = []
    dsts = ["10.1.0.1", "10.1.0.2", "10.1.0.255", "127.0.0.1", "10.2.3.4", "10.3.3.4",
            "10.4.3.4", "10.5.3.4", "10.9.1.1", "10.10.1.1", "10.11.1.1", "8.8.8.8"]
    cases = [(1, 0, 0, 100), (v0, 0, 0, 100), (v0, 0, 0, 1500), (v0, 0, 0, 1418),
             (v0, 0, 0, 1419), (v0, 1200, 0, 100),
             (v0, 1400, 0, 100), (v0, 1401, 0, 100), (v0, 0, 4, 100), (v0, 0, 4, 1500),
             (v0, 0, 16, 100), (v0, 0, 1, 100), (v0, 0, 2, 100), (1, 0, 2, 100),
             (v0, 0, 9, 100), (4242, 0, 0, 100), (v0, 0, 0x40, 100), (v0, 1, 5, 100)]
    for dst in dsts:
        for ifindex, tot_len, flags, size in cases:
            params = struct.pack("<BBHHHII16s16sI12s", 2, 6, 0, 0, tot_len, ifindex, 0, b"",
                                 ipaddress.ip_address(dst).packed, 255 if flags & 8 else 0,
                                 b"")
            head = bytes(12) + b"\x08\x00" + params + struct.pack("<I", flags)
            out.append(head + bytes(max(0, size - len(head))))
    return out


def _compare(obj: object, program: str, engines: list[str], table: dict[str, object],
             packets: list[bytes]) -> dict[str, object]:
    """Each engine's requests whose answer or written bytes differ from
    the kernel's (r0 compared on 32 bits: the test run's retval)."""
    report: dict[str, object] = {}
    with KernelSession(obj, program, source=FIB_O) as kernel:
        answers = [kernel.run(packet)[:2] for packet in packets]
    report["results"] = sorted({r0 for r0, _out in answers})
    make = obj.xdp if program == "fib_xdp" else obj.skb  # type: ignore[attr-defined]
    for engine in engines:
        with make(program, engine=engine, **table) as runner:
            ours = [runner.run(packet) for packet in packets]
        report[engine] = [
            {"request": packet.hex(), "kernel": [r0, out.hex()],
             "ebpfvm": [mine.r0, mine.packet.hex()]}
            for packet, (r0, out), mine in zip(packets, answers, ours, strict=True)
            if (r0, out) != (mine.r0 & 0xFFFF_FFFF, mine.packet)]
    return report


def main() -> None:
    v0, routes = _network()
    packets = requests(v0)
    devices = {1: 65536, v0: 1400, v0 + 1: 1500}
    with ebpfvm.load(FIB_O) as obj:
        report = {"packets": len(packets),
                  "tc": _compare(obj, "fib", sys.argv[1:],
                                 {"routes": routes, "mtus": devices, "forwarding": True},
                                 packets),
                  "xdp": _compare(obj, "fib_xdp", sys.argv[1:],
                                  {"routes": routes, "devices": devices, "forwarding": True},
                                  packets)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
