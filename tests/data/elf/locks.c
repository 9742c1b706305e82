// SPDX-License-Identifier: GPL-2.0
/* Spin lock misuse the kernel's verifier refuses (tests/test_locks.py): a
 * helper call while holding a bpf_spin_lock, and an exit while holding one;
 * and the correct use beside them.
 * clang -target bpf -O2 -g -c locks.c -o locks.o
 * (-I the corpus's src/usr/include and src/linux-source-6.12/tools/include/uapi) */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct val {
	struct bpf_spin_lock lock;
	__u32 cnt;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, struct val);
} vals SEC(".maps");

/* Takes the lock, counts, gives it back; r0 = the count. */
SEC("tc")
int correct(struct __sk_buff *skb)
{
	int key = 0;
	struct val *v = bpf_map_lookup_elem(&vals, &key);
	__u32 cnt;

	if (!v)
		return 1000;
	bpf_spin_lock(&v->lock);
	v->cnt += 1;
	cnt = v->cnt;
	bpf_spin_unlock(&v->lock);
	return cnt + (bpf_get_prandom_u32() & 0);
}

/* A helper call between lock and unlock: refused. */
SEC("tc")
int call_inside(struct __sk_buff *skb)
{
	int key = 0;
	struct val *v = bpf_map_lookup_elem(&vals, &key);

	if (!v)
		return 1000;
	bpf_spin_lock(&v->lock);
	v->cnt += bpf_get_prandom_u32() & 1;
	bpf_spin_unlock(&v->lock);
	return 0;
}

/* Returns with the lock held: refused. */
SEC("tc")
int exit_inside(struct __sk_buff *skb)
{
	int key = 0;
	struct val *v = bpf_map_lookup_elem(&vals, &key);

	if (!v)
		return 1000;
	bpf_spin_lock(&v->lock);
	v->cnt += 1;
	return 2;
}

char _license[] SEC("license") = "GPL";
