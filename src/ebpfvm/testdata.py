"""Reader for the ``.data`` test-vector format of bpf_conformance and uBPF.

Format rules (shared/conformance/README.md section 1): a trailing CR is
stripped; everything from the first ``#`` is a comment; a line containing
``--`` chooses the section by substring (asm, result, mem, raw, "no register
offset", " c", error; anything else makes the file unusable); blank lines are
dropped; lines before the first directive are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DataFile", "UnknownDirective", "parse_data", "read_data_file"]


class UnknownDirective(ValueError):
    """The file has a ``--`` directive the format does not define; runners skip it."""


@dataclass(frozen=True, slots=True)
class DataFile:
    """One test vector. `raw` (slots as u64) replaces `asm` when present."""

    name: str
    asm: str
    raw: tuple[int, ...] | None
    mem: bytes
    has_mem: bool
    result: int | None
    error: str | None

    def program(self) -> bytes:
        """The program bytes: the raw slots, or the assembled asm section."""
        if self.raw is not None:
            return b"".join(slot.to_bytes(8, "little") for slot in self.raw)
        from .asm import assemble

        return assemble(self.asm)


# Order matters: the first substring found chooses the section.
_SECTIONS = (
    ("asm", "asm"),
    ("result", "result"),
    ("mem", "mem"),
    ("raw", "raw"),
    ("no register offset", None),
    (" c", None),
    ("error", "error"),
)


def _section_of(line: str) -> str:
    for needle, section in _SECTIONS:
        if needle in line:
            return section or "ignore"
    raise UnknownDirective(line.strip())


def parse_data(text: str, name: str = "<data>") -> DataFile:
    """Parse the text of one ``.data`` file."""
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for raw_line in text.split("\n"):
        line = raw_line.rstrip("\r").split("#", 1)[0]
        if "--" in line:
            section = _section_of(line)
            sections.setdefault(section, [])
            current = section
            continue
        if not line.strip() or current is None:
            continue
        sections.setdefault(current, []).append(line)
    result_lines = [s.strip() for s in sections.get("result", []) if s.strip()]
    result = None
    if result_lines:
        last = result_lines[-1]
        result = int(last, 16) if "0x" in last else int(last)
    error_lines = [s.strip() for s in sections.get("error", []) if s.strip()]
    raw = None
    if "raw" in sections:
        raw = tuple(int(tok, 0) for line in sections["raw"] for tok in line.split())
    mem_tokens = [tok for line in sections.get("mem", []) for tok in line.split()]
    return DataFile(
        name=name,
        asm="\n".join(sections.get("asm", [])) + "\n",
        raw=raw,
        mem=bytes.fromhex("".join(mem_tokens)),
        has_mem="mem" in sections,
        result=result,
        error=error_lines[-1] if error_lines else None,
    )


def read_data_file(path: str | Path) -> DataFile:
    """Read and parse a ``.data`` file."""
    p = Path(path)
    return parse_data(p.read_text(encoding="utf-8"), p.name)
