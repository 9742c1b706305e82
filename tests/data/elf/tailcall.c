/* Test object for tail calls through a program array (helper 12).
 * Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct {
	__uint(type, 3);		/* BPF_MAP_TYPE_PROG_ARRAY */
	__uint(max_entries, 4);
	__type(key, unsigned int);
	__type(value, unsigned int);
} jumps SEC(".maps");

static long (*bpf_tail_call)(void *ctx, void *prog_array, unsigned int index) = (void *)12;

unsigned long long hops;	/* .bss: counts entries into "again" */

/* Jumps to slot data[0]; returns 99 when the slot is empty. */
SEC("xdp")
int dispatch(unsigned char *data)
{
	bpf_tail_call(data, &jumps, data[0]);
	return 99;
}

SEC("xdp/double")
int double_it(unsigned char *data)
{
	return data[1] * 2;
}

/* Tail-calls itself through slot 3 until the chain limit stops it. */
SEC("xdp/again")
int again(unsigned char *data)
{
	hops += 1;
	bpf_tail_call(data, &jumps, 3);
	return 1000 + hops;
}

char _license[] SEC("license") = "Dual MIT/GPL";
