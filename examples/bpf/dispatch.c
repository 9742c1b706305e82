/* A tail-call dispatcher: jumps to the handler registered for the packet's IP
 * protocol in a program array; packets with no handler pass. */
#include "common.h"

struct {
	__uint(type, 3);		/* BPF_MAP_TYPE_PROG_ARRAY */
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} handlers SEC(".maps");

__u64 tcp_packets, udp_packets;		/* .bss, read from Python */

SEC("xdp")
int dispatch(struct xdp_md *ctx)
{
	__u16 ethertype;
	__u8 proto;
	__u32 saddr;

	if (parse(ctx, &ethertype, &proto, &saddr))
		bpf_tail_call(ctx, &handlers, proto);
	return XDP_PASS;
}

SEC("xdp/tcp")
int handle_tcp(struct xdp_md *ctx)
{
	tcp_packets += 1;
	return XDP_PASS;
}

SEC("xdp/udp")
int handle_udp(struct xdp_md *ctx)
{
	udp_packets += 1;
	return XDP_DROP;
}

char _license[] SEC("license") = "Dual MIT/GPL";
