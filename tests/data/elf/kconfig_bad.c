/* Test object: a .kconfig extern ebpfvm does not know, not __weak (a load
 * error naming it). Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __kconfig __attribute__((section(".kconfig")))

extern int CONFIG_NOT_KNOWN __kconfig;

SEC("xdp")
int unknown(void *ctx)
{
	return CONFIG_NOT_KNOWN;
}

char _license[] SEC("license") = "GPL";
