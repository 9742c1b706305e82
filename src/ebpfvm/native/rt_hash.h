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
 *   60  u32 reserved
 *   64  u64 buckets    offset of the bucket array (96)
 *   72  u64 elems      offset of the element array (8-aligned)
 *   80  u64 size       bytes of the block
 *   88  u64 reserved
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
 */
#ifndef RT_HASH_H
#define RT_HASH_H

#if __has_include("rt.h")
#include "rt.h"
#else
/* The common ABI as NATIVE15 fixes it, until rt.h is merged. */
struct rt_map {
	__UINT64_TYPE__ handle;
	__UINT32_TYPE__ type;
	__UINT32_TYPE__ key_size;
	__UINT32_TYPE__ value_size;
	__UINT32_TYPE__ max_entries;
	__UINT32_TYPE__ flags;
	__UINT32_TYPE__ ncpus;
	__UINT64_TYPE__ slab;
};

struct rt_env {
	__UINT64_TYPE__ version;
	__UINT64_TYPE__ cpu;
	__UINT64_TYPE__ ncpus;
	__UINT64_TYPE__ prandom_state[4];
	__UINT64_TYPE__ ktime_ns;
	__UINT64_TYPE__ nmaps;
	__UINT64_TYPE__ maps[];
};
#endif

#define RT_HASH_NIL 0xffffffffU
#define RT_HASH_HEADER 96
#define RT_HASH_SEED 0x243f6a8885a308d3ULL
#define RT_HASH_MULT 0x9e3779b97f4a7c15ULL
/* What rt_hash_* return when Python must do the call (RT_PYTHON of the
 * kernel helper): never a value address, never 0 or a negative errno. */
#define RT_HASH_PYTHON 1

struct rt_hash {
	struct rt_map map;
	__UINT32_TYPE__ nbuckets;
	__UINT32_TYPE__ elem_size;
	__UINT32_TYPE__ count;
	__UINT32_TYPE__ free_head;
	__UINT32_TYPE__ fresh;
	__UINT32_TYPE__ reserved;
	__UINT64_TYPE__ buckets;
	__UINT64_TYPE__ elems;
	__UINT64_TYPE__ size;
	__UINT64_TYPE__ reserved2;
};

struct rt_hash_elem {
	__UINT32_TYPE__ next;
	__UINT32_TYPE__ hash;
	/* key_size key bytes, zero-padded to a multiple of 8 */
};

/* The runtime functions (m: the map's descriptor; key, value: guest
 * pointers, checked with RT_CHECK; charged with RT_CHARGE as the Python
 * helpers charge). Each returns RT_HASH_PYTHON when Python must answer
 * (a read-only map's update, a run's CPU past the map's possible CPUs). */
long rt_hash_lookup(struct rt_hash *m, __UINT64_TYPE__ key);
long rt_hash_lookup_percpu(struct rt_hash *m, __UINT64_TYPE__ key, __UINT64_TYPE__ cpu);
long rt_hash_update(struct rt_hash *m, __UINT64_TYPE__ key, __UINT64_TYPE__ value,
		    __UINT64_TYPE__ flags);
long rt_hash_delete(struct rt_hash *m, __UINT64_TYPE__ key);

#endif
