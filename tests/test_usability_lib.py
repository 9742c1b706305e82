"""Issue 14, the library: arguments checked when they are given, typed errors
for use after close, runners and loaded objects as context managers, short
reprs, precise return types, every disassembly style of the CLI, clear map
errors and docstrings on the whole public API.

Each test asserts the exception's type and fields, not its wording (except
the plurals, where the wording is the finding)."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import pytest

import ebpfvm
import ebpfvm.contexts
import ebpfvm.maps
from ebpfvm import (
    EbpfError,
    EbpfVmFixedMbuff,
    EbpfVmMbuff,
    EbpfVmNoData,
    EbpfVmRaw,
    JitError,
    MemoryFault,
    assemble,
    disassemble,
    load,
)
from ebpfvm.cli import _parser
from ebpfvm.contexts import SkbRunner, XdpAction, XdpRunner
from ebpfvm.disasm import ALL_STYLES
from ebpfvm.elf import ElfObject
from ebpfvm.encoding import decode
from ebpfvm.errors import ArgumentError, ArgumentTypeError, BudgetExceeded, Closed
from ebpfvm.maps import ArrayIndexError, Map, MapError, MapFull, MapType, ProgArray
from ebpfvm.vm import MAX_BUDGET, MAX_HELPER_ID
from engines import run

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "bpf"
ELF_DATA = REPO / "tests" / "data" / "elf"
LLVM_GOLDEN = REPO / "tests" / "data" / "llvm_disasm" / "rows.txt"

RETURN_7 = "mov r0, 7\nexit"
XDP_PASS = f"mov r0, {int(XdpAction.PASS)}\nexit"
PACKET = bytes(64)
MAX_REPR = 400
"""A short repr: a few hundred characters at most."""
VM_KINDS = [EbpfVmRaw, EbpfVmMbuff, EbpfVmFixedMbuff, EbpfVmNoData]


def _helper(*_args: int) -> int:
    return 0


# -- arguments checked when given -----------------------------------------------------


@pytest.mark.parametrize("not_callable", [5, "bpf_ktime_get_ns", None])
def test_register_helper_refuses_what_is_not_callable(not_callable: Any) -> None:
    vm = EbpfVmRaw(assemble(RETURN_7))
    with pytest.raises(ArgumentTypeError) as caught:
        vm.register_helper(1, not_callable)
    assert isinstance(caught.value, TypeError)
    assert caught.value.argument == "helper"
    assert caught.value.value is not_callable
    assert 1 not in vm._helpers


@pytest.mark.parametrize("key", [2**40, MAX_HELPER_ID + 1, -1])
def test_register_helper_refuses_an_id_outside_u32(key: int) -> None:
    """`call imm` holds a u32: no program can call a helper id outside it."""
    vm = EbpfVmRaw(assemble(RETURN_7))
    with pytest.raises(ArgumentError) as caught:
        vm.register_helper(key, _helper)
    assert isinstance(caught.value, ValueError)
    assert (caught.value.argument, caught.value.value) == ("helper id", key)


@pytest.mark.parametrize("key", ["1", 1.0, True])
def test_register_helper_refuses_an_id_that_is_not_an_int(key: Any) -> None:
    vm = EbpfVmRaw(assemble(RETURN_7))
    with pytest.raises(ArgumentTypeError) as caught:
        vm.register_helper(key, _helper)
    assert caught.value.argument == "helper id"


def test_register_helper_accepts_the_largest_u32_id() -> None:
    vm = EbpfVmRaw(assemble(RETURN_7))
    vm.register_helper(MAX_HELPER_ID, _helper)
    assert MAX_HELPER_ID in vm._helpers


BAD_BUDGETS = [(-1, ArgumentError), (2**70, ArgumentError), (MAX_BUDGET + 1, ArgumentError),
               ("x", ArgumentTypeError), (True, ArgumentTypeError), (1.5, ArgumentTypeError),
               (1e6, ArgumentTypeError)]


@pytest.mark.parametrize("kind", VM_KINDS)
@pytest.mark.parametrize(("budget", "error"), BAD_BUDGETS)
def test_the_constructor_refuses_a_bad_budget(kind: type[Any], budget: Any,
                                              error: type[Exception]) -> None:
    with pytest.raises(error) as caught:
        kind(assemble(RETURN_7), budget=budget)
    base = ValueError if error is ArgumentError else TypeError
    assert isinstance(caught.value, base)
    assert isinstance(caught.value, EbpfError)
    assert caught.value.argument == "budget"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("budget", "error"), BAD_BUDGETS)
def test_setting_a_bad_budget_fails_at_once_and_keeps_the_old_one(
        budget: Any, error: type[Exception]) -> None:
    vm = EbpfVmRaw(assemble(RETURN_7), budget=1000)
    with pytest.raises(error):
        vm.budget = budget
    assert vm.budget == 1000


def test_a_budget_of_2_to_the_70_no_longer_reaches_the_jit() -> None:
    """It was a struct.error at the first JIT run; now the constructor refuses it."""
    with pytest.raises(ArgumentError):
        EbpfVmRaw(assemble(RETURN_7), budget=2**70)


def test_the_largest_budget_and_none_run_in_every_engine(engine: str) -> None:
    vm = EbpfVmRaw(assemble(RETURN_7), budget=MAX_BUDGET)
    assert run(vm, engine, b"") == 7
    vm.budget = None
    assert vm.budget is None
    assert run(vm, engine, b"") == 7


def test_a_budget_of_zero_runs_nothing(checked_engine: str) -> None:
    """0 is accepted (a tail call may leave a callee nothing): no instruction runs."""
    vm = EbpfVmRaw(assemble(RETURN_7), budget=0)
    with pytest.raises(BudgetExceeded) as caught:
        run(vm, checked_engine, b"")
    assert (caught.value.pc, caught.value.count) == (0, 0)


# -- closed objects -------------------------------------------------------------------


@pytest.mark.parametrize("kind", [XdpRunner, SkbRunner])
def test_a_runner_run_after_close_is_a_closed_error(kind: type[Any], engine: str) -> None:
    runner = kind(assemble(XDP_PASS), engine=engine)
    assert runner.run(PACKET).r0 == XdpAction.PASS
    runner.close()
    runner.close()  # closing again does nothing
    with pytest.raises(Closed) as caught:
        runner.run(PACKET)
    assert isinstance(caught.value, ValueError)
    assert caught.value.what == kind.__name__
    assert runner.closed


@pytest.mark.parametrize("kind", [XdpRunner, SkbRunner])
def test_runners_are_context_managers(kind: type[Any], engine: str) -> None:
    with kind(assemble(XDP_PASS), engine=engine) as runner:
        assert runner.run(PACKET).r0 == XdpAction.PASS
    assert runner.closed
    assert not runner.vm.jit_ready  # the runner made the VM: its JIT code is freed
    with pytest.raises(Closed):
        runner.run(PACKET)


def test_a_runner_leaves_the_jit_code_of_a_vm_it_was_given() -> None:
    if "jit" not in ebpfvm_engines():
        pytest.skip("no JIT on this platform")
    vm = EbpfVmRaw(assemble(XDP_PASS))
    with XdpRunner(vm, engine="jit"):
        pass
    assert vm.jit_ready
    assert vm.execute_program_jit(PACKET) == XdpAction.PASS


def ebpfvm_engines() -> list[str]:
    from engines import ALL_ENGINES

    return ALL_ENGINES


@pytest.mark.parametrize("kind", VM_KINDS)
def test_a_vm_exit_frees_its_jit_code(kind: type[Any]) -> None:
    if "jit" not in ebpfvm_engines():
        pytest.skip("no JIT on this platform")
    with kind(assemble(RETURN_7)) as vm:
        assert isinstance(vm, kind)
        vm.jit_compile()
        assert vm.jit_ready
    assert not vm.jit_ready
    with pytest.raises(JitError):
        vm.execute_program_jit()
    vm.jit_compile()  # compiling again works
    assert vm.jit_ready


def test_a_loaded_object_is_a_context_manager(engine: str) -> None:
    with load(EXAMPLES / "proto_count.o") as obj:
        runner = obj.xdp(engine=engine)
        vm = obj.vm()
        if engine != "interp":
            vm.jit_compile(unchecked=engine == "jit-unchecked")
        verdict = runner.run(bytes(14)).verdict
    assert verdict == XdpAction.PASS
    assert obj.closed and runner.closed
    assert not vm.jit_ready
    with pytest.raises(Closed) as caught:
        obj.vm()
    assert caught.value.what == "ElfObject"
    with pytest.raises(Closed):
        obj.xdp()
    with pytest.raises(Closed):
        runner.run(bytes(14))
    assert len(obj.maps["counts"]) == 1  # the maps stay readable
    assert obj._pins == []


# -- short reprs ----------------------------------------------------------------------


def test_reprs_are_short_and_show_no_bytecode() -> None:
    big = assemble("mov r0, 0\n" * 2000 + "exit")
    vm = EbpfVmRaw(big)
    obj = load(EXAMPLES / "proto_count.o")
    program = obj.programs[0]
    objects: list[Any] = [vm, obj, program, XdpRunner(assemble(XDP_PASS)),
                          SkbRunner(assemble(XDP_PASS)), obj.maps["counts"],
                          obj.maps["counts"].typed]  # type: ignore[union-attr]
    for thing in objects:
        text = repr(thing)
        assert len(text) <= MAX_REPR, (type(thing).__name__, len(text))
        assert "\\x" not in text and "b'" not in text, text
    assert "2001 slots" in repr(vm)
    assert program.name in repr(program) and program.name in repr(obj)


# -- precise return types -------------------------------------------------------------


def test_object_factories_have_precise_return_types() -> None:
    """obj.xdp(), obj.skb() and obj.vm() are annotated with the classes they
    return (mypy checks the overloads of vm(); see test_typing_of_vm_overloads)."""
    assert inspect.signature(ElfObject.xdp).return_annotation == "XdpRunner"
    assert inspect.signature(ElfObject.skb).return_annotation == "SkbRunner"
    assert "Any" not in str(inspect.signature(ElfObject.vm).return_annotation)


@pytest.mark.skipif(not hasattr(typing, "get_overloads"), reason="Python 3.11+")
def test_typing_of_vm_overloads() -> None:
    returns = [inspect.signature(fn).return_annotation
               for fn in typing.get_overloads(ElfObject.vm)]
    assert returns == ["EbpfVmRaw", "EbpfVmFixedMbuff", "_Vm"]
    obj = load(EXAMPLES / "proto_count.o")
    assert type(obj.vm()) is EbpfVmRaw
    assert type(obj.vm(fixed_mbuff=(0, 8))) is EbpfVmFixedMbuff
    assert type(obj.vm(kind=EbpfVmMbuff)) is EbpfVmMbuff
    assert type(obj.xdp()) is XdpRunner and type(obj.skb()) is SkbRunner


# -- assemble, disassemble ------------------------------------------------------------


def test_assemble_takes_utf8_bytes() -> None:
    text = "mov r0, 1   # é\nexit\n"
    assert assemble(text.encode()) == assemble(text)
    assert assemble(bytearray(text.encode())) == assemble(text)


def test_assemble_names_the_place_of_a_byte_that_is_not_utf8() -> None:
    with pytest.raises(ebpfvm.AsmError) as caught:
        assemble(b"exit\nmov r0, 1 # \xff\n")
    assert (caught.value.line, caught.value.col) == (2, 13)


@pytest.mark.parametrize("source", [5, None, ["exit"]])
def test_assemble_refuses_what_is_not_text(source: Any) -> None:
    with pytest.raises(ArgumentTypeError) as caught:
        assemble(source)
    assert caught.value.argument == "assembler source"


def _cli_style_option() -> Any:
    """The --style action of `ebpfvm disasm`, from the CLI's own parser."""
    parser = _parser()
    sub = next(a for a in parser._actions if a.choices and "disasm" in a.choices)
    disasm = sub.choices["disasm"]  # type: ignore[index]
    return next(a for a in disasm._actions if "--style" in a.option_strings)


def test_disassemble_accepts_every_style_of_the_cli() -> None:
    option = _cli_style_option()
    code = assemble("mov r0, 1\nadd r0, r1\nexit")
    for style in option.choices:
        assert style in ALL_STYLES
        assert disassemble(code, style=style).count("\n") == 3


def test_disassemble_defaults_to_the_style_of_the_cli() -> None:
    code = assemble("mov r0, 1\nadd r0, r1\njeq r0, 3, +0\nexit")
    default = _cli_style_option().default
    assert disassemble(code) == disassemble(code, style=default)


def test_the_llvm_style_prints_what_llvm_printed() -> None:
    """Rows of tests/data/llvm_disasm/rows.txt (llvm-mc-19's output)."""
    for line in LLVM_GOLDEN.read_text().splitlines():
        hexcode, expected = line.split(" | ", 1)
        code = bytes.fromhex(hexcode)
        if len(decode(code)) != 1:
            continue
        assert disassemble(code, style="llvm") == expected + "\n", hexcode


def test_an_unknown_style_is_an_argument_error() -> None:
    with pytest.raises(ArgumentError) as caught:
        disassemble(assemble("exit"), style="att")
    assert (caught.value.argument, caught.value.value) == ("disassembly style", "att")


# -- maps -----------------------------------------------------------------------------


def test_a_typed_key_error_names_the_key_as_given() -> None:
    seen = load(EXAMPLES / "rate_limit.o").maps["seen"]
    assert isinstance(seen, Map)
    with pytest.raises(KeyError) as caught:
        seen.typed[12345]
    assert caught.value.args == (12345,)
    with pytest.raises(KeyError) as caught:
        del seen.typed[12345]
    assert caught.value.args == (12345,)


def test_an_array_index_out_of_range_names_index_and_range() -> None:
    array = Map("totals", MapType.ARRAY, 4, 8, 2)
    array[(1).to_bytes(4, "little")] = bytes(8)
    with pytest.raises(ArrayIndexError) as caught:
        array[(7).to_bytes(4, "little")] = bytes(8)
    error = caught.value
    assert isinstance(error, MapError) and isinstance(error, IndexError)
    assert (error.map_name, error.index, error.max_entries) == ("totals", 7, 2)


def test_a_prog_array_index_out_of_range_names_index_and_range() -> None:
    jumps = ProgArray("jumps", 4)
    with pytest.raises(ArrayIndexError) as caught:
        jumps[6] = "handler"
    assert (caught.value.index, caught.value.max_entries) == (6, 4)


def test_a_full_hash_map_says_so() -> None:
    table = Map("flows", MapType.HASH, 4, 4, 1)
    table[bytes(4)] = bytes(4)
    with pytest.raises(MapFull) as caught:
        table[b"\x01\x00\x00\x00"] = bytes(4)
    assert (caught.value.map_name, caught.value.max_entries) == ("flows", 1)


def test_messages_say_1_byte() -> None:
    """The plural is the finding here, so this one test reads the wording."""
    assert "1 bytes" not in str(MemoryFault(0, 0x1000, 1, "load"))
    table = Map("flows", MapType.HASH, 4, 4, 1)
    with pytest.raises(MapError) as caught:
        table[bytes(4)] = b"\x01"
    assert "1 bytes" not in str(caught.value) and "1 byte" in str(caught.value)
    with pytest.raises(MapError) as caught:
        table[b"\x01"] = bytes(4)
    assert "1 bytes" not in str(caught.value)


# -- docstrings -----------------------------------------------------------------------


def _public_api() -> list[tuple[str, Any]]:
    """Everything exported by ebpfvm, ebpfvm.contexts and ebpfvm.maps, and the
    public methods and properties of the exported classes (and of their
    ebpfvm base classes)."""
    found: list[tuple[str, Any]] = []
    seen: set[tuple[type, str]] = set()
    for module in (ebpfvm, ebpfvm.contexts, ebpfvm.maps):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                found.append((f"{module.__name__}.{name}", obj))
            if not inspect.isclass(obj):
                continue
            found.append((f"{module.__name__}.{name}", obj))
            for klass in obj.__mro__:
                if not klass.__module__.startswith("ebpfvm"):
                    continue
                for attr, value in vars(klass).items():
                    member = value.__func__ if isinstance(value, staticmethod | classmethod) \
                        else value
                    if attr.startswith("_") or (klass, attr) in seen or not (
                            inspect.isfunction(member) or isinstance(member, property)):
                        continue
                    seen.add((klass, attr))
                    found.append((f"{klass.__module__}.{klass.__qualname__}.{attr}", member))
    return found


def test_every_public_function_and_method_has_a_docstring() -> None:
    api = _public_api()
    assert len(api) > 100
    missing = [name for name, obj in api
               if not ((obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)) or "")
               .strip()]
    assert missing == []


# -- the other arguments of the library -----------------------------------------------


@pytest.mark.parametrize("kind", [XdpRunner, SkbRunner])
def test_a_runner_refuses_an_unknown_engine(kind: type[Any]) -> None:
    """"jit-checked" was taken as the checked JIT: any engine but interp was."""
    with pytest.raises(ArgumentError) as caught:
        kind(assemble(XDP_PASS), engine="jit-checked")
    assert (caught.value.argument, caught.value.value) == ("engine", "jit-checked")


@pytest.mark.parametrize(("argument", "value"), [("max_packet", -1), ("headroom", -5),
                                                 ("tailroom", 2**40)])
def test_an_xdp_runner_refuses_bad_sizes(argument: str, value: int) -> None:
    with pytest.raises(ArgumentError) as caught:
        XdpRunner(assemble(XDP_PASS), **{argument: value})
    assert (caught.value.argument, caught.value.value) == (argument, value)


@pytest.mark.parametrize("kind", [XdpRunner, SkbRunner])
def test_a_packet_over_max_packet_is_an_argument_error(kind: type[Any]) -> None:
    with kind(assemble(XDP_PASS), max_packet=100) as runner, \
            pytest.raises(ArgumentError) as caught:
        runner.run(bytes(101))
    assert (caught.value.argument, caught.value.value) == ("packet length", 101)


def test_an_unknown_sk_buff_field_is_an_argument_error() -> None:
    with SkbRunner(assemble(XDP_PASS)) as runner, pytest.raises(ArgumentError) as caught:
        runner.run(PACKET, colour=3)
    assert (caught.value.argument, caught.value.value) == ("__sk_buff field", "colour")


@pytest.mark.parametrize("offsets", [(-8, 0), (0, 10**11)])
def test_fixed_mbuff_offsets_are_checked(offsets: tuple[int, int]) -> None:
    """An offset of 10**11 allocated (or failed to allocate) a 100 GB mbuff."""
    with pytest.raises(ArgumentError) as caught:
        EbpfVmFixedMbuff(assemble(RETURN_7), *offsets)
    assert caught.value.value in offsets


def test_no_single_program_names_no_python_reprs() -> None:
    obj = load(ELF_DATA / "calls.o")
    for kwargs in ({}, {"name": "nope"}, {"section": "nope"}):
        with pytest.raises(ebpfvm.ElfError) as caught:
            obj.program(**kwargs)
        assert "None" not in str(caught.value) and "name=" not in str(caught.value)
        assert caught.value.section == kwargs.get("section")


@pytest.mark.parametrize("program", [5, "mov r0, 1\nexit", [0x95]])
def test_a_program_that_is_not_bytecode_is_an_argument_type_error(program: Any) -> None:
    """EbpfVmRaw(5) loaded five zero bytes (bytes(5)); a str failed in bytes()."""
    with pytest.raises(ArgumentTypeError) as caught:
        EbpfVmRaw(program)
    assert caught.value.argument == "program"


@pytest.mark.parametrize(("memory", "error"), [(5, ArgumentTypeError), (["a"], ArgumentTypeError),
                                               ([-1], ArgumentError), ([2**64], ArgumentError),
                                               (range(-4, 4), ArgumentError)])
def test_allowed_memory_is_checked_when_given(memory: Any, error: type[Exception]) -> None:
    vm = EbpfVmRaw(assemble(RETURN_7))
    with pytest.raises(error):
        vm.register_allowed_memory(memory)
    assert vm._allowed_runs == []
