"""Every Python code block in the README runs, so the docs cannot rot."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from ebpfvm.jit.execmem import jit_supported

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    if "jit_compile" in BLOCKS[index] and jit_supported() is not None:
        pytest.skip(f"JIT example: {jit_supported()}")
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), {})
