/* Global variables configured from Python, like a libbpf skeleton: a blocked
 * IP protocol in .rodata and counters in .data and .bss. */
#include "common.h"

const volatile __u8 blocked_proto = 17;		/* UDP unless Python says otherwise */
const char label[16] = "ebpfvm example";	/* .rodata string */
__u64 passed = 0;				/* .bss */
__u64 dropped = 0;				/* .bss */
__u32 generation = 1;				/* .data */

SEC("xdp")
int config(struct xdp_md *ctx)
{
	__u16 ethertype;
	__u8 proto;
	__u32 saddr;

	if (parse(ctx, &ethertype, &proto, &saddr) && proto == blocked_proto) {
		dropped += 1;
		return XDP_DROP;
	}
	passed += 1;
	return label[0] == 'e' ? XDP_PASS : XDP_ABORTED;
}

char _license[] SEC("license") = "Dual MIT/GPL";
