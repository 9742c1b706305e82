/* Test object for legacy maps (the "maps" section, struct bpf_map_def) and the
 * kernel's map helpers 1-3. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   unsigned long long flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;

struct bpf_map_def SEC("maps") counts = {	/* BPF_MAP_TYPE_HASH */
	.type = 1, .key_size = 4, .value_size = 8, .max_entries = 4,
};
struct bpf_map_def SEC("maps") totals = {	/* BPF_MAP_TYPE_ARRAY */
	.type = 2, .key_size = 4, .value_size = 8, .max_entries = 2,
};

/* Counts packets per first byte; returns 1 when the key existed, 0 when it was
 * created, 2 when the map was full. Byte 0xff deletes key 0 instead. */
SEC("xdp")
int count_first_byte(unsigned char *data)
{
	unsigned int key = data[0];
	unsigned int slot = 0;
	unsigned long long one = 1, *value, *total;

	total = bpf_map_lookup_elem(&totals, &slot);
	if (total)
		__sync_fetch_and_add(total, 1);
	if (key == 0xff) {
		unsigned int zero = 0;
		return bpf_map_delete_elem(&counts, &zero) == 0 ? 3 : 4;
	}
	value = bpf_map_lookup_elem(&counts, &key);
	if (value) {
		__sync_fetch_and_add(value, 1);
		return 1;
	}
	return bpf_map_update_elem(&counts, &key, &one, 1 /* BPF_NOEXIST */) == 0 ? 0 : 2;
}

char _license[] SEC("license") = "Dual MIT/GPL";
