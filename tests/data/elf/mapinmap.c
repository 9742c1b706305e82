/* Test object for maps of maps (map types 12 and 13) with BTF inner map
 * definitions (__array(values, struct inner)), run by ebpfvm and by the
 * kernel. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

struct xdp_md {
	unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index,
		egress_ifindex;
};

struct inner {
	__uint(type, 2);		/* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 4);
	__type(key, unsigned int);
	__type(value, unsigned long long);
};

struct {
	__uint(type, 12);		/* BPF_MAP_TYPE_ARRAY_OF_MAPS */
	__uint(max_entries, 2);
	__type(key, unsigned int);
	__array(values, struct inner);
} outer_array SEC(".maps");

struct {
	__uint(type, 13);		/* BPF_MAP_TYPE_HASH_OF_MAPS */
	__uint(max_entries, 2);
	__type(key, unsigned int);
	__array(values, struct inner);
} outer_hash SEC(".maps");

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;

/* The packet's first u32 chooses the outer map (0: array, else hash), the
 * second the outer key, the third the inner index. Adds 1 to that inner
 * value and returns it, 1000 when the outer slot is empty, 2000 when the
 * inner index is past the inner map. */
SEC("xdp")
int bump(struct xdp_md *ctx)
{
	unsigned int *data = (unsigned int *)(long)ctx->data;
	unsigned int *end = (unsigned int *)(long)ctx->data_end;
	unsigned int key, index;
	unsigned long long *value;
	void *inner;

	if (data + 3 > end)
		return 3000;
	key = data[1];
	index = data[2];
	inner = data[0] ? bpf_map_lookup_elem(&outer_hash, &key)
			: bpf_map_lookup_elem(&outer_array, &key);
	if (!inner)
		return 1000;
	value = bpf_map_lookup_elem(inner, &index);
	if (!value)
		return 2000;
	*value += 1;
	return *value;
}

char _license[] SEC("license") = "Dual MIT/GPL";
