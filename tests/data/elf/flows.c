/* Test object for the CLI's conventions (issue 14, point 4): a flow table
 * keyed by addresses and ports in network byte order (__be32, __be16), for
 * `ebpfvm maps --dump` and --json, and XDP_TX for UDP echo (port 7), for
 * `ebpfvm run --tx-out`. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;

struct xdp_md {
	__u32 data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex;
};

struct flow {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct counters {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, 1);		/* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 16);
	__type(key, struct flow);
	__type(value, struct counters);
} flows SEC(".maps");

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)2;

SEC("xdp")
int flow_echo(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data, *end = (__u8 *)(long)ctx->data_end;
	struct flow key = {};
	struct counters first = {1, 0}, *found;

	if (data + 14 + 20 + 4 > end || data[12] != 0x08 || data[13] != 0x00)
		return 2;			/* XDP_PASS */
	__builtin_memcpy(&key.saddr, data + 26, 4);
	__builtin_memcpy(&key.daddr, data + 30, 4);
	key.proto = data[23];
	if (key.proto == 17 || key.proto == 6) {
		__builtin_memcpy(&key.sport, data + 34, 2);
		__builtin_memcpy(&key.dport, data + 36, 2);
	}
	found = bpf_map_lookup_elem(&flows, &key);
	if (found) {
		found->packets += 1;
		found->bytes += end - data;
	} else {
		first.bytes = end - data;
		bpf_map_update_elem(&flows, &key, &first, 0);
	}
	if (key.proto == 17 && data[36] == 0 && data[37] == 7)
		return 3;			/* XDP_TX */
	return 2;
}

char _license[] SEC("license") = "GPL";
