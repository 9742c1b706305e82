/* Test object for global data: .rodata, .data and .bss, read and written by
 * the program through lddw relocations (R_BPF_64_64). Rebuild with `make`. */
#define SEC(name) __attribute__((section(name), used))

const volatile unsigned int limit = 100;     /* .rodata: set before the run */
unsigned long long counter = 7;              /* .data */
unsigned long long seen;                     /* .bss */
static const char greeting[] = "hello";      /* .rodata.str / .rodata */

SEC("xdp")
int count(unsigned char *data)
{
	counter += data[0];
	seen = greeting[1];                  /* 'e' */
	return counter > limit ? 1 : 0;
}

char _license[] SEC("license") = "Dual MIT/GPL";
