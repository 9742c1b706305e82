/* Test object: a program array whose slots the object fills at load, as
 * libbpf does for `__array(values, ...)` initialisers (.rel.maps relocations).
 * Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __array(name, val) typeof(val) *name[]

static long (*bpf_tail_call)(void *ctx, void *prog_array, unsigned int index) = (void *)12;

struct xdp_md {
	unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex;
};

int seven(struct xdp_md *ctx);
int nine(struct xdp_md *ctx);

struct {
	__uint(type, 3);		/* BPF_MAP_TYPE_PROG_ARRAY */
	__uint(max_entries, 4);
	__uint(key_size, sizeof(unsigned int));
	__array(values, int (void *));
} jumps SEC(".maps") = {
	.values = {
		[1] = (void *)&seven,
		[3] = (void *)&nine,
	},
};

SEC("xdp")
int seven(struct xdp_md *ctx)
{
	return 7;
}

SEC("xdp")
int nine(struct xdp_md *ctx)
{
	return 9;
}

/* Tail-calls slot (first packet byte & 3): 7 from slot 1, 9 from slot 3,
 * 2 (XDP_PASS) where the slot is empty. */
SEC("xdp")
int entry(struct xdp_md *ctx)
{
	unsigned char *data = (unsigned char *)(unsigned long)ctx->data;
	unsigned char *end = (unsigned char *)(unsigned long)ctx->data_end;

	if (data + 1 > end)
		return 1;
	bpf_tail_call(ctx, &jumps, data[0] & 3);
	return 2;
}

char _license[] SEC("license") = "GPL";

/* A map of maps initialised the same way: slot 1 holds inner_b. */
struct inner {
	__uint(type, 2);		/* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 2);
	__uint(key_size, sizeof(unsigned int));
	__uint(value_size, sizeof(unsigned int));
};

struct inner inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
	__uint(type, 12);		/* BPF_MAP_TYPE_ARRAY_OF_MAPS */
	__uint(max_entries, 3);
	__uint(key_size, sizeof(unsigned int));
	__array(values, struct inner);
} outer SEC(".maps") = {
	.values = {
		[1] = &inner_b,
	},
};
