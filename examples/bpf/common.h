/* Shared definitions for the examples: no system headers needed. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

struct xdp_md { __u32 data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex; };
enum { XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX };

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_tail_call)(void *ctx, void *prog_array, __u32 index) = (void *)12;
static void *(*bpf_ringbuf_reserve)(void *rb, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;

/* The packet's EtherType and, for IPv4, its protocol and source address;
 * 0 when the packet is too short. */
static inline int parse(struct xdp_md *ctx, __u16 *ethertype, __u8 *proto, __u32 *saddr)
{
	__u8 *data = (__u8 *)(long)ctx->data, *end = (__u8 *)(long)ctx->data_end;

	if (data + 14 > end)
		return 0;
	*ethertype = (__u16)(data[12] << 8 | data[13]);
	*proto = 0;
	*saddr = 0;
	if (*ethertype == 0x0800 && data + 34 <= end) {
		*proto = data[23];
		*saddr = *(__u32 *)(data + 26);
	}
	return 1;
}
