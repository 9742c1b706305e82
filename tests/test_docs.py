"""Every code sample of README.md and docs/*.md runs, so the docs cannot rot.

The conventions (docs/guide.md, "How the samples are tested"):

* A ```python block is a complete program, run on its own in a fresh
  namespace, in a scratch directory where examples/ and tests/ point into the
  repository. ```python no-run blocks are shown only (at most MAX_NO_RUN).
  Blocks that use the JIT skip where the JIT is unavailable.
* In a ```sh block, every line starting with ``ebpfvm `` runs through the
  installed console script, in order, in one scratch directory per block; it
  must exit 0, or N when the line ends with ``# exit N``.
* ``<!-- output -->`` and a ```text block right after a block: the block's
  standard output must equal the text.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import DOCS_RAN, REPO
from ebpfvm.jit.execmem import jit_supported

DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINKED_DIRS = ("examples", "tests")
"""Repository folders the samples name by relative path."""
MAX_NO_RUN = 2
JIT_MARKERS = ("jit_compile", 'engine="jit', "execute_program_jit", "test_run(")
OUTPUT_MARK = "<!-- output -->"
FENCE = re.compile(r"^```(\S*)[ \t]*(.*)$")
EXIT_NOTE = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")
CLI_TIMEOUT = 300


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts, its language and info, its text, and
    the output it must print (None when the docs give none)."""

    path: Path
    line: int
    lang: str
    info: str
    code: str
    output: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def _fenced(lines: list[str], start: int) -> tuple[str, int]:
    """The text of the block whose opening fence is lines[start], and the index
    after its closing fence."""
    end = start + 1
    while end < len(lines) and lines[end].rstrip() != "```":
        end += 1
    if end == len(lines):
        raise ValueError(f"unclosed code block at line {start + 1}")
    return "".join(line + "\n" for line in lines[start + 1 : end]), end + 1


def parse_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with its expected output."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        lang, info = match.group(1), match.group(2).strip()
        start = index
        code, index = _fenced(lines, start)
        output = None
        after = index
        while after < len(lines) and not lines[after].strip():
            after += 1
        if after < len(lines) and lines[after].strip() == OUTPUT_MARK:
            fence = after + 1
            if fence >= len(lines) or lines[fence].rstrip() != "```text":
                raise ValueError(f"{path.name}:{after + 1}: {OUTPUT_MARK} must precede a ```text block")
            output, index = _fenced(lines, fence)
        blocks.append(Block(path, start + 1, lang, info, code, output))
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in parse_blocks(path)]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python" and b.info != "no-run"]
NO_RUN = [b for b in ALL_BLOCKS if b.lang == "python" and b.info == "no-run"]
SHELL = [b for b in ALL_BLOCKS if b.lang == "sh" and any(
    line.startswith("ebpfvm ") for line in b.code.splitlines())]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A working directory in which examples/ and tests/ are the repository's."""
    for name in LINKED_DIRS:
        (tmp_path / name).symlink_to(REPO / name, target_is_directory=True)
    return tmp_path


def test_docs_have_samples() -> None:
    assert (REPO / "docs" / "guide.md").is_file()
    assert "docs/guide.md" in (REPO / "README.md").read_text(encoding="utf-8")
    assert len(PYTHON) >= 20 and len(SHELL) >= 3
    assert len(NO_RUN) <= MAX_NO_RUN, [b.name for b in NO_RUN]
    assert all(b.output is None or b.lang in ("python", "sh") for b in ALL_BLOCKS)


def test_parser_reads_outputs_and_info(tmp_path: Path) -> None:
    path = tmp_path / "check.md"
    path.write_text("x\n```python no-run\nprint(1)\n```\n\n<!-- output -->\n```text\n1\n```\n"
                    "```sh\nebpfvm --version\n```\n", encoding="utf-8")
    first, second = parse_blocks(path)
    assert (first.lang, first.info, first.code, first.output) == ("python", "no-run",
                                                                   "print(1)\n", "1\n")
    assert (second.lang, second.line, second.output) == ("sh", 10, None)


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.name)
def test_python_sample(block: Block, scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if any(marker in block.code for marker in JIT_MARKERS) and jit_supported() is not None:
        pytest.skip(f"JIT sample: {jit_supported()}")
    monkeypatch.chdir(scratch)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block.code, block.name, "exec"), {"__name__": "__docs__"})
    DOCS_RAN["python"] += 1
    if block.output is not None:
        assert out.getvalue() == block.output
        DOCS_RAN["python output"] += 1


def _console_script() -> list[str]:
    """The installed ebpfvm script beside this Python, else the module."""
    found = shutil.which("ebpfvm", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "ebpfvm.cli"]


@pytest.mark.parametrize("block", SHELL, ids=lambda b: b.name)
def test_cli_sample(block: Block, scratch: Path) -> None:
    outputs: list[str] = []
    for line in block.code.splitlines():
        if not line.startswith("ebpfvm "):
            continue
        note = EXIT_NOTE.search(line)
        expected = int(note.group(1)) if note else 0
        command = shlex.split(line[: note.start()] if note else line, comments=True)
        done = subprocess.run([*_console_script(), *command[1:]], cwd=scratch,
                              capture_output=True, text=True, timeout=CLI_TIMEOUT)
        if done.returncode != expected:
            pytest.fail(f"{line!r} exited {done.returncode}, not {expected}: {done.stderr}")
        DOCS_RAN["commands"] += 1
        outputs.append(done.stdout)
    if block.output is not None:
        assert "".join(outputs) == block.output


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


def test_slugs_follow_github() -> None:
    assert _slug("Contexts: XDP and `__sk_buff`") == "contexts-xdp-and-__sk_buff"
    assert _slug("rbpf's README examples in Python") == "rbpfs-readme-examples-in-python"
    assert _slug("Assembler, disassembler and verifier") == "assembler-disassembler-and-verifier"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_links_resolve(path: Path) -> None:
    """Relative links name files that exist, and #anchors headings that exist."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    checked = 0
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # an external address
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{path.name}: {target} names no file"
        if anchor:
            assert anchor in _anchors(linked), f"{path.name}: {target} names no heading"
        checked += 1
    assert checked or path.name != "guide.md"


def _quick_start(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_guide_quick_start_is_the_readme_one() -> None:
    """The guide repeats the README's two commands; they must not drift apart."""
    readme = _quick_start(REPO / "README.md")
    assert len(readme.strip().splitlines()) == 2
    assert _quick_start(REPO / "docs" / "guide.md") == readme
