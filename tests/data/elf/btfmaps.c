/* Test object for BTF-defined maps (".maps", libbpf's __uint/__type style).
 * Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct flow { unsigned int saddr, daddr; unsigned short sport, dport; };
struct stats { unsigned long long packets, bytes; };

struct {
	__uint(type, 9);		/* BPF_MAP_TYPE_LRU_HASH */
	__uint(max_entries, 3);
	__type(key, struct flow);
	__type(value, struct stats);
} flows SEC(".maps");

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   unsigned long long flags) = (void *)2;

/* Input: a 12-byte flow followed by the packet; returns the packet count. */
SEC("xdp")
int track(unsigned char *data, unsigned long len)
{
	struct flow key;
	struct stats *stats, init = { 1, 0 };

	__builtin_memcpy(&key, data, sizeof(key));
	init.bytes = len;
	stats = bpf_map_lookup_elem(&flows, &key);
	if (!stats) {
		bpf_map_update_elem(&flows, &key, &init, 0);
		return 1;
	}
	stats->packets += 1;
	stats->bytes += len;
	return stats->packets;
}

char _license[] SEC("license") = "Dual MIT/GPL";
