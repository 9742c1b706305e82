/* Test object for fault injection in tail-called programs: the budget runs
 * out, or a load faults, in the program a tail call went to. Each program
 * first records a step in the `steps` map, so a test can see which updates
 * were committed before the fault. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct {
	__uint(type, 3);		/* BPF_MAP_TYPE_PROG_ARRAY */
	__uint(max_entries, 4);
	__type(key, unsigned int);
	__type(value, unsigned int);
} jumps SEC(".maps");

struct {
	__uint(type, 1);		/* BPF_MAP_TYPE_HASH */
	__uint(max_entries, 8);
	__type(key, unsigned int);
	__type(value, unsigned long long);
} steps SEC(".maps");

static long (*bpf_tail_call)(void *ctx, void *prog_array, unsigned int index) = (void *)12;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   unsigned long long flags) = (void *)2;

static __attribute__((always_inline)) void record(unsigned int step, unsigned long long value)
{
	bpf_map_update_elem(&steps, &step, &value, 0);
}

/* Records step 1 = data[1], then tail-calls slot data[0]; 99 when the slot is empty. */
SEC("xdp")
int entry(unsigned char *data)
{
	record(1, data[1]);
	bpf_tail_call(data, &jumps, data[0]);
	return 99;
}

/* Records step 2 = data[1], then spins while data[2] is nonzero. */
SEC("xdp/spin")
int spin(unsigned char *data)
{
	unsigned long long laps = 0;

	record(2, data[1]);
	while (*(volatile unsigned char *)(data + 2))
		laps++;
	return laps + 7;
}

/* Records step 3 = data[1], then loads from address data[3] << 40 when data[3] is nonzero. */
SEC("xdp/wild")
int wild(unsigned char *data)
{
	record(3, data[1]);
	if (data[3])
		return *(volatile unsigned long long *)((unsigned long long)data[3] << 40);
	return 8;
}

char _license[] SEC("license") = "Dual MIT/GPL";
