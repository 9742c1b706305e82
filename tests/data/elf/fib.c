// SPDX-License-Identifier: GPL-2.0
/* bpf_fib_lookup from a tc program (tests/test_fib.py). The packet carries
 * the request: 14 bytes of Ethernet header, a struct bpf_fib_lookup (bytes
 * 14-77) and the flags (bytes 78-81, little endian); the rest pads the
 * packet (its length is what the lookup checks without tot_len). The
 * program writes the struct back over the request: r0 and the packet out
 * are the answer. fib_xdp does the same from XDP.
 * clang -target bpf -O2 -g -c fib.c -o fib.o
 * (-I the corpus's src/usr/include and src/linux-source-6.12/tools/include/uapi) */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("tc")
int fib(struct __sk_buff *skb)
{
	struct bpf_fib_lookup params;
	__u32 flags;
	long ret;

	if (bpf_skb_load_bytes(skb, 14, &params, sizeof(params)) ||
	    bpf_skb_load_bytes(skb, 78, &flags, 4))
		return 1000;
	ret = bpf_fib_lookup(skb, &params, sizeof(params), flags);
	if (bpf_skb_store_bytes(skb, 14, &params, sizeof(params), 0))
		return 1001;
	return ret;
}

/* The same request from XDP (the route's MTU is always checked). */
SEC("xdp")
int fib_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct bpf_fib_lookup params;
	__u32 flags;
	long ret;

	if (data + 82 > end)
		return 1000;
	__builtin_memcpy(&params, data + 14, sizeof(params));
	__builtin_memcpy(&flags, data + 78, 4);
	ret = bpf_fib_lookup(ctx, &params, sizeof(params), flags);
	__builtin_memcpy(data + 14, &params, sizeof(params));
	return ret;
}

char _license[] SEC("license") = "GPL";
