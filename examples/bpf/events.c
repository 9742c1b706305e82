/* Emits one event per packet into a ring buffer for a Python consumer. */
#include "common.h"

struct event { __u32 len; __u16 ethertype; __u8 proto; __u8 pad; };

struct {
	__uint(type, 27);		/* BPF_MAP_TYPE_RINGBUF */
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("xdp")
int emit_events(struct xdp_md *ctx)
{
	struct event *event;
	__u16 ethertype;
	__u8 proto;
	__u32 saddr;

	if (!parse(ctx, &ethertype, &proto, &saddr))
		return XDP_PASS;
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event)
		return XDP_PASS;
	event->len = ctx->data_end - ctx->data;
	event->ethertype = ethertype;
	event->proto = proto;
	event->pad = 0;
	bpf_ringbuf_submit(event, 0);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
