/* Test object for the ELF loader: two programs in their own sections calling
 * subprograms in .text (one static, one global), as bpf-to-bpf calls.
 * Rebuild with `make` (clang with the BPF target); the .o is committed. */
#define SEC(name) __attribute__((section(name), used))

static __attribute__((noinline)) int add3(int a, int b, int c)
{
	return a + b + c;
}

__attribute__((noinline)) int twice(int x)
{
	return x * 2;
}

SEC("xdp")
int sum_twice(unsigned char *data)
{
	/* 2 * (data[0] + data[1] + data[2]) + (1 + 2 + 3) */
	return twice(add3(data[0], data[1], data[2])) + add3(1, 2, 3);
}

SEC("socket")
int first_plus_ten(unsigned char *data)
{
	return add3(data[0], 4, 6);
}

char _license[] SEC("license") = "Dual MIT/GPL";
