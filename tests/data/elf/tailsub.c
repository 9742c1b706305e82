/* Test object: bpf_tail_call made inside bpf-to-bpf functions. In the kernel
 * such a call replaces only the function's frame: the tail-called program's
 * r0 goes back to the function's caller, which carries on, and the limit of
 * 33 tail calls counts over the whole run. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __array(name, val) typeof(val) *name[]
#define __noinline __attribute__((noinline))

static long (*bpf_tail_call)(void *ctx, void *prog_array, unsigned int index) = (void *)12;

struct xdp_md {
	unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex;
};

int ret7(struct xdp_md *ctx);
int loop(struct xdp_md *ctx);
int retcount(struct xdp_md *ctx);
int hop(struct xdp_md *ctx);

struct {
	__uint(type, 3);		/* BPF_MAP_TYPE_PROG_ARRAY */
	__uint(max_entries, 6);
	__uint(key_size, sizeof(unsigned int));
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = {
		[0] = (void *)&ret7,
		[1] = (void *)&loop,
		[2] = (void *)&retcount,
		/* [3] stays empty */
		[5] = (void *)&hop,
	},
};

int count;

/* Tail-calls slot `index`; returns 100 + index only when the call fails. */
static __noinline int sub(struct xdp_md *ctx, int index)
{
	bpf_tail_call(ctx, &jumps, index);
	return 100 + index;
}

static __noinline int sub2(struct xdp_md *ctx)
{
	return sub(ctx, 0) + 1000;
}

SEC("xdp")
int ret7(struct xdp_md *ctx)
{
	return 7;
}

/* Each run tail-calls itself from a function until the count runs out. */
SEC("xdp")
int loop(struct xdp_md *ctx)
{
	count++;
	sub(ctx, 1);
	return 0;
}

SEC("xdp")
int retcount(struct xdp_md *ctx)
{
	return count + 40;
}

/* A tail call from the program's own code: replaces hop, whose caller
 * (a function of another program) gets ret7's r0. */
SEC("xdp")
int hop(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jumps, 0);
	return 3;
}

/* 7 * 1000 + 103: the function's caller gets ret7's r0, then an empty slot. */
SEC("xdp")
int e_ret(struct xdp_md *ctx)
{
	int a = sub(ctx, 0);
	int b = sub(ctx, 3);

	return a * 1000 + b;
}

/* 33 tail calls run loop 33 times; the 34th and the next fail: 33 << 16 | 100. */
SEC("xdp")
int e_count(struct xdp_md *ctx)
{
	int c;

	count = 0;
	sub(ctx, 1);
	c = sub(ctx, 0);
	return (count << 16) | c;
}

/* ret7's r0 from a function two calls deep, then the main program's own
 * tail call: retcount returns 7 + 40. */
SEC("xdp")
int e_mix(struct xdp_md *ctx)
{
	count = sub2(ctx) - 1000;
	bpf_tail_call(ctx, &jumps, 2);
	return 1;
}

/* hop's own tail call ends hop: 7 + 50. */
SEC("xdp")
int e_hop(struct xdp_md *ctx)
{
	return sub(ctx, 5) + 50;
}

/* After the count ran out in a function, the main program's tail call fails too. */
SEC("xdp")
int e_spent(struct xdp_md *ctx)
{
	count = 0;
	sub(ctx, 1);
	bpf_tail_call(ctx, &jumps, 0);
	return 9 + (count << 8);
}

char _license[] SEC("license") = "GPL";
