/* The queue and stack operations of rt_queue.h as global functions, for the
 * tests (tests/nhash_harness.py runs each as a plain program on every
 * engine). Their names lack the rt_ prefix: they are not native helpers.
 *
 * Build: clang -O2 -g -target bpf -mcpu=v3 -c rt_queue.c -o rt_queue.o
 */
#include "rt_queue.h"

long nqueue_push(u64 map, u64 value, u64 flags)
{
	return rt_queue_push((struct rt_queue *)map, value, flags);
}

long nqueue_peek(u64 map, u64 value)
{
	return rt_queue_take((struct rt_queue *)map, value, 0);
}

long nqueue_pop(u64 map, u64 value)
{
	return rt_queue_take((struct rt_queue *)map, value, 1);
}
