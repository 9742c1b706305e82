/* The ring buffer's helpers (issue 15) over rt_ring.h's block: each does
 * what its Python implementation does (the reference: ebpfvm.maphelpers and
 * ebpfvm.ringbuf.RingBuf), in the same order of checks, faults and budget
 * charges; a handle or record pointer of no native ring goes to RT_PYTHON,
 * which answers (or raises) as before. */
#include "rt.h"
#include "rt_ring.h"

RT_INLINE struct rt_ring *rt_find_ring(struct rt_env *env, u64 handle)
{
	struct rt_map *map = rt_find_map(env, handle);
	return map && map->type == RT_MAP_RINGBUF ? (struct rt_ring *)map : 0;
}

long rt_ringbuf_output(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct rt_env *env = RT_ENV();
	struct rt_ring *r = rt_find_ring(env, r1);
	const u8 *data;
	u8 *to;
	u64 at;

	if (!r)
		return RT_PYTHON(RT_RINGBUF_OUTPUT, r1, r2, r3, r4, r5);
	RT_CHARGE_BYTES(r3);
	data = (const u8 *)RT_CHECK(r2, r3, 0);
	to = (u8 *)rt_ring_reserve(r, r3, 0);
	if (!to)
		return -RT_EAGAIN;
	for (at = 0; at + 8 <= r3 && at < RT_RING_DISCARD; at += 8)
		*(rt_hash_u64a *)(to + at) = *(const rt_hash_u64a *)(data + at);
	for (; at < r3 && at < RT_RING_DISCARD; at++)
		to[at] = data[at];
	rt_ring_commit(r, (u64)to, 0);
	return 0;
}

long rt_ringbuf_reserve(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct rt_env *env = RT_ENV();
	struct rt_ring *r = rt_find_ring(env, r1);

	if (!r)
		return RT_PYTHON(RT_RINGBUF_RESERVE, r1, r2, r3, r4, r5);
	return rt_ring_reserve(r, r2, RT_RING_TAG(env));
}

/* Submit or discard: the first native ring holding a busy record at r1,
 * as Python looks through every ring; none: Python answers. */
RT_INLINE long rt_ring_commit_any(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5, int discard)
{
	struct rt_env *env = RT_ENV();
	u64 n = env->nmaps;

	for (u64 i = 0; i < RT_MAX_MAPS; i++) {
		if (i >= n)
			break;
		struct rt_map *map = (struct rt_map *)env->maps[i];
		if (map->type == RT_MAP_RINGBUF && rt_ring_commit((struct rt_ring *)map, r1, discard))
			return 0;
	}
	if (discard)
		return RT_PYTHON(RT_RINGBUF_DISCARD, r1, r2, r3, r4, r5);
	return RT_PYTHON(RT_RINGBUF_SUBMIT, r1, r2, r3, r4, r5);
}

long rt_ringbuf_submit(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return rt_ring_commit_any(r1, r2, r3, r4, r5, 0);
}

long rt_ringbuf_discard(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	return rt_ring_commit_any(r1, r2, r3, r4, r5, 1);
}

/* bpf_ringbuf_query: bytes produced and not consumed (0), the ring's size
 * (1), the consumer (2) or producer (3) position; 0 for other flags. */
long rt_ringbuf_query(u64 r1, u64 r2, u64 r3, u64 r4, u64 r5)
{
	struct rt_ring *r = rt_find_ring(RT_ENV(), r1);

	if (!r)
		return RT_PYTHON(RT_RINGBUF_QUERY, r1, r2, r3, r4, r5);
	if (r2 == 0)
		return r->producer - r->consumer;
	if (r2 == 1)
		return r->map.max_entries;
	if (r2 == 2)
		return r->consumer;
	if (r2 == 3)
		return r->producer;
	return 0;
}
