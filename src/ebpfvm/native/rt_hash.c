/* The hash-map operations of rt_hash.h as global functions, for the tests
 * (tests/nhash_harness.py runs each as a plain program on every engine).
 * Their names lack the rt_ prefix: they are not native helpers (the map
 * helpers' dispatcher includes rt_hash.h and inlines the operations).
 *
 * Build: clang -O2 -g -target bpf -mcpu=v3 -c rt_hash.c -o rt_hash.o
 */
#include "rt_hash.h"

long nhash_lookup(u64 map, u64 key)
{
	return rt_hash_lookup((struct rt_hash *)map, RT_ENV(), key);
}

long nhash_lookup_percpu(u64 map, u64 key, u64 cpu)
{
	return rt_hash_lookup_percpu((struct rt_hash *)map, key, cpu);
}

long nhash_update(u64 map, u64 key, u64 value, u64 flags)
{
	return rt_hash_update((struct rt_hash *)map, RT_ENV(), key, value, flags);
}

long nhash_delete(u64 map, u64 key)
{
	return rt_hash_delete((struct rt_hash *)map, key);
}
