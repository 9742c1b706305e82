"""``ebpfvm run OBJ ... --against-kernel``: the kernel differential
(ebpfvm.kdiff) from the command line.

Prints one line per divergence (at most :data:`SHOWN`), a few of the
differences not counted (a program calling nondeterministic helpers), one
line per input the kernel's test run refused, then ``N packets, M
diverge``. The exit status is
0 when no packet diverges and 1 otherwise; a kernel that cannot be used
(no bpf(), no permission, a program the verifier refuses) is one
``ebpfvm: error:`` line and status 1, as every other error of the CLI.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

from .capture import read_capture
from .errors import EbpfError
from .kdiff import against_kernel

__all__ = ["EXAMPLES", "SHOWN", "run_against_kernel"]

SHOWN = 50
"""The most divergence lines printed; a count of the rest follows."""
EXAMPLES = 3
"""The most differences shown that are not counted (nondeterministic helpers)."""


def _frames(path: Any) -> Iterator[bytes]:
    for _timestamp, frame in read_capture(path):
        yield frame


def run_against_kernel(args: argparse.Namespace, loaded: Any, data: bytes | None,
                       engine: str) -> int:
    """Run the capture (or the one input `data`) in ebpfvm and the kernel and
    print the divergences; the exit status."""
    parser = args.command_parser
    for option, given in (("--trace", args.trace), ("--out", args.out is not None),
                          ("--mbuff", args.mbuff is not None)):
        if given:
            parser.error(f"{option} does not go with --against-kernel")
    if loaded.obj is None:
        raise EbpfError("--against-kernel needs an ELF object (the kernel needs its program "
                        "type and maps)")
    packets = _frames(args.pcap) if args.pcap is not None else [data or b""]
    diff = against_kernel(loaded.obj, packets, program=loaded.program.name,
                          section=loaded.program.section, engine=engine,
                          source=args.program)
    counted = diff.counted
    for divergence in counted[:SHOWN]:
        print(divergence)
    if len(counted) > SHOWN:
        print(f"... {len(counted) - SHOWN} more divergences")
    for divergence in [d for d in diff.divergences if d not in counted][:EXAMPLES]:
        print(divergence)
    for number, reason in diff.refused[:SHOWN]:
        print(f"packet {number}: the kernel's test run refused it: {reason}")
    print(diff.summary())
    return 1 if diff else 0
