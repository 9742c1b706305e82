/* rtcore: the first native helpers (issue 15). Array and per-CPU array map
 * lookup, update and delete, and the hash, per-CPU hash, queue and stack
 * maps' operations (rt_hash.h, rt_queue.h) and the LRU maps' lookups (rt_lru.h) behind the same helpers; prandom, the CPU and NUMA node ids, ktime,
 * csum_diff. Each does what its Python implementation does (the reference:
 * ebpfvm.maps, ebpfvm.kernel, ebpfvm.contexts), in the same order of checks,
 * faults and budget charges; anything else goes to RT_PYTHON. */
#include "rt.h"
#include "rt_hash.h"
#include "rt_lru.h"
#include "rt_queue.h"

/* A hash operation's answer, or the Python helper's when it must answer. */
#define RT_HASH_OR_PYTHON(result, helper) \
	((result) == RT_HASH_PYTHON ? RT_PYTHON(helper, r1, r2, r3, r4, r5) : (result))

RT_INLINE int rt_is_array(struct rt_map *map)
{
	return map->type == RT_MAP_ARRAY || map->type == RT_MAP_PERCPU_ARRAY;
}

/* The offset of index `index` on `cpu` in an array map's slab. */
RT_INLINE u64 rt_array_offset(struct rt_map *map, u64 index, u64 cpu)
{
	if (map->type == RT_MAP_PERCPU_ARRAY)
		index += cpu * map->max_entries;
	return index * map->value_size;
}

/* Whether the run's CPU is one of the map's (else Python raises its error). */
RT_INLINE int rt_cpu_ok(struct rt_map *map, struct rt_env *env)
{
	return map->type != RT_MAP_PERCPU_ARRAY || env->cpu < map->ncpus;
}

long rt_map_lookup_elem(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct rt_env *env = RT_ENV();
	struct rt_map *map = rt_find_map(env, r1);
	if (map && rt_is_hash(map)) {
		long found = rt_hash_lookup((struct rt_hash *)map, env, r2);
		return RT_HASH_OR_PYTHON(found, RT_MAP_LOOKUP_ELEM);
	}
	if (map && rt_is_lru(map)) {
		long found = rt_lru_lookup((struct rt_hash *)map, env, r2);
		return RT_HASH_OR_PYTHON(found, RT_MAP_LOOKUP_ELEM);
	}
	if (!map || !rt_is_array(map) || !rt_cpu_ok(map, env))
		return RT_PYTHON(RT_MAP_LOOKUP_ELEM, r1, r2, r3, r4, r5);
	RT_CHARGE_BYTES(map->key_size);
	u32 *key = RT_CHECK(r2, 4, 0);
	u64 index = *key;
	if (index >= map->max_entries)
		return 0;
	return map->slab + rt_array_offset(map, index, env->cpu);
}

long rt_map_update_elem(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct rt_env *env = RT_ENV();
	struct rt_map *map = rt_find_map(env, r1);
	if (map && rt_is_hash(map)) {
		long done = rt_hash_update((struct rt_hash *)map, env, r2, r3, r4);
		return RT_HASH_OR_PYTHON(done, RT_MAP_UPDATE_ELEM);
	}
	if (!map || !rt_is_array(map) || !rt_cpu_ok(map, env) ||
	    (map->flags & RT_F_RDONLY_PROG))
		return RT_PYTHON(RT_MAP_UPDATE_ELEM, r1, r2, r3, r4, r5);
	RT_CHARGE_BYTES((u64)map->key_size + map->value_size);
	u32 *key = RT_CHECK(r2, 4, 0);
	u8 *value = RT_CHECK(r3, map->value_size, 0);
	/* kernel/bpf/arraymap.c's order: unknown flags, the index, BPF_NOEXIST,
	 * then BPF_F_LOCK (no value here has a spin lock to take). */
	if ((r4 & ~(u64)RT_F_LOCK) > RT_EXIST)
		return -RT_EINVAL;
	u64 index = *key;
	if (index >= map->max_entries)
		return -RT_E2BIG;
	if (r4 & RT_NOEXIST)
		return -RT_EEXIST;
	if (r4 & RT_F_LOCK)
		return -RT_EINVAL;
	u8 *slot = (u8 *)(map->slab + rt_array_offset(map, index, env->cpu));
	u32 size = map->value_size;
	u32 at = 0;
	/* 8 bytes at a time, then the rest; both loops bounded by the value size. */
	for (; at + 8 <= size && at < (1U << 20); at += 8)
		*(u64 *)(slot + at) = *(u64 *)(value + at);
	for (; at < size && at < (1U << 20); at++)
		slot[at] = value[at];
	return 0;
}

long rt_map_delete_elem(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct rt_env *env = RT_ENV();
	struct rt_map *map = rt_find_map(env, r1);
	if (map && rt_is_hash(map))
		return rt_hash_delete((struct rt_hash *)map, r2);
	if (!map || !rt_is_array(map))
		return RT_PYTHON(RT_MAP_DELETE_ELEM, r1, r2, r3, r4, r5);
	RT_CHARGE_BYTES(map->key_size);
	RT_CHECK(r2, 4, 0);
	return -RT_EINVAL; /* array slots always exist */
}

long rt_map_lookup_percpu_elem(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct rt_map *map = rt_find_map(RT_ENV(), r1);
	if (!map || !rt_is_hash(map))
		return RT_PYTHON(RT_MAP_LOOKUP_PERCPU_ELEM, r1, r2, r3, r4, r5);
	long found = rt_hash_lookup_percpu((struct rt_hash *)map, r2, r3);
	return RT_HASH_OR_PYTHON(found, RT_MAP_LOOKUP_PERCPU_ELEM);
}

long rt_map_push_elem(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct rt_map *map = rt_find_map(RT_ENV(), r1);
	if (!map || !rt_is_queue(map))
		return RT_PYTHON(RT_MAP_PUSH_ELEM, r1, r2, r3, r4, r5);
	return rt_queue_push((struct rt_queue *)map, r2, r3);
}

long rt_map_pop_elem(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct rt_map *map = rt_find_map(RT_ENV(), r1);
	if (!map || !rt_is_queue(map))
		return RT_PYTHON(RT_MAP_POP_ELEM, r1, r2, r3, r4, r5);
	return rt_queue_take((struct rt_queue *)map, r2, 1);
}

long rt_map_peek_elem(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct rt_map *map = rt_find_map(RT_ENV(), r1);
	if (!map || !rt_is_queue(map))
		return RT_PYTHON(RT_MAP_PEEK_ELEM, r1, r2, r3, r4, r5);
	return rt_queue_take((struct rt_queue *)map, r2, 0);
}

/* L'Ecuyer's four-component Tausworthe generator (lfsr113), the kernel's
 * prandom_u32_state: one step of each component, then their xor. */
RT_INLINE u32 rt_taus(u64 *state, u32 mask, u32 a, u32 b, u32 d)
{
	u32 s = (u32)*state;
	s = ((s & mask) << d) ^ (((s << a) ^ s) >> b);
	*state = s;
	return s;
}

long rt_get_prandom_u32(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	u64 *s = RT_ENV()->prandom_state;
	u32 x = rt_taus(&s[0], 0xFFFFFFFEU, 6, 13, 18);
	x ^= rt_taus(&s[1], 0xFFFFFFF8U, 2, 27, 2);
	x ^= rt_taus(&s[2], 0xFFFFFFF0U, 13, 21, 7);
	x ^= rt_taus(&s[3], 0xFFFFFF80U, 3, 12, 13);
	return x;
}

long rt_get_smp_processor_id(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return RT_ENV()->cpu;
}

long rt_get_numa_node_id(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return RT_ENV()->numa_node;
}

long rt_ktime_get_ns(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	u64 now = RT_ENV()->ktime_ns;
	if (!now)
		return RT_PYTHON(RT_KTIME_GET_NS, r1, r2, r3, r4, r5);
	return now;
}

/* Ones'-complement 32-bit addition with the end-around carry. */
RT_INLINE u64 rt_csum_add(u64 total, u32 word)
{
	total += word;
	return (total & 0xFFFFFFFFULL) + (total >> 32);
}

RT_INLINE u64 rt_csum_fold(u64 total)
{
	total = (total & 0xFFFF) + (total >> 16);
	total = (total & 0xFFFF) + (total >> 16);
	return total & 0xFFFF;
}

/* bpf_csum_diff(from, from_size, to, to_size, seed), folded to 16 bits as
 * the kernel returns it since Linux 6.13; removing only complements. */
long rt_csum_diff(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	if ((r2 & 3) || (r4 & 3) || r2 + r4 > 512 || r2 > 512 || r4 > 512)
		return -RT_EINVAL;
	RT_CHARGE_BYTES(r2 + r4);
	u32 *from = RT_CHECK(r1, r2, 0);
	u32 *to = RT_CHECK(r3, r4, 0);
	u64 total;
	if (r2 && !r4) {
		total = ~(u32)r5;
		for (u32 i = 0; i < 128 && i < r2 / 4; i++)
			total = rt_csum_add(total, from[i]);
		return rt_csum_fold((u32)~total);
	}
	total = (u32)r5;
	for (u32 i = 0; i < 128 && i < r2 / 4; i++)
		total = rt_csum_add(total, ~from[i]);
	for (u32 i = 0; i < 128 && i < r4 / 4; i++)
		total = rt_csum_add(total, to[i]);
	return rt_csum_fold(total);
}
