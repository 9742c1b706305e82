"""``ebpfvm run --pcap FILE --jobs N``: worker threads over a capture
(ebpfvm.capture_jobs)."""

from __future__ import annotations

import argparse

from .capture_jobs import default_jobs

__all__ = ["add_jobs_option", "jobs_of"]


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of jobs, not {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"jobs must be 1 to 1024, not {value}")
    return value


def add_jobs_option(run: argparse.ArgumentParser) -> None:
    run.add_argument("--jobs", type=_jobs, metavar="N",
                     help="with --pcap: worker threads, sharing the maps (default: the "
                          "cores this process may use)")


def jobs_of(args: argparse.Namespace) -> int:
    """--jobs, or the cores this process may use."""
    chosen: int | None = getattr(args, "jobs", None)
    return chosen if chosen is not None else default_jobs()
