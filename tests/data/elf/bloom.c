/* Test object for the bloom filter (map type 30) and its push/peek helpers
 * 87 and 89, run by ebpfvm and by the kernel. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct xdp_md {
	unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index,
		egress_ifindex;
};

struct {
	__uint(type, 30);		/* BPF_MAP_TYPE_BLOOM_FILTER */
	__uint(max_entries, 1000);
	__type(value, unsigned int);
	__uint(map_extra, 3);		/* hash functions */
} seen SEC(".maps");

static long (*bpf_map_push_elem)(void *map, const void *value, unsigned long long flags) = (void *)87;
static long (*bpf_map_peek_elem)(void *map, void *value) = (void *)89;

/* The packet holds two u32s, `add` and `test`: a non-zero `add` is pushed
 * (with BPF_EXIST when it is 0xffffffff, which the filter refuses); returns
 * 2000 + errno when the push fails, else 1 when `test` may be present, 2 when
 * it is absent (peek's -ENOENT), 3 for another result. */
SEC("xdp")
int bloom(struct xdp_md *ctx)
{
	unsigned char *data = (unsigned char *)(long)ctx->data;
	unsigned char *end = (unsigned char *)(long)ctx->data_end;
	unsigned int add, test;
	long result = 0;

	if (data + 8 > end)
		return 1000;
	add = *(unsigned int *)data;
	test = *(unsigned int *)(data + 4);
	if (add)
		result = bpf_map_push_elem(&seen, &add, add == 0xffffffff ? 2 : 0);
	if (result)
		return 2000 - result;
	result = bpf_map_peek_elem(&seen, &test);
	return result == 0 ? 1 : result == -2 ? 2 : 3;
}

char _license[] SEC("license") = "Dual MIT/GPL";
