// SPDX-License-Identifier: GPL-2.0
/* bpf_timer helpers (tests/test_timers.py): a timer in an array, hash or
 * LRU hash value, driven by the packet. Byte 0 is the operation, byte 1 the
 * key (bit 7: the hash map, bit 6: the LRU hash map), bytes 2-9 the argument
 * (little endian), byte 10 the flags; the program returns the helper's
 * result. The callback counts its firings and the key it was given, and by
 * the element's mode re-arms itself, cancels itself, replaces its own
 * element or spins in bpf_loop.
 * clang -target bpf -O2 -g -c timers.c -o timers.o
 * (-I the corpus's src/usr/include and src/linux-source-6.12/tools/include/uapi) */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct elem {
	__u64 fired;
	__u64 mode;
	struct bpf_timer t;
	__u64 seen_key;
	__s64 cres;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct elem);
} arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct elem);
} hmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct elem);
} lru SEC(".maps");

enum { OP_INIT = 1, OP_CALLBACK, OP_START, OP_CANCEL, OP_MODE, OP_UPDATE, OP_DELETE };
enum { MODE_COUNT, MODE_REARM3, MODE_CANCEL_SELF, MODE_REPLACE, MODE_FOREVER, MODE_LOOP };

static int spin(__u32 index, void *data)
{
	return 0;
}

static int fire(void *map, __u32 *key, struct elem *v)
{
	struct elem fresh = {};

	v->fired += 1;
	v->seen_key = *key;
	if (v->mode == MODE_REARM3 && v->fired < 3)
		bpf_timer_start(&v->t, 0, 0);
	else if (v->mode == MODE_CANCEL_SELF)
		v->cres = bpf_timer_cancel(&v->t);
	else if (v->mode == MODE_REPLACE) {
		bpf_timer_start(&v->t, 0, 0);
		fresh.fired = v->fired + 100;
		v->cres = bpf_map_update_elem(map, key, &fresh, 0);
	} else if (v->mode == MODE_FOREVER)
		v->cres = bpf_timer_start(&v->t, 0, 0);
	else if (v->mode == MODE_LOOP)
		v->cres = bpf_loop(1 << 23, spin, 0, 0);
	return 0;
}

static __always_inline long elem_op(__u8 *p, void *map, __u32 key, __u64 arg)
{
	struct elem zero = {}, *v;

	v = bpf_map_lookup_elem(map, &key);
	if (!v)
		return -2000;
	switch (p[0]) {
	case OP_INIT:
		return bpf_timer_init(&v->t, map, arg);
	case OP_CALLBACK:
		return bpf_timer_set_callback(&v->t, fire);
	case OP_START:
		return bpf_timer_start(&v->t, arg, p[10]);
	case OP_CANCEL:
		return bpf_timer_cancel(&v->t);
	case OP_MODE:
		v->mode = arg;
		return 0;
	case OP_UPDATE:
		zero.mode = arg;
		return bpf_map_update_elem(map, &key, &zero, 0);
	}
	return -3000;
}

static __always_inline long run_op(__u8 *p, void *end)
{
	struct elem zero = {};
	__u32 key;
	__u64 arg;

	if ((void *)(p + 11) > end)
		return -1000;
	key = p[1] & 0x7f;
	arg = *(__u64 *)(p + 2);
	if (p[1] & 0x40) {
		key &= 0x3f;
		if (!bpf_map_lookup_elem(&lru, &key))
			bpf_map_update_elem(&lru, &key, &zero, BPF_NOEXIST);
		return elem_op(p, &lru, key, arg);
	}
	if (!(p[1] & 0x80))
		return elem_op(p, &arr, key, arg);
	if (p[0] == OP_DELETE)
		return bpf_map_delete_elem(&hmap, &key);
	if (!bpf_map_lookup_elem(&hmap, &key))
		bpf_map_update_elem(&hmap, &key, &zero, BPF_NOEXIST);
	return elem_op(p, &hmap, key, arg);
}

SEC("xdp")
int timer_xdp(struct xdp_md *ctx)
{
	return run_op((void *)(long)ctx->data, (void *)(long)ctx->data_end);
}

SEC("tc")
int timer_tc(struct __sk_buff *skb)
{
	return run_op((void *)(long)skb->data, (void *)(long)skb->data_end);
}

char _license[] SEC("license") = "GPL";
