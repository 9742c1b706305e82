"""The corpus as a test: every vector of ../shared/corpus, in every engine,
against the results the Linux kernel gave (manifest.json).

Each vector loads its object afresh, applies its setup and runs its steps
through the public API (tests/corpus.py); everything the corpus README lists
is compared: return value, output packet, context, ring-buffer records and
discards, trace_printk lines and every listed map after every step.

KNOWN_GAPS lists the vectors that still disagree while issue 13 is in
progress, with the cause. They still run in every engine and must still
disagree: one that agrees fails, so that it leaves the list, which only
shrinks. Every other vector must agree exactly.
"""

from __future__ import annotations

import hashlib

import pytest

from conftest import CORPUS_AGREED, CORPUS_GAPS, CORPUS_RAN
from corpus import Vector, corpus_dir, load_vectors, run_vector

DIRECTORY = corpus_dir()
VECTORS = load_vectors(DIRECTORY) if (DIRECTORY / "manifest.json").is_file() else []
ABSENT = f"corpus folder {DIRECTORY} is absent"

CTX_OUT = ("the skb run result does not show the __sk_buff after the run "
           "(ctx_out: mark, priority, cb); the other results agree")
SOCKET_FILTER_L2 = ("a socket filter sees the Ethernet header: skb->len is not the frame length "
                    "- 14 (kernel: 0 for a 14-byte frame); and ctx_out not shown")
TUNNEL_REDIRECT = "bpf_skb_set_tunnel_key and bpf_redirect not implemented (the object fails to load)"
GET_BUFF_LEN = "bpf_xdp_get_buff_len not implemented (the object fails to load)"
VLAN_PUSH = ("bpf_skb_vlan_push not implemented: the object (its tc program tc_vlan_push) "
             "fails to load, so its XDP programs do not run either")
CALLBACKS = ("BPF_PSEUDO_FUNC callbacks not loaded (lddw of '' against .text) and "
             "bpf_for_each_map_elem not implemented")
DEVMAP = "devmap map type and bpf_redirect_map not implemented (the object fails to load)"
ADJUST_ROOM = "bpf_skb_adjust_room not implemented (the object fails to load)"
ADJUST_META = ("bpf_xdp_adjust_meta not implemented (the object fails to load); the tc "
               "program reads data_meta")
CGROUP_SKB = ("cgroup_storage map type, bpf_get_local_storage, bpf_spin_lock/unlock and the "
              "cgroup_skb context not implemented (the object fails to load)")
FIB_LOOKUP = ("bpf_fib_lookup not implemented (the object fails to load); then ring-buffer "
              "discarded counts are not shown")
XDP_CSUM_DIFF = "bpf_csum_diff not registered for XDP programs (HelperFault at run time)"
LPM_TRIE = "lpm_trie map type not implemented (the object fails to load)"
CHECK_MTU = "bpf_check_mtu not implemented (the object fails to load)"
TCBPF1 = ("bpf_redirect and bpf_clone_redirect not implemented (the object fails to load); "
          "then bpf_l4_csum_replace's BPF_F_MARK_MANGLED_0 and ctx_out")
TC_PEER = ("bpf_redirect, bpf_redirect_peer and bpf_skb_change_head not implemented "
           "(the object fails to load)")
XDP_META_CTX = ("bpf_xdp_adjust_meta not implemented (the object fails to load); then XDP "
                "ctx_in/ctx_out (struct xdp_md, metadata from ctx_in's data)")
XDP_LOAD_STORE = ("bpf_xdp_load_bytes and bpf_xdp_store_bytes not implemented "
                  "(the object, section xdp.frags, fails to load)")


def _each(program: str, reason: str, *vectors: str) -> dict[tuple[str, str], str]:
    return {(program, vector): reason for vector in vectors}


KNOWN_GAPS: dict[tuple[str, str], str] = {
    **_each("for_each_array_map_elem", CALLBACKS,
            "defaults", "values", "large_values", "rodata_bypass_off", "twice"),
    **_each("test_spin_lock", CGROUP_SKB,
            "hmap_and_vqueue", "empty_hmap", "cnt_out_of_range", "preset_vqueue", "three_runs"),
    **_each("verifier_ringbuf", FIB_LOOKUP,
            "one_record", "three_runs", "ipv4_udp", "runt_frame", "tiny_frame"),
}
"""(program, vector) -> why ebpfvm disagrees with the kernel today (diagnosed:
the first disagreement, then what else the vector needs when known)."""


EXPECTED_VECTORS = 212


@pytest.mark.skipif(not VECTORS, reason=ABSENT)
def test_corpus_is_complete() -> None:
    """Every vector is there, and every object is the one the kernel ran."""
    assert len(VECTORS) == EXPECTED_VECTORS
    for program in {vector.program: vector.manifest for vector in VECTORS}.values():
        data = (DIRECTORY / program["object"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == program["object_sha256"], program["object"]


@pytest.mark.skipif(not VECTORS, reason=ABSENT)
def test_known_gaps_are_vectors() -> None:
    names = {vector.key for vector in VECTORS}
    assert sorted(set(KNOWN_GAPS) - names) == [], "KNOWN_GAPS names vectors the corpus lacks"


@pytest.mark.parametrize(
    "vector", VECTORS or [pytest.param(None, marks=pytest.mark.skip(reason=ABSENT))],
    ids=lambda v: f"{v.program}/{v.name}" if v else "absent")
def test_corpus(vector: Vector, engine: str) -> None:
    CORPUS_RAN[engine] += 1
    found = run_vector(vector, engine)
    disagreement = found[0] if found else None
    gap = KNOWN_GAPS.get(vector.key)
    if gap is None:
        assert disagreement is None, f"disagrees with the kernel: {disagreement}"
        CORPUS_AGREED[engine] += 1
        return
    CORPUS_GAPS[engine] += 1
    assert disagreement is not None, (
        f"{vector.program}/{vector.name} now agrees with the kernel in {engine}: "
        f"remove it from KNOWN_GAPS (was: {gap})")
