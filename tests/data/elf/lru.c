/* Test object for the LRU maps (lru_hash, lru_percpu_hash, common and
 * BPF_F_NO_COMMON_LRU): each packet is a list of 4-byte operations that
 * look up, insert, update and delete keys, compared with the kernel after
 * every packet (tests/test_lru.py). Rebuild with `make`.
 *
 * Operation: byte 0 = map (bits 0-3, 10 maps) | kind (bits 4-5: lookup,
 * update, update, delete) | flags (bits 6-7: BPF_ANY, BPF_NOEXIST,
 * BPF_EXIST, BPF_ANY); bytes 1-2 = key (little endian, modulo the map's key
 * range); byte 3 = the value added (lookup) or stored (update). The program
 * writes each operation's result back into its byte 3: 1/0 for a lookup
 * (found or not), the low byte of the helper's return value otherwise. */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

#define LRU_MAP(name, maptype, entries, mapflags)	\
struct {						\
	__uint(type, maptype);				\
	__uint(max_entries, entries);			\
	__uint(map_flags, mapflags);			\
	__type(key, __u32);				\
	__type(value, __u32);				\
} name SEC(".maps")

/* 9 = BPF_MAP_TYPE_LRU_HASH, 10 = LRU_PERCPU_HASH, 2 = BPF_F_NO_COMMON_LRU */
LRU_MAP(lru1, 9, 1, 0);
LRU_MAP(lru4, 9, 4, 0);
LRU_MAP(lru16, 9, 16, 0);
LRU_MAP(lru200, 9, 200, 0);
LRU_MAP(own1, 9, 1, 2);
LRU_MAP(own4, 9, 4, 2);
LRU_MAP(own200, 9, 200, 2);
LRU_MAP(pcpu4, 10, 4, 0);
LRU_MAP(pcpu16, 10, 16, 0);
LRU_MAP(pcpu_own16, 10, 16, 2);

static __attribute__((always_inline)) __u8 apply(void *map, __u32 range, __u8 op, __u32 raw,
						 __u32 value)
{
	__u32 key = raw % range, *found;
	__u8 kind = (op >> 4) & 3, flags = op >> 6;

	if (flags == 3)
		flags = 0;
	if (kind == 0) {
		found = bpf_map_lookup_elem(map, &key);
		if (!found)
			return 0;
		*found += value;
		return 1;
	}
	if (kind == 3)
		return bpf_map_delete_elem(map, &key);
	return bpf_map_update_elem(map, &key, &value, flags);
}

static __attribute__((always_inline)) __u8 one(__u8 op, __u32 raw, __u32 value)
{
	switch (op & 15) {
	case 0: return apply(&lru1, 3, op, raw, value);
	case 1: return apply(&lru4, 11, op, raw, value);
	case 2: return apply(&lru16, 35, op, raw, value);
	case 3: return apply(&lru200, 403, op, raw, value);
	case 4: return apply(&own1, 5, op, raw, value);
	case 5: return apply(&own4, 11, op, raw, value);
	case 6: return apply(&own200, 403, op, raw, value);
	case 7: return apply(&pcpu4, 11, op, raw, value);
	case 8: return apply(&pcpu16, 35, op, raw, value);
	case 9: return apply(&pcpu_own16, 35, op, raw, value);
	}
	return 0xff;
}

SEC("xdp")
int lru_ops(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	int i;

#pragma unroll
	for (i = 0; i < 16; i++) {
		__u8 *op = data + 4 * i;

		if (op + 4 > end)
			break;
		op[3] = one(op[0], op[1] | (op[2] << 8), op[3]);
	}
	return 2;
}

char _license[] SEC("license") = "GPL";
