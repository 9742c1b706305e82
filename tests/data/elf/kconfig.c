/* Test object for .kconfig externs (issue 13). Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))
#define __kconfig __attribute__((section(".kconfig")))
#define __weak __attribute__((weak))

extern unsigned int LINUX_KERNEL_VERSION __kconfig;
extern int CONFIG_HZ __kconfig;
extern unsigned long long CONFIG_NOT_KNOWN __kconfig __weak;

SEC("xdp")
int version(void *ctx)
{
	return LINUX_KERNEL_VERSION >> 8;	/* 6.18 -> 0x612 */
}

SEC("xdp")
int hz(void *ctx)
{
	return CONFIG_HZ + CONFIG_NOT_KNOWN;
}

char _license[] SEC("license") = "GPL";
