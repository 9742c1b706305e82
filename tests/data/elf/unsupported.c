/* Test object for typed load errors (issue 13, point 9): each program uses
 * something ebpfvm lacks, or that its program type may not call, except
 * `fine`, which must still run. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct xdp_md;
struct __sk_buff;

struct {
	__uint(type, 15);		/* BPF_MAP_TYPE_SOCKMAP */
	__uint(max_entries, 4);
	__type(key, int);
	__type(value, int);
} socks SEC(".maps");

struct {
	__uint(type, 33);		/* BPF_MAP_TYPE_ARENA, used by no program */
	__uint(max_entries, 1);
	__uint(map_flags, 1024);	/* BPF_F_MMAPABLE */
} arena SEC(".maps");

struct {
	__uint(type, 2);		/* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, long);
} counts SEC(".maps");

struct {
	__uint(type, 1);		/* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 4);
	__uint(frobnicate, 1);		/* no such attribute: libbpf refuses it */
	__type(key, int);
	__type(value, int);
} odd SEC(".maps");

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_skb_store_bytes)(struct __sk_buff *skb, unsigned int offset,
				   const void *from, unsigned int len,
				   unsigned long long flags) = (void *)9;
static unsigned long long (*bpf_get_socket_cookie)(void *ctx) = (void *)46;
static unsigned long long (*bpf_get_current_task)(void) = (void *)35;
static void *(*bpf_sk_lookup_tcp)(void *ctx, void *tuple, unsigned int tuple_size,
				  unsigned long long netns, unsigned long long flags) = (void *)84;

SEC("xdp")
int fine(struct xdp_md *ctx)
{
	int key = 0;
	long *value = bpf_map_lookup_elem(&counts, &key);

	if (value)
		*value += 1;
	return 2;	/* XDP_PASS */
}

SEC("xdp")
int lookup(struct xdp_md *ctx)
{
	char tuple[12] = {};

	return bpf_sk_lookup_tcp(ctx, tuple, sizeof(tuple), -1, 0) ? 1 : 2;
}

SEC("tc")
int task(struct __sk_buff *skb)
{
	return bpf_get_current_task() != 0;
}

SEC("socket")
int store(struct __sk_buff *skb)
{
	char byte = 0;

	return bpf_skb_store_bytes(skb, 0, &byte, 1, 0);
}

SEC("xdp")
int cookie(struct xdp_md *ctx)
{
	return bpf_get_socket_cookie(ctx) != 0;	/* not for XDP programs */
}

SEC("xdp")
int sockmap(struct xdp_md *ctx)
{
	int key = 0;

	return bpf_map_lookup_elem(&socks, &key) ? 1 : 2;
}

SEC("xdp")
int attribute(struct xdp_md *ctx)
{
	int key = 0;

	return bpf_map_lookup_elem(&odd, &key) ? 1 : 2;
}

char _license[] SEC("license") = "GPL";
