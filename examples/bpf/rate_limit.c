/* Lets at most `limit` packets through per IPv4 source; an LRU hash forgets
 * the least recently seen sources when it is full. `limit` lives in .rodata
 * and is set from Python before the run. */
#include "common.h"

const volatile __u32 limit = 3;

struct {
	__uint(type, 9);		/* BPF_MAP_TYPE_LRU_HASH */
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} seen SEC(".maps");

SEC("xdp")
int rate_limit(struct xdp_md *ctx)
{
	__u16 ethertype;
	__u8 proto;
	__u32 saddr, first = 1, *count;

	if (!parse(ctx, &ethertype, &proto, &saddr) || ethertype != 0x0800)
		return XDP_PASS;
	count = bpf_map_lookup_elem(&seen, &saddr);
	if (!count) {
		bpf_map_update_elem(&seen, &saddr, &first, 0);
		return XDP_PASS;
	}
	if (*count >= limit)
		return XDP_DROP;
	*count += 1;
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
