/* Programs for tests/test_capture_jobs.py (run_capture's jobs): each packet
 * carries a u32 tag at offset 14 and an op byte at offset 18. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

struct xdp_md { __u32 data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex; };

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static long (*bpf_ringbuf_output)(void *ring, void *data, __u64 size, __u64 flags) = (void *)130;
static void *(*bpf_ringbuf_reserve)(void *ring, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static void (*bpf_ringbuf_discard)(void *data, __u64 flags) = (void *)133;

struct {
	__uint(type, 6);		/* BPF_MAP_TYPE_PERCPU_ARRAY */
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} per_cpu SEC(".maps");

struct {
	__uint(type, 2);		/* BPF_MAP_TYPE_ARRAY: packets by the CPU the run reported */
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} by_cpu SEC(".maps");

struct {
	__uint(type, 1);		/* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} tags SEC(".maps");

SEC("xdp")
int percpu_slots(struct xdp_md *ctx)
{
	__u32 zero = 0, cpu = bpf_get_smp_processor_id();
	__u64 *slot = bpf_map_lookup_elem(&per_cpu, &zero);
	__u64 *seen = bpf_map_lookup_elem(&by_cpu, &cpu);

	if (slot)
		*slot += 1;		/* this CPU's own slot: no other worker writes it */
	if (seen)
		__sync_fetch_and_add(seen, 1);
	return 2;
}

/* op 0: count the tag (insert with NOEXIST, else an atomic add); op 1:
 * insert the tag and delete it again (structure churn). */
SEC("xdp")
int hash_stress(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data, *end = (__u8 *)(long)ctx->data_end;
	__u64 one = 1, *count;
	__u32 tag;

	if (data + 19 > end)
		return 0;
	tag = *(__u32 *)(data + 14);
	if (data[18] == 1) {
		bpf_map_update_elem(&tags, &tag, &one, 0);
		bpf_map_delete_elem(&tags, &tag);
		return 2;
	}
	if (bpf_map_update_elem(&tags, &tag, &one, 1) == 0)	/* BPF_NOEXIST */
		return 2;
	count = bpf_map_lookup_elem(&tags, &tag);
	if (!count)
		return 0;
	__sync_fetch_and_add(count, 1);
	return 2;
}

struct {
	__uint(type, 27);		/* BPF_MAP_TYPE_RINGBUF: room for every record of the tests */
	__uint(max_entries, 1 << 20);
} records SEC(".maps");

/* Every packet's tag into the shared ring: op 0 with bpf_ringbuf_output,
 * op 1 reserved and submitted, op 2 reserved and discarded. */
SEC("xdp")
int ring_stress(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data, *end = (__u8 *)(long)ctx->data_end;
	__u32 tag, *slot;

	if (data + 19 > end)
		return 0;
	tag = *(__u32 *)(data + 14);
	if (data[18] == 0)
		return bpf_ringbuf_output(&records, &tag, sizeof(tag), 0) == 0 ? 2 : 0;
	slot = bpf_ringbuf_reserve(&records, sizeof(tag), 0);
	if (!slot)
		return 0;
	*slot = tag;
	if (data[18] == 1)
		bpf_ringbuf_submit(slot, 0);
	else
		bpf_ringbuf_discard(slot, 0);
	return 2;
}

/* Faults (reads past the packet) on the packet whose op byte is 0xEE. */
SEC("xdp")
int fault_at(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data, *end = (__u8 *)(long)ctx->data_end;
	volatile __u32 far = 1 << 20;

	if (data + 19 > end)
		return 0;
	if (data[18] == 0xEE)
		return *(volatile __u8 *)(data + far);
	return 2;
}

char _license[] SEC("license") = "Dual MIT/GPL";
