/* Test object for a ring buffer map and the ringbuf helpers 130-133.
 * Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]

struct {
	__uint(type, 27);		/* BPF_MAP_TYPE_RINGBUF */
	__uint(max_entries, 4096);
} events SEC(".maps");

struct event { unsigned int len; unsigned char first, pad[3]; };

static long (*bpf_ringbuf_output)(void *rb, void *data, unsigned long long size,
				  unsigned long long flags) = (void *)130;
static void *(*bpf_ringbuf_reserve)(void *rb, unsigned long long size,
				    unsigned long long flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, unsigned long long flags) = (void *)132;
static void (*bpf_ringbuf_discard)(void *data, unsigned long long flags) = (void *)133;

/* One event per packet through reserve/submit; packets whose first byte is odd
 * are reserved and then discarded; every packet also outputs its first two
 * bytes with bpf_ringbuf_output. Returns 1 when the reserve failed. */
SEC("xdp")
int emit(unsigned char *data, unsigned long len)
{
	struct event *event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);

	bpf_ringbuf_output(&events, data, 2, 0);
	if (!event)
		return 1;
	event->len = len;
	event->first = data[0];
	if (data[0] & 1)
		bpf_ringbuf_discard(event, 0);
	else
		bpf_ringbuf_submit(event, 0);
	return 0;
}

char _license[] SEC("license") = "Dual MIT/GPL";
