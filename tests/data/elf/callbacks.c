/* Test object for callbacks (lddw src 4, BPF_PSEUDO_FUNC): bpf_loop, nested
 * bpf_loop and bpf_for_each_map_elem over an array and a hash map, with
 * static callbacks in .text that clang references through the .text section
 * symbol plus an addend. Rebuild with `make` (clang with the BPF target); the
 * .o is committed. Self-contained: no kernel headers. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

typedef unsigned int u32;
typedef unsigned long long u64;

static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   u64 flags) = (void *)2;
static long (*bpf_for_each_map_elem)(void *map, void *callback_fn, void *callback_ctx,
				     u64 flags) = (void *)164;
static long (*bpf_loop)(u32 nr_loops, void *callback_fn, void *callback_ctx,
			u64 flags) = (void *)181;

struct {
	__uint(type, 2); /* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
} arr SEC(".maps");

struct {
	__uint(type, 1); /* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 8);
	__type(key, u32);
	__type(value, u64);
} hsh SEC(".maps");

struct loop_ctx {
	u64 sum;
	u32 stop_at;
};

static int add_cb(u32 index, void *data)
{
	struct loop_ctx *c = data;

	c->sum += index * 3 + 1;
	return index == c->stop_at;
}

static int inner_cb(u32 index, void *data)
{
	*(u64 *)data += index;
	return 0;
}

static int outer_cb(u32 index, void *data)
{
	u64 inner = 0;

	bpf_loop(index, inner_cb, &inner, 0);
	*(u64 *)data += inner;
	return 0;
}

SEC("tc")
int loop_prog(void *skb)
{
	struct loop_ctx c = { .sum = 0, .stop_at = 5 };
	u64 nested = 0;
	long n, bad, m;

	n = bpf_loop(10, add_cb, &c, 0);	/* stops after index 5: 6 calls */
	bad = bpf_loop(1, add_cb, &c, 1);	/* flags: -EINVAL, no call */
	m = bpf_loop(6, outer_cb, &nested, 0);	/* nested loops */
	return (int)(c.sum * 1000 + n * 100 + (bad == -22) * 10 + m) + (int)(nested << 20);
}

struct walk_ctx {
	u64 sum;
	u64 seen;
};

static long array_cb(void *map, u32 *key, u64 *value, struct walk_ctx *c)
{
	c->sum += *value;
	*value *= 2;
	return *key == 2;
}

static long hash_cb(void *map, u32 *key, u64 *value, struct walk_ctx *c)
{
	c->sum += *key * *value;
	c->seen++;
	return 0;
}

static inline __attribute__((always_inline)) void put(void *map, u32 key, u64 value)
{
	bpf_map_update_elem(map, &key, &value, 0);
}

SEC("tc")
int foreach_prog(void *skb)
{
	struct walk_ctx a = {}, h = {};
	long n_arr, n_hash, bad;

	put(&arr, 0, 1);
	put(&arr, 1, 11);
	put(&arr, 2, 21);
	put(&arr, 3, 31);
	put(&hsh, 5, 50);
	put(&hsh, 7, 70);
	put(&hsh, 9, 90);
	n_arr = bpf_for_each_map_elem(&arr, array_cb, &a, 0);
	n_hash = bpf_for_each_map_elem(&hsh, hash_cb, &h, 0);
	bad = bpf_for_each_map_elem(&arr, array_cb, &a, 1);
	if (bad != -22 || h.seen != n_hash)
		return 1;
	return (int)(n_arr + 10 * n_hash + 100 * a.sum + 100000 * h.sum);
}

char LICENSE[] SEC("license") = "GPL";
