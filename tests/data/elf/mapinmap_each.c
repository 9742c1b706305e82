/* Test object for bpf_for_each_map_elem over INNER maps of maps of maps (an
 * inner array of an array of maps, an inner hash of a hash of maps), run by
 * ebpfvm and by the kernel. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

typedef unsigned int u32;
typedef unsigned long long u64;

struct inner_array {
	__uint(type, 2);		/* BPF_MAP_TYPE_ARRAY */
	__uint(max_entries, 4);
	__type(key, u32);
	__type(value, u64);
};

struct inner_hash {
	__uint(type, 1);		/* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 8);
	__type(key, u32);
	__type(value, u64);
};

struct {
	__uint(type, 12);		/* BPF_MAP_TYPE_ARRAY_OF_MAPS */
	__uint(max_entries, 2);
	__type(key, u32);
	__array(values, struct inner_array);
} outer_array SEC(".maps");

struct {
	__uint(type, 13);		/* BPF_MAP_TYPE_HASH_OF_MAPS */
	__uint(max_entries, 2);
	__type(key, u32);
	__array(values, struct inner_hash);
} outer_hash SEC(".maps");

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_for_each_map_elem)(void *map, void *callback_fn, void *callback_ctx,
				     u64 flags) = (void *)164;

struct sum {
	u64 total;
	u64 count;
	u64 stop_at;
};

/* Adds value * (key + 1) to the total, bumps the value by 10, and stops
 * after the element whose key is stop_at. */
static long sum_cb(void *map, u32 *key, u64 *value, struct sum *s)
{
	s->total += *value * (*key + 1);
	s->count += 1;
	*value += 10;
	return *key == s->stop_at;
}

/* r0: elements visited << 24 | callback calls << 16 | total (16 bits);
 * 1000 when the outer slot is empty. */
static __attribute__((always_inline)) int walk(void *outer, u32 key, u64 stop_at)
{
	struct sum s = {0, 0, stop_at};
	void *inner = bpf_map_lookup_elem(outer, &key);
	long n;

	if (!inner)
		return 1000;
	n = bpf_for_each_map_elem(inner, sum_cb, &s, 0);
	return (int)(n << 24 | s.count << 16 | (s.total & 0xffff));
}

SEC("xdp")
int walk_array(void *ctx)
{
	return walk(&outer_array, 1, 2);
}

SEC("xdp")
int walk_hash(void *ctx)
{
	return walk(&outer_hash, 7, 100);
}

char _license[] SEC("license") = "GPL";
