"""Issue 13 point 9 (and point 3's last paragraph, point 6's .ksyms): a
program that uses a helper, map type, relocation or extern ebpfvm lacks, or a
helper its program type may not call, is a typed error naming it; the object
still loads, its other programs run, and ``ebpfvm maps`` / ``ebpfvm verify``
still work on it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import kernel_oracle as kernel
from conftest import REPO
from ebpfvm import EbpfVmRaw, HelperFault, assemble, load
from ebpfvm.contexts import XdpRunner
from ebpfvm.helper_protos import FUNC_PROTOS, UNSUPPORTED, kernel_allows, unsupported_helpers
from ebpfvm.helper_table import HELPERS, helper_name, helper_number
from ebpfvm.kernel_helper_names import KERNEL_HELPER_NAMES
from ebpfvm.ksyms import KFUNC_ABSENT
from ebpfvm.linkerrors import (
    HelperNotAllowed,
    LinkError,
    UnsupportedExtern,
    UnsupportedHelper,
    UnsupportedMapAttribute,
    UnsupportedMapType,
)

DATA = REPO / "tests" / "data" / "elf"
UNSUPPORTED_O = DATA / "unsupported.o"
KSYMS_O = DATA / "ksyms.o"
XDP_PASS = 2
EOPNOTSUPP = 95
KERNEL = kernel.available()
PROG_TYPE_NUMBERS = {"socket_filter": 1, "sched_cls": 3, "sched_act": 4, "xdp": 6,
                     "cgroup_skb": 8, "sk_skb": 14}
"""enum bpf_prog_type (linux/bpf.h) of the types FUNC_PROTOS lists."""


def test_the_object_loads_and_each_problem_is_typed() -> None:
    obj = load(UNSUPPORTED_O)
    assert [p.name for p in obj.programs] == ["fine"]
    problems = obj.problems
    assert set(problems) == {"lookup", "task", "store", "cookie", "sockmap", "attribute"}
    lookup = problems["lookup"]
    assert isinstance(lookup, UnsupportedHelper)
    assert (lookup.helper_id, lookup.helper_name, lookup.program, lookup.section) == (
        84, "bpf_sk_lookup_tcp", "lookup", "xdp")
    assert lookup.why == UNSUPPORTED["bpf_sk_lookup_tcp"]
    assert lookup.pc == 21 - 13  # llvm-objdump: lookup starts at 13, its call 84 at 21
    task = problems["task"]
    assert isinstance(task, UnsupportedHelper)
    assert (task.helper_id, task.helper_name, task.section) == (35, "bpf_get_current_task", "tc")
    store = problems["store"]  # the kernel refuses skb_store_bytes in a socket filter
    assert isinstance(store, HelperNotAllowed)
    assert (store.helper_id, store.prog_type, store.section) == (9, "socket_filter", "socket")
    cookie = problems["cookie"]
    assert isinstance(cookie, HelperNotAllowed)
    assert (cookie.helper_name, cookie.prog_type) == ("bpf_get_socket_cookie", "xdp")
    sockmap = problems["sockmap"]
    assert isinstance(sockmap, UnsupportedMapType)
    assert (sockmap.map_name, sockmap.map_type, sockmap.type_name) == (
        "socks", 15, "BPF_MAP_TYPE_SOCKMAP")
    odd = problems["attribute"]  # libbpf refuses a BTF map attribute it does not know
    assert isinstance(odd, UnsupportedMapAttribute)
    assert (odd.map_name, odd.attribute, odd.type_name) == ("odd", "frobnicate",
                                                            "BPF_MAP_TYPE_HASH")
    assert all(isinstance(problem, LinkError) for problem in problems.values())
    assert {name: m.type for name, m in obj.unsupported_maps.items()} == {
        "socks": 15, "arena": 33, "odd": 1}
    assert "socks" not in obj.maps and "counts" in obj.maps


def test_the_other_programs_run(engine: str) -> None:
    """`fine` uses only supported things (the arena map of an unsupported type
    is used by no program): it returns XDP_PASS and counts its runs."""
    with load(UNSUPPORTED_O) as obj, obj.xdp("fine", engine=engine) as runner:
        assert runner.run(bytes(60)).r0 == XDP_PASS
        assert runner.run(bytes(60)).r0 == XDP_PASS
        assert int.from_bytes(obj.maps["counts"][bytes(4)], "little") == 2


def test_getting_or_building_a_problem_program_raises_it() -> None:
    obj = load(UNSUPPORTED_O)
    for build in (lambda: obj.program("lookup"), lambda: obj.vm("lookup"),
                  lambda: obj.xdp("lookup"), lambda: obj.program(section="tc"),
                  lambda: obj.skb("task")):
        with pytest.raises(UnsupportedHelper):
            build()
    with pytest.raises(UnsupportedMapType) as info:
        obj.xdp("sockmap")
    assert info.value is obj.problems["sockmap"]


def test_a_runner_of_another_type_checks_that_types_helpers() -> None:
    """skb.o's tc program redirects: as a socket filter the kernel refuses it."""
    obj = load(DATA / "skb.o")
    with pytest.raises(HelperNotAllowed) as info:
        obj.skb("tunnel_out", prog_type="socket_filter")
    assert info.value.prog_type == "socket_filter"
    assert info.value.helper_name == helper_name(info.value.helper_id)
    assert info.value.helper_id in obj.program("tunnel_out").helpers
    obj.skb("tunnel_out").close()  # its own type, sched_cls, may


def test_the_raw_vm_api_takes_any_helper_number(engine: str) -> None:
    """No program type, no check: register_helper gives any number a meaning."""
    vm = EbpfVmRaw(assemble("call 84\nexit"))  # bpf_sk_lookup_tcp's number
    vm.register_helper(84, lambda *_args: 42)
    if engine != "interp":
        vm.jit_compile(engine=engine)
        assert vm.execute_program_jit(bytearray(1)) == 42
    else:
        assert vm.execute_program(bytearray(1)) == 42
    with XdpRunner(vm, engine=engine) as runner:
        assert runner.run(bytes(60)).r0 == 42


def test_weak_ksyms_are_null_and_metadata_kfuncs_are_not_supported(engine: str) -> None:
    """bpf_ksym_exists() is false for a weak kernel variable and a weak kfunc
    (libbpf leaves both NULL when the kernel lacks them), so both programs
    return 2; the XDP metadata kfuncs return -EOPNOTSUPP and leave their
    out-arguments (7) alone (the kernel's generic versions, for a device
    without metadata support)."""
    with load(KSYMS_O) as obj:
        for name in ("weak_ksym", "weak_kfunc", "metadata"):
            with obj.xdp(name, engine=engine) as runner:
                assert runner.run(bytes(60)).r0 == XDP_PASS, name
        assert obj.globals["rx_hash_result"] == -EOPNOTSUPP
        assert obj.globals["rx_timestamp_result"] == (1 << 64) - EOPNOTSUPP  # int, widened


def test_unresolvable_externs_are_typed() -> None:
    obj = load(KSYMS_O)
    fou = obj.problems["fou"]
    assert isinstance(fou, UnsupportedExtern)
    assert (fou.extern, fou.kind, fou.section) == ("bpf_skb_get_fou_encap", "kfunc", "tc")
    wrong_type = obj.problems["metadata_in_tc"]
    assert isinstance(wrong_type, UnsupportedExtern)
    assert (wrong_type.extern, wrong_type.kind) == ("bpf_xdp_metadata_rx_hash", "kfunc")
    strong = obj.problems["strong_ksym"]
    assert isinstance(strong, UnsupportedExtern)
    assert (strong.extern, strong.kind, strong.section) == ("bpf_link_fops", "ksym", "xdp")


def test_a_reached_call_to_an_absent_weak_kfunc_faults(checked_engine: str) -> None:
    """The kernel refuses a reachable call to a kfunc it lacks; ebpfvm, which
    does not prove reachability, faults when a run reaches it."""
    obj = load(KSYMS_O)
    code = bytearray(obj.program("weak_kfunc").code)
    jump = code.index(bytes.fromhex("1502010000000000"))  # if r2 == 0 goto +1
    code[jump : jump + 8] = bytes.fromhex("0500000000000000")  # ja +0
    vm = EbpfVmRaw(bytes(code))
    with XdpRunner(vm, engine=checked_engine) as runner, pytest.raises(HelperFault) as info:
        runner.run(bytes(60))
    assert info.value.helper_id == KFUNC_ABSENT


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "ebpfvm.cli", *argv], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


def test_cli_maps_lists_unsupported_maps() -> None:
    done = _cli("maps", str(UNSUPPORTED_O))
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert len(lines) == 4
    assert any(line.startswith("odd:") and "frobnicate" in line for line in lines)
    socks = next(line for line in lines if line.startswith("socks:"))
    assert "BPF_MAP_TYPE_SOCKMAP" in socks and "not supported" in socks
    assert any(line.startswith("arena:") and "BPF_MAP_TYPE_ARENA" in line for line in lines)


def test_cli_verify_reports_each_problem_on_one_line() -> None:
    done = _cli("verify", str(UNSUPPORTED_O))
    assert done.returncode == 1  # and the conventions' one error line (issue 14 point 4)
    assert done.stderr == (f"ebpfvm: error: {UNSUPPORTED_O}: the verifier rejected 6 of 7 "
                           "programs\n")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("xdp/fine: OK")
    rejected = {line.split(":")[0]: line for line in lines[1:]}
    assert set(rejected) == {"xdp/lookup", "tc/task", "socket/store", "xdp/cookie",
                             "xdp/sockmap", "xdp/attribute"}
    assert rejected["xdp/attribute"].endswith("[unsupported_map_attribute]")
    assert "bpf_sk_lookup_tcp" in rejected["xdp/lookup"]
    assert rejected["xdp/lookup"].endswith("[unsupported_helper]")
    assert rejected["socket/store"].endswith("[helper_not_allowed]")
    assert "BPF_MAP_TYPE_SOCKMAP" in rejected["xdp/sockmap"]
    chosen = _cli("verify", str(KSYMS_O), "--function", "fou")
    assert chosen.returncode == 1
    assert chosen.stdout.count("\n") == 1 and "[unsupported_extern]" in chosen.stdout


def test_cli_run_of_a_problem_program_is_one_line() -> None:
    done = _cli("run", str(UNSUPPORTED_O), "--function", "lookup")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("ebpfvm: error: ") and done.stderr.count("\n") == 1
    assert "bpf_sk_lookup_tcp" in done.stderr and "Traceback" not in done.stderr


def test_allow_lists_cover_the_registry() -> None:
    """Where a helper's row says ebpfvm implements it, the kernel allows it;
    every helper the kernel allows that ebpfvm lacks has a reason."""
    for spec in HELPERS.values():
        for prog_type in spec.prog_types & set(FUNC_PROTOS):
            assert spec.name in FUNC_PROTOS[prog_type], (spec.name, prog_type)
    implemented = {spec.name for spec in HELPERS.values()}
    for name in set().union(*FUNC_PROTOS.values()) - implemented:
        assert name in UNSUPPORTED, name
    assert "bpf_sk_lookup_tcp" in unsupported_helpers()
    assert "bpf_fib_lookup" not in unsupported_helpers()  # tc's too since helpers3
    # helpers4: bpf_get_cgroup_classid, once tc's only, is every packet type's now
    assert "bpf_get_cgroup_classid" not in unsupported_helpers()


@pytest.mark.skipif(KERNEL is not None, reason=f"bpf(): {KERNEL}")
@pytest.mark.parametrize("prog_type", sorted(PROG_TYPE_NUMBERS))
def test_allow_lists_are_the_kernels(prog_type: str) -> None:
    """Every helper number, called from a program of each listed type: the
    kernel refuses it as an unknown func exactly when kernel_allows says no
    (other refusals are about the arguments of a helper it allows)."""
    differ = []
    for number in range(1, len(KERNEL_HELPER_NAMES)):
        code = assemble(f"call {number}\nmov r0, 0\nexit")
        try:
            os.close(kernel.prog_load(code, PROG_TYPE_NUMBERS[prog_type]))
            allowed = True
        except OSError as error:
            allowed = not any(text in str(error) for text in ("unknown func",
                                                               "cannot use helper"))
        if allowed != kernel_allows(prog_type, number):
            differ.append(helper_name(number))
    assert differ == []


def test_helper_numbers_are_the_kernels() -> None:
    assert helper_number("bpf_cgrp_storage_delete") == 211  # linux/bpf.h's last two
