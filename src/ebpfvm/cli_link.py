"""What ``ebpfvm verify`` and ``ebpfvm maps`` show of an object whose
programs cannot all be linked (ebpfvm.linkcheck): each program's problem as
a verifier-style line, and every map, those of unsupported types included."""

from __future__ import annotations

from typing import Any

from .errors import EbpfError
from .linkerrors import (
    HelperNotAllowed,
    LinkError,
    UnsupportedExtern,
    UnsupportedHelper,
    UnsupportedMapAttribute,
    UnsupportedMapType,
    UnsupportedRelocation,
)
from .mapview import describe

__all__ = ["map_lines", "no_programs", "problem_line", "problem_result", "verify_targets"]

_RULES: tuple[tuple[type[LinkError], str], ...] = (
    (HelperNotAllowed, "helper_not_allowed"), (UnsupportedHelper, "unsupported_helper"),
    (UnsupportedMapAttribute, "unsupported_map_attribute"),
    (UnsupportedMapType, "unsupported_map_type"),
    (UnsupportedRelocation, "unsupported_relocation"),
    (UnsupportedExtern, "unsupported_extern"))
"""The rule name ``ebpfvm verify`` shows for each problem."""


def verify_targets(obj: Any, section: str | None, function: str | None
                   ) -> list[tuple[str, bytes | LinkError]]:
    """(SECTION/NAME, its code or its problem) for the programs `verify`
    checks: the one --section/--function choose, or all of them."""
    if section or function:
        try:
            program = obj.program(function, section=section)
        except LinkError as problem:
            return [(f"{problem.section}/{problem.program}", problem)]
        return [(f"{program.section}/{program.name}", program.code)]
    targets: list[tuple[str, bytes | LinkError]] = [
        (f"{p.section}/{p.name}", p.code) for p in obj.programs]
    targets += [(f"{p.section}/{name}", p) for name, p in obj.problems.items()]
    return targets


def problem_result(name: str, problem: LinkError) -> dict[str, Any]:
    """A program that cannot be linked, as one ``ebpfvm verify`` result
    (the fields a verifier rejection has: name, pc, reason, rule)."""
    pc = getattr(problem, "pc", None)
    rule = next((rule for kind, rule in _RULES if isinstance(problem, kind)), "unsupported")
    reason = str(problem.reason).removeprefix(f"program {problem.program!r}: ")
    reason = reason.replace(f" at insn {pc}", "") if pc is not None else reason
    return {"name": name, "slots": None, "ok": False, "pc": pc, "reason": reason,
            "rule": rule}


def problem_line(name: str, problem: LinkError) -> str:
    """``xdp/lookup: REJECTED at pc 8: helper ... [unsupported_helper]``."""
    result = problem_result(name, problem)
    where = f"pc {result['pc']}" if result["pc"] is not None else "program"
    return f"{name}: REJECTED at {where}: {result['reason']} [{result['rule']}]"


def map_lines(obj: Any) -> list[str]:
    """One line per map of the object (``no maps`` when it has none)."""
    lines = [describe(found) for found in obj.maps.values()]
    lines += [found.describe() for found in obj.unsupported_maps.values()]
    return lines or ["no maps"]


def no_programs(obj: Any) -> EbpfError | None:
    """The problem to report when the object has no program that can run
    but has programs with problems (the first of them), else None."""
    return next(iter(obj.problems.values()), None) if not obj.programs else None
