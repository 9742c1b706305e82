// SPDX-License-Identifier: GPL-2.0
/* bpf_strtol, bpf_strtoul and bpf_strncmp on packet-driven inputs
 * (tests/test_strings.py). Packet: 14 bytes of Ethernet header, then the
 * length (byte 14, 1 to 72), the flags (bytes 15-18, little endian) and a
 * 72-byte buffer (bytes 19-90). The results go to the map `out`.
 * clang -target bpf -O2 -g -c strings.c -o strings.o
 * (-I the corpus's src/usr/include and src/linux-source-6.12/tools/include/uapi) */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define BUF 72

struct result {
	__s64 ret_l, res_l, ret_ul, res_ul, cmp_hex, cmp_word, cmp_empty;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct result);
} out SEC(".maps");

static const char hex[] = "0x1f";
static const char word[] = "-12 abc";
static const char empty[] = "";

SEC("tc")
int parse(struct __sk_buff *skb)
{
	char buf[BUF];
	__u8 len8;
	__u32 flags, key = 0, len;
	struct result *r = bpf_map_lookup_elem(&out, &key);
	long res_l;
	unsigned long res_ul;

	if (!r)
		return 1000;
	if (bpf_skb_load_bytes(skb, 14, &len8, 1) || bpf_skb_load_bytes(skb, 15, &flags, 4) ||
	    bpf_skb_load_bytes(skb, 19, buf, BUF))
		return 1001;
	len = len8;
	if (len < 1 || len > BUF)
		return 1002;
	r->ret_l = bpf_strtol(buf, len, flags, &res_l);
	r->res_l = res_l;
	r->ret_ul = bpf_strtoul(buf, len, flags, &res_ul);
	r->res_ul = res_ul;
	r->cmp_hex = bpf_strncmp(buf, len, hex);
	r->cmp_word = bpf_strncmp(buf, len, word);
	r->cmp_empty = bpf_strncmp(buf, len, empty);
	return r->ret_l;
}

char _license[] SEC("license") = "GPL";
