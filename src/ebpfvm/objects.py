"""Building VMs and runners for a loaded object (ElfObject.vm, .xdp, .skb).

The loader (ebpfvm.elf) only loads; this module turns one of the object's
programs into something that runs: a VM with the kernel helpers, the maps the
program uses, its global data as allowed memory and its tail calls, and the
XDP or __sk_buff runner around such a VM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .callbacks import callback_helpers
from .cgroup_storage import lock_helpers
from .contexts import SkbRunner, XdpRunner
from .core_relo import poison_helpers
from .dynptr import dynptr_helpers
from .kernel import KernelEnv, kernel_helpers
from .ksyms import kfunc_helpers
from .linkcheck import check_program
from .maps import map_helpers
from .progtypes import prog_type_for_section
from .tailcalls import _TailCalls
from .timers import timer_helpers, timers_of, uses_timers
from .vm import EbpfVmFixedMbuff, EbpfVmMbuff, EbpfVmRaw, _VmBase

if TYPE_CHECKING:
    from .elf import ElfObject

__all__ = ["EbpfVmFixedMbuff", "EbpfVmRaw", "SkbRunner", "XdpRunner", "_VmBase", "build_skb",
           "build_vm", "build_xdp"]


def build_vm(obj: ElfObject, name: str | None, section: str | None,
             kind: type[_VmBase] | None, fixed_mbuff: tuple[int, int] | None,
             env: KernelEnv | None, prefix: bytes = b"", **kwargs: Any) -> _VmBase:
    """ElfObject.vm: a VM running one program of `obj`, with the kernel
    helpers (`env` configures them), its maps, its global data as allowed
    memory and its tail calls. `prefix`: code placed before the program's
    (ebpfvm.timers' entry stub)."""
    obj._check_open()
    program = obj.program(name, section=section)
    vm: Any
    if fixed_mbuff is not None:
        vm = EbpfVmFixedMbuff(prefix + program.code, *fixed_mbuff, **kwargs)
    else:
        vm = (kind or EbpfVmRaw)(prefix + program.code, **kwargs)
    # .rodata stays writable from Python until a program of the object first
    # runs, and is frozen from then on (libbpf freezes it at load, before runs).
    vm._before_first_run = obj.freeze
    kenv = env if env is not None else KernelEnv()
    for key, helper in (*kernel_helpers(kenv).items(), *kfunc_helpers(program.helpers).items()):
        vm.register_helper(key, helper)
    for data_section in program.data_sections:
        read_only = data_section.startswith((".rodata", ".kconfig"))
        vm.register_allowed_memory(obj.data[data_section], writable=not read_only)
    used = {obj.maps[name].handle: obj.maps[name] for name in program.maps}
    if program.maps:
        for key, helper in map_helpers(used, lambda: kenv.cpu).items():
            vm.register_helper(key, helper)
    else:  # helpers3: a spin lock in global data (issue 13 point 3)
        for key, helper in lock_helpers({}).items():
            vm.register_helper(key, helper)
        for key, helper in dynptr_helpers({}).items():  # helpers4: local dynptrs
            vm.register_helper(key, helper)
    for key, helper in callback_helpers(used).items():
        vm.register_helper(key, helper)
    if uses_timers(program.helpers):  # timers: ebpfvm.timers
        for key, helper in timer_helpers(obj, program.name, program.code, used, kenv, vm,
                                         len(prefix) // 8).items():
            vm.register_helper(key, helper)
    for key, poisoned in poison_helpers(obj.core_relocations).items():  # CO-RE (issue 13)
        vm.register_helper(key, poisoned, name="bpf_core_poisoned", context=True)
    settings = {"kind": kind, "fixed_mbuff": fixed_mbuff, "env": kenv, **kwargs}
    _TailCalls(obj, settings, program.name, vm).attach(vm)
    obj._made.add(vm)
    made: _VmBase = vm
    return made


def build_xdp(obj: ElfObject, name: str | None, section: str | None, engine: str,
              env: KernelEnv | None, **kwargs: Any) -> XdpRunner:
    """ElfObject.xdp: an XdpRunner owning a VM of one program of `obj`."""
    env = env if env is not None else KernelEnv()
    vm = build_vm(obj, name, section, None, None, env)
    kwargs.setdefault("maps", list(obj.maps.values()))  # tail-called programs' maps too
    runner = XdpRunner(vm, engine=engine, env=env, **kwargs)  # type: ignore[arg-type]
    runner._owns_vm = True
    if any(uses_timers(found.helpers) for found in obj.programs):  # timers fire after runs
        runner.after_run = timers_of(obj).fire
    obj._made.add(runner)
    return runner


def build_skb(obj: ElfObject, name: str | None, section: str | None, engine: str,
              env: KernelEnv | None, **kwargs: Any) -> SkbRunner:
    """ElfObject.skb: an SkbRunner owning an EbpfVmMbuff of one program of `obj`
    (its program type from the section, unless `prog_type` is given)."""
    program = obj.program(name, section=section)
    found = prog_type_for_section(program.section)
    if "prog_type" not in kwargs and found is not None and found.context == "skb":
        kwargs["prog_type"] = found.name
    if "prog_type" in kwargs:  # another type than the section's: check its helpers
        problem = check_program(program, obj.unsupported_maps, kwargs["prog_type"])
        if problem is not None:
            raise problem
    vm = build_vm(obj, name, section, EbpfVmMbuff, None, env)
    runner = SkbRunner(vm, engine=engine, **kwargs)  # type: ignore[arg-type]
    runner._owns_vm = True
    if any(uses_timers(found.helpers) for found in obj.programs):  # timers fire after runs
        runner.after_run = timers_of(obj).fire
    obj._made.add(runner)
    return runner
