"""Pieces of ``ebpfvm run`` (issue 14, point 4): the capture's writers (``--out``,
``--tx-out``, either may be ``-``), the progress bar, the statistics, the
maps after the run (``--dump-maps``), and the ``--json`` document."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .capture import CaptureStats, CaptureWriter, verdict_name
from .cli_io import binary_stdout, is_std
from .cli_json import emit
from .cli_maps import dump_lines, map_document

__all__ = ["Writers", "clear", "print_maps", "print_stats", "progress", "run_document"]


class Writers:
    """The capture's output files: passed packets (--out), sent back (--tx-out)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.passed = self._open(args.out, "--out")
        self.tx: CaptureWriter | None = None
        try:
            self.tx = self._open(getattr(args, "tx_out", None), "--tx-out")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _open(path: Path | None, what: str) -> CaptureWriter | None:
        if path is None:
            return None
        if is_std(path):
            return CaptureWriter(binary_stdout(what))
        try:
            return CaptureWriter(path)
        except OSError as exc:
            from .cli import InputError

            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        for writer in (self.passed, self.tx):
            if writer is not None:
                writer.close()


def progress(path: Path, handle: Any, disabled: bool) -> tuple[Any, Callable[[int], None]]:
    """A progress bar on stderr (shown after half a second, on a terminal)
    counting packets, with the share of the file read when it has a size; it
    clears itself when closed (a Ctrl-C closes it before the statistics)."""
    from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

    sized = not is_std(path) and path.is_file()
    # Three columns short of the terminal: the ^C a terminal echoes stays on
    # the bar's line (a full-width bar would wrap it onto the next one, and
    # the bar would stay on the screen after clearing that one).
    columns = shutil.get_terminal_size().columns - 3
    bar = tqdm(total=path.stat().st_size if sized else None, unit="B", unit_scale=True,
               file=sys.stderr, disable=True if disabled else None, delay=0.5, leave=False,
               desc="stdin" if is_std(path) else path.name, ncols=max(columns, 20))
    done = [0]

    def advance(packets: int) -> None:
        done[0] += packets
        bar.set_postfix_str(f"{done[0]:,} packets", refresh=False)
        if sized:
            bar.update(handle.tell() - bar.n)
        else:
            bar.refresh()

    return bar, advance


def clear(bar: Any) -> None:
    """Close the bar, and on a terminal erase its line (and a ^C echoed after it)."""
    bar.close()
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def print_stats(stats: CaptureStats, engine: str, args: argparse.Namespace,
                writers: Writers) -> None:
    """The capture's statistics as text (the JSON document has them too)."""
    if getattr(args, "json", False):
        return
    how = "native batches" if stats.mode == "native" else f"per packet ({stats.why})"
    how += f", {stats.jobs} jobs" if stats.jobs > 1 else ""
    print(f"{stats.packets} packets in {stats.seconds:.3f} s: "
          f"{stats.packets_per_second:,.0f} packets/s ({engine}, {how})")
    if stats.jobs_note:
        print(f"note: {stats.jobs_note}")
    print("verdicts:")
    width = max((len(name) for name in stats.histogram), default=0)
    for name, count in stats.histogram.most_common():
        share = 100 * count / stats.packets if stats.packets else 0.0
        print(f"  {name:<{width}}  {count:>10}  {share:5.1f}%")
    if writers.passed is not None:
        count = writers.passed.count
        print(f"wrote {count} passed packet{'' if count == 1 else 's'} to {args.out}")
    if writers.tx is not None:
        print(f"wrote {_packets(writers.tx.count)} sent back (XDP_TX) to {args.tx_out}")


def _packets(count: int) -> str:
    return f"{count} packet{'' if count == 1 else 's'}"


def print_maps(obj: Any, args: argparse.Namespace, entries: Callable[[Any, int], list[str]],
               describe: Callable[[Any], str]) -> None:
    """The maps after a run: a few entries each, or (--dump-maps) all of them decoded."""
    if obj is None or not obj.maps or getattr(args, "json", False):
        return
    print("maps:")
    for m in obj.maps.values():
        print(f"  {describe(m)}")
        lines = dump_lines(m) if getattr(args, "dump_maps", False) else entries(m, args.entries)
        for line in lines:
            print(f"    {line}")


def run_document(args: argparse.Namespace, loaded: Any, engine: str, context: str,
                 verdicts: str, kept: list[str], dropped: int, r0: int | None = None,
                 stats: CaptureStats | None = None, writers: Writers | None = None,
                 interrupted: bool = False) -> None:
    """Print the run's --json document (ebpfvm.cli_json)."""
    program = loaded.program
    doc: dict[str, Any] = {
        "program": str(args.program), "section": program.section if program else None,
        "function": program.name if program else None, "engine": engine, "context": context}
    if r0 is not None:
        name = verdict_name(r0, verdicts)
        doc.update(r0=r0, verdict=None if name == str(r0) else name)
    if stats is not None:
        doc["capture"] = {
            "packets": stats.packets, "seconds": stats.seconds,
            "packets_per_second": stats.packets_per_second, "mode": stats.mode,
            "why": stats.why, "verdicts": dict(stats.histogram.most_common()),
            "interrupted": interrupted,
            "written": writers.passed.count if writers and writers.passed else None,
            "tx_written": writers.tx.count if writers and writers.tx else None}
    doc["trace_printk"] = kept
    doc["trace_printk_dropped"] = dropped
    maps = loaded.obj.maps.values() if loaded.obj is not None else []
    doc["maps"] = [map_document(m, True) for m in maps]
    emit(doc)
