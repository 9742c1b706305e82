"""bpf_fib_lookup from tc programs (ebpfvm.fib, SkbRunner's `routes`),
against the kernel (RFC 9669 section 5.3, helper functions).

The kernel's answers depend on its routes: tests/fib_netns.py builds a
network in a new network namespace (``unshare -n``: a veth pair, unicast
routes with and without a neighbour, a locked route MTU, a metric,
blackhole, unreachable and prohibit routes), gives ebpfvm the same network
as FibRoutes and runs 216 requests (every flag, input device, tot_len and
packet length case) in both, from tc (fib.o's fib) and from XDP (fib_xdp); the host's network is not touched. The table
tests' values follow from struct bpf_fib_lookup's layout (mtu_result at 6,
ifindex at 8, rt_metric at 12, ipv4_src at 16, ipv4_dst at 32, smac at 52,
dmac at 58) and the helper's documented answers.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import ebpfvm
from conftest import NEEDS_KBPF, REPO
from ebpfvm.kdiff import against_kernel
from ebpfvm.xdp_helpers import FibRoute
from engines import ALL_ENGINES

FIB_O = REPO / "tests" / "data" / "elf" / "fib.o"
NETNS_SCRIPT = Path(__file__).parent / "fib_netns.py"
SUCCESS, BLACKHOLE, NOT_FWDED, FWD_DISABLED, NO_NEIGH, FRAG_NEEDED = 0, 1, 4, 5, 7, 8
MAC, NEIGH = b"\x02" * 6, b"\x04" * 6


needs_kernel = NEEDS_KBPF


def _request(dst: str, ifindex: int = 1, tot_len: int = 0, flags: int = 0, size: int = 100,
             family: int = 2) -> bytes:
    """fib.c's packet: Ethernet header, struct bpf_fib_lookup, flags, padding."""
    address = ipaddress.ip_address(dst).packed
    params = struct.pack("<BBHHHII16s16sI12s", family, 6, 0, 0, tot_len, ifindex, 0, b"",
                         address, 0, b"")
    head = bytes(12) + b"\x08\x00" + params + struct.pack("<I", flags)
    return head + bytes(max(0, size - len(head)))


@needs_kernel
@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs unshare and root for a network namespace")
def test_lookups_agree_with_the_kernel_in_a_network_namespace() -> None:
    """Every answer and every byte written back is the kernel's, tc's and
    XDP's, in every engine."""
    done = subprocess.run(
        ["unshare", "-n", sys.executable, str(NETNS_SCRIPT), *ALL_ENGINES],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO / "src"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])})
    if done.returncode and "Operation not permitted" in done.stderr:
        pytest.skip(f"no network namespace: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["packets"] == 216
    for side in ("tc", "xdp"):
        assert set(report[side]["results"]) >= {0, 1, 2, 3, 4, 7, 8, -22 & 0xFFFF_FFFF,
                                                -19 & 0xFFFF_FFFF}  # every answer came
        for engine in ALL_ENGINES:
            assert report[side][engine] == [], (side, engine, report[side][engine][:3])


@needs_kernel
@pytest.mark.skipif(Path("/proc/sys/net/ipv4/conf/lo/forwarding").read_text().strip() != "0"
                    if Path("/proc/sys/net/ipv4/conf/lo/forwarding").exists() else True,
                    reason="the host's loopback forwards: its routes would decide")
def test_without_a_table_as_the_host_kernel(engine: str) -> None:
    """On the host (loopback not forwarding, ebpfvm's default): -EINVAL for
    unknown flags, -EAFNOSUPPORT, -ENODEV, FWD_DISABLED."""
    packets = [_request("10.0.0.1", flags=0x40), _request("10.0.0.1", family=7),
               _request("10.0.0.1", ifindex=4242), _request("10.0.0.1"),
               _request("10.0.0.1", tot_len=100), _request("127.0.0.1", flags=4)]
    with ebpfvm.load(FIB_O) as obj:
        diff = against_kernel(obj, packets, program="fib", engine=engine, source=FIB_O)
    assert diff.packets == len(packets)
    assert diff.divergences == [], [str(d) for d in diff.divergences[:5]]


def _fields(packet: bytes) -> tuple[int, int, int, bytes, bytes, bytes]:
    """(mtu_result, ifindex, rt_metric, ipv4_dst, smac, dmac) written back."""
    params = packet[14:78]
    mtu, ifindex, metric = struct.unpack_from("<HII", params, 6)
    return mtu, ifindex, metric, params[32:36], params[52:58], params[58:64]


def test_tc_lookup_results(engine: str) -> None:
    """SUCCESS writes the output device, metric, next hop and MACs; tc
    checks the packet's length against the output device (MTU plus 18
    bytes of Ethernet and VLAN headers) unless tot_len is given, then the
    route's MTU; NO_NEIGH leaves the device and next hop written."""
    routes = [FibRoute("10.0.0.0/8", 2, gateway="10.0.0.1", smac=MAC, dmac=NEIGH, metric=3),
              FibRoute("10.7.0.0/16", 2, gateway="10.0.0.9", neighbour=False),
              FibRoute("10.8.0.0/16", 2, mtu=1000), FibRoute("10.9.0.0/16", 1, kind="blackhole")]
    with ebpfvm.load(FIB_O) as obj, obj.skb("fib", engine=engine, routes=routes,
                                            mtus={1: 65536, 2: 1400}) as runner:
        done = runner.run(_request("10.1.2.3"))
        assert done.r0 == SUCCESS
        assert _fields(done.packet) == (1400, 2, 3, bytes([10, 0, 0, 1]), MAC, NEIGH)
        assert runner.run(_request("10.1.2.3", size=1418)).r0 == SUCCESS
        big = runner.run(_request("10.1.2.3", size=1419))
        assert big.r0 == FRAG_NEEDED and _fields(big.packet)[:2] == (1400, 2)
        assert runner.run(_request("10.1.2.3", tot_len=1400, size=2000)).r0 == SUCCESS
        over = runner.run(_request("10.8.2.3", tot_len=1001))
        assert over.r0 == FRAG_NEEDED and _fields(over.packet)[:2] == (1000, 1)
        no_neigh = runner.run(_request("10.7.2.3"))
        assert no_neigh.r0 == NO_NEIGH
        assert _fields(no_neigh.packet)[1:4] == (2, 0, bytes([10, 0, 0, 9]))
        assert runner.run(_request("10.7.2.3", flags=4)).r0 == SUCCESS  # SKIP_NEIGH
        assert runner.run(_request("10.9.2.3")).r0 == BLACKHOLE
        assert runner.run(_request("192.168.0.1")).r0 == NOT_FWDED
        assert runner.run(_request("10.1.2.3", flags=0x40)).r0 == -22 & (1 << 64) - 1
    with ebpfvm.load(FIB_O) as obj, obj.skb("fib", engine=engine, routes=routes,
                                            forwarding=False) as runner:
        assert runner.run(_request("10.1.2.3")).r0 == FWD_DISABLED
