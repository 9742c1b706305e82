#!/usr/bin/env python3
"""Generate src/ebpfvm/data/kernel.btf: the target BTF of CO-RE relocations
that ships with ebpfvm.

It keeps, from a kernel's BTF (by default the running kernel's
/sys/kernel/btf/vmlinux), the types in NAMES and every type they refer to
(members, pointees, array elements, typedefs), renumbered in their original
order with a string table of just their names. The output depends only on the
input BTF, so running it again on the same kernel gives the same bytes.

    python3 tools/gen_kernel_btf.py [--source /sys/kernel/btf/vmlinux] [--out PATH]
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

NAMES = (
    # program contexts and the uapi structs their fields point to
    "__sk_buff", "xdp_md", "bpf_sock", "bpf_sock_tuple", "bpf_flow_keys", "bpf_tunnel_key",
    "bpf_xfrm_state", "bpf_fib_lookup", "bpf_tcp_sock", "bpf_xdp_sock", "sk_msg_md",
    "bpf_sock_ops", "bpf_sk_lookup", "bpf_spin_lock", "bpf_timer", "bpf_dynptr",
    # network headers programs read through vmlinux.h
    "ethhdr", "vlan_hdr", "vlan_ethhdr", "iphdr", "ipv6hdr", "in6_addr", "in_addr",
    "tcphdr", "udphdr", "icmphdr", "icmp6hdr", "arphdr", "ipv6_opt_hdr", "frag_hdr",
    "ipv6_rt_hdr", "gre_base_hdr", "sctphdr", "ip_auth_hdr", "ip_esp_hdr", "mpls_label",
    "vxlanhdr", "geneve_opt", "genevehdr", "tcp_word_hdr",
    # enums
    "xdp_action", "sk_action", "bpf_ret_code", "bpf_adj_room_mode", "bpf_hdr_start_off",
    "bpf_lwt_encap_mode", "bpf_func_id", "bpf_map_type", "bpf_prog_type",
)

MAGIC = 0xEB9F
HEADER = struct.Struct("<HBBIIIII")
TYPE = struct.Struct("<III")
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19
REF_KINDS = {PTR, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DECL_TAG, TYPE_TAG}
FIXED = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
PER_ITEM = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}


class Type:
    """One raw type record: header fields and its kind-specific bytes."""

    def __init__(self, name_off: int, info: int, ref: int, extra: bytearray) -> None:
        self.name_off, self.info, self.ref, self.extra = name_off, info, ref, extra

    @property
    def kind(self) -> int:
        return (self.info >> 24) & 0x1F

    @property
    def vlen(self) -> int:
        return self.info & 0xFFFF

    def references(self) -> list[tuple[str, int]]:
        """(where, position) of every type id in the record: ``ref`` or a byte
        offset into ``extra``."""
        kind, found = self.kind, []
        if kind in REF_KINDS:
            found.append(("ref", 0))
        if kind == ARRAY:
            found += [("extra", 0), ("extra", 4)]
        elif kind in (STRUCT, UNION):
            found += [("extra", 12 * i + 4) for i in range(self.vlen)]
        elif kind == FUNC_PROTO:
            found += [("extra", 8 * i + 4) for i in range(self.vlen)]
        elif kind == DATASEC:
            found += [("extra", 12 * i) for i in range(self.vlen)]
        return found

    def names(self) -> list[tuple[str, int]]:
        """(where, position) of every string offset in the record."""
        found = [("name", 0)]
        if self.kind in (STRUCT, UNION, ENUM, ENUM64):
            step = PER_ITEM[self.kind]
            found += [("extra", step * i) for i in range(self.vlen)]
        elif self.kind == FUNC_PROTO:
            found += [("extra", 8 * i) for i in range(self.vlen)]
        return found

    def get(self, where: str, pos: int) -> int:
        if where == "ref":
            return self.ref
        if where == "name":
            return self.name_off
        return int(struct.unpack_from("<I", self.extra, pos)[0])

    def set(self, where: str, pos: int, value: int) -> None:
        if where == "ref":
            self.ref = value
        elif where == "name":
            self.name_off = value
        else:
            struct.pack_into("<I", self.extra, pos, value)


def read(data: bytes) -> tuple[list[Type | None], bytes]:
    magic, _v, _f, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        sys.exit(f"not BTF (magic {magic:#x})")
    types: list[Type | None] = [None]
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    while pos < end:
        name_off, info, ref = TYPE.unpack_from(data, pos)
        pos += TYPE.size
        kind = (info >> 24) & 0x1F
        size = FIXED.get(kind, 0) + PER_ITEM.get(kind, 0) * (info & 0xFFFF)
        types.append(Type(name_off, info, ref, bytearray(data[pos : pos + size])))
        pos += size
    return types, data[hdr_len + str_off : hdr_len + str_off + str_len]


def name_of(strings: bytes, offset: int) -> str:
    return strings[offset : strings.index(b"\0", offset)].decode()


def closure(types: list[Type | None], strings: bytes) -> list[int]:
    wanted = set(NAMES)
    todo = [i for i, t in enumerate(types) if t is not None and t.kind != FUNC
            and name_of(strings, t.name_off) in wanted]
    missing = wanted - {name_of(strings, types[i].name_off) for i in todo}  # type: ignore[union-attr]
    if missing:
        print(f"not in the source BTF (skipped): {', '.join(sorted(missing))}", file=sys.stderr)
    keep: set[int] = set()
    while todo:
        index = todo.pop()
        if index in keep or index == 0:
            continue
        keep.add(index)
        found = types[index]
        assert found is not None
        todo += [found.get(where, pos) for where, pos in found.references()]
    return sorted(keep)


def write(types: list[Type | None], strings: bytes, keep: list[int]) -> bytes:
    new_id = {old: new for new, old in enumerate(keep, start=1)}
    new_id[0] = 0
    table = bytearray(b"\0")
    offsets: dict[str, int] = {"": 0}
    body = bytearray()
    for old in keep:
        found = types[old]
        assert found is not None
        for where, pos in found.references():
            found.set(where, pos, new_id[found.get(where, pos)])
        for where, pos in found.names():
            text = name_of(strings, found.get(where, pos))
            if text not in offsets:
                offsets[text] = len(table)
                table += text.encode() + b"\0"
            found.set(where, pos, offsets[text])
        body += TYPE.pack(found.name_off, found.info, found.ref) + found.extra
    header = HEADER.pack(MAGIC, 1, 0, HEADER.size, 0, len(body), len(body), len(table))
    return header + bytes(body) + bytes(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="/sys/kernel/btf/vmlinux")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent
                                             / "src" / "ebpfvm" / "data" / "kernel.btf"))
    args = parser.parse_args()
    types, strings = read(Path(args.source).read_bytes())
    keep = closure(types, strings)
    Path(args.out).write_bytes(write(types, strings, keep))
    print(f"{args.out}: {len(keep)} types from {args.source}")


if __name__ == "__main__":
    main()
