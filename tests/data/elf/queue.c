/* Test object for queue and stack maps (BTF-defined) and the push/pop/peek
 * helpers 87-89. Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

struct {
	__uint(type, 22);		/* BPF_MAP_TYPE_QUEUE */
	__uint(max_entries, 3);
	__type(value, unsigned int);
} lengths SEC(".maps");

struct {
	__uint(type, 23);		/* BPF_MAP_TYPE_STACK */
	__uint(max_entries, 8);
	__type(value, unsigned char);
} firsts SEC(".maps");

static long (*bpf_map_push_elem)(void *map, const void *value, unsigned long long flags) = (void *)87;
static long (*bpf_map_pop_elem)(void *map, void *value) = (void *)88;
static long (*bpf_map_peek_elem)(void *map, void *value) = (void *)89;

/* Pushes the packet length (queue, dropping the oldest when full) and the
 * first byte (stack). A packet starting with 0 pops the stack instead and
 * returns what it popped plus 1000, or 2000 when empty. Otherwise returns the
 * queue's head (peek). */
SEC("xdp")
int record(unsigned char *data, unsigned long len)
{
	unsigned int length = len, head = 0;
	unsigned char first = data[0], popped;

	if (first == 0)
		return bpf_map_pop_elem(&firsts, &popped) == 0 ? 1000 + popped : 2000;
	bpf_map_push_elem(&lengths, &length, 2 /* BPF_EXIST: drop the oldest */);
	bpf_map_push_elem(&firsts, &first, 0);
	bpf_map_peek_elem(&lengths, &head);
	return head;
}

char _license[] SEC("license") = "Dual MIT/GPL";
