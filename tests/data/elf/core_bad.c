/* Test object for CO-RE relocations that the target cannot satisfy: an
 * unguarded read of a field the kernel's iphdr lacks. libbpf poisons the
 * load (the kernel then refuses the program: the instruction is reachable);
 * ebpfvm poisons it too, and a run that reaches it raises
 * CoreRelocationFault. Rebuild with `make`. */
#include "core_vmlinux.h"

#define SEC(name) __attribute__((section(name), used))

struct iphdr___mine {
	__u8 ttl;
	__u32 not_in_kernel;
} __attribute__((preserve_access_index));

/* Returns 7 for a frame too short for an IPv4 header (the poisoned load is
 * not reached), else ttl + the missing field. */
SEC("xdp")
int xdp_missing(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr___mine *ip = data + 14;

	if (data + 34 > data_end)
		return 7;
	return ip->ttl + ip->not_in_kernel;
}

/* A signed 64-bit flavor of a 32-bit field: the load cannot change size
 * (sign extension would differ), so libbpf poisons it. */
struct xdp_md___signed {
	long long ingress_ifindex;
} __attribute__((preserve_access_index));

SEC("xdp")
int xdp_signed_width(struct xdp_md *ctx)
{
	return ((struct xdp_md___signed *)ctx)->ingress_ifindex;
}

char LICENSE[] SEC("license") = "GPL";
