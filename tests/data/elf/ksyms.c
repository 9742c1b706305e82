/* Test object for .ksyms externs and kfuncs (issue 13, point 6). Rebuild
 * with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __ksym __attribute__((section(".ksyms")))
#define __weak __attribute__((weak))
#define bpf_ksym_exists(sym) (!!(sym))

struct xdp_md;
struct __sk_buff;

extern const void bpf_prog_active __ksym __weak;
extern const void bpf_link_fops __ksym;
extern int bpf_xdp_metadata_rx_hash(const struct xdp_md *ctx, unsigned int *hash,
				    unsigned int *rss_type) __ksym;
extern int bpf_xdp_metadata_rx_timestamp(const struct xdp_md *ctx,
					 unsigned long long *timestamp) __ksym;
extern int bpf_not_a_kfunc(const struct xdp_md *ctx) __ksym __weak;
extern int bpf_skb_get_fou_encap(struct __sk_buff *skb, void *encap) __ksym;

int rx_hash_result;
unsigned long long rx_timestamp_result;

SEC("xdp")
int weak_ksym(struct xdp_md *ctx)
{
	return bpf_ksym_exists(&bpf_prog_active) ? 1 : 2;
}

SEC("xdp")
int weak_kfunc(struct xdp_md *ctx)
{
	if (bpf_ksym_exists(bpf_not_a_kfunc))
		return bpf_not_a_kfunc(ctx);
	return 2;
}

SEC("xdp")
int metadata(struct xdp_md *ctx)
{
	unsigned int hash = 7, type = 7;
	unsigned long long stamp = 7;

	rx_hash_result = bpf_xdp_metadata_rx_hash(ctx, &hash, &type);
	rx_timestamp_result = bpf_xdp_metadata_rx_timestamp(ctx, &stamp);
	return hash == 7 && type == 7 && stamp == 7 ? 2 : 0;
}

SEC("tc")
int metadata_in_tc(struct __sk_buff *skb)
{
	unsigned int hash, type;

	return bpf_xdp_metadata_rx_hash((void *)skb, &hash, &type);
}

SEC("tc")
int fou(struct __sk_buff *skb)
{
	char encap[8];

	return bpf_skb_get_fou_encap(skb, encap);
}

SEC("xdp")
int strong_ksym(struct xdp_md *ctx)
{
	return (long)&bpf_link_fops & 1;
}

char _license[] SEC("license") = "GPL";
