"""Run the kernel's own BPF selftests against the kernel: every packet program
(xdp, tc, socket filter) of tools/testing/selftests/bpf/progs, compiled here
with clang, runs in ebpfvm and through BPF_PROG_TEST_RUN on the same packets
(ebpfvm.against_kernel), and the results are compared.

    python3 tools/selftest_sweep.py /path/to/linux-source-6.12

Needs an extracted Linux source tree, clang with the BPF target, bpftool and
the running kernel's BTF (for vmlinux.h), bpf_helper_defs.h (libbpf's
generated helper declarations: --helpers, /usr/include/bpf by default),
scapy (the packets) and bpf() (root). Not part of the test suite. Prints one
line per program, then the summary:

    selftests: N programs ran, A agree, D diverge, K refused by the kernel,
    U unsupported by ebpfvm

(one line). "Refused by the kernel": its verifier rejects the program (many
selftests are meant to fail). "Unsupported by ebpfvm": the object or program
uses what ebpfvm lacks (a kfunc, a map type, a helper) or ebpfvm's
structural verifier refuses it. Differences of helpers that differ by
nature (clocks, random numbers: ebpfvm.kdiff.NONDETERMINISTIC) are not
counted, as in `ebpfvm run --against-kernel`. docs/guide.md ("Known differences from the
kernel") explains the divergences left.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import ebpfvm
from ebpfvm.kbpf import KernelRejected, KernelUnavailable
from ebpfvm.kdiff import against_kernel
from ebpfvm.progtypes import prog_type_for_section

PACKET_SECTION = re.compile(r'SEC\("(xdp|tc|tcx/|classifier|socket)')
"""A source with at least one packet program (the only ones compiled)."""
LIBBPF_HEADERS = ("bpf_helpers.h", "bpf_endian.h", "bpf_tracing.h", "bpf_core_read.h")
PACKETS = 12
AGREE, DIVERGE, REFUSED, UNSUPPORTED = "agree", "diverge", "refused", "unsupported"


def packets(seed: int = 7) -> list[bytes]:
    """TCP, UDP and ICMP over IPv4 and IPv6 with random ports and payloads."""
    from scapy.all import ICMP, IP, TCP, UDP, Ether, IPv6, Raw  # type: ignore

    rng = random.Random(seed)
    out = []
    for i in range(PACKETS):
        l4 = [TCP(sport=rng.randrange(65536), dport=rng.choice([80, 443, 9000]), flags="S"),
              UDP(sport=rng.randrange(65536), dport=rng.choice([53, 4789, 9000])),
              ICMP()][i % 3]
        ip = IP(src=f"10.0.0.{i}", dst="10.0.1.1") if i % 4 else IPv6(src="fc00::1",
                                                                       dst="fc00::2")
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
        frame = Ether(dst="00:11:22:33:44:55", src="66:77:88:99:aa:bb") / ip / l4 / Raw(payload)
        out.append(bytes(frame))
    return out


def prepare(ksrc: Path, helpers: Path, work: Path) -> list[str]:
    """vmlinux.h and the libbpf headers in `work`; clang's include flags."""
    vmlinux = work / "vmlinux.h"
    if not vmlinux.exists():
        with vmlinux.open("w") as out:
            subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux",
                            "format", "c"], stdout=out, check=True)
    inc = work / "inc" / "bpf"
    inc.mkdir(parents=True, exist_ok=True)
    for name in LIBBPF_HEADERS:
        shutil.copy(ksrc / "tools" / "lib" / "bpf" / name, inc / name)
    shutil.copy(helpers / "bpf_helper_defs.h", inc / "bpf_helper_defs.h")
    selftests = ksrc / "tools" / "testing" / "selftests" / "bpf"
    return ["-I", str(work), "-I", str(work / "inc"), "-I", str(selftests / "progs"),
            "-I", str(selftests), "-I", "/usr/include/x86_64-linux-gnu", "-D__TARGET_ARCH_x86"]


def compile_all(ksrc: Path, flags: list[str], work: Path, jobs: int) -> tuple[list[Path], int]:
    """Compile every selftest source with a packet program: (objects, failures)."""
    progs = ksrc / "tools" / "testing" / "selftests" / "bpf" / "progs"
    sources = [s for s in sorted(progs.glob("*.c"))
               if PACKET_SECTION.search(s.read_text(errors="replace"))]
    objects = work / "objects"
    objects.mkdir(exist_ok=True)

    def build(source: Path) -> Path | None:
        target = objects / (source.stem + ".o")
        if target.exists():
            return target
        done = subprocess.run(["clang", "-O2", "-g", "-target", "bpf", *flags, "-c",
                               str(source), "-o", str(target)], capture_output=True)
        return target if done.returncode == 0 else None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        built = list(pool.map(build, sources))
    return [b for b in built if b is not None], sum(b is None for b in built)


def run_object(path: Path, frames: list[bytes], engine: str, counts: Counter[str]) -> None:
    """Every packet program of one object, against the kernel."""
    try:
        obj = ebpfvm.load(path)
    except ebpfvm.EbpfError as exc:
        counts[UNSUPPORTED] += 1
        print(f"{path.name}: load: {type(exc).__name__}: {str(exc)[:150]}")
        return
    names = [(p.name, p.section) for p in obj.programs] + [(n, None) for n in obj.problems]
    obj.close()
    for name, section in names:
        found = prog_type_for_section(section) if section is not None else None
        if section is not None and (found is None or found.context not in ("xdp", "skb")):
            continue
        if section is None:
            counts[UNSUPPORTED] += 1
            print(f"{path.name}/{name}: unsupported: {str(obj.problems[name])[:150]}")
            continue
        print(f"{path.name}/{name} [{section}]: {run_program(path, name, frames, engine, counts)}")


def run_program(path: Path, name: str, frames: list[bytes], engine: str,
                counts: Counter[str]) -> str:
    """One program against the kernel: what to print about it."""
    try:
        with ebpfvm.load(path) as obj:
            diff = against_kernel(obj, frames, program=name, engine=engine, source=path)
    except KernelUnavailable:
        raise
    except KernelRejected as exc:
        counts[REFUSED] += 1
        return f"refused by the kernel: {str(exc)[:150]}"
    except ebpfvm.EbpfError as exc:
        counts[UNSUPPORTED] += 1
        return f"unsupported: {type(exc).__name__}: {str(exc)[:150]}"
    if not diff.counted:  # differences of clocks, random numbers...: not counted
        counts[AGREE] += 1
        return diff.summary()
    counts[DIVERGE] += 1
    return "\n    ".join([diff.summary(), *(str(d) for d in diff.counted[:3])])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ksrc", type=Path, help="an extracted Linux source tree")
    parser.add_argument("--helpers", type=Path, default=Path("/usr/include/bpf"),
                        help="a directory with bpf_helper_defs.h (default /usr/include/bpf)")
    parser.add_argument("--work", type=Path, help="build directory (default: a temporary one)")
    parser.add_argument("--engine", default="jit", help="ebpfvm engine (default jit)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="selftests-"))
    work.mkdir(parents=True, exist_ok=True)
    flags = prepare(args.ksrc, args.helpers, work)
    objects, failed = compile_all(args.ksrc, flags, work, args.jobs)
    print(f"compiled {len(objects)} selftest objects with packet programs "
          f"({failed} sources did not compile here) in {work}")
    frames = packets()
    counts: Counter[str] = Counter()
    for path in objects:
        run_object(path, frames, args.engine, counts)
    ran = sum(counts.values())
    print(f"selftests: {ran} programs ran, {counts[AGREE]} agree, {counts[DIVERGE]} diverge, "
          f"{counts[REFUSED]} refused by the kernel, {counts[UNSUPPORTED]} unsupported by ebpfvm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
