// SPDX-License-Identifier: GPL-2.0
/* cgroup local storage and spin locks (tests/test_cgroup_storage.py): the
 * kernel's BPF_PROG_TEST_RUN results are the expected values.
 * clang -target bpf -O2 -g -c cgroup_storage.c -o cgroup_storage.o
 * (-I the corpus's src/usr/include and tools/include/uapi) */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct cls_elem {
	struct bpf_spin_lock lock;
	int cnt;
	unsigned long long sum;
};

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_STORAGE);
	__type(key, struct bpf_cgroup_storage_key);
	__type(value, struct cls_elem);
} shared SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE);
	__type(key, __u64);
	__type(value, __u32);
} percpu SEC(".maps");

struct counter {
	int before;
	struct bpf_spin_lock lock;
	int cnt;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, int);
	__type(value, struct counter);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, int);
	__type(value, __u64);
} out SEC(".maps");

static void record(int key, __u64 value)
{
	bpf_map_update_elem(&out, &key, &value, 0);
}

SEC("cgroup_skb/ingress")
int storage_prog(struct __sk_buff *skb)
{
	struct cls_elem *cls = bpf_get_local_storage(&shared, 0);
	struct cls_elem *again = bpf_get_local_storage(&shared, 0);
	__u32 *mine = bpf_get_local_storage(&percpu, 0);
	struct counter *c;
	int key = 0;

	bpf_spin_lock(&cls->lock);
	cls->cnt++;
	cls->sum += skb->len;
	bpf_spin_unlock(&cls->lock);
	bpf_spin_lock(&again->lock);
	again->cnt += 10;
	bpf_spin_unlock(&again->lock);
	*mine += 3;
	*mine += 4;
	record(0, cls->cnt);
	record(1, again->sum);
	record(2, *mine);
	c = bpf_map_lookup_elem(&counters, &key);
	if (!c)
		return 0;
	bpf_spin_lock(&c->lock);
	c->cnt += 1;
	bpf_spin_unlock(&c->lock);
	c->before += 2;
	return skb->len > 50;
}

/* What the kernel's verifier refuses: the VM faults at run time instead. */
SEC("cgroup_skb/ingress")
int double_lock(struct __sk_buff *skb)
{
	struct cls_elem *cls = bpf_get_local_storage(&shared, 0);
	struct counter *c;
	int key = 0;

	c = bpf_map_lookup_elem(&counters, &key);
	if (!c)
		return 0;
	bpf_spin_lock(&cls->lock);
	bpf_spin_lock(&c->lock);
	bpf_spin_unlock(&c->lock);
	bpf_spin_unlock(&cls->lock);
	return 1;
}

SEC("cgroup_skb/ingress")
int unlock_unlocked(struct __sk_buff *skb)
{
	struct cls_elem *cls = bpf_get_local_storage(&shared, 0);

	bpf_spin_unlock(&cls->lock);
	return 1;
}

SEC("cgroup_skb/ingress")
int nonzero_flags(struct __sk_buff *skb)
{
	struct cls_elem *cls = bpf_get_local_storage(&shared, skb->len & 1);

	cls->cnt++;
	return 1;
}

SEC("cgroup_skb/ingress")
int wrong_offset(struct __sk_buff *skb)
{
	struct counter *c;
	int key = 0;

	c = bpf_map_lookup_elem(&counters, &key);
	if (!c)
		return 0;
	bpf_spin_lock((struct bpf_spin_lock *)&c->cnt);
	bpf_spin_unlock((struct bpf_spin_lock *)&c->cnt);
	return 1;
}

char _license[] SEC("license") = "GPL";
