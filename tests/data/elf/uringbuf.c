/* Test object for uringbuf (issue 13 point 3): BPF_MAP_TYPE_USER_RINGBUF
 * drained by bpf_user_ringbuf_drain from every packet program type, and
 * bpf_get_netns_cookie. The drain's flags and when the callback stops come
 * from the `state` array; its result, the callback's calls and what they
 * read go back there. Rebuild with `make`; self-contained: no kernel
 * headers. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

struct bpf_dynptr { u64 opaque[2]; } __attribute__((aligned(8)));

struct state {
	u64 flags;	/* in: the drain's flags */
	u64 stop_after;	/* in: the callback returns 1 at this call (0: never) */
	u64 ret;	/* out: what the drain returned */
	u64 calls;	/* out: how many times the callback ran */
	u64 hash;	/* out: what the callback read, folded */
	u64 nested;	/* out: a drain of the same ring from the callback */
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static u64 (*bpf_get_netns_cookie)(void *ctx) = (void *)122;
static long (*bpf_dynptr_read)(void *dst, u32 len, const struct bpf_dynptr *src, u32 offset,
			       u64 flags) = (void *)201;
static void *(*bpf_dynptr_data)(const struct bpf_dynptr *ptr, u32 offset, u32 len) = (void *)203;
static long (*bpf_user_ringbuf_drain)(void *map, void *callback_fn, void *ctx,
				      u64 flags) = (void *)209;

struct {
	__uint(type, 31);		/* BPF_MAP_TYPE_USER_RINGBUF */
	__uint(max_entries, 4096);
} ring SEC(".maps");

struct {
	__uint(type, 2);		/* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct state);
} state SEC(".maps");

struct {
	__uint(type, 2);		/* BPF_MAP_TYPE_ARRAY: [0] with the context, [1] with NULL */
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u64);
} cookies SEC(".maps");

/* Fold 16 bytes from offset 0 (or the read's error), 4 bytes from offset 12,
 * and the first byte through bpf_dynptr_data (0x100 when it gives NULL). */
static long sample(struct bpf_dynptr *dynptr, void *data)
{
	struct state *s = data;
	u64 words[2] = {0, 0};
	u32 tail = 0;
	long err = bpf_dynptr_read(words, 16, dynptr, 0, 0);
	long err2 = bpf_dynptr_read(&tail, 4, dynptr, 12, 0);
	u8 *first = bpf_dynptr_data(dynptr, 0, 1);

	s->calls++;
	s->hash = s->hash * 31 + (err ? (u64)err : words[0] ^ (words[1] << 1));
	s->hash = s->hash * 31 + (err2 ? (u64)err2 : tail);
	s->hash = s->hash * 31 + (first ? *first : 0x100);
	if (s->stop_after && s->calls == s->stop_after)
		return 1;
	return 0;
}

static long count(struct bpf_dynptr *dynptr, void *data)
{
	((struct state *)data)->hash++;
	return 0;
}

/* Drains the ring being drained (the kernel: -EBUSY), then counts. */
static long nested(struct bpf_dynptr *dynptr, void *data)
{
	struct state *s = data;

	s->nested = bpf_user_ringbuf_drain(&ring, count, s, 0);
	s->calls++;
	return 0;
}

static __attribute__((always_inline)) int drain(int inner)
{
	u32 key = 0;
	struct state *st = bpf_map_lookup_elem(&state, &key);
	struct state s;

	if (!st)
		return 0;
	s = *st;
	s.calls = 0;
	s.hash = 0;
	s.nested = 0;
	s.ret = bpf_user_ringbuf_drain(&ring, inner ? (void *)nested : (void *)sample, &s,
				       s.flags);
	*st = s;
	return 1;
}

SEC("xdp")
int drain_xdp(void *ctx)
{
	return drain(0);
}

SEC("tc")
int drain_tc(void *ctx)
{
	return drain(0);
}

SEC("socket")
int drain_sk(void *ctx)
{
	return drain(0);
}

SEC("cgroup_skb/ingress")
int drain_cg(void *ctx)
{
	return drain(0);
}

SEC("xdp")
int drain_nested(void *ctx)
{
	return drain(1);
}

static __attribute__((always_inline)) int cookie(void *ctx)
{
	u32 key = 0;
	u64 *out = bpf_map_lookup_elem(&cookies, &key);

	if (out)
		*out = bpf_get_netns_cookie(ctx);
	key = 1;
	out = bpf_map_lookup_elem(&cookies, &key);
	if (out)
		*out = bpf_get_netns_cookie((void *)0);
	return 1;
}

SEC("tc")
int cookie_tc(void *ctx)
{
	return cookie(ctx);
}

SEC("socket")
int cookie_sk(void *ctx)
{
	return cookie(ctx);
}

SEC("cgroup_skb/ingress")
int cookie_cg(void *ctx)
{
	return cookie(ctx);
}
