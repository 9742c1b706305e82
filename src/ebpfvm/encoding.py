"""Bytes <-> instructions: 8-byte little-endian slots and the two-slot lddw
(RFC 9669 section 3)."""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterable
from itertools import compress, repeat
from typing import NamedTuple

from .errors import DecodeError
from .isa import BY_OPCODE, Form, OpInfo, find_row

__all__ = ["SLOT", "SLOT_LAYOUT", "Insn", "decode", "encode", "encode_one", "lddw_slots"]

SLOT = 8
"""Bytes in one instruction slot."""

SLOT_LAYOUT = struct.Struct("<BBhi")
"""One slot (RFC 9669 section 3.1): opcode u8, dst | src << 4 u8, offset s16, imm s32, little-endian."""
_SLOT = SLOT_LAYOUT
_LDDW_OPCODE = next(row.opcode for rows in BY_OPCODE for row in rows if row.form is Form.LDDW)
_M32 = 0xFFFF_FFFF
_ROW_CACHE: dict[int, OpInfo | None] = {}
"""find_row results by slot (its 8 bytes as a little-endian int): programs
repeat their instructions."""
_BIG_ENDIAN = sys.byteorder == "big"
_DST = bytes(value & 0xF for value in range(256))
_SRC = bytes(value >> 4 for value in range(256))
"""Translation tables from a registers byte to its dst and its src."""
_ROW_CACHE_LIMIT = 1 << 16
_new_tuple = tuple.__new__


class Insn(NamedTuple):
    """One decoded instruction. For lddw, `imm` holds the full 64-bit value
    (unsigned) and `pc` is the first of its two slots.

    `row` is the opcode-table row, or None when the fields select no row (the
    verifier reports why). A NamedTuple: decoding builds one per instruction,
    and a tuple is built in C."""

    pc: int
    opcode: int
    dst: int
    src: int
    off: int
    imm: int
    row: OpInfo | None

    @property
    def slots(self) -> int:
        return 2 if self.opcode == _LDDW_OPCODE else 1


def _unpack(code: bytes | bytearray | memoryview, slot: int) -> tuple[int, int, int, int, int]:
    opcode, regs, off, imm = _SLOT.unpack_from(code, slot * SLOT)
    return opcode, regs & 0xF, regs >> 4, off, imm


def _words(data: bytes, typecode: str) -> array[int]:
    """`data` as little-endian integers of the array type `typecode`."""
    words = array(typecode, data)
    if _BIG_ENDIAN:
        words.byteswap()
    return words


def decode(code: bytes | bytearray | memoryview) -> list[Insn]:
    """Decode a program into instructions, one per instruction (lddw fused).

    Raises DecodeError when the length is not a multiple of 8 or an lddw is
    cut off by the end of the program. Invalid fields are not errors here:
    such an instruction gets ``row = None``.
    """
    if len(code) % SLOT:
        raise DecodeError(f"program length {len(code)} is not a multiple of {SLOT}")
    data = bytes(code)
    nslots = len(data) // SLOT
    if not nslots:
        return []
    # Every slot as an instruction, built by C code only: a program has many.
    words = _words(data, "Q")  # a slot's 8 bytes as one int: a cheap key
    rows = _ROW_CACHE
    missing = set(words).difference(rows)
    if missing:
        if len(rows) + len(missing) > _ROW_CACHE_LIMIT:
            rows.clear()
            missing = set(words)
        for word in missing:
            opcode, regs, off, imm = _SLOT.unpack(word.to_bytes(SLOT, "little"))
            rows[word] = find_row(opcode, regs >> 4, off, imm)
    ops = data[::SLOT]
    regs = data[1::SLOT]
    imms = _words(data, "i")[1::2]
    insns = list(map(tuple.__new__, repeat(Insn), zip(
        range(nslots), ops, regs.translate(_DST), regs.translate(_SRC),
        _words(data, "h")[1::4], imms, map(rows.__getitem__, words), strict=True)))
    pc = ops.find(_LDDW_OPCODE)
    if pc < 0:
        return insns
    keep = bytearray(b"\1") * nslots
    while pc >= 0:  # each lddw takes the next slot's imm as its high half
        if pc + 1 >= nslots:
            raise DecodeError("lddw is missing its second slot", pc)
        first = insns[pc]  # rebuilt by tuple.__new__: _replace runs Python code
        insns[pc] = _new_tuple(Insn, (pc, first[1], first[2], first[3], first[4],
                                      (first[5] & _M32) | ((imms[pc + 1] & _M32) << 32), first[6]))
        keep[pc + 1] = 0
        pc = ops.find(_LDDW_OPCODE, pc + 2)
    return list(compress(insns, keep))


def lddw_second_slot(code: bytes | bytearray | memoryview, pc: int) -> tuple[int, int, int, int]:
    """(opcode, dst, src, off) of the second slot of the lddw at `pc`; all must be 0."""
    opcode, dst, src, off, _imm = _unpack(code, pc + 1)
    return opcode, dst, src, off


def lddw_slots(dst: int, src: int, value: int) -> bytes:
    """The two slots of an lddw loading the 64-bit `value`."""
    lo = value & _M32
    hi = (value >> 32) & _M32
    return _SLOT.pack(_LDDW_OPCODE, dst | (src << 4), 0, _s32(lo)) + _SLOT.pack(0, 0, 0, _s32(hi))


def _s32(value: int) -> int:
    value &= _M32
    return value - (1 << 32) if value >> 31 else value


def encode_one(opcode: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """Encode one instruction. lddw (two slots) takes its full 64-bit value in `imm`.

    `off` must fit s16 and, except for lddw, `imm` must fit s32 or u32
    (a u32 is reinterpreted as s32)."""
    if opcode == _LDDW_OPCODE:
        if not -(1 << 63) <= imm < (1 << 64):
            raise ValueError(f"lddw value {imm} does not fit 64 bits")
        return lddw_slots(dst, src, imm)
    if not -(1 << 31) <= imm <= _M32:
        raise ValueError(f"immediate {imm} does not fit 32 bits")
    if not -(1 << 15) <= off < (1 << 15):
        raise ValueError(f"offset {off} does not fit 16 bits")
    if not (0 <= dst <= 15 and 0 <= src <= 15):
        raise ValueError("register fields must be 0..15")
    return _SLOT.pack(opcode, dst | (src << 4), off, _s32(imm))


def encode(insns: Iterable[Insn]) -> bytes:
    """Encode decoded instructions back to bytes."""
    return b"".join(encode_one(i.opcode, i.dst, i.src, i.off, i.imm) for i in insns)
