/* Test object for CO-RE relocations (ebpfvm.core_relo), run by ebpfvm and,
 * through libbpf (which relocates against the running kernel's BTF), by the
 * kernel. Built against core_vmlinux.h, a vmlinux.h of the packaged target
 * BTF: every struct access below is a CO-RE relocation. Rebuild with `make`. */
#include "core_vmlinux.h"

#define SEC(name) __attribute__((section(name), used))
#define ETH_P_IP 0x0800
#define IPPROTO_UDP 17

/* The macros of libbpf's bpf_core_read.h, written out (clang builtins). */
#define FIELD_BYTE_OFFSET 0
#define FIELD_BYTE_SIZE 1
#define FIELD_EXISTS 2
#define FIELD_SIGNED 3
#define FIELD_LSHIFT_U64 4
#define FIELD_RSHIFT_U64 5
#define TYPE_ID_TARGET 1
#define TYPE_EXISTS 0
#define TYPE_SIZE 1
#define ENUMVAL_EXISTS 0
#define ENUMVAL_VALUE 1
#define typeof_ptr(type) ((typeof(type) *)0)
#define core_field_exists(field) __builtin_preserve_field_info(field, FIELD_EXISTS)
#define core_field_size(field) __builtin_preserve_field_info(field, FIELD_BYTE_SIZE)
#define core_type_exists(type) __builtin_preserve_type_info(*typeof_ptr(type), TYPE_EXISTS)
#define core_type_size(type) __builtin_preserve_type_info(*typeof_ptr(type), TYPE_SIZE)
#define core_type_id_kernel(type) __builtin_btf_type_id(*typeof_ptr(type), TYPE_ID_TARGET)
#define core_enum_value(type, value) \
	__builtin_preserve_enum_value(*(typeof(type) *)value, ENUMVAL_VALUE)
#define core_enum_exists(type, value) \
	__builtin_preserve_enum_value(*(typeof(type) *)value, ENUMVAL_EXISTS)
/* BPF_CORE_READ_BITFIELD: byte size, offset and shifts all from relocations */
#define core_bitfield(s, field) ({ \
	const void *p = (const void *)(s) + __builtin_preserve_field_info((s)->field, FIELD_BYTE_OFFSET); \
	unsigned long long v = 0; \
	asm volatile("" : "=r"(p) : "0"(p)); \
	switch (__builtin_preserve_field_info((s)->field, FIELD_BYTE_SIZE)) { \
	case 1: v = *(const __u8 *)p; break; \
	case 2: v = *(const __u16 *)p; break; \
	case 4: v = *(const __u32 *)p; break; \
	case 8: v = *(const __u64 *)p; break; \
	} \
	v <<= __builtin_preserve_field_info((s)->field, FIELD_LSHIFT_U64); \
	if (__builtin_preserve_field_info((s)->field, FIELD_SIGNED)) \
		v = (long long)v >> __builtin_preserve_field_info((s)->field, FIELD_RSHIFT_U64); \
	else \
		v = v >> __builtin_preserve_field_info((s)->field, FIELD_RSHIFT_U64); \
	v; })

static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;

/* BPF_CORE_READ(udp, dest): a probe read of a relocated address */
#define core_read(dst, src) \
	bpf_probe_read_kernel(dst, sizeof(*(dst)), __builtin_preserve_access_index(src))

/* A flavor of iphdr: its fields in another order, and one the kernel lacks. */
struct iphdr___mine {
	__u32 saddr;
	__u8 ttl;
	__u8 protocol;
	__u32 not_in_kernel;
} __attribute__((preserve_access_index));

enum xdp_action___mine { XDP_DROP___mine = 40, XDP_PASS___mine = 41, XDP_NOPE___mine = 42 };

struct not_in_kernel { int x; } __attribute__((preserve_access_index));

/* Parses Ethernet, IPv4 and UDP through the kernel's structs: returns
 * ttl << 24 | protocol << 16 | the UDP destination port, 1 for a non-UDP
 * IPv4 packet, XDP_PASS (relocated enumerator) for anything else. */
SEC("xdp")
int xdp_parse(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp;
	__u16 dest = 0;

	if ((void *)(ip + 1) > data_end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
		return core_enum_value(enum xdp_action, XDP_PASS);
	if (ip->protocol != IPPROTO_UDP)
		return 1;
	udp = (void *)ip + ip->ihl * 4;
	if ((void *)(udp + 1) > data_end)
		return core_enum_value(enum xdp_action, XDP_DROP);
	core_read(&dest, &udp->dest);
	return ip->ttl << 24 | ip->protocol << 16 | __builtin_bswap16(dest);
}

/* The flavor struct and the guarded field: ttl + protocol + saddr's first
 * byte through iphdr___mine; not_in_kernel read only if it exists. */
SEC("xdp")
int xdp_flavor(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr___mine *ip = data + 14;
	int result;

	if ((void *)(ip) + 20 > data_end)
		return 0;
	result = ip->ttl + ip->protocol + (ip->saddr & 0xff);
	if (core_field_exists(ip->not_in_kernel))
		result += ip->not_in_kernel + 1000;
	return result;
}

/* Packs the answers of the type, size and enum relocations into one value:
 * bits 0-7 sizeof(struct iphdr), 8-15 sizeof(struct ipv6hdr),
 * 16 type exists(iphdr), 17 type exists(not_in_kernel), 18 field exists
 * (iphdr___mine.not_in_kernel), 19 field exists(iphdr___mine.ttl),
 * 20-23 field size(iphdr.saddr), 24-27 XDP_PASS___mine's kernel value,
 * 28 enumerator exists(XDP_NOPE___mine), 29 enumerator exists(XDP_PASS___mine). */
SEC("xdp")
int xdp_sizes(struct xdp_md *ctx)
{
	struct iphdr *ip = 0;
	struct iphdr___mine *mine = 0;
	unsigned int value = 0;

	value |= core_type_size(struct iphdr);
	value |= core_type_size(struct ipv6hdr) << 8;
	value |= core_type_exists(struct iphdr) << 16;
	value |= core_type_exists(struct not_in_kernel) << 17;
	value |= core_field_exists(mine->not_in_kernel) << 18;
	value |= core_field_exists(mine->ttl) << 19;
	value |= core_field_size(ip->saddr) << 20;
	value |= core_enum_value(enum xdp_action___mine, XDP_PASS___mine) << 24;
	value |= core_enum_exists(enum xdp_action___mine, XDP_NOPE___mine) << 28;
	value |= core_enum_exists(enum xdp_action___mine, XDP_PASS___mine) << 29;
	return value;
}

/* The bitfields of iphdr (version:4, ihl:4) read with the relocated byte
 * size, offset and shifts: version << 8 | ihl. */
SEC("xdp")
int xdp_bitfields(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + 14;

	if ((void *)(ip + 1) > data_end)
		return 0;
	return core_bitfield(ip, version) << 8 | core_bitfield(ip, ihl);
}

/* The target type id of struct iphdr (an lddw relocation): differs between
 * target BTFs; the low 32 bits are returned. */
SEC("xdp")
int xdp_type_id(struct xdp_md *ctx)
{
	return (int)core_type_id_kernel(struct iphdr);
}

/* VLAN, IPv6 and TCP through the kernel's structs (vlan_ethhdr's addresses
 * sit in an anonymous union, in6_addr's words in a named one, tcphdr's flags
 * are bitfields): h_source[5] << 24 | daddr's last 32-bit word's low byte
 * << 16 | doff << 8 | syn << 4 | ack, 0 for anything else. */
SEC("xdp")
int xdp_headers(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct vlan_ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + sizeof(*eth);
	struct tcphdr *tcp = (void *)(ip6 + 1);

	if ((void *)(tcp + 1) > data_end)
		return 0;
	if (eth->h_vlan_proto != __builtin_bswap16(0x8100) ||
	    eth->h_vlan_encapsulated_proto != __builtin_bswap16(0x86dd) || ip6->nexthdr != 6)
		return 0;
	return eth->h_source[5] << 24 | (__builtin_bswap32(ip6->daddr.in6_u.u6_addr32[3]) & 0xff) << 16 |
	       core_bitfield(tcp, doff) << 8 | core_bitfield(tcp, syn) << 4 | core_bitfield(tcp, ack);
}

/* A flavor of xdp_md whose fields are 64-bit: the loads shrink to the
 * kernel's 32-bit fields (unsigned ints zero-extend, as libbpf allows):
 * ingress_ifindex << 8 | rx_queue_index. */
struct xdp_md___wide {
	__u64 rx_queue_index;
	__u64 ingress_ifindex;
} __attribute__((preserve_access_index));

SEC("xdp")
int xdp_widths(struct xdp_md *ctx)
{
	struct xdp_md___wide *wide = (void *)ctx;

	return wide->ingress_ifindex << 8 | wide->rx_queue_index;
}

/* __sk_buff through CO-RE: len + protocol << 16 + ifindex-independent fields. */
SEC("tc")
int tc_skb(struct __sk_buff *skb)
{
	return skb->len + (skb->protocol << 16) + (skb->pkt_type << 12) + skb->mark;
}

char LICENSE[] SEC("license") = "GPL";
