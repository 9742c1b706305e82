/* Test object for SkbRunner: a socket filter reading the packet with legacy
 * loads (LD_ABS) and a tc program that prints, sets tunnel metadata, clones
 * and redirects. Rebuild with `make` (clang with the BPF target); the .o is
 * committed. */
#define SEC(name) __attribute__((section(name), used))

struct __sk_buff {
	unsigned int len, pkt_type, mark, queue_mapping, protocol, vlan_present, vlan_tci,
		vlan_proto, priority, ingress_ifindex, ifindex, tc_index, cb[5];
};

struct bpf_tunnel_key {
	unsigned int tunnel_id;
	unsigned int remote_ipv4[4];
	unsigned char tunnel_tos, tunnel_ttl;
	unsigned short tunnel_ext;
	unsigned int tunnel_label;
	unsigned int local_ipv4[4];
};

unsigned long long load_byte(void *skb, unsigned long long off) asm("llvm.bpf.load.byte");
unsigned long long load_half(void *skb, unsigned long long off) asm("llvm.bpf.load.half");

static long (*bpf_trace_printk)(const char *fmt, unsigned int size, ...) = (void *)6;
static long (*bpf_clone_redirect)(struct __sk_buff *skb, unsigned int ifindex,
				  unsigned long long flags) = (void *)13;
static long (*bpf_redirect)(unsigned int ifindex, unsigned long long flags) = (void *)23;
static long (*bpf_skb_set_tunnel_key)(struct __sk_buff *skb, struct bpf_tunnel_key *key,
				      unsigned int size, unsigned long long flags) = (void *)21;

/* Keep the whole packet when it is IPv4 with protocol UDP, else drop it. */
SEC("socket")
int udp_filter(struct __sk_buff *skb)
{
	if ((load_byte(skb, 0) >> 4) != 4 || load_byte(skb, 9) != 17)
		return 0;
	return skb->len;
}

SEC("tc")
int tunnel_out(struct __sk_buff *skb)
{
	char fmt[] = "len %d mark %d";
	struct bpf_tunnel_key key = {};

	bpf_trace_printk(fmt, sizeof(fmt), skb->len, skb->mark);
	key.tunnel_id = 42;
	key.remote_ipv4[0] = 0x0100000a;
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0))
		return 2;
	bpf_clone_redirect(skb, 3, 1);
	skb->cb[0] = 7;
	skb->priority = 9;
	return bpf_redirect(5, 0);
}

char _license[] SEC("license") = "GPL";
