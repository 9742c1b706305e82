/* Counts packets per (EtherType, IP protocol) in a hash map whose key is a
 * struct described by BTF, so Python reads it decoded. */
#include "common.h"

struct proto_key { __u16 ethertype; __u8 proto; __u8 pad; };

struct {
	__uint(type, 1);		/* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 64);
	__type(key, struct proto_key);
	__type(value, __u64);
} counts SEC(".maps");

SEC("xdp")
int proto_count(struct xdp_md *ctx)
{
	struct proto_key key = {};
	__u32 saddr;
	__u64 one = 1, *count;

	if (!parse(ctx, &key.ethertype, &key.proto, &saddr))
		return XDP_DROP;
	count = bpf_map_lookup_elem(&counts, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&counts, &key, &one, 0);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
