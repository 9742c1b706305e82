/* Hash and per-CPU hash maps: lookup, update and delete over the layout in
 * rt_hash.h, for every native engine (compiled to eBPF: rt_hash.o). The
 * Python reference is ebpfvm/nativehash.py with ebpfvm/maps.py's Map; both
 * read and write the same block.
 *
 * Build: clang -O2 -g -target bpf -mcpu=v3 -c rt_hash.c -o rt_hash.o
 */
#include "rt_hash.h"

typedef __UINT64_TYPE__ u64;
typedef __UINT32_TYPE__ u32;
typedef __UINT8_TYPE__ u8;

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* The intrinsics (ids fixed by the ABI; every engine implements them). */
static struct rt_env *(*rh_env)(void) = (void *)0x7e000000;
static u64 (*rh_check)(u64 ptr, u64 size, u64 write) = (void *)0x7e000001;
static long (*rh_charge)(u64 n) = (void *)0x7e000002;

#define EEXIST 17
#define ENOENT 2
#define E2BIG 7
#define EINVAL 22
#define BPF_NOEXIST 1
#define BPF_EXIST 2
#define BPF_F_RDONLY_PROG (1U << 7)
#define BYTES_PER_UNIT 16 /* HELPER_BYTES_PER_UNIT: charge_bytes */
#define MAX_KEY 512
#define MAX_VALUE (4U << 20)
#define MAX_CPUS 4096

typedef u64 __attribute__((may_alias)) u64a;

static __always_inline void charge_bytes(u64 size)
{
	if (size >= BYTES_PER_UNIT)
		rh_charge(size / BYTES_PER_UNIT);
}

static __always_inline u64 load_word(const u8 *p, u32 size, u32 at)
{
	u64 word = 0;
	u32 j;

	if (at + 8 <= size)
		return *(const u64a *)(p + at);
	for (j = 0; j < 8 && at + j < size; j++)
		word |= (u64)p[at + j] << (8 * j);
	return word;
}

static __always_inline u32 key_hash(const u8 *key, u32 size)
{
	u64 h = RT_HASH_SEED ^ size;
	u32 at;

	for (at = 0; at < size && at < MAX_KEY; at += 8) {
		h = (h ^ load_word(key, size, at)) * RT_HASH_MULT;
		h ^= h >> 32;
	}
	return (u32)h;
}

static __always_inline int key_equal(const u8 *stored, const u8 *key, u32 size)
{
	u32 at;

	for (at = 0; at < size && at < MAX_KEY; at += 8)
		if (*(const u64a *)(stored + at) != load_word(key, size, at))
			return 0;
	return 1;
}

static __always_inline struct rt_hash_elem *elem_at(struct rt_hash *m, u32 index)
{
	return (struct rt_hash_elem *)((u8 *)m + m->elems + (u64)index * m->elem_size);
}

static __always_inline u32 *bucket_at(struct rt_hash *m, u32 bucket)
{
	return (u32 *)((u8 *)m + m->buckets + 4 * (u64)bucket);
}

/* The element holding `key` (RT_HASH_NIL: none); *prev is the element
 * before it in the chain (RT_HASH_NIL: it is the head). Bounded walk. */
static __always_inline u32 search(struct rt_hash *m, const u8 *key, u32 hash, u32 *prev)
{
	u32 max = m->map.max_entries;
	u32 index = *bucket_at(m, hash & (m->nbuckets - 1));
	u32 steps;

	*prev = RT_HASH_NIL;
	for (steps = 0; steps < max && index < max; steps++) {
		struct rt_hash_elem *elem = elem_at(m, index);

		if (elem->hash == hash &&
		    key_equal((u8 *)elem + sizeof(*elem), key, m->map.key_size))
			return index;
		*prev = index;
		index = elem->next;
	}
	return RT_HASH_NIL;
}

static __always_inline u64 value_at(struct rt_hash *m, u32 index, u64 cpu)
{
	return m->map.slab + (cpu * m->map.max_entries + index) * m->map.value_size;
}

static __always_inline void copy_value(u64 to, const u8 *from, u32 size)
{
	u32 at;

	for (at = 0; at + 8 <= size && at < MAX_VALUE; at += 8)
		*(u64a *)(to + at) = *(const u64a *)(from + at);
	for (; at < size && at < MAX_VALUE; at++)
		*(u8 *)(to + at) = from[at];
}

static __always_inline void zero_value(u64 to, u32 size)
{
	u32 at;

	for (at = 0; at + 8 <= size && at < MAX_VALUE; at += 8)
		*(u64a *)(to + at) = 0;
	for (; at < size && at < MAX_VALUE; at++)
		*(u8 *)(to + at) = 0;
}

static __always_inline int is_percpu(struct rt_hash *m)
{
	return m->map.type == 5;
}

/* The CPU of this run for `m` (0 for a map of one value a key), or -1 when
 * it is past the map's possible CPUs (Python raises the typed error). */
static __always_inline long run_cpu(struct rt_hash *m)
{
	u64 cpu;

	if (!is_percpu(m))
		return 0;
	cpu = rh_env()->cpu;
	return cpu < m->map.ncpus ? (long)cpu : -1;
}

static __always_inline long find_value(struct rt_hash *m, u64 key, u64 cpu)
{
	const u8 *k = (const u8 *)rh_check(key, m->map.key_size, 0);
	u32 prev;
	u32 index = search(m, k, key_hash(k, m->map.key_size), &prev);

	return index == RT_HASH_NIL ? 0 : (long)value_at(m, index, cpu);
}

long rt_hash_lookup(struct rt_hash *m, u64 key)
{
	long cpu = run_cpu(m);

	if (cpu < 0)
		return RT_HASH_PYTHON;
	charge_bytes(m->map.key_size);
	return find_value(m, key, (u64)cpu);
}

long rt_hash_lookup_percpu(struct rt_hash *m, u64 key, u64 cpu)
{
	if (!is_percpu(m))
		return RT_HASH_PYTHON;
	charge_bytes(m->map.key_size);
	if (cpu >= m->map.ncpus)
		return 0;
	return find_value(m, key, cpu);
}

/* A free element for a new entry (RT_HASH_NIL: none), taken off the free
 * list or from the never used ones. */
static __always_inline u32 take_elem(struct rt_hash *m)
{
	u32 max = m->map.max_entries;
	u32 index = m->free_head;

	if (m->count >= max)
		return RT_HASH_NIL;
	if (index < max) {
		m->free_head = elem_at(m, index)->next;
		return index;
	}
	index = m->fresh;
	if (index >= max)
		return RT_HASH_NIL;
	m->fresh = index + 1;
	return index;
}

static __always_inline void fill_new(struct rt_hash *m, u32 index, u32 hash, const u8 *k,
				     long cpu)
{
	struct rt_hash_elem *elem = elem_at(m, index);
	u32 *head = bucket_at(m, hash & (m->nbuckets - 1));
	u8 *stored = (u8 *)elem + sizeof(*elem);
	u32 size = m->map.key_size;
	u32 at, other;

	elem->next = *head;
	elem->hash = hash;
	for (at = 0; at < size && at < MAX_KEY; at++)
		stored[at] = k[at];
	*head = index;
	m->count++;
	if (!is_percpu(m))
		return;
	for (other = 0; other < m->map.ncpus && other < MAX_CPUS; other++)
		if (other != cpu)
			zero_value(value_at(m, index, other), m->map.value_size);
}

long rt_hash_update(struct rt_hash *m, u64 key, u64 value, u64 flags)
{
	long cpu = run_cpu(m);
	const u8 *k, *v;
	u32 hash, index, prev;

	if (cpu < 0 || m->map.flags & BPF_F_RDONLY_PROG)
		return RT_HASH_PYTHON;
	charge_bytes((u64)m->map.key_size + m->map.value_size);
	k = (const u8 *)rh_check(key, m->map.key_size, 0);
	v = (const u8 *)rh_check(value, m->map.value_size, 0);
	if (flags > BPF_EXIST)
		return -EINVAL;
	hash = key_hash(k, m->map.key_size);
	index = search(m, k, hash, &prev);
	if (index != RT_HASH_NIL) {
		if (flags == BPF_NOEXIST)
			return -EEXIST;
	} else {
		if (flags == BPF_EXIST)
			return -ENOENT;
		index = take_elem(m);
		if (index == RT_HASH_NIL)
			return -E2BIG;
		fill_new(m, index, hash, k, cpu);
	}
	copy_value(value_at(m, index, (u64)cpu), v, m->map.value_size);
	return 0;
}

long rt_hash_delete(struct rt_hash *m, u64 key)
{
	const u8 *k;
	u32 hash, index, prev;
	struct rt_hash_elem *elem;

	charge_bytes(m->map.key_size);
	k = (const u8 *)rh_check(key, m->map.key_size, 0);
	hash = key_hash(k, m->map.key_size);
	index = search(m, k, hash, &prev);
	if (index == RT_HASH_NIL)
		return -ENOENT;
	elem = elem_at(m, index);
	if (prev == RT_HASH_NIL)
		*bucket_at(m, hash & (m->nbuckets - 1)) = elem->next;
	else
		elem_at(m, prev)->next = elem->next;
	elem->next = m->free_head;
	m->free_head = index;
	m->count--;
	return 0;
}
