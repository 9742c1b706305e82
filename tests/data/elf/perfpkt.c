/* Test object for bpf_perf_event_output with packet bytes (the flags'
 * context length, BPF_F_CTXLEN_MASK) from __sk_buff programs, run by ebpfvm
 * and by the kernel. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]

struct __sk_buff {
	unsigned int len, pkt_type, mark, queue_mapping, protocol, vlan_present, vlan_tci,
		vlan_proto, priority;
};

struct {
	__uint(type, 4);		/* BPF_MAP_TYPE_PERF_EVENT_ARRAY */
	__uint(max_entries, 2);
	__uint(key_size, 4);
	__uint(value_size, 4);
} events SEC(".maps");

static long (*bpf_perf_event_output)(void *ctx, void *map, unsigned long long flags,
				     void *data, unsigned long long size) = (void *)25;

/* flags = priority << 32 | mark (the context length, then the slot); the
 * record is 8 bytes 1..8 and the packet bytes. Returns 1000 minus the
 * helper's result (1000 on success, 1014 for -EFAULT...). */
static __attribute__((always_inline)) int emit(struct __sk_buff *skb)
{
	unsigned char record[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	unsigned long long flags = (unsigned long long)skb->priority << 32 | skb->mark;

	return 1000 - bpf_perf_event_output(skb, &events, flags, record, sizeof(record));
}

SEC("tc")
int emit_tc(struct __sk_buff *skb)
{
	return emit(skb);
}

SEC("socket")
int emit_socket(struct __sk_buff *skb)
{
	return emit(skb);
}

char _license[] SEC("license") = "GPL";
