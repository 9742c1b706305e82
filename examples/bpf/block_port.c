/* Drop TCP packets to or from one port: the rbpf README's ELF example, our way.
 *
 * Built for rbpf's "fixed mbuff" style: the program gets a metadata buffer
 * holding 64-bit pointers to the packet's start (offset 0x40) and end (0x50).
 * Run it with EbpfVmFixedMbuff(prog, 0x40, 0x50). Returns TC_ACT_SHOT (2)
 * for the blocked port, TC_ACT_OK (0) otherwise, and says why with
 * bpf_trace_printk. Rebuild with `make`; the .o is committed.
 */
#define SEC(name) __attribute__((section(name), used))
#define BLOCKED_PORT 0x9999		/* 39321 */
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

struct mbuff {
	unsigned char reserved[0x40];
	unsigned long long data;	/* 0x40 */
	unsigned long long pad;
	unsigned long long data_end;	/* 0x50 */
};

static long (*bpf_trace_printk)(const char *fmt, unsigned int fmt_size, ...) = (void *)6;

static inline unsigned short ntohs(unsigned short x)
{
	return (unsigned short)((x >> 8) | (x << 8));
}

SEC(".classifier")
int block_port(struct mbuff *ctx)
{
	unsigned char *data = (unsigned char *)(long)ctx->data;
	unsigned char *end = (unsigned char *)(long)ctx->data_end;
	unsigned char *ip = data + 14, *tcp;
	unsigned short sport, dport;

	if (ip + 20 > end || data[12] != 0x08 || data[13] != 0x00)	/* IPv4 */
		return TC_ACT_OK;
	if (ip[9] != 6)							/* TCP */
		return TC_ACT_OK;
	tcp = ip + (ip[0] & 0x0f) * 4;
	if (tcp + 4 > end)
		return TC_ACT_OK;
	sport = ntohs(*(unsigned short *)tcp);
	dport = ntohs(*(unsigned short *)(tcp + 2));
	if (sport == BLOCKED_PORT || dport == BLOCKED_PORT) {
		const char fmt[] = "blocked tcp %d -> %d\n";
		bpf_trace_printk(fmt, sizeof(fmt), sport, dport);
		return TC_ACT_SHOT;
	}
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Dual MIT/GPL";
