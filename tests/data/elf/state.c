/* Test object for the controllable environment, per-CPU maps and frozen
 * .rodata (issue 13). Rebuild with `make`. */
typedef unsigned int __u32;
typedef unsigned long long __u64;
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)7;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static __u64 (*bpf_jiffies64)(void) = (void *)118;
static __u64 (*bpf_ktime_get_boot_ns)(void) = (void *)125;
static __u64 (*bpf_ktime_get_coarse_ns)(void) = (void *)160;
static __u64 (*bpf_ktime_get_tai_ns)(void) = (void *)208;
static long (*bpf_get_numa_node_id)(void) = (void *)42;
static void *(*bpf_map_lookup_percpu_elem)(void *map, const void *key, __u32 cpu) = (void *)195;

struct {
	__uint(type, 6);		/* BPF_MAP_TYPE_PERCPU_ARRAY */
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, 5);		/* BPF_MAP_TYPE_PERCPU_HASH */
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} per_key SEC(".maps");

const volatile __u64 step = 1;		/* .rodata: set before the first run */
__u64 times[8];				/* .bss: what the clocks read */

SEC("xdp")
int count(void *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&counts, &key);
	__u64 one = step;

	if (!value)
		return 0;
	*value += step;
	key = bpf_get_smp_processor_id();
	bpf_map_update_elem(&per_key, &key, &one, 0);
	return bpf_get_smp_processor_id();
}

SEC("xdp")
int clocks(void *ctx)
{
	times[0] = bpf_ktime_get_ns();
	times[1] = bpf_ktime_get_boot_ns();
	times[2] = bpf_ktime_get_coarse_ns();
	times[3] = bpf_ktime_get_tai_ns();
	times[4] = bpf_jiffies64();
	times[5] = bpf_get_prandom_u32();
	times[6] = bpf_get_numa_node_id();
	times[7] = bpf_get_smp_processor_id();
	return 2;
}

SEC("xdp")
int write_rodata(void *ctx)
{
	*(volatile __u64 *)&step = 5;	/* a store into .rodata: a fault */
	return 2;
}

/* counts[0] on CPU 1, plus 1000 when CPU 7 (past the possible CPUs) has none. */
SEC("xdp")
int peek(void *ctx)
{
	__u32 key = 0;
	__u64 *one = bpf_map_lookup_percpu_elem(&counts, &key, 1);
	__u64 *seven = bpf_map_lookup_percpu_elem(&counts, &key, 7);

	if (!one)
		return -1;
	return *one + (seven ? 0 : 1000);
}

char _license[] SEC("license") = "GPL";
