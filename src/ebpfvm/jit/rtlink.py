"""Linking the native runtime into a program: what every native backend
links, backend-neutral (the x86-64 backend encodes it in x86_codegen and
x86_emit; an LLVM backend would link the same units into its module).

A program's ``call N`` whose helper has a native version (a ``rt_<helper>``
function of the runtime objects, ebpfvm.native.registry) becomes a call of
that function when the VM's helper N is the reference implementation that
version mirrors (marked with :func:`~ebpfvm.native.binding.native_version`):
a helper the user replaced keeps its Python call. The runtime function is
compiled into the program's image as a *trusted unit* (:class:`TrustedUnit`):
an unchecked, unmetered plan whose exits return to the call site, whose
calls are intrinsics (rt.h: RT_ENV, RT_CHECK, RT_CHARGE, RT_PYTHON), whose
frame is its own (not one of the guest's, not counted in the call depth).
The call site charges what Machine.call charges a helper call
(HELPER_CALL_UNITS, which RT_PYTHON gives back before Python takes them).

Each program links its own copy: the units then share the program's runtime
code (exits, fault stubs, the budget register) and its metered or unmetered
mode, at the cost of compiling a few hundred instructions per program (the
per-instruction caches make that cheap); a backend that inlines (LLVM) gets
the functions where it can inline them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..encoding import Insn
from ..errors import HelperFault
from ..helpers import HELPER_CALL_UNITS, Helper
from ..isa import Form
from ..machine import helper_fault
from ..memory import Region
from ..native.binding import is_native_version, owner_of
from ..native.env import RtEnvBlock
from ..native.registry import RuntimeFunction, native_enabled, native_functions
from ..nativering import env_tag
from .plan import Plan, make_plan

__all__ = ["CALL_UNITS", "RuntimeLink", "TrustedUnit", "link_runtime", "trusted_plan"]

CALL_UNITS = HELPER_CALL_UNITS
"""What the call site of a linked helper charges (as Machine.call does)."""
_MAP_HELPERS = (1, 2, 3, 87, 88, 89, 195, 130, 131, 132, 133, 134)
"""bpf_map_lookup_elem, update, delete, push, pop, peek, lookup_percpu_elem,
ringbuf_output, reserve, submit, discard, query: their native versions read the
maps table."""
_RESERVE = 131
"""bpf_ringbuf_reserve: hands out records of the rings' data areas."""
_LOOKUPS = (1, 195)
_STATIC = frozenset({1, 2, 3, 7, 28, 87, 88, 89, 195, 130, 131, 132, 133, 134})
"""Helpers whose native versions read nothing a run refreshes (map helpers:
but per-CPU maps read the CPU)."""
_SPIN_LOCK = 93
"""bpf_spin_lock: Machine.call refuses other helper calls while a lock is held."""


@dataclass(frozen=True)
class TrustedUnit:
    """One runtime function as a backend compiles it: unchecked, unmetered."""

    function: RuntimeFunction
    plan: Plan = field(repr=False)


@functools.cache
def _unit(function: RuntimeFunction) -> TrustedUnit:
    return TrustedUnit(function, trusted_plan(function.insns))


def trusted_plan(insns: Sequence[Insn]) -> Plan:
    """The plan of trusted code: no bounds checks, no budget charges, and no
    stack to clear (its frame is scratch it writes before reading)."""
    return make_plan(insns, checked=False, metered=False, stack_clear=0)


@dataclass
class RuntimeLink:
    """What one program links: its units by helper number, the rt_env its
    runs read, the regions the linked helpers hand out (map slabs: regions
    of every run, since native lookups add none)."""

    units: dict[int, TrustedUnit]
    env: RtEnvBlock
    regions: list[Region] = field(default_factory=list)
    cpu: Callable[[], int] | None = None
    dynamic: bool = True
    """Whether a unit reads what a run refreshes (the CPU, node or clock)."""
    rings: list[Any] = field(default_factory=list)
    """The ring buffers whose records native bpf_ringbuf_reserve hands out
    (see :meth:`finish`)."""

    def refresh(self) -> None:
        """Before a run: bring the rt_env up to date (when a unit reads it)."""
        if self.dynamic:
            self.env.refresh(self.cpu)

    def finish(self) -> None:
        """After a run (or a batch of runs): discard the records native
        runs of this rt_env reserved and did not give back, as Python
        discards those of a run that ended (RingBuf.discard_owned)."""
        for ring in self.rings:
            if ring.native_ring.pending:
                ring.discard_tagged(env_tag(self.env.address))


def _called(insns: Sequence[Insn]) -> set[int]:
    return {insn.imm for insn in insns
            if insn.row is not None and insn.row.form is Form.CALL and insn.src == 0}


def _env_of(helpers: dict[int, Helper]) -> RtEnvBlock | None:
    for helper in helpers.values():
        found = getattr(owner_of(helper.fn), "rt", None)
        if isinstance(found, RtEnvBlock):
            return found
    return None


def native_fault(insns: Sequence[Insn], helpers: dict[int, Helper], pc: int,
                 exc: Exception) -> HelperFault:
    """What a linked helper's fault `exc` at the call at `pc` becomes: the
    HelperFault Machine.call makes of the Python helper's (same fields)."""
    helper_id = next((insn.imm for insn in insns if insn.pc == pc), 0)
    found = helpers.get(helper_id)
    fault = helper_fault(pc, helper_id, found.name if found is not None else "", exc)
    fault.__cause__ = exc
    return fault


def link_runtime(insns: Sequence[Insn], helpers: dict[int, Helper]) -> RuntimeLink | None:
    """The runtime functions `insns` call, or None (none, native helpers
    off: EBPFVM_NATIVE=0, or a program taking a bpf_spin_lock, whose helper
    calls Python checks against the lock it holds)."""
    if not native_enabled():
        return None
    called = _called(insns)
    if _SPIN_LOCK in called:
        return None
    functions = native_functions()
    numbers = sorted(number for number in called if number in functions
                     and number in helpers and is_native_version(helpers[number].fn))
    if not numbers:
        return None
    env = _env_of(helpers)
    link = RuntimeLink({number: _unit(functions[number]) for number in numbers},
                       env if env is not None else RtEnvBlock())
    maps_owner: Any = next((owner_of(helpers[number].fn) for number in numbers
                            if number in _MAP_HELPERS), None)
    if maps_owner is not None:
        held = link.env.set_maps(maps_owner.maps)
        if env is None:
            link.cpu = getattr(maps_owner, "cpu", None)  # bpf_ringbuf_query's has none
        if any(number in link.units for number in _LOOKUPS):
            link.regions = [target.region for target in held if target.kind == "keyed"]
        if _RESERVE in link.units:
            link.rings = [target for target in held if target.kind == "ringbuf"]
            link.regions += [target.region for target in link.rings]
    per_cpu = maps_owner is not None and any(
        getattr(target, "percpu", False) for target in maps_owner.maps.values())
    link.dynamic = per_cpu or not _STATIC.issuperset(link.units)
    link.refresh()
    return link
