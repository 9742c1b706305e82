/* Test object for the perf event array (map type 4) and
 * bpf_perf_event_output (helper 25), run by ebpfvm and by the kernel.
 * Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct xdp_md {
	unsigned int data, data_end, data_meta, ingress_ifindex, rx_queue_index,
		egress_ifindex;
};

struct {
	__uint(type, 4);		/* BPF_MAP_TYPE_PERF_EVENT_ARRAY */
	__uint(max_entries, 2);
	__uint(key_size, 4);
	__uint(value_size, 4);
} events SEC(".maps");

static long (*bpf_perf_event_output)(void *ctx, void *map, unsigned long long flags,
				     void *data, unsigned long long size) = (void *)25;

/* The packet starts with the flags (a u64) and a u32 size (at most 40); the
 * record is the `size` bytes after them. Returns 1000 minus the helper's
 * result (1000 on success, 1002 for -ENOENT...), 3000 for a short packet. */
SEC("xdp")
int emit(struct xdp_md *ctx)
{
	unsigned char *data = (unsigned char *)(long)ctx->data;
	unsigned char *end = (unsigned char *)(long)ctx->data_end;
	unsigned char record[40];
	unsigned int size;

	if (data + 52 > end)
		return 3000;
	size = *(unsigned int *)(data + 8);
	if (size > 40)
		size = 40;
	__builtin_memcpy(record, data + 12, 40);
	return 1000 - bpf_perf_event_output(ctx, &events, *(unsigned long long *)data, record, size);
}

char _license[] SEC("license") = "Dual MIT/GPL";
