"""The options of the ``ebpfvm`` commands that follow the conventions of the
tools users know (issue 14, point 4): ``--json`` (bpftool's ``-j``),
``maps --dump`` and ``run --dump-maps`` (``bpftool map dump``), ``run
--tx-out`` (the packets an XDP program sends back), ``-`` for standard input
and output (ebpfvm.cli_io)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_conventions"]

JSON_HELP = "print one JSON document (like bpftool -j) instead of text"


def add_conventions(commands: dict[str, argparse.ArgumentParser]) -> None:
    """Add the options to the parsers of `commands` (by command name)."""
    for name in ("run", "disasm", "verify", "maps", "bench"):
        commands[name].add_argument("--json", action="store_true", help=JSON_HELP)
    run = commands["run"]
    run.add_argument("--tx-out", type=Path, metavar="FILE",
                     help="with --pcap: write the packets an XDP program sends back "
                          "(XDP_TX) to this capture ('-': stdout)")
    run.add_argument("--dump-maps", action="store_true",
                     help="after the run, dump every map entry decoded by BTF type "
                          "(as maps --dump)")
    commands["maps"].add_argument("--dump", action="store_true",
                                  help="also show every entry (the initial contents; "
                                       "after a run: run --dump-maps), decoded by BTF type")
