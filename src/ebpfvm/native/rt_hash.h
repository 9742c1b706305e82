/* Hash and per-CPU hash maps in native memory: the layout shared by the
 * Python reference (ebpfvm/nativehash.py) and the runtime (rt_hash.c).
 *
 * One block per map, little-endian, offsets from its start; the block starts
 * with the common descriptor (struct rt_map, rt.h) and the hash fields follow:
 *
 *   0   struct rt_map  handle, type, key_size, value_size, max_entries,
 *                      flags, ncpus, slab (the values: Map.slab)
 *   40  u32 nbuckets   a power of two: max_entries rounded up
 *   44  u32 elem_size  8 + key_size rounded up to 8
 *   48  u32 count      elements in the buckets
 *   52  u32 free_head  first free element, or RT_HASH_NIL
 *   56  u32 fresh      the elements from here on were never used
 *   60  u32 lock       0 free, 1 held: structure changes (see rt_hash_lock)
 *   64  u64 buckets    offset of the bucket array (96)
 *   72  u64 elems      offset of the element array (8-aligned)
 *   80  u64 size       bytes of the block
 *   88  u64 refs       LRU maps: offset of u8 ref[max_entries] (else 0; rt_lru.h)
 *   96  u32 bucket[nbuckets]      head of each chain, or RT_HASH_NIL
 *   elems: struct rt_hash_elem[max_entries]: u32 next; u32 hash; key bytes
 *          (zero-padded to elem_size)
 *
 * Element i owns value slot i: its value is at slab + i * value_size; a
 * per-CPU map's CPU c value at slab + (c * max_entries + i) * value_size.
 * Elements are preallocated; a new entry takes the head of the free list,
 * else element `fresh`; it goes to the head of its bucket's chain. A deleted
 * element goes to the head of the free list (linked by `next`). E2BIG when
 * count reaches max_entries; an update of an existing key is in place.
 *
 * The hash (not the kernel's jhash): h = RT_HASH_SEED ^ key_size; for each
 * 8-byte little-endian word w of the zero-padded key, h = (h ^ w) *
 * RT_HASH_MULT (mod 2^64), h ^= h >> 32; hash = (u32)h; bucket = hash &
 * (nbuckets - 1). Iteration (and get_next_key) goes bucket by bucket, each
 * chain from its head.
 *
 * Safety: the geometry (all but count, free_head, fresh, the buckets and the
 * elements) is written once by Python. Every index read from the block is
 * checked (>= max_entries ends a walk) and every walk stops after
 * max_entries steps: a corrupted block never makes the runtime read outside
 * it or loop without bound.
 *
 * The operations are RT_INLINE functions, so that the map helpers' dispatcher
 * (rt_map_lookup_elem... in rtcore.c: runtime functions make no local calls)
 * includes this header and calls them for BPF_MAP_TYPE_HASH and PERCPU_HASH
 * maps (struct rt_map * cast to struct rt_hash *). Each returns
 * RT_HASH_PYTHON, before charging anything, when Python must answer instead
 * (the dispatcher then returns RT_PYTHON(helper, r1..r5)): a read-only map's
 * update, a run's CPU past a per-CPU map's possible CPUs, lookup_percpu on a
 * map of one value a key. rt_hash.c compiles them into rt_hash.o as nhash_*
 * functions for the tests (tests/nhash_harness.py).
 */
#ifndef RT_HASH_H
#define RT_HASH_H

#include "rt.h"

#define RT_MAP_HASH 1
#define RT_MAP_PERCPU_HASH 5
#define RT_HASH_NIL 0xffffffffU
#define RT_HASH_HEADER 96
#define RT_HASH_SEED 0x243f6a8885a308d3ULL
#define RT_HASH_MULT 0x9e3779b97f4a7c15ULL
/* What rt_hash_* return when Python must do the call: never a value
 * address, never 0 or a negative errno. */
#define RT_HASH_PYTHON 1

struct rt_hash {
	struct rt_map map;
	u32 nbuckets;
	u32 elem_size;
	u32 count;
	u32 free_head;
	u32 fresh;
	u32 lock;
	u64 buckets;
	u64 elems;
	u64 size;
	u64 refs;
};

struct rt_hash_elem {
	u32 next;
	u32 hash;
	/* key_size key bytes, zero-padded to a multiple of 8 */
};

_Static_assert(sizeof(struct rt_map) == 40, "the common descriptor is 40 bytes");
_Static_assert(sizeof(struct rt_hash) == RT_HASH_HEADER, "the hash header is 96 bytes");

RT_INLINE int rt_is_hash(struct rt_map *map)
{
	return map->type == RT_MAP_HASH || map->type == RT_MAP_PERCPU_HASH;
}

#define RT_HASH_MAX_KEY 512
#define RT_HASH_MAX_VALUE (4U << 20)
#define RT_HASH_MAX_CPUS 4096

typedef u64 __attribute__((may_alias)) rt_hash_u64a;

RT_INLINE u64 rt_hash_word(const u8 *p, u32 size, u32 at)
{
	u64 word = 0;
	u32 j;

	if (at + 8 <= size)
		return *(const rt_hash_u64a *)(p + at);
	for (j = 0; j < 8 && at + j < size; j++)
		word |= (u64)p[at + j] << (8 * j);
	return word;
}

RT_INLINE u32 rt_hash_key_hash(const u8 *key, u32 size)
{
	u64 h = RT_HASH_SEED ^ size;
	u32 at;

	for (at = 0; at < size && at < RT_HASH_MAX_KEY; at += 8) {
		h = (h ^ rt_hash_word(key, size, at)) * RT_HASH_MULT;
		h ^= h >> 32;
	}
	return (u32)h;
}

RT_INLINE int rt_hash_key_equal(const u8 *stored, const u8 *key, u32 size)
{
	u32 at;

	for (at = 0; at < size && at < RT_HASH_MAX_KEY; at += 8)
		if (*(const rt_hash_u64a *)(stored + at) != rt_hash_word(key, size, at))
			return 0;
	return 1;
}

RT_INLINE struct rt_hash_elem *rt_hash_elem_at(struct rt_hash *m, u32 index)
{
	return (struct rt_hash_elem *)((u8 *)m + m->elems + (u64)index * m->elem_size);
}

RT_INLINE u32 *rt_hash_bucket_at(struct rt_hash *m, u32 bucket)
{
	return (u32 *)((u8 *)m + m->buckets + 4 * (u64)bucket);
}

/* The element holding `key` (RT_HASH_NIL: none); *prev is the element
 * before it in the chain (RT_HASH_NIL: it is the head). Bounded walk. */
RT_INLINE u32 rt_hash_search(struct rt_hash *m, const u8 *key, u32 hash, u32 *prev)
{
	u32 max = m->map.max_entries;
	u32 index = *rt_hash_bucket_at(m, hash & (m->nbuckets - 1));
	u32 steps;

	*prev = RT_HASH_NIL;
	for (steps = 0; steps < max && index < max; steps++) {
		struct rt_hash_elem *elem = rt_hash_elem_at(m, index);

		if (elem->hash == hash &&
		    rt_hash_key_equal((u8 *)elem + sizeof(*elem), key, m->map.key_size))
			return index;
		*prev = index;
		index = elem->next;
	}
	return RT_HASH_NIL;
}

RT_INLINE u64 rt_hash_value_at(struct rt_hash *m, u32 index, u64 cpu)
{
	return m->map.slab + (cpu * m->map.max_entries + index) * m->map.value_size;
}

RT_INLINE void rt_hash_copy_value(u64 to, const u8 *from, u32 size)
{
	u32 at;

	for (at = 0; at + 8 <= size && at < RT_HASH_MAX_VALUE; at += 8)
		*(rt_hash_u64a *)(to + at) = *(const rt_hash_u64a *)(from + at);
	for (; at < size && at < RT_HASH_MAX_VALUE; at++)
		*(u8 *)(to + at) = from[at];
}

RT_INLINE void rt_hash_zero_value(u64 to, u32 size)
{
	u32 at;

	for (at = 0; at + 8 <= size && at < RT_HASH_MAX_VALUE; at += 8)
		*(rt_hash_u64a *)(to + at) = 0;
	for (; at < size && at < RT_HASH_MAX_VALUE; at++)
		*(u8 *)(to + at) = 0;
}

RT_INLINE int rt_hash_is_percpu(struct rt_hash *m)
{
	return m->map.type == RT_MAP_PERCPU_HASH;
}

/* The CPU of this run for `m` (0 for a map of one value a key), or -1 when
 * it is past the map's possible CPUs (Python raises the typed error). */
RT_INLINE long rt_hash_run_cpu(struct rt_hash *m, struct rt_env *env)
{
	u64 cpu;

	if (!rt_hash_is_percpu(m))
		return 0;
	cpu = env->cpu;
	return cpu < m->map.ncpus ? (long)cpu : -1;
}

RT_INLINE long rt_hash_find_value(struct rt_hash *m, u64 key, u64 cpu)
{
	const u8 *k = (const u8 *)RT_CHECK(key, m->map.key_size, 0);
	u32 prev;
	u32 index = rt_hash_search(m, k, rt_hash_key_hash(k, m->map.key_size), &prev);

	return index == RT_HASH_NIL ? 0 : (long)rt_hash_value_at(m, index, cpu);
}

RT_INLINE long rt_hash_lookup(struct rt_hash *m, struct rt_env *env, u64 key)
{
	long cpu = rt_hash_run_cpu(m, env);

	if (cpu < 0)
		return RT_HASH_PYTHON;
	RT_CHARGE_BYTES(m->map.key_size);
	return rt_hash_find_value(m, key, (u64)cpu);
}

RT_INLINE long rt_hash_lookup_percpu(struct rt_hash *m, u64 key, u64 cpu)
{
	if (!rt_hash_is_percpu(m))
		return RT_HASH_PYTHON;
	RT_CHARGE_BYTES(m->map.key_size);
	if (cpu >= m->map.ncpus)
		return 0;
	return rt_hash_find_value(m, key, cpu);
}

/* A free element for a new entry (RT_HASH_NIL: none), taken off the free
 * list or from the never used ones. */
RT_INLINE u32 rt_hash_take_elem(struct rt_hash *m)
{
	u32 max = m->map.max_entries;
	u32 index = m->free_head;

	if (m->count >= max)
		return RT_HASH_NIL;
	if (index < max) {
		m->free_head = rt_hash_elem_at(m, index)->next;
		return index;
	}
	index = m->fresh;
	if (index >= max)
		return RT_HASH_NIL;
	m->fresh = index + 1;
	return index;
}

RT_INLINE void rt_hash_fill_new(struct rt_hash *m, u32 index, u32 hash, const u8 *k,
				     long cpu)
{
	struct rt_hash_elem *elem = rt_hash_elem_at(m, index);
	u32 *head = rt_hash_bucket_at(m, hash & (m->nbuckets - 1));
	u8 *stored = (u8 *)elem + sizeof(*elem);
	u32 size = m->map.key_size;
	u32 at, other;

	elem->next = *head;
	elem->hash = hash;
	for (at = 0; at < size && at < RT_HASH_MAX_KEY; at++)
		stored[at] = k[at];
	*head = index;
	m->count++;
	if (!rt_hash_is_percpu(m))
		return;
	for (other = 0; other < m->map.ncpus && other < RT_HASH_MAX_CPUS; other++)
		if (other != cpu)
			rt_hash_zero_value(rt_hash_value_at(m, index, other), m->map.value_size);
}

/* Worker threads share one block (run_capture's jobs): updates and deletes,
 * which change the chains, the free list and the count, take the block's
 * lock word by compare-and-swap (as the kernel takes a bucket's lock; one
 * lock a map here), while lookups stay lock-free. The wait is bounded: after
 * RT_HASH_SPINS tries the operation gives -EBUSY, as the kernel's does when
 * it cannot take the bucket lock. */
#define RT_HASH_SPINS (1U << 24)
#define RT_EBUSY 16

RT_INLINE int rt_hash_lock(struct rt_hash *m)
{
	return rt_lock(&m->lock, RT_HASH_SPINS);
}

RT_INLINE void rt_hash_unlock(struct rt_hash *m)
{
	rt_unlock(&m->lock);
}

RT_INLINE long rt_hash_update_locked(struct rt_hash *m, const u8 *k, const u8 *v, u64 flags,
				     long cpu)
{
	u32 hash, index, prev;

	hash = rt_hash_key_hash(k, m->map.key_size);
	index = rt_hash_search(m, k, hash, &prev);
	if (index != RT_HASH_NIL) {
		if (flags == RT_NOEXIST)
			return -RT_EEXIST;
	} else {
		if (flags == RT_EXIST)
			return -RT_ENOENT;
		index = rt_hash_take_elem(m);
		if (index == RT_HASH_NIL)
			return -RT_E2BIG;
		rt_hash_fill_new(m, index, hash, k, cpu);
	}
	rt_hash_copy_value(rt_hash_value_at(m, index, (u64)cpu), v, m->map.value_size);
	return 0;
}

RT_INLINE long rt_hash_update(struct rt_hash *m, struct rt_env *env, u64 key, u64 value,
			     u64 flags)
{
	long cpu = rt_hash_run_cpu(m, env);
	const u8 *k, *v;
	long result;

	if (cpu < 0 || m->map.flags & RT_F_RDONLY_PROG)
		return RT_HASH_PYTHON;
	RT_CHARGE_BYTES((u64)m->map.key_size + m->map.value_size);
	k = (const u8 *)RT_CHECK(key, m->map.key_size, 0);
	v = (const u8 *)RT_CHECK(value, m->map.value_size, 0);
	if (flags > RT_EXIST)
		return -RT_EINVAL;
	if (!rt_hash_lock(m))
		return -RT_EBUSY;
	result = rt_hash_update_locked(m, k, v, flags, cpu);
	rt_hash_unlock(m);
	return result;
}

RT_INLINE long rt_hash_delete_locked(struct rt_hash *m, const u8 *k)
{
	u32 hash, index, prev;
	struct rt_hash_elem *elem;

	hash = rt_hash_key_hash(k, m->map.key_size);
	index = rt_hash_search(m, k, hash, &prev);
	if (index == RT_HASH_NIL)
		return -RT_ENOENT;
	elem = rt_hash_elem_at(m, index);
	if (prev == RT_HASH_NIL)
		*rt_hash_bucket_at(m, hash & (m->nbuckets - 1)) = elem->next;
	else
		rt_hash_elem_at(m, prev)->next = elem->next;
	elem->next = m->free_head;
	m->free_head = index;
	m->count--;
	return 0;
}

RT_INLINE long rt_hash_delete(struct rt_hash *m, u64 key)
{
	const u8 *k;
	long result;

	RT_CHARGE_BYTES(m->map.key_size);
	k = (const u8 *)RT_CHECK(key, m->map.key_size, 0);
	if (!rt_hash_lock(m))
		return -RT_EBUSY;
	result = rt_hash_delete_locked(m, k);
	rt_hash_unlock(m);
	return result;
}

#endif
