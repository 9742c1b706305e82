"""Robustness: bounded fuzzing of every entry point (tests/fuzzing.py), the JIT's
memory over many compile cycles, and regression tests for what fuzzing found."""

from __future__ import annotations

import pytest

from ebpfvm import EbpfVmRaw, InvalidInstruction
from engines import ALL_ENGINES, run

# -- regressions found by the fuzzer -----------------------------------------------------------


@pytest.mark.parametrize("engine", ALL_ENGINES)
def test_empty_program_without_verifier_is_an_invalid_instruction(engine: str) -> None:
    # Found by fuzzing: b"" crashed the JIT (the entry fell through into
    # whatever followed) and made the interpreter generate invalid Python.
    vm = EbpfVmRaw(budget=100)
    vm.set_verifier(lambda code: None)
    vm.set_program(b"")
    with pytest.raises(InvalidInstruction) as info:
        run(vm, engine, bytearray(8))
    assert (info.value.pc, info.value.opcode) == (0, 0)
    vm.close()
