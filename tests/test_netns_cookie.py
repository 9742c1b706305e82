"""uringbuf (issue 13 point 3): bpf_get_netns_cookie (122) in the packet
types the reference kernel (6.18) offers it to, in every engine
(tests/data/elf/uringbuf.c: cookie_tc, cookie_sk, cookie_cg store the cookie
for the context and for NULL). The kernel's test run gives the context the
namespace of the process running it, and NULL the initial namespace: both
come from KernelEnv (netns_cookie, init_netns_cookie)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest

import ebpfvm
import kernel_oracle
from conftest import NEEDS_KBPF
from ebpfvm.errors import ArgumentError, ArgumentTypeError
from ebpfvm.kernel import INIT_NETNS_COOKIE, KernelEnv
from test_userringbuf import FRAME

OBJECT = Path(__file__).parent / "data" / "elf" / "uringbuf.o"
PROGRAMS = ["cookie_tc", "cookie_sk", "cookie_cg"]
SO_NETNS_COOKIE = 71
"""getsockopt: the cookie of a socket's network namespace (Linux 5.14)."""


def _cookies(engine: str, program: str, env: KernelEnv | None = None) -> tuple[int, int]:
    with ebpfvm.load(OBJECT) as obj, obj.skb(program, engine=engine, env=env) as runner:
        assert runner.run(FRAME).r0 == 1
        table = obj.maps["cookies"]
        return tuple(struct.unpack("<Q", table[struct.pack("<I", key)])[0]  # type: ignore[return-value]
                     for key in (0, 1))


@pytest.mark.parametrize("program", PROGRAMS)
def test_the_defaults_are_the_initial_namespace(engine: str, program: str) -> None:
    """3 for the context and for NULL: what the reference kernel answers in
    its initial namespace (INIT_NETNS_COOKIE)."""
    assert _cookies(engine, program) == (INIT_NETNS_COOKIE, INIT_NETNS_COOKIE) == (3, 3)


@pytest.mark.parametrize("program", PROGRAMS)
def test_the_env_sets_both(engine: str, program: str) -> None:
    env = KernelEnv(netns_cookie=4116, init_netns_cookie=1)
    assert _cookies(engine, program, env) == (4116, 1)


def test_the_env_checks_them() -> None:
    with pytest.raises(ArgumentError):
        KernelEnv(netns_cookie=-1)
    with pytest.raises(ArgumentTypeError):
        KernelEnv(init_netns_cookie="3")  # type: ignore[arg-type]


@NEEDS_KBPF
@pytest.mark.parametrize("program", PROGRAMS)
def test_the_kernel_agrees(engine: str, program: str) -> None:
    """The kernel's answers: the context gives the cookie of this process's
    namespace (what SO_NETNS_COOKIE tells), NULL the initial namespace's."""
    with kernel_oracle.kernel_object(OBJECT) as (maps, load):
        prog = load(program)
        try:
            prog.test_run(FRAME)
        finally:
            prog.close()
        kernel = tuple(struct.unpack("<Q", maps["cookies"].lookup(struct.pack("<I", key)))[0]
                       for key in (0, 1))
    with socket.socket() as sock:
        own = struct.unpack("<Q", sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8))[0]
    assert kernel[0] == own
    env = KernelEnv(netns_cookie=own)
    assert _cookies(engine, program, env) == kernel
