// SPDX-License-Identifier: GPL-2.0
/* Spin locks in map values and in global data (tests/test_spinlocks.py):
 * an array value, a hash value (the element inserted by the program) and a
 * lock of a .data section, each taken and given back around a counter the
 * packet's bytes drive; a static subprogram takes or gives back the lock.
 * clang -target bpf -O2 -g -c spinlocks.c -o spinlocks.o
 * (-I the corpus's src/usr/include and src/linux-source-6.12/tools/include/uapi) */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct elem {
	__u64 sum;
	struct bpf_spin_lock lock;
	__u32 cnt;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct elem);
} arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct elem);
} hmap SEC(".maps");

struct bpf_spin_lock glock __attribute__((visibility("hidden"))) SEC(".data.G");
__u32 gcount __attribute__((visibility("hidden"))) SEC(".data.G");

/* Adds the packet length to an array element and a hash element (key from
 * the packet's last byte), each under its lock; r0 = both counts. */
SEC("tc")
int map_values(struct __sk_buff *skb)
{
	__u32 key = skb->len & 3, hkey = skb->len & 7;
	struct elem zero = {}, *a, *h;
	__u32 ca, ch;

	a = bpf_map_lookup_elem(&arr, &key);
	if (!a)
		return 1000;
	bpf_spin_lock(&a->lock);
	a->sum += skb->len;
	a->cnt += 1;
	ca = a->cnt;
	bpf_spin_unlock(&a->lock);
	h = bpf_map_lookup_elem(&hmap, &hkey);
	if (!h) {
		bpf_map_update_elem(&hmap, &hkey, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hmap, &hkey);
		if (!h)
			return 1001;
	}
	bpf_spin_lock(&h->lock);
	h->sum += skb->protocol;
	h->cnt += 2;
	ch = h->cnt;
	bpf_spin_unlock(&h->lock);
	return ca << 16 | ch;
}

static __attribute__((noinline)) int take(struct __sk_buff *skb)
{
	volatile int ret = skb->len;

	bpf_spin_lock(&glock);
	return ret + 1;
}

/* The global lock, taken in a static subprogram, given back here. */
SEC("tc")
int global_lock(struct __sk_buff *skb)
{
	int ret = take(skb);

	gcount += 1;
	ret += gcount;
	bpf_spin_unlock(&glock);
	return ret;
}

char _license[] SEC("license") = "GPL";
