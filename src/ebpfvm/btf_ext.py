"""A reader for the line info of ``.BTF.ext``: which C source line each
instruction came from, with the line's text (clang -g stores it).

Layout (the kernel's Documentation/bpf/btf.rst, section "BTF.ext"): a header
``magic u16 (0xeb9f), version u8, flags u8, hdr_len u32, func_info_off u32,
func_info_len u32, line_info_off u32, line_info_len u32`` (offsets from the
end of the header); the line info block starts with ``rec_size u32`` and
then, per code section, ``sec_name_off u32, num_info u32`` followed by
`num_info` records ``insn_off u32 (bytes into the section), file_name_off
u32, line_off u32, line_col u32 (line << 10 | column)``. Every name offset
points into the string table of ``.BTF``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .btf import BTF_MAGIC, btf_strings, string_at
from .encoding import SLOT
from .errors import ElfError, count_of

__all__ = ["LineInfo", "parse_line_info"]

EXT = ".BTF.ext"
_EXT_HEADER = struct.Struct("<HBBIIIII")
_SECTION = struct.Struct("<II")  # sec_name_off, num_info
_RECORD = struct.Struct("<IIII")  # insn_off, file_name_off, line_off, line_col
_U32 = struct.Struct("<I")
LINE_SHIFT = 10
"""line_col keeps the line number above this bit and the column below it."""
COLUMN_MASK = (1 << LINE_SHIFT) - 1


@dataclass(frozen=True, slots=True)
class LineInfo:
    """Where one instruction's code came from."""

    file: str
    line: int
    column: int
    text: str


def parse_line_info(btf: bytes, ext: bytes) -> dict[str, dict[int, LineInfo]]:
    """Line info by code section name, then by instruction index (insn_off / 8).
    ElfError naming ``.BTF.ext`` for anything malformed (header, block bounds,
    record size, counts)."""
    strings = btf_strings(btf)
    start, end = _line_block(ext)
    result: dict[str, dict[int, LineInfo]] = {}
    if start == end:
        return result
    (rec_size,) = _U32.unpack_from(ext, start)
    if rec_size < _RECORD.size or rec_size % _U32.size:
        raise ElfError(f"BTF.ext line info records of {count_of(rec_size, 'byte')} (at least "
                       f"{_RECORD.size}, a multiple of {_U32.size})", EXT)
    pos = start + _U32.size
    while pos < end:
        if pos + _SECTION.size > end:
            raise ElfError("BTF.ext line info section header is cut short", EXT)
        name_off, count = _SECTION.unpack_from(ext, pos)
        pos += _SECTION.size
        if pos + count * rec_size > end:
            raise ElfError("BTF.ext line info records run past their block", EXT)
        lines = result.setdefault(string_at(strings, name_off, EXT), {})
        for index in range(count):
            insn_off, file_off, text_off, line_col = _RECORD.unpack_from(ext, pos + index * rec_size)
            lines[insn_off // SLOT] = LineInfo(string_at(strings, file_off, EXT), line_col >> LINE_SHIFT,
                                            line_col & COLUMN_MASK, string_at(strings, text_off, EXT))
        pos += count * rec_size
    return result


def _line_block(ext: bytes) -> tuple[int, int]:
    """(start, end) of the line info block of a ``.BTF.ext`` section, checked:
    a whole header, a block inside the section, empty or with its record size."""
    if len(ext) < _EXT_HEADER.size:
        raise ElfError("BTF.ext header is cut short", EXT)
    magic, _v, _f, hdr_len, _fo, _fl, line_off, line_len = _EXT_HEADER.unpack_from(ext)
    if magic != BTF_MAGIC:
        raise ElfError(f"BTF.ext magic is {magic:#x}", EXT)
    if not _EXT_HEADER.size <= hdr_len <= len(ext):
        raise ElfError(f"BTF.ext header length {hdr_len} is out of range", EXT)
    start = hdr_len + line_off
    end = start + line_len
    if end > len(ext):
        raise ElfError("BTF.ext line info runs past the end of the section", EXT)
    if 0 < line_len < _U32.size:
        raise ElfError(f"BTF.ext line info block of {count_of(line_len, 'byte')} has no record size", EXT)
    return start, end
