/* LRU hash and LRU per-CPU hash map lookups in native memory (issue 15).
 *
 * An LRU map's key index is a hash block (rt_hash.h: the same header,
 * buckets and elements) whose `refs` field is the offset of u8
 * ref[max_entries], one reference byte a slot, after the elements. The LRU
 * lists (ebpfvm/lru.py) stay in Python: they choose each new entry's
 * element, evict, and read and clear the reference bytes. The runtime only
 * looks keys up: a program's lookup that finds its key sets the slot's
 * reference byte, as the kernel's bpf_lru_node_set_ref does, and returns the
 * value's address (an LRU per-CPU map's value of the run's CPU: slab + (cpu
 * * max_entries + slot) * value_size). Updates and deletes change the lists:
 * the dispatcher gives them to Python (RT_PYTHON).
 *
 * rt_lru_lookup returns RT_HASH_PYTHON, before charging anything, when
 * Python must answer: a run's CPU past an LRU per-CPU map's possible CPUs,
 * or a block without reference bytes. Safety as rt_hash.h: the geometry
 * (refs included) is written once by Python, every index read is checked,
 * every walk bounded.
 */
#ifndef RT_LRU_H
#define RT_LRU_H

#include "rt_hash.h"

#define RT_MAP_LRU_HASH 9
#define RT_MAP_LRU_PERCPU_HASH 10

RT_INLINE int rt_is_lru(struct rt_map *map)
{
	return map->type == RT_MAP_LRU_HASH || map->type == RT_MAP_LRU_PERCPU_HASH;
}

RT_INLINE long rt_lru_lookup(struct rt_hash *m, struct rt_env *env, u64 key)
{
	u64 cpu = 0;
	const u8 *k;
	u8 *ref;
	u32 index, prev;

	if (m->map.type == RT_MAP_LRU_PERCPU_HASH) {
		cpu = env->cpu;
		if (cpu >= m->map.ncpus)
			return RT_HASH_PYTHON;
	}
	if (!m->refs || m->refs >= m->size)
		return RT_HASH_PYTHON;
	RT_CHARGE_BYTES(m->map.key_size);
	k = (const u8 *)RT_CHECK(key, m->map.key_size, 0);
	index = rt_hash_search(m, k, rt_hash_key_hash(k, m->map.key_size), &prev);
	if (index == RT_HASH_NIL)
		return 0;
	ref = (u8 *)m + m->refs + index;
	if (!*ref)
		*ref = 1;
	return (long)(m->map.slab + (cpu * m->map.max_entries + index) * m->map.value_size);
}

#endif
