/* Test object for the tail-call security tests (tests/test_security_tail.py):
 * chains of tail calls, a wild pointer at the end of one, programs that loop
 * on the run's budget, and XDP / tc programs whose tail-called program calls
 * a context helper. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct {
	__uint(type, 3);		/* BPF_MAP_TYPE_PROG_ARRAY */
	__uint(max_entries, 8);
	__type(key, unsigned int);
	__type(value, unsigned int);
} jumps SEC(".maps");

struct xdp_md { unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index,
		egress_ifindex; };
struct __sk_buff;

static long (*bpf_tail_call)(void *ctx, void *prog_array, unsigned int index) = (void *)12;
static long (*bpf_skb_load_bytes)(const struct __sk_buff *skb, unsigned int offset, void *to,
				  unsigned int len) = (void *)26;
static long (*bpf_xdp_adjust_head)(struct xdp_md *ctx, int delta) = (void *)44;

unsigned long long hops;	/* .bss: programs entered in this chain */

/* While fewer than data[0] programs ran, tail-calls slot data[1], then slot
 * data[2]; returns 1000 + hops when the tail call fails. */
SEC("xdp/relay")
int relay(unsigned char *data)
{
	unsigned long long h = ++hops;

	bpf_tail_call(data, &jumps, h < data[0] ? data[1] : data[2]);
	return 1000 + h;
}

/* Loads 4 bytes through a wild pointer. */
SEC("xdp/wild")
int wild(unsigned char *data)
{
	return *(volatile unsigned int *)0xdead000UL;
}

/* Loops as many times as the u32 at data + 4 says, then tail-calls slot data[1]. */
SEC("xdp/spin")
int spin(unsigned char *data)
{
	volatile unsigned long long acc = 0;
	unsigned int n = *(unsigned int *)(data + 4);

	for (unsigned int i = 0; i < n; i++)
		acc += i;
	hops += 1;
	bpf_tail_call(data, &jumps, data[1]);
	return acc & 0xff;
}

SEC("xdp")
int xdp_entry(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jumps, 4);
	return 0;		/* XDP_ABORTED */
}

/* Strips a 14-byte header with bpf_xdp_adjust_head. */
SEC("xdp/strip")
int strip(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_head(ctx, 14))
		return 1;	/* XDP_DROP */
	return 2;		/* XDP_PASS */
}

SEC("tc")
int tc_entry(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &jumps, 5);
	return -1;
}

/* Returns the packet's bytes 2..5 (little-endian), read with bpf_skb_load_bytes. */
SEC("tc/peek")
int peek(struct __sk_buff *skb)
{
	unsigned int word = 0;

	if (bpf_skb_load_bytes(skb, 2, &word, 4))
		return -2;
	return word;
}

/* The first fields of struct __sk_buff, for the program below. */
struct skb_head { unsigned int len, pkt_type, mark; };

SEC("tc")
int tc_len_entry(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &jumps, 6);
	return -1;
}

/* Returns skb->len * 65536 + skb->mark: a tail-called tc program gets the
 * caller's __sk_buff in r1, not the packet. */
SEC("tc/skblen")
int skblen(struct __sk_buff *skb)
{
	struct skb_head *head = (struct skb_head *)skb;

	return head->len * 65536 + head->mark;
}

char _license[] SEC("license") = "Dual MIT/GPL";
