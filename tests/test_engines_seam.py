"""The engine seam (issue 12): the registry, its capabilities, unknown and
unavailable engines, a new engine running through every entry point with no
module change, the program value, and the import boundaries."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ebpfvm
from ebpfvm import ArgumentError, EbpfVmRaw, JitError, JitUnsupported, assemble, encoding
from ebpfvm.capture import run_capture
from ebpfvm.contexts import XdpAction, XdpRunner
from ebpfvm.engine import (
    CompileSettings,
    engine_names,
    find_engine,
    get_engine,
    register_engine,
    unregister_engine,
)
from ebpfvm.errors import VerifierError
from ebpfvm.interp_engine import InterpEngine, InterpExecutable
from ebpfvm.interpreter import compile_program
from ebpfvm.jit.execmem import jit_supported
from ebpfvm.program import ProgramImage
from ebpfvm.verifier import verify

SRC = Path(ebpfvm.__file__).parent


class _FakeEngine:
    """A new engine made of the interpreter's executable, registered by a
    test only: no module knows its name."""

    name = "fake"
    title = "the fake engine"
    checked = True
    batches = True
    tracing = False
    reference = False
    platforms = ("any",)

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason
        self.compiled = 0

    def unavailable(self) -> str | None:
        return self.reason

    def compile(self, program: ProgramImage, settings: CompileSettings) -> InterpExecutable:
        self.compiled += 1
        return InterpEngine().compile(program, settings)


@pytest.fixture
def fake() -> Iterator[_FakeEngine]:
    engine = _FakeEngine()
    register_engine(engine)
    try:
        yield engine
    finally:
        unregister_engine(engine.name)


def test_the_registry_lists_the_three_engines_with_their_capabilities() -> None:
    listed = {info.name: info for info in ebpfvm.engines()}
    assert list(listed) == ["interp", "jit", "jit-unchecked"]
    interp, jit, unchecked = listed["interp"], listed["jit"], listed["jit-unchecked"]
    assert (interp.checked, interp.batches, interp.tracing, interp.platforms) == (
        True, False, True, ("any",))
    assert interp.unavailable is None
    assert (jit.checked, jit.batches, jit.tracing) == (True, True, False)
    assert (unchecked.checked, unchecked.batches, unchecked.tracing) == (False, True, False)
    for info in (jit, unchecked):
        assert info.platforms == ("linux-x86_64",)
        assert info.unavailable == jit_supported()


def test_an_unknown_engine_name_raises_argument_error_listing_the_names() -> None:
    with pytest.raises(ArgumentError) as caught:
        get_engine("llvm")
    assert caught.value.argument == "engine"
    assert caught.value.value == "llvm"
    for name in ("interp", "jit", "jit-unchecked"):
        assert name in str(caught.value)
    with pytest.raises(ArgumentError):
        XdpRunner(assemble("mov r0, 2\nexit"), engine="llvm")
    with pytest.raises(ArgumentError):
        EbpfVmRaw(assemble("mov r0, 2\nexit")).jit_compile(engine="llvm")


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ArgumentError):
        register_engine(InterpEngine())


def test_an_unavailable_engine_is_listed_with_its_reason_and_cannot_be_had() -> None:
    engine = _FakeEngine("needs a RISC-V host")
    register_engine(engine)
    try:
        listed = {info.name: info for info in ebpfvm.engines()}
        assert listed["fake"].unavailable == "needs a RISC-V host"
        assert find_engine("fake") is engine
        with pytest.raises(JitUnsupported) as caught:
            get_engine("fake")
        assert (caught.value.engine, caught.value.reason) == ("fake", "needs a RISC-V host")
        assert isinstance(caught.value, JitError)
        vm = EbpfVmRaw(assemble("mov r0, 2\nexit"))
        with pytest.raises(JitUnsupported):
            vm.jit_compile(engine="fake")
        assert not vm.jit_ready
        assert engine.compiled == 0
    finally:
        unregister_engine("fake")
    assert "fake" not in engine_names()


def test_the_jit_off_x86_64_linux_raises_jit_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.platform", "darwin")
    vm = EbpfVmRaw(assemble("mov r0, 2\nexit"))
    with pytest.raises(JitUnsupported) as caught:
        vm.jit_compile()
    assert caught.value.engine == "jit"
    assert "darwin" in caught.value.reason
    with pytest.raises(JitUnsupported):
        XdpRunner(vm, engine="jit-unchecked")
    assert vm.execute_program() == 2


_XDP_FILTER = """
    ldxw r2, [r1+0]
    ldxw r3, [r1+4]
    mov r0, 2
    mov r4, r2
    add r4, 1
    jgt r4, r3, +3
    ldxb r5, [r2+0]
    jne r5, 0x42, +1
    mov r0, 1
    exit
"""


def test_a_new_engine_runs_through_the_vm_the_runners_and_captures(fake: _FakeEngine) -> None:
    """The seam: an engine no module names runs through the VM's API, an
    XdpRunner and a capture run."""
    code = assemble("mov r0, r2\nadd r0, 1\nexit")
    vm = EbpfVmRaw(code)
    vm.jit_compile(engine="fake")
    assert vm.jit_ready and vm.jit_engine == "fake" and not vm.jit_unchecked
    assert vm.execute_program_jit(bytearray(9)) == 10
    assert vm.last_registers[0] == 10
    assert vm.last_instruction_count == 3
    assert vm.test_run(b"abc", repeat=3)[0] == 4
    assert vm.execute_batch([b"a", b"abcd"]) == [2, 5]
    assert list(vm.execute_spans(bytes(10), [(0, 2), (2, 8)])) == [3, 9]
    assert "fake" in repr(vm)

    runner = XdpRunner(assemble(_XDP_FILTER), engine="fake")
    assert runner.run(b"\x42rest").verdict is XdpAction.DROP
    assert runner.run(b"\x41rest").verdict is XdpAction.PASS
    runner.close()

    capture_vm = EbpfVmRaw(assemble(_XDP_FILTER))
    frames = [(0.0, b"\x42abc"), (1.0, b"\x41abc"), (2.0, b"\x42")]
    stats = run_capture(capture_vm, frames, engine="fake")
    assert stats.mode == "native"  # the fake engine says it batches
    assert stats.packets == len(frames)
    assert stats.histogram == {"XDP_DROP": 2, "XDP_PASS": 1}
    assert fake.compiled >= 3


def test_the_engine_name_is_an_alias_of_unchecked() -> None:
    if jit_supported() is not None:
        pytest.skip(str(jit_supported()))
    vm = EbpfVmRaw(assemble("mov r0, 7\nexit"))
    vm.jit_compile(unchecked=True)
    assert vm.jit_unchecked and vm.jit_engine == "jit-unchecked"
    vm.jit_compile(engine="jit")
    assert not vm.jit_unchecked and vm.jit_engine == "jit"
    with pytest.raises(ArgumentError):
        vm.jit_compile(engine="jit", unchecked=True)


def test_decoded_does_not_build_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("decoded() translated the program")

    monkeypatch.setattr("ebpfvm.interp_engine.compile_program", refuse)
    vm = EbpfVmRaw(assemble("mov r0, 1\ncall 5\nexit"))
    insns = vm.decoded()
    assert [insn.pc for insn in insns] == [0, 1, 2]
    assert vm._interp is None


def test_the_program_value_holds_what_consumers_derive() -> None:
    code = assemble("""
        mov r1, 1
        call 7
        call local +1
        exit
        call 9
        mov r0, 3
        exit
    """)
    vm = EbpfVmRaw(code)
    image = vm.image
    assert vm.image is image  # built once per set_program
    assert image.code == code and image.slots == 7
    assert image.helpers == {7, 9}
    assert image.calls.entries == (0, 4) and image.calls.edges == ((2, 4),)
    assert [insn.pc for insn in image.blocks[0]] == [0, 1]
    assert image.stack_size == 512 * 8  # local calls: every frame
    assert image.run_stack == image.stack_size
    vm.set_program(assemble("mov r0, 0\nexit"))
    assert vm.image is not image and vm.image.helpers == frozenset()


_NAME_TEST = re.compile(
    r"""(==|!=)\s*["'](interp|jit|jit-unchecked)["']"""
    r"""|["'](interp|jit|jit-unchecked)["']\s*(==|!=)"""
    r"""|\bin\s*[(\[{][^)\]}]*["'](interp|jit|jit-unchecked)["']""")


def test_no_module_branches_on_engine_names() -> None:
    found = [f"{path.relative_to(SRC)}:{number}: {line.strip()}"
             for path in sorted(SRC.rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if _NAME_TEST.search(line)]
    assert found == []
    assert _NAME_TEST.search('if engine == "interp":')  # the pattern catches one
    assert _NAME_TEST.search("if name in ('jit', 'jit-unchecked'):")


def _imports(path: Path) -> set[str]:
    """The modules `path` imports, as absolute names (relative ones resolved)."""
    package = ["ebpfvm", *path.parent.relative_to(SRC).parts]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_vm_imports_no_jit_internals_and_the_jit_runtime_no_interpreter() -> None:
    vm_imports = _imports(SRC / "vm.py")
    assert "ebpfvm.engine" in vm_imports
    assert not [name for name in vm_imports if name.startswith("ebpfvm.jit")]
    runtime_imports = _imports(SRC / "jit" / "runtime.py")
    assert "ebpfvm.machine.Machine" in runtime_imports
    assert not [name for name in runtime_imports if name.startswith("ebpfvm.interpreter")]


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every ebpfvm module's `decode` (the bytes -> instructions one)
    count its calls; returns the list it appends the slot counts to."""
    calls: list[int] = []
    original = encoding.decode

    def counting(code: Any) -> Any:
        calls.append(len(code) // encoding.SLOT)
        return original(code)

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "ebpfvm" and getattr(module, "decode", None) is original:
            monkeypatch.setattr(module, "decode", counting)
    return calls


def test_an_interpreted_run_decodes_the_program_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """set_program (the built-in verifier, which reads the raw slots of the
    program value) decodes nothing; the interpreter's translation decodes it
    into the program value, and everything after uses those instructions."""
    calls = _count_decodes(monkeypatch)
    vm = EbpfVmRaw()
    vm.set_program(assemble("mov r0, r2\nadd r0, 1\nexit"))
    assert calls == []
    assert vm.execute_program(bytearray(4)) == 5
    assert [insn.pc for insn in vm.decoded()] == [0, 1, 2]
    assert vm.image.helpers == frozenset()
    assert calls == [3]


def test_a_user_verifier_gets_the_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """rbpf's API: set_verifier's function takes the bytecode; the built-in
    verifier alone gets the program value."""
    seen: list[object] = []
    first, code = assemble("mov r0, 7\nexit"), assemble("mov r0, 8\nexit")
    vm = EbpfVmRaw(first)
    vm.set_verifier(seen.append)
    vm.set_program(code)
    assert seen == [first, code]
    assert all(type(item) is bytes for item in seen)
    calls = _count_decodes(monkeypatch)
    assert vm.execute_program(bytearray(4)) == 8
    assert calls == [2]  # no built-in verifier decoded it: the translation did
    handed: list[object] = []
    monkeypatch.setattr("ebpfvm.vm.verify", handed.append)
    vm.set_verifier(ebpfvm.vm.verify)
    vm.set_program(code)
    assert len(handed) == 2 and all(isinstance(item, ProgramImage) for item in handed)
    assert handed[1] is vm.image and vm.image.code == code


def test_verify_and_compile_program_take_bytes_or_the_program_value() -> None:
    code = assemble("mov r0, 1\nlddw r1, 0x1122334455667788\nexit")
    image = ProgramImage(code)
    verify(code)
    verify(image)
    compiled = compile_program(image)
    assert compiled.insns is image.insns
    assert compile_program(code).insns == image.insns
    with pytest.raises(VerifierError) as caught:
        verify(ProgramImage(code[:8] + code[24:] + code[8:16]))  # an lddw cut off by the end
    assert caught.value.rule == "incomplete_lddw" and caught.value.pc == 2
