// SPDX-License-Identifier: GPL-2.0
/* bpf_strtol, bpf_strtoul and bpf_strncmp on packet-driven inputs, and
 * bpf_snprintf (the program `format`)
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

struct formatted {
	__s64 ret;
	char out[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, struct formatted);
} texts SEC(".maps");

static const char f_ints[] = "%d %i %u %x %X|%ld %lld %lu %llx %lX|";
static const char f_flags[] = "%5d|%-5d|%05d|%+d|% d|%+u|% x|%-08x|%3c|";
static const char f_strings[] = "%s|%10s|%-6s.|%c%c|%s|";
static const char f_addresses[] = "%pI4 %pi4 %pI6 %pi6 %pks %pus|";
static const char f_plain[] = "100%% %llu";

/* bpf_snprintf: packet byte 14 = the output size (0-64), bytes 15-110 =
 * twelve u64 arguments, bytes 111-158 = string bytes the pointer arguments
 * point into (the last one made a NUL); map `texts` gets each format's return value and output. */
SEC("tc")
int format(struct __sk_buff *skb)
{
	__u64 args[12];
	char strs[48];
	__u8 size8;
	__u32 size, key;
	struct formatted *t;

	if (bpf_skb_load_bytes(skb, 14, &size8, 1) || bpf_skb_load_bytes(skb, 15, args, 96) ||
	    bpf_skb_load_bytes(skb, 111, strs, 48))
		return 1000;
	size = size8;
	if (size > 64)
		return 1001;
	key = 0;
	t = bpf_map_lookup_elem(&texts, &key);
	if (!t)
		return 1002;
	t->ret = bpf_snprintf(t->out, size, f_ints, args, sizeof(args));
	key = 1;
	t = bpf_map_lookup_elem(&texts, &key);
	if (!t)
		return 1002;
	t->ret = bpf_snprintf(t->out, size, f_flags, args, sizeof(args));
	key = 4;
	t = bpf_map_lookup_elem(&texts, &key);
	if (!t)
		return 1002;
	t->ret = bpf_snprintf(t->out, size, f_plain, args, 8);
	strs[47] = 0; /* the strings end in the buffer */
	args[0] = (__u64)(long)&strs[0];
	args[1] = (__u64)(long)&strs[8];
	args[2] = (__u64)(long)&strs[16];
	args[5] = (__u64)(long)&strs[24];
	key = 2;
	t = bpf_map_lookup_elem(&texts, &key);
	if (!t)
		return 1002;
	t->ret = bpf_snprintf(t->out, size, f_strings, args, sizeof(args));
	args[3] = (__u64)(long)&strs[32];
	args[4] = (__u64)(long)&strs[40];
	key = 3;
	t = bpf_map_lookup_elem(&texts, &key);
	if (!t)
		return 1002;
	t->ret = bpf_snprintf(t->out, size, f_addresses, args, sizeof(args));
	return 0;
}

char _license[] SEC("license") = "GPL";
