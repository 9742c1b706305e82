/* Test object for helpers4 (issue 13 point 3): bpf_ringbuf_query and the
 * dynptr helpers 197-203. Each XDP program writes its results as u64s over
 * the packet's first bytes (packets of 64 bytes or more) and returns XDP_TX.
 * Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]

typedef unsigned long long u64;
typedef unsigned int u32;

struct xdp_md { u32 data, data_end, data_meta, ingress_ifindex, rx_queue_index,
		egress_ifindex; };
struct bpf_dynptr { u64 opaque[2]; } __attribute__((aligned(8)));

struct {
	__uint(type, 27);		/* BPF_MAP_TYPE_RINGBUF */
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, 2);		/* BPF_MAP_TYPE_ARRAY: the local dynptr's memory */
	__uint(max_entries, 1);
	__uint(key_size, 4);
	__uint(value_size, 16);
} store SEC(".maps");

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_ringbuf_output)(void *rb, void *data, u64 size, u64 flags) = (void *)130;
static void *(*bpf_ringbuf_reserve)(void *rb, u64 size, u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, u64 flags) = (void *)132;
static u64 (*bpf_ringbuf_query)(void *rb, u64 flags) = (void *)134;
static long (*bpf_dynptr_from_mem)(void *data, u32 size, u64 flags,
				   struct bpf_dynptr *ptr) = (void *)197;
static long (*bpf_ringbuf_reserve_dynptr)(void *rb, u32 size, u64 flags,
					  struct bpf_dynptr *ptr) = (void *)198;
static void (*bpf_ringbuf_submit_dynptr)(struct bpf_dynptr *ptr, u64 flags) = (void *)199;
static void (*bpf_ringbuf_discard_dynptr)(struct bpf_dynptr *ptr, u64 flags) = (void *)200;
static long (*bpf_dynptr_read)(void *dst, u32 len, const struct bpf_dynptr *src, u32 offset,
			       u64 flags) = (void *)201;
static long (*bpf_dynptr_write)(const struct bpf_dynptr *dst, u32 offset, void *src, u32 len,
				u64 flags) = (void *)202;
static long (*bpf_trace_vprintk)(const char *fmt, u32 fmt_size, const void *args,
				 u32 data_len) = (void *)177;
static void *(*bpf_dynptr_data)(const struct bpf_dynptr *ptr, u32 offset, u32 len) = (void *)203;

#define OUT(ctx, n) \
	u64 *out = (u64 *)(long)ctx->data; \
	if ((void *)(out + (n)) > (void *)(long)ctx->data_end) \
		return 1

/* A record through bpf_ringbuf_output, one through reserve/submit, then
 * every bpf_ringbuf_query flag (and an unknown one). */
SEC("xdp")
int query(struct xdp_md *ctx)
{
	OUT(ctx, 6);
	u64 *record, copy[3] = {out[0], out[1], out[2]};

	bpf_ringbuf_output(&events, copy, 20, 0);
	record = bpf_ringbuf_reserve(&events, 8, 0);
	if (record) {
		*record = out[0];
		bpf_ringbuf_submit(record, 0);
	}
	out[0] = bpf_ringbuf_query(&events, 0);
	out[1] = bpf_ringbuf_query(&events, 1);
	out[2] = bpf_ringbuf_query(&events, 2);
	out[3] = bpf_ringbuf_query(&events, 3);
	out[4] = bpf_ringbuf_query(&events, 4);
	return 3;
}

/* A local dynptr over a 16-byte map value (the kernel takes no stack): write 8 packet bytes at offset 4, read
 * back, out-of-range reads, writes and data, a dynptr made with flags. */
SEC("xdp")
int local(struct xdp_md *ctx)
{
	OUT(ctx, 8);
	struct bpf_dynptr ptr, bad;
	u64 back = 0, word = out[1];
	u64 *data, *buf;
	u32 zero = 0;

	buf = bpf_map_lookup_elem(&store, &zero);
	if (!buf)
		return 2;
	buf[0] = 0x1111111111111111ULL;
	buf[1] = 0x2222222222222222ULL;

	out[0] = bpf_dynptr_from_mem(buf, 16, 0, &ptr);
	out[1] = bpf_dynptr_write(&ptr, 4, &word, 8, 0);
	out[2] = bpf_dynptr_read(&back, 8, &ptr, 2, 0);
	out[3] = back;
	out[4] = bpf_dynptr_read(&back, 8, &ptr, 9, 0) << 16 | bpf_dynptr_write(&ptr, 12, &word, 8, 0) & 0xffff;
	data = bpf_dynptr_data(&ptr, 8, 8);
	out[5] = data ? *data : 0x5555;
	out[6] = bpf_dynptr_data(&ptr, 9, 8) ? 1 : 0;
	out[7] = (u64)bpf_dynptr_from_mem(buf, 8, 1, &bad) << 32 |
		 (u32)bpf_dynptr_read(&back, 4, &bad, 0, 0);
	return 3;
}

/* A ring buffer dynptr: a record of 16 bytes written, read back, submitted;
 * one reserved with flags, one too big for the ring (both discarded). */
SEC("xdp")
int ring(struct xdp_md *ctx)
{
	OUT(ctx, 6);
	struct bpf_dynptr ptr, flagged, big;
	u64 word = out[2], back = 0;
	u64 *data;

	out[0] = bpf_ringbuf_reserve_dynptr(&events, 16, 0, &ptr);
	out[1] = bpf_dynptr_write(&ptr, 0, &word, 8, 0);
	data = bpf_dynptr_data(&ptr, 8, 8);
	if (data)
		*data = 0x7777;
	out[2] = bpf_dynptr_read(&back, 8, &ptr, 8, 0) << 32 | (u32)back;
	bpf_ringbuf_submit_dynptr(&ptr, 0);
	out[3] = bpf_ringbuf_reserve_dynptr(&events, 8, 1, &flagged);
	bpf_ringbuf_discard_dynptr(&flagged, 0);
	out[4] = bpf_ringbuf_reserve_dynptr(&events, 8192, 0, &big);
	bpf_ringbuf_discard_dynptr(&big, 0);
	out[5] = bpf_ringbuf_query(&events, 3);
	return 3;
}

/* bpf_trace_vprintk: a line with four arguments, a line longer than the
 * kernel's buffer, and the -EINVAL cases (an argument missing, a format
 * without its NUL, an array length not a multiple of 8). */
SEC("xdp")
int vprintk(struct xdp_md *ctx)
{
	OUT(ctx, 5);
	char fmt[] = "v %d %llx %s %c|", name[] = "xy", bad[] = "%d %d", wide[] = "%700d%700d";
	char nonul[8] = {'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'};
	u64 args[4];

	args[0] = -5;
	args[1] = out[0];
	args[2] = (u64)(long)name;
	args[3] = 'Q';
	asm volatile("" ::: "memory");
	out[0] = bpf_trace_vprintk(fmt, sizeof(fmt), args, 32);
	out[1] = bpf_trace_vprintk(bad, sizeof(bad), args, 8);
	out[2] = bpf_trace_vprintk(nonul, sizeof(nonul), args, 0);
	out[3] = bpf_trace_vprintk(fmt, sizeof(fmt), args, 12);
	out[4] = bpf_trace_vprintk(wide, sizeof(wide), args, 16);
	return 3;
}

char _license[] SEC("license") = "Dual MIT/GPL";
