"""The code rules of issue 12 (point 6), checked on src/ebpfvm: no function
over 80 lines, no module over 800 lines, and no docstring or comment citing
a file users do not have (the ISA reference and the style guide live outside
the repository: cite RFC 9669 sections instead)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "ebpfvm"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 800
OUTSIDE_FILES = re.compile(r"isa\.md|style\.md|notes\.md|\.\./shared")
"""What a citation of a file outside the repository looks like."""


def _modules() -> list[Path]:
    modules = sorted(SRC.rglob("*.py"))
    assert len(modules) > 30, "the source tree was not found"
    return modules


def _name(path: Path) -> str:
    return str(path.relative_to(SRC))


def long_functions(path: Path) -> list[str]:
    """`module:line name (n lines)` for each function of `path` over the limit."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{_name(path)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_over_80_lines() -> None:
    assert [entry for path in _modules() for entry in long_functions(path)] == []


def test_no_module_is_over_800_lines() -> None:
    long = [f"{_name(path)} ({count} lines)" for path in _modules()
            if (count := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert long == []


def test_nothing_cites_a_file_outside_the_repository() -> None:
    cites = [f"{_name(path)}:{number}: {line.strip()}"
             for path in _modules()
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if OUTSIDE_FILES.search(line)]
    assert cites == []

