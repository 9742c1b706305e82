"""``-`` for standard input and output on the command line (issue 14, point 4).

``--pcap -``, ``--packet -``, ``--mem -`` and a program ``-`` read standard
input; ``--out -``, ``--tx-out -`` and ``asm -o -`` write standard output,
as tcpdump's ``-r -`` and ``-w -`` do. Only one argument may read standard
input, and only one may write binary data to standard output: the text
report then goes to standard error.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .errors import EbpfError

__all__ = ["STD", "StdStreamError", "binary_stdin", "binary_stdout", "is_std", "read_std",
           "reset", "routed_text"]

STD = "-"
"""The path that stands for standard input or output."""

_used: set[str] = set()
_data_out: list[Any] = []
"""The real standard output while routed_text sends the text to stderr."""


class StdStreamError(EbpfError):
    """Two arguments want the same standard stream, or it cannot carry bytes."""


def reset() -> None:
    """Forget which standard streams were taken (one command line each)."""
    _used.clear()


def is_std(path: Path | str | None) -> bool:
    """Whether `path` is ``-``."""
    return path is not None and str(path) == STD


def _take(stream: str, what: str) -> None:
    if stream in _used:
        raise StdStreamError(f"{what}: standard {stream} is already used by another "
                             "argument ('-' may stand for one file only)")
    _used.add(stream)


def binary_stdin(what: str) -> BinaryIO:
    """Standard input as a byte stream, for the argument `what`."""
    _take("input", what)
    buffer: BinaryIO | None = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        raise StdStreamError(f"{what}: standard input cannot be read as bytes")
    return buffer


def read_std(what: str) -> bytes:
    """All of standard input, for the argument `what`."""
    return binary_stdin(what).read()


def binary_stdout(what: str) -> BinaryIO:
    """Standard output as a byte stream (flushed of text first), for `what`."""
    _take("output", what)
    stream = _data_out[-1] if _data_out else sys.stdout
    stream.flush()
    buffer: BinaryIO | None = getattr(stream, "buffer", None)
    if buffer is None:
        raise StdStreamError(f"{what}: standard output cannot take bytes")
    return buffer


_READERS = ("program", "source", "pcap", "mem", "packet")
_WRITERS = ("out", "tx_out", "output")


def _shown(name: str) -> str:
    return name if name in ("program", "source") else "-o" if name == "output" else \
        "--" + name.replace("_", "-")


def looks_like_text(data: bytes) -> bool:
    """Whether `data` from standard input is assembly text rather than raw
    bytecode (which has NUL bytes in nearly every instruction)."""
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@contextlib.contextmanager
def routed_text(args: Any, options: tuple[str, ...] = ("out", "tx_out")) -> Iterator[None]:
    """One command: the standard streams start free; when one of `options`
    is ``-`` (a capture on stdout), the text report goes to stderr."""
    reset()
    for names, stream in ((_READERS, "input"), (_WRITERS, "output")):
        given = [name for name in names if is_std(getattr(args, name, None))]
        if len(given) > 1:
            shown = ", ".join(_shown(name) for name in given)
            raise StdStreamError(f"'-' stands for standard {stream}, which can serve one "
                                 f"argument only, not {shown}")
    if not any(is_std(getattr(args, name, None)) for name in options):
        yield
        return
    _data_out.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _data_out.pop()
