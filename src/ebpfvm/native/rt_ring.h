/* Ring buffer maps in native memory: the layout shared by the Python
 * reference (ebpfvm/nativering.py, under ebpfvm.ringbuf.RingBuf) and the
 * runtime (rtring.c).
 *
 * The data area stays the map's slab (twice the ring size, as the kernel
 * maps it twice), with the kernel's record framing: an 8-byte header (u32
 * length | BUSY bit 31 | DISCARD bit 30, u32 the record's offset) before
 * each record, records 8-byte aligned, positions counting bytes produced
 * and consumed. The block, little-endian, offsets from its start:
 *
 *   0   struct rt_map  handle, type 27, key_size 0, value_size 0,
 *                      max_entries (the ring size), flags, ncpus 1,
 *                      slab (the data area)
 *   40  u32 nslots     max_entries / 8: the busy table's entries
 *   48  u64 producer   bytes produced (the next record's header at
 *                      producer % max_entries)
 *   56  u64 consumer   bytes consumed
 *   64  u64 discarded  records discarded (RingBuf.discarded)
 *   72  u64 pending    busy records (entries of the table in use)
 *   96  u64 busy[nslots]  per 8-byte position of the ring: 0, or the
 *                      reserved record starting there: low 32 bits its
 *                      length | BUSY, high 32 bits who reserved it (0: a
 *                      Python run, which Python remembers; else the tag of
 *                      the native runs' struct rt_env: RT_RING_TAG)
 *
 * Programs may write the data area (the region of a reserved record is the
 * whole slab), never the block: which records are reserved, and how long,
 * is the table's word, not a header's. Every loop is bounded by the record
 * length (< 1 << 30) or RT_MAX_MAPS.
 */
#ifndef RT_RING_H
#define RT_RING_H

#include "rt_hash.h" /* and rt.h */

#define RT_MAP_RINGBUF 27
#define RT_RING_HEADER 96
#define RT_RING_BUSY (1U << 31)
#define RT_RING_DISCARD (1U << 30)
#define RT_RING_RECORD 8
#define RT_EAGAIN 11
#define RT_RINGBUF_OUTPUT 130
#define RT_RINGBUF_RESERVE 131
#define RT_RINGBUF_SUBMIT 132
#define RT_RINGBUF_DISCARD 133
#define RT_RINGBUF_QUERY 134

struct rt_ring {
	struct rt_map map;
	u32 nslots;
	u32 lock; /* 0 free, 1 held: reserve and commit (see rt_ring_lock) */
	u64 producer;
	u64 consumer;
	u64 discarded;
	u64 pending;
	u64 reserved2[2];
	u64 busy[];
};

_Static_assert(sizeof(struct rt_ring) == RT_RING_HEADER, "the ring header is 96 bytes");

/* The owner tag of records the native runs of `env` reserve. */
#define RT_RING_TAG(env) ((u32)((u64)(env) >> 3) | 1U)

/* Worker threads share a ring (run_capture's jobs): a reservation and a
 * commit take the ring's lock word by compare-and-swap, as the kernel takes
 * the ring's spin lock around them. The wait is bounded (RT_HASH_SPINS
 * tries): a reserve that cannot take it fails as a full ring does. */
RT_INLINE int rt_ring_lock(struct rt_ring *r)
{
	return rt_lock(&r->lock, RT_HASH_SPINS);
}

RT_INLINE void rt_ring_unlock(struct rt_ring *r)
{
	rt_unlock(&r->lock);
}

/* The address of a new busy record's data, or 0 (size 0 or past 1 << 30,
 * or no room: the producer stays less than a ring ahead). */
RT_INLINE u64 rt_ring_reserve_locked(struct rt_ring *r, u64 size, u32 tag)
{
	u64 total = (RT_RING_RECORD + size + 7) & ~7ULL;
	u64 prod = r->producer, max = r->map.max_entries, off, slot;

	if (size < 1 || size >= RT_RING_DISCARD || prod - r->consumer + total >= max)
		return 0;
	off = prod & (max - 1);
	slot = off / RT_RING_RECORD;
	if (slot >= r->nslots)
		return 0;
	*(u32 *)(r->map.slab + off) = (u32)size | RT_RING_BUSY;
	*(u32 *)(r->map.slab + off + 4) = (u32)off;
	r->producer = prod + total;
	r->busy[slot] = ((u32)size | RT_RING_BUSY) | ((u64)tag << 32);
	r->pending += 1;
	return r->map.slab + off + RT_RING_RECORD;
}

/* Submit or discard the busy record whose data starts at `addr`: 1, or 0
 * when no busy record of this ring starts there. */
RT_INLINE int rt_ring_commit_locked(struct rt_ring *r, u64 addr, int discard)
{
	u64 slab = r->map.slab, off, entry;
	u32 header;

	if (addr < slab + RT_RING_RECORD)
		return 0;
	off = addr - slab - RT_RING_RECORD;
	if (off >= r->map.max_entries || (off & 7) || off / RT_RING_RECORD >= r->nslots)
		return 0;
	entry = r->busy[off / RT_RING_RECORD];
	if (!(entry & RT_RING_BUSY))
		return 0;
	header = ((u32)entry & (RT_RING_DISCARD - 1)) | (discard ? RT_RING_DISCARD : 0);
	*(u32 *)(slab + off) = header;
	r->busy[off / RT_RING_RECORD] = 0;
	r->pending -= 1;
	r->discarded += discard ? 1 : 0;
	return 1;
}

RT_INLINE u64 rt_ring_reserve(struct rt_ring *r, u64 size, u32 tag)
{
	u64 found;

	if (!rt_ring_lock(r))
		return 0;
	found = rt_ring_reserve_locked(r, size, tag);
	rt_ring_unlock(r);
	return found;
}

RT_INLINE int rt_ring_commit(struct rt_ring *r, u64 addr, int discard)
{
	int done;

	if (!rt_ring_lock(r))
		return 0;
	done = rt_ring_commit_locked(r, addr, discard);
	rt_ring_unlock(r);
	return done;
}

#endif
