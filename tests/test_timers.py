"""bpf_timer_init, bpf_timer_set_callback, bpf_timer_start and
bpf_timer_cancel (RFC 9669 section 5.3, helper functions) in every engine,
for XDP and tc programs, against the kernel.

tests/data/elf/timers.o drives a timer in an array value or a hash value
from the packet: byte 0 the operation, byte 1 the key (bit 7: the hash map),
bytes 2-9 the argument, byte 10 the flags; it returns the helper's result.
The callback counts its firings and records its key; the element's mode makes
it re-arm itself, cancel itself or replace its own element. The kernel fires
a timer asynchronously, shortly after BPF_PROG_TEST_RUN: its side is read
after a short sleep. ebpfvm fires due timers at the end of each run, on a
FixedClock that stands still (so 0 ns and past absolute times are due, an
hour is not).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import ebpfvm
from conftest import NEEDS_KBPF, REPO
from ebpfvm.errors import BudgetExceeded
from ebpfvm.kernel import FixedClock, KernelEnv
from ebpfvm.timers import MAX_FIRINGS, PendingTimer, TimerCallbackFault
from kernel_oracle import kernel_object

TIMERS_O = REPO / "tests" / "data" / "elf" / "timers.o"
INIT, CALLBACK, START, CANCEL, MODE, UPDATE, DELETE = range(1, 8)
REARM3, CANCEL_SELF, REPLACE, FOREVER, LOOP = range(1, 6)
HASH = 0x80
ABS = 1
EINVAL, EBUSY, EDEADLK = -22, -16, -35
HOUR = 3600 * 10**9
ELEM = struct.Struct("<QQ16sQq")
"""struct elem: fired, mode, struct bpf_timer, seen_key, cres."""
PROGRAMS = {"xdp": "timer_xdp", "tc": "timer_tc"}

Op = tuple[int, ...]
SEQUENCES: dict[str, list[Op]] = {
    # every -EINVAL before init, bad clocks, -EBUSY, start without a callback,
    # cancel of a pending timer (1) and of an idle one (0), the callback
    # dropped by cancel, a 0 ns timer that fires
    "array": [(START, 0, 0, 0), (CANCEL, 0), (CALLBACK, 0), (INIT, 0, 2), (INIT, 0, 16),
              (INIT, 0, 1), (INIT, 0, 1), (START, 0, 0, 0), (START, 0, 0, 4), (CALLBACK, 0),
              (START, 0, HOUR, 0), (CANCEL, 0), (CANCEL, 0), (START, 0, 0, 0), (CALLBACK, 0),
              (START, 0, 0, 0)],
    "rearm": [(INIT, 1, 7), (CALLBACK, 1), (MODE, 1, REARM3), (START, 1, 0, 0)],
    "cancel_self": [(INIT, 2, 0), (CALLBACK, 2), (MODE, 2, CANCEL_SELF), (START, 2, 0, 0)],
    "replace_array": [(INIT, 3, 1), (CALLBACK, 3), (MODE, 3, REPLACE), (START, 3, 0, 0),
                      (START, 3, 0, 0), (CALLBACK, 3), (INIT, 3, 1)],
    "hash": [(INIT, HASH | 1, 1), (CALLBACK, HASH | 1), (START, HASH | 1, HOUR, 0),
             (DELETE, HASH | 1), (CANCEL, HASH | 1), (INIT, HASH | 1, 1),
             (CALLBACK, HASH | 1), (START, HASH | 1, 1, ABS), (UPDATE, HASH | 1, 0),
             (CANCEL, HASH | 1), (START, HASH | 1, 0, 0)],
    "update_frees": [(INIT, 0, 1), (UPDATE, 0, 0), (INIT, 0, 1), (CALLBACK, 0),
                     (START, 0, HOUR, 0), (UPDATE, 0, 0), (CANCEL, 0), (CALLBACK, 0)],
    "absolute_past": [(INIT, HASH | 2, 1), (CALLBACK, HASH | 2), (START, HASH | 2, 1, ABS)],
    "replace_hash": [(INIT, HASH | 3, 1), (CALLBACK, HASH | 3), (MODE, HASH | 3, REPLACE),
                     (START, HASH | 3, 0, 0)],
}


def packet(op: int, key: int, arg: int = 0, flags: int = 0) -> bytes:
    """The frame of one operation (75 bytes: an Ethernet header's worth and more)."""
    return bytes([op, key]) + struct.pack("<Q", arg % (1 << 64)) + bytes([flags]) + bytes(64)


def signed(r0: int) -> int:
    """The program's int result from r0 / retval."""
    r0 &= 0xFFFF_FFFF
    return r0 - (1 << 32) if r0 >> 31 else r0


def key_bytes(key: int) -> bytes:
    return struct.pack("<I", key & 0x7F)


@contextmanager
def ours(engine: str, kind: str, env: KernelEnv | None = None) -> Iterator[
        tuple[Any, Callable[[Op], int]]]:
    """The object and a function running one operation in `engine`."""
    env = env if env is not None else KernelEnv(clock=FixedClock(10**9, 0))
    with ebpfvm.load(TIMERS_O) as obj:
        if kind == "xdp":
            runner: Any = obj.xdp(PROGRAMS[kind], engine=engine, env=env)
        else:
            runner = obj.skb(PROGRAMS[kind], engine=engine, env=env)

        def run(op: Op) -> int:
            return signed(runner.run(packet(*op)).r0)

        yield obj, run


def values(maps: Callable[[str, bytes], bytes | None]) -> dict[tuple[str, int], bytes | None]:
    """Every element of both maps (keys 0-3)."""
    return {(name, key): maps(name, key_bytes(key)) for name in ("arr", "hmap")
            for key in range(4)}


@NEEDS_KBPF
@pytest.mark.parametrize("kind", sorted(PROGRAMS))
@pytest.mark.parametrize("sequence", sorted(SEQUENCES))
def test_results_and_firings_agree_with_the_kernel(engine: str, kind: str,
                                                   sequence: str) -> None:
    """Each operation's result and both maps once the timers fired are the
    kernel's (the struct bpf_timer bytes read as zeros in both)."""
    ops = SEQUENCES[sequence]
    with kernel_object(TIMERS_O) as (kmaps, load):
        prog = load(PROGRAMS[kind])
        try:
            expected = [signed(prog.test_run(packet(*op))["retval"]) for op in ops]
            time.sleep(0.2)  # the kernel's 0 ns timers fire in softirq, just after
            kernel = values(lambda name, key: kmaps[name].lookup(key))
        finally:
            prog.close()
    with ours(engine, kind) as (obj, run):
        assert [run(op) for op in ops] == expected
        assert values(lambda name, key: obj.maps[name].get(key)) == kernel


@pytest.mark.parametrize("kind", sorted(PROGRAMS))
def test_return_values_follow_the_kernels_rules(engine: str, kind: str) -> None:
    """The results the kernel's helpers.c gives, without the kernel: -EINVAL
    for a timer not initialised, a bad clock id or bad flags, or a start
    without a callback; -EBUSY for a second init; cancel 1 when pending, 0
    when not, and a cancel drops the callback (a start is -EINVAL again)."""
    with ours(engine, kind) as (obj, run):
        assert [run(op) for op in SEQUENCES["array"]] == [
            EINVAL, EINVAL, EINVAL, EINVAL, EINVAL, 0, EBUSY, EINVAL, EINVAL, 0, 0, 1, 0,
            EINVAL, 0, 0]
        fired, _mode, timer, key, _cres = ELEM.unpack(obj.maps["arr"][key_bytes(0)])
        assert (fired, key, timer) == (1, 0, bytes(16))  # the timer's bytes stay opaque
        assert obj.timers.pending() == []


def test_a_callback_cancelling_its_own_timer_gets_edeadlk_and_rearms_fire_again(
        engine: str) -> None:
    with ours(engine, "xdp") as (obj, run):
        for op in SEQUENCES["cancel_self"] + SEQUENCES["rearm"]:
            assert run(op) == 0
        fired, _mode, _timer, _key, cres = ELEM.unpack(obj.maps["arr"][key_bytes(2)])
        assert (fired, cres) == (1, EDEADLK)
        fired, _mode, _timer, key, _cres = ELEM.unpack(obj.maps["arr"][key_bytes(1)])
        assert (fired, key) == (3, 1)  # started once, re-armed twice by itself


def test_timers_wait_for_the_users_clock(engine: str) -> None:
    """A timer an hour away is pending until the clock gets there; fire()
    then runs it. An absolute CLOCK_BOOTTIME time counts the env's boot
    offset."""
    clock = FixedClock(10**9, 0)
    env = KernelEnv(clock=clock, boot_offset_ns=5 * 10**9)
    with ours(engine, "tc", env) as (obj, run):
        for op in [(INIT, 0, 1), (CALLBACK, 0), (START, 0, HOUR, 0),
                   (INIT, 1, 7), (CALLBACK, 1), (START, 1, 8 * 10**9, ABS)]:
            assert run(op) == 0
        assert obj.timers.pending() == [
            PendingTimer("arr", key_bytes(1), 3 * 10**9, 7, "timer_tc"),
            PendingTimer("arr", key_bytes(0), 10**9 + HOUR, 1, "timer_tc")]
        assert obj.timers.fire() == 0
        clock.now = 3 * 10**9
        assert obj.timers.fire() == 1
        assert ELEM.unpack(obj.maps["arr"][key_bytes(1)])[0] == 1
        clock.now += HOUR
        assert obj.timers.fire() == 1
        assert obj.timers.pending() == []
        assert ELEM.unpack(obj.maps["arr"][key_bytes(0)])[0] == 1


def test_a_timer_rearming_itself_forever_stops_at_the_cap(engine: str) -> None:
    with ours(engine, "xdp") as (obj, run):
        for op in [(INIT, 0, 1), (CALLBACK, 0), (MODE, 0, FOREVER), (START, 0, 0, 0)]:
            assert run(op) == 0
        assert ELEM.unpack(obj.maps["arr"][key_bytes(0)])[0] == MAX_FIRINGS
        assert len(obj.timers.pending()) == 1  # still armed, for the next call
        assert obj.timers.fire(limit=5) == 5
        assert ELEM.unpack(obj.maps["arr"][key_bytes(0)])[0] == MAX_FIRINGS + 5


def test_python_updates_and_close_free_timers() -> None:
    """An update from Python frees the element's timer (as the kernel's
    syscall update does); closing the object drops every timer."""
    with ours("interp", "xdp") as (obj, run):
        for op in [(INIT, 0, 1), (CALLBACK, 0), (START, 0, HOUR, 0), (INIT, HASH | 1, 1),
                   (CALLBACK, HASH | 1), (START, HASH | 1, HOUR, 0)]:
            assert run(op) == 0
        assert len(obj.timers.pending()) == 2
        obj.maps["arr"][key_bytes(0)] = bytes(ELEM.size)
        assert [t.map for t in obj.timers.pending()] == ["hmap"]
        assert run((CANCEL, 0)) == EINVAL
        queue = obj.timers
    assert queue.pending() == []


def test_an_lru_update_moves_the_key_and_frees_its_timer(engine: str) -> None:
    """An lru_hash update of an existing key puts it in a new node and frees
    the old one with its timer (the kernel's htab_lru_map_update_elem)."""
    lru = 0x40
    with ours(engine, "xdp") as (obj, run):
        for op in [(INIT, lru | 1, 1), (CALLBACK, lru | 1), (START, lru | 1, HOUR, 0)]:
            assert run(op) == 0
        assert [t.map for t in obj.timers.pending()] == ["lru"]
        obj.maps["lru"][key_bytes(1)] = bytes(ELEM.size)
        assert obj.timers.pending() == []
        assert run((CANCEL, lru | 1)) == EINVAL
        assert run((INIT, lru | 1, 1)) == 0


def test_a_callback_fault_is_a_typed_error_in_the_programs_numbering(engine: str) -> None:
    """A callback running out of the budget (bpf_loop's 2**23 calls) ends
    in TimerCallbackFault from the run that fired it, naming the element;
    its pc is an instruction of the program itself."""
    with ours(engine, "xdp") as (obj, run):
        for op in [(INIT, 2, 1), (CALLBACK, 2), (MODE, 2, LOOP)]:
            assert run(op) == 0
        with pytest.raises(TimerCallbackFault) as info:
            run((START, 2, 0, 0))
        assert isinstance(info.value.fault, BudgetExceeded)
        assert (info.value.map, info.value.key) == ("arr", key_bytes(2))
        assert 0 <= info.value.pc < len(obj.program("timer_xdp").code) // 8
        assert obj.timers.pending() == []
