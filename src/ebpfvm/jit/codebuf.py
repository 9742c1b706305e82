"""Machine-code buffer with labels and rel32 fixups.

A :class:`CodeBuffer` is a growing ``bytearray``. Branches to a :class:`Label`
emit a 4-byte placeholder with :meth:`CodeBuffer.emit_rel32` and record a
fixup; :meth:`CodeBuffer.resolve` patches every placeholder once all labels
are bound. A rel32 field holds ``target - end_of_field`` as a signed 32-bit
little-endian integer, which is how x86 ``jmp``/``jcc``/``call rel32`` count
(the end of the field is the end of those instructions).

Every branch uses rel32, so an instruction's size never depends on where its
label ends up, and the size of the finished buffer is known before any
executable memory is allocated.
"""

from __future__ import annotations

import struct

from ebpfvm.errors import JitError

__all__ = ["CodeBuffer", "Fixup", "Label", "UnboundLabelError", "patch_rel32"]

REL32_SIZE = 4
_REL32_HOLE = bytes(REL32_SIZE)
_REL32 = struct.Struct("<i")
S32_MIN = -(1 << 31)
S32_MAX = (1 << 31) - 1


class UnboundLabelError(JitError, ValueError):
    """:meth:`CodeBuffer.resolve` found a branch to a label that was never bound.

    `label` is the label and `offset` the buffer offset of its rel32 field."""

    def __init__(self, label: Label, offset: int) -> None:
        super().__init__(f"rel32 at offset {offset} refers to unbound label {label.name!r}")
        self.label = label
        self.offset = offset


class Label:
    """A code position, unknown (``position is None``) until bound."""

    __slots__ = ("name", "position")

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.position: int | None = None

    def __repr__(self) -> str:
        return f"Label({self.name!r}, position={self.position})"


Fixup = tuple[int, Label]
"""A rel32 field at an offset in the buffer that must point at a label (a plain
tuple: programs make many, and a tuple display is the cheapest to build)."""


def patch_rel32(data: bytearray, at: int, target: int) -> None:
    """Point the rel32 field at offset `at` of `data` at offset `target` (both
    in `data`, which machine code never makes 2 GiB long)."""
    _REL32.pack_into(data, at, target - (at + REL32_SIZE))


def _check_range(value: int, low: int, high: int, what: str) -> None:
    if not low <= value <= high:
        raise ValueError(f"{what} value {value} is outside [{low}, {high}]")


class CodeBuffer:
    """Bytes emitted so far, plus the rel32 fixups still to patch."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.fixups: list[Fixup] = []

    @property
    def position(self) -> int:
        """Offset at which the next byte will be emitted."""
        return len(self.data)

    def emit(self, data: bytes | bytearray) -> None:
        self.data += data

    def emit_u8(self, value: int) -> None:
        _check_range(value, 0, 0xFF, "u8")
        self.data.append(value)

    def emit_s8(self, value: int) -> None:
        _check_range(value, -0x80, 0x7F, "s8")
        self.data += struct.pack("<b", value)

    def emit_u16(self, value: int) -> None:
        _check_range(value, 0, 0xFFFF, "u16")
        self.data += struct.pack("<H", value)

    def emit_u32(self, value: int) -> None:
        _check_range(value, 0, 0xFFFF_FFFF, "u32")
        self.data += struct.pack("<I", value)

    def emit_s32(self, value: int) -> None:
        _check_range(value, S32_MIN, S32_MAX, "s32")
        self.data += struct.pack("<i", value)

    def emit_u64(self, value: int) -> None:
        _check_range(value, 0, (1 << 64) - 1, "u64")
        self.data += struct.pack("<Q", value)

    def bind(self, label: Label) -> None:
        """Bind `label` to the current position; a label is bound only once."""
        if label.position is not None:
            raise ValueError(f"label {label.name!r} is already bound at {label.position}")
        label.position = len(self.data)

    def emit_rel32(self, label: Label) -> None:
        """Emit a 4-byte placeholder to be patched with ``label - end of field``."""
        data = self.data
        self.fixups.append((len(data), label))
        data += _REL32_HOLE

    def local_bytes(self, start: int, first_fixup: int) -> bytes | None:
        """The bytes emitted since `start`, with the rel32 fields recorded since
        fixup number `first_fixup` patched, provided every one of them points
        at a label bound inside those bytes. Such bytes do not depend on where
        they are placed, so they can be emitted again anywhere; None when some
        branch leaves them (or its label is not bound yet)."""
        end = len(self.data)
        piece = bytearray(self.data[start:])
        for offset, label in self.fixups[first_fixup:]:
            target = label.position
            if target is None or not start <= target <= end:
                return None
            patch_rel32(piece, offset - start, target - start)
        return bytes(piece)

    def resolve(self) -> None:
        """Patch every rel32 field. Raises :class:`UnboundLabelError` for an
        unbound label and ValueError for a distance that does not fit s32.
        Patching is idempotent, so resolving twice is harmless."""
        data = self.data
        for offset, label in self.fixups:
            target = label.position
            if target is None:
                raise UnboundLabelError(label, offset)
            distance = target - (offset + REL32_SIZE)
            if not S32_MIN <= distance <= S32_MAX:
                _check_range(distance, S32_MIN, S32_MAX, "rel32")
            _REL32.pack_into(data, offset, distance)
