/* Queue and stack maps in native memory: the layout shared by the Python
 * reference (ebpfvm/nativequeue.py) and the runtime.
 *
 * One block per map, little-endian, offsets from its start:
 *
 *   0   struct rt_map  handle, type (22 queue, 23 stack), key_size 0,
 *                      value_size, max_entries, flags, ncpus 1,
 *                      slab (the first slot: the block + 64)
 *   40  u32 head       the next push goes to this slot
 *   44  u32 tail       the oldest value's slot
 *   48  u32 size       max_entries + 1 slots (one always free: head == tail
 *                      is empty)
 *   64  size slots of value_size bytes
 *
 * A push when full is E2BIG, or with BPF_EXIST first drops the oldest value;
 * a queue pops the oldest (tail), a stack the newest (the slot before head).
 * A head or tail at or past size (a corrupted block) reads as an empty map
 * and the next push starts again from slot 0.
 *
 * The operations are RT_INLINE functions for the map helpers' dispatcher
 * (rt_map_push_elem, rt_map_pop_elem, rt_map_peek_elem in rtcore.c: runtime
 * functions make no local calls). rt_queue.c compiles them into rt_queue.o as
 * nqueue_* functions for the tests.
 */
#ifndef RT_QUEUE_H
#define RT_QUEUE_H

#include "rt_hash.h" /* and rt.h */

#define RT_MAP_QUEUE 22
#define RT_MAP_STACK 23
#define RT_QUEUE_HEADER 64

struct rt_queue {
	struct rt_map map;
	u32 head;
	u32 tail;
	u32 size;
	u32 reserved;
	u64 reserved2;
};

_Static_assert(sizeof(struct rt_queue) == RT_QUEUE_HEADER, "the queue header is 64 bytes");

RT_INLINE int rt_is_queue(struct rt_map *map)
{
	return map->type == RT_MAP_QUEUE || map->type == RT_MAP_STACK;
}

RT_INLINE void rt_queue_copy(u8 *to, const u8 *from, u32 size)
{
	u32 at;

	for (at = 0; at + 8 <= size && at < RT_HASH_MAX_VALUE; at += 8)
		*(rt_hash_u64a *)(to + at) = *(const rt_hash_u64a *)(from + at);
	for (; at < size && at < RT_HASH_MAX_VALUE; at++)
		to[at] = from[at];
}

/* bpf_map_push_elem: 0, -EINVAL for bad flags, -E2BIG when full. */
RT_INLINE long rt_queue_push(struct rt_queue *q, u64 value, u64 flags)
{
	u32 size = q->size, head = q->head, tail = q->tail, after;
	const u8 *v;

	RT_CHARGE_BYTES(q->map.value_size);
	v = (const u8 *)RT_CHECK(value, q->map.value_size, 0);
	if (flags != 0 && flags != RT_EXIST)
		return -RT_EINVAL;
	if (head >= size || tail >= size)
		head = tail = 0;
	after = head + 1 >= size ? 0 : head + 1;
	if (after == tail) {
		if (flags != RT_EXIST)
			return -RT_E2BIG;
		tail = tail + 1 >= size ? 0 : tail + 1;
	}
	rt_queue_copy((u8 *)q + RT_QUEUE_HEADER + (u64)head * q->map.value_size, v,
		      q->map.value_size);
	q->head = after;
	q->tail = tail;
	return 0;
}

/* bpf_map_peek_elem (remove 0) and bpf_map_pop_elem (remove 1): the value
 * is written to the guest first, and only a written value leaves the map. */
RT_INLINE long rt_queue_take(struct rt_queue *q, u64 value, int remove)
{
	u32 size = q->size, head = q->head, tail = q->tail, index;
	u8 *out;

	RT_CHARGE_BYTES(q->map.value_size);
	if (head >= size || tail >= size || head == tail)
		return -RT_ENOENT;
	if (q->map.type == RT_MAP_STACK)
		index = head == 0 ? size - 1 : head - 1;
	else
		index = tail;
	out = (u8 *)RT_CHECK(value, q->map.value_size, 1);
	rt_queue_copy(out, (u8 *)q + RT_QUEUE_HEADER + (u64)index * q->map.value_size,
		      q->map.value_size);
	if (!remove)
		return 0;
	if (q->map.type == RT_MAP_STACK)
		q->head = index;
	else
		q->tail = tail + 1 >= size ? 0 : tail + 1;
	return 0;
}

#endif
