"""Run a VM on a named engine, so every test runs the same case everywhere.

The engine lists come from the registry (``ebpfvm.engines()``): every engine
that runs here, and the checked ones among them."""

from __future__ import annotations

from typing import Any

from ebpfvm import engines
from ebpfvm.engine import find_engine

ALL_ENGINES = [info.name for info in engines() if info.unavailable is None]
CHECKED_ENGINES = [info.name for info in engines() if info.unavailable is None and info.checked]
"""Engines that must stop bad programs with a typed error (unchecked JIT code would crash)."""


def run(vm: Any, engine: str, *args: Any) -> int:
    """vm.execute_program(*args) on `engine`, compiling first when needed."""
    if find_engine(engine).reference:
        result: int = vm.execute_program(*args)
        return result
    if vm.jit_engine != engine:
        vm.jit_compile(engine=engine)
    result = vm.execute_program_jit(*args)
    return result
