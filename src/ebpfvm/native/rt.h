/* The native runtime's ABI (issue 15): what runtime code (eBPF compiled
 * from restricted C, run trusted by every native engine) and the Python
 * side agree on. Both sides must change together: ebpfvm/native/abi.py
 * holds the Python mirror of every layout and number here.
 *
 * A native helper is a global function
 *     long rt_<kernel helper name without bpf_>(u64 r1, .., u64 r5)
 * taking the guest's r1..r5 and returning its r0. Runtime code is trusted:
 * it checks every guest pointer with RT_CHECK before touching it, bounds
 * every loop, and charges its work with RT_CHARGE as the Python helpers
 * charge theirs (HelperContext.charge / charge_bytes).
 *
 * Build: clang -O2 -g -target bpf -mcpu=v3 -c NAME.c -o NAME.o (the
 * Makefile beside this file). Keep objects free of relocations: static
 * functions (always inlined), no global data.
 */
#ifndef EBPFVM_RT_H
#define EBPFVM_RT_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed int s32;
typedef signed long long s64;

#define RT_INLINE static inline __attribute__((always_inline))

/* -- intrinsics: reserved helper ids every engine implements itself -------- */

#define RT_ENV_ID 0x7e000000
#define RT_CHECK_ID 0x7e000001
#define RT_CHARGE_ID 0x7e000002
#define RT_PYTHON_BASE 0x7e000100

/* The address of the current run's struct rt_env. */
static struct rt_env *(*const RT_ENV)(void) = (void *)RT_ENV_ID;
/* ptr when the guest may access [ptr, ptr + size) (write: 1 for a store);
 * else the run stops with the MemoryFault (address, size, pc of the guest's
 * call) a Python helper's HelperContext.read/write raises. size 0: ptr. */
static void *(*const RT_CHECK)(u64 ptr, u64 size, u64 write) = (void *)RT_CHECK_ID;
/* Charge n instructions to the run's budget (BudgetExceeded as usual). */
static long (*const RT_CHARGE)(u64 n) = (void *)RT_CHARGE_ID;
/* Call the Python implementation of kernel helper n with r1..r5: the
 * fallback for what has no native version (it serialises). */
#define RT_PYTHON(n, r1, r2, r3, r4, r5) \
	(((long (*)(u64, u64, u64, u64, u64))(RT_PYTHON_BASE + (n)))((r1), (r2), (r3), (r4), (r5)))

/* charge_bytes: one instruction of budget per RT_BYTES_PER_UNIT bytes. */
#define RT_BYTES_PER_UNIT 16
#define RT_CHARGE_BYTES(n) RT_CHARGE((u64)(n) / RT_BYTES_PER_UNIT)

/* -- struct rt_env: one per run's Python side (native memory it owns) ------ */

#define RT_ENV_VERSION 1
#define RT_MAX_MAPS 64 /* maps[] scans stop here whatever nmaps says */

struct rt_env {
	u64 version;		/* RT_ENV_VERSION */
	u64 cpu;		/* bpf_get_smp_processor_id, per-CPU map slots */
	u64 ncpus;		/* possible CPUs */
	u64 prandom_state[4];	/* bpf_get_prandom_u32's state: s1..s4, low 32 bits */
	u64 ktime_ns;		/* bpf_ktime_get_ns's reading, 0: ask Python */
	u64 numa_node;		/* bpf_get_numa_node_id */
	u64 nmaps;		/* entries of maps[] in use */
	u64 maps[RT_MAX_MAPS];	/* addresses of struct rt_map */
};

/* -- struct rt_map: a native map's descriptor (owned by the Python Map) ---- */

struct rt_map {
	u64 handle;		/* BpfMap.handle: what a guest passes in r1 */
	u32 type;		/* BPF_MAP_TYPE_* */
	u32 key_size;
	u32 value_size;
	u32 max_entries;
	u32 flags;		/* BPF_F_* */
	u32 ncpus;		/* per-CPU maps: CPUs in the slab, else 1 */
	u64 slab;		/* address of the values (Map.slab) */
	/* per-type fields follow (hash maps: see the hash part's header) */
};

/* The map types and flags runtime code tells apart. */
#define RT_MAP_ARRAY 2
#define RT_MAP_PERCPU_ARRAY 6
#define RT_F_RDONLY_PROG (1U << 7)
#define RT_ANY 0
#define RT_NOEXIST 1
#define RT_EXIST 2
#define RT_F_LOCK 4

/* Errors, returned negated as the kernel's helpers return them. */
#define RT_ENOENT 2
#define RT_E2BIG 7
#define RT_EEXIST 17
#define RT_EINVAL 22

/* Kernel helper numbers the runtime falls back to (linux/bpf.h order). */
#define RT_MAP_LOOKUP_ELEM 1
#define RT_MAP_UPDATE_ELEM 2
#define RT_MAP_DELETE_ELEM 3
#define RT_KTIME_GET_NS 5
#define RT_GET_PRANDOM_U32 7
#define RT_GET_SMP_PROCESSOR_ID 8
#define RT_CSUM_DIFF 28
#define RT_GET_NUMA_NODE_ID 42
#define RT_MAP_PUSH_ELEM 87
#define RT_MAP_POP_ELEM 88
#define RT_MAP_PEEK_ELEM 89
#define RT_MAP_LOOKUP_PERCPU_ELEM 195

/* The descriptor of the map with `handle` (0: none, fall back to Python). */
RT_INLINE struct rt_map *rt_find_map(struct rt_env *env, u64 handle)
{
	u64 n = env->nmaps;
	for (u64 i = 0; i < RT_MAX_MAPS; i++) {
		if (i >= n)
			break;
		struct rt_map *map = (struct rt_map *)env->maps[i];
		if (map->handle == handle)
			return map;
	}
	return 0;
}

/* A lock word shared by worker threads (run_capture's jobs): taken by
 * compare-and-swap, at most `spins` tries (0: not taken, the caller fails
 * as the kernel does when it cannot take a lock), released by an exchange. */
RT_INLINE int rt_lock(u32 *word, u32 spins)
{
	u32 tries;

	for (tries = 0; tries < spins; tries++)
		if (__sync_val_compare_and_swap(word, 0, 1) == 0)
			return 1;
	return 0;
}

RT_INLINE void rt_unlock(u32 *word)
{
	__sync_lock_test_and_set(word, 0);
}

#endif
