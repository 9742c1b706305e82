/* The capture walker and tally (issue 15 point 3), in restricted C run as
 * eBPF by the engine (see docs/NATIVE: one implementation for every engine).
 *
 * walk:  r1 = struct walk. Walks pcap records or pcapng packet blocks from
 *        w->pos in the capture's bytes (read-only), and lays each packet out
 *        in the chunk buffer as capture.py does: its slot (a struct xdp_md and
 *        zeros, when slot is 32), the packet, padding to 8 bytes; its span
 *        (offset, length) and its timestamp in microseconds. Stops when the
 *        chunk is full (status FULL), when the bytes end (END), or at a
 *        record it leaves to Python (OTHER: a section header, an interface
 *        description, anything odd or broken). Returns the packets laid out.
 * tally: r1 = struct tally. Counts the chunk's verdicts (r0 < NCOUNTS) and
 *        writes the packets that pass (and those sent back, XDP_TX) as pcap
 *        records into the output buffers, from where the xdp_md says the
 *        packet is now.
 *
 * Every loop is bounded; every access stays inside the memory Python hands
 * (the walker checks record lengths against the window and the chunk). */

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define SEC(name) __attribute__((section(name), used))

#define MAX_PACKET 65535
#define MAX_IFACES 16
#define NCOUNTS 16
#define PCAP_RECORD 16
#define USEC 1000000ULL

enum { FULL = 0, END = 1, OTHER = 2 };
enum { PCAP = 0, PCAPNG = 1 };
enum { EPB = 6, SPB = 3 };

struct walk {
	u64 win;          /* the capture's bytes */
	u64 win_len;
	u64 pos;          /* in: where to start; out: where it stopped */
	u64 chunk;        /* the chunk buffer */
	u64 chunk_cap;
	u64 max_packets;
	u64 slot;         /* 0 or 32: the xdp_md before each packet */
	u64 format;
	u64 swap;
	u64 packets;      /* in/out: packets in the chunk */
	u64 used;         /* in/out: chunk bytes used */
	u64 status;       /* out */
	u64 spans;        /* (offset, length) per packet */
	u64 stamps;       /* per packet: seconds, microseconds (u32 each) */
	u64 nifaces;
	u64 snaplen;      /* pcapng: interface 0's (simple packet blocks); 0: none */
	u64 units[MAX_IFACES]; /* per interface, units per second; 0: Python reads it */
	u64 offset[MAX_IFACES]; /* per interface, seconds added */
};

struct tally {
	u64 packets;
	u64 results;      /* r0 per packet */
	u64 spans;
	u64 stamps;
	u64 chunk;
	u64 slot;
	u64 pass_any;     /* 1: r0 != 0 passes; 0: (u32)r0 == passing */
	u64 passing;
	u64 tx;           /* 1: write XDP_TX (r0 == 3) packets to out2 */
	u64 out;          /* pcap records of passed packets; 0: none */
	u64 out_len;      /* out: bytes written */
	u64 out2;
	u64 out2_len;
	u64 other;        /* out: packets whose r0 >= NCOUNTS */
	u64 out_count;    /* out: records in out */
	u64 out2_count;   /* out: records in out2 */
	u64 counts[NCOUNTS];
};

#define INLINE static inline __attribute__((always_inline))

INLINE u32 load32(const u8 *p, u64 swap)
{
	u32 v = *(const u32 *)p;
	return swap ? __builtin_bswap32(v) : v;
}

INLINE u64 pad4(u64 n)
{
	return (n + 3) & ~3ULL;
}

/* Copies n bytes by 32-byte strides when the source's next 32-byte bound
 * lies in the window (the chunk keeps 32 bytes to spare after each packet's
 * 8-byte padding for the last stride), else by bytes. */
INLINE void copy(u8 *dst, const u8 *src, u64 n, const u8 *win_end)
{
	u64 i;

	if (src + ((n + 31) & ~31ULL) <= win_end) {
		for (i = 0; i < n; i += 32) {
			u64 a = *(const u64 *)(src + i), b = *(const u64 *)(src + i + 8);
			u64 c = *(const u64 *)(src + i + 16), d = *(const u64 *)(src + i + 24);

			*(u64 *)(dst + i) = a;
			*(u64 *)(dst + i + 8) = b;
			*(u64 *)(dst + i + 16) = c;
			*(u64 *)(dst + i + 24) = d;
		}
		return;
	}
	for (i = 0; i < n; i++)
		dst[i] = src[i];
}

/* The chunk being filled, in registers while a walk lasts. */
struct fill {
	u8 *chunk;
	u64 *spans;
	u64 *stamps;
	u64 used, packets, cap, max, slot;
};

/* Lays one packet out; 0 when the chunk has no room for it. `stamp` is
 * the timestamp as the pcap record header holds it (seconds, microseconds). */
INLINE int lay_out(struct fill *f, const u8 *src, u64 caplen, u64 stamp, const u8 *end)
{
	u64 offset = f->used, n = f->packets;
	u64 size = (f->slot + caplen + 7) & ~7ULL;
	u64 data;

	if (n >= f->max || offset + size > f->cap)
		return 0;
	data = (u64)f->chunk + offset + f->slot;
	if (f->slot) {
		u64 *md = (u64 *)(f->chunk + offset);

		md[0] = (data & 0xffffffffULL) | ((data + caplen) << 32);
		md[1] = (data & 0xffffffffULL) | (1ULL << 32);
		md[2] = 0;
		md[3] = 0;
	}
	copy(f->chunk + offset + f->slot, src, caplen, end);
	f->spans[2 * n] = offset;
	f->spans[2 * n + 1] = f->slot + caplen;
	f->stamps[n] = stamp;
	f->used = offset + size;
	f->packets = n + 1;
	return 1;
}

/* (seconds + offset, microseconds rounded half up) of a fraction below one
 * second, as one u64: the record header's first two fields. */
INLINE u64 stamp_of(u64 sec, u64 frac, u64 per_second)
{
	u64 usec = frac;

	if (per_second != USEC)
		usec = (frac * 2 * USEC + per_second) / (2 * per_second);
	if (usec >= USEC) {
		sec += 1;
		usec -= USEC;
	}
	return (sec & 0xffffffffULL) | (usec << 32);
}

INLINE void fill_start(struct fill *f, struct walk *w)
{
	f->chunk = (u8 *)w->chunk;
	f->spans = (u64 *)w->spans;
	f->stamps = (u64 *)w->stamps;
	f->used = w->used;
	f->packets = w->packets;
	f->cap = w->chunk_cap;
	f->max = w->max_packets;
	f->slot = w->slot;
}

INLINE u64 walk_pcap(struct walk *w, const u8 *win, const u8 *end)
{
	u64 pos = w->pos, per_second = w->units[0], swap = w->swap, status = FULL;
	struct fill f;

	fill_start(&f, w);
	for (;;) {
		const u8 *rec = win + pos;
		u64 caplen, sec, frac;

		if (end - rec < PCAP_RECORD) {
			status = END;
			break;
		}
		caplen = load32(rec + 8, swap);
		sec = load32(rec, swap);
		frac = load32(rec + 4, swap);
		if (caplen > MAX_PACKET || frac >= per_second) {
			status = OTHER;
			break;
		}
		if ((u64)(end - rec) < PCAP_RECORD + caplen) {
			status = END;
			break;
		}
		if (!lay_out(&f, rec + PCAP_RECORD, caplen, stamp_of(sec, frac, per_second), end))
			break;
		pos += PCAP_RECORD + caplen;
	}
	w->pos = pos;
	w->used = f.used;
	w->packets = f.packets;
	return status;
}

/* One packet block at rec (its length and trailer checked): END to go on,
 * FULL, or OTHER when Python must read it. */
INLINE u64 pcapng_packet(struct walk *w, struct fill *f, const u8 *rec, u64 total,
			 const u8 *end, u64 swap)
{
	u32 kind = load32(rec, swap);
	u64 caplen, iface = 0, stamp = 0, start;

	if (kind == EPB) {
		if (total < 32)
			return OTHER;
		iface = load32(rec + 8, swap);
		caplen = load32(rec + 20, swap);
		start = 28;
		if (iface >= w->nifaces || iface >= MAX_IFACES || !w->units[iface & (MAX_IFACES - 1)])
			return OTHER;
	} else {
		u64 length;

		if (total < 16 || w->nifaces == 0 || !w->units[0])
			return OTHER;
		length = load32(rec + 8, swap);
		caplen = total - 16 < length ? total - 16 : length;
		if (w->snaplen && w->snaplen < caplen)
			caplen = w->snaplen;
		start = 12;
	}
	if (caplen > MAX_PACKET || start + pad4(caplen) + 4 > total)
		return OTHER;
	if (kind == EPB) {
		u64 idx = iface & (MAX_IFACES - 1), per_second = w->units[idx];
		u64 units = ((u64)load32(rec + 12, swap) << 32) | load32(rec + 16, swap);

		stamp = stamp_of(units / per_second + w->offset[idx], units % per_second, per_second);
	}
	return lay_out(f, rec + start, caplen, stamp, end) ? END : FULL;
}

INLINE u64 walk_pcapng(struct walk *w, const u8 *win, const u8 *end)
{
	u64 pos = w->pos, swap = w->swap, status;
	struct fill f;

	fill_start(&f, w);
	for (;;) {
		const u8 *rec = win + pos;
		u64 total, kind;

		if (end - rec < 12) {
			status = END;
			break;
		}
		kind = load32(rec, swap);
		total = load32(rec + 4, swap);
		if (total < 12 || (total & 3) || total > 262144 + 65536) {
			status = OTHER;
			break;
		}
		if ((u64)(end - rec) < total) {
			status = END;
			break;
		}
		if (load32(rec + total - 4, swap) != total) {
			status = OTHER;
			break;
		}
		if (kind == EPB || kind == SPB) {
			status = pcapng_packet(w, &f, rec, total, end, swap);
			if (status != END)
				break;
		} else if (kind == 0x0A0D0D0A || kind == 1 || kind == 2) {
			status = OTHER;
			break;
		}
		pos += total;
	}
	w->pos = pos;
	w->used = f.used;
	w->packets = f.packets;
	return status;
}

SEC("walk") long capture_walk(struct walk *w)
{
	const u8 *win = (const u8 *)w->win;
	const u8 *end = win + w->win_len;

	if (w->pos > w->win_len) {
		w->status = OTHER;
		return 0;
	}
	if (w->format == PCAP)
		w->status = walk_pcap(w, win, end);
	else
		w->status = walk_pcapng(w, win, end);
	return w->packets;
}

/* Appends one pcap record (its stamp, caplen = len), copying by words:
 * the output buffer and the chunk have 8 bytes to spare. */
INLINE u64 record(u8 *out, u64 at, const u8 *data, u64 len, u64 stamp)
{
	u64 i;

	*(u64 *)(out + at) = stamp;
	*(u64 *)(out + at + 8) = len | (len << 32);
	out += at + PCAP_RECORD;
	for (i = 0; i < len; i += 16) {
		u64 a = *(const u64 *)(data + i), b = *(const u64 *)(data + i + 8);

		*(u64 *)(out + i) = a;
		*(u64 *)(out + i + 8) = b;
	}
	return at + PCAP_RECORD + len;
}

SEC("tally") long capture_tally(struct tally *t)
{
	const u64 *results = (const u64 *)t->results;
	const u64 *spans = (const u64 *)t->spans;
	const u64 *stamps = (const u64 *)t->stamps;
	u64 packets = t->packets, chunk = t->chunk, slot = t->slot, pass_any = t->pass_any;
	u32 passing = t->passing;
	u8 *out = (u8 *)t->out, *out2 = (u8 *)t->out2;
	u64 tx = t->tx, i, other = 0, out_len = 0, out2_len = 0, written = 0, sent_back = 0;
	u64 counts[NCOUNTS] = {};

	for (i = 0; i < packets; i++) {
		u64 r0 = results[i], start = chunk + spans[2 * i];
		u64 data, data_end;
		int pass, sent;

		if (r0 < NCOUNTS)
			counts[r0 & (NCOUNTS - 1)]++;
		else
			other++;
		pass = out && (pass_any ? r0 != 0 : (u32)r0 == passing);
		sent = tx && r0 == 3;
		if (!pass && !sent)
			continue;
		data = start + slot;
		data_end = start + spans[2 * i + 1];
		if (slot) { /* where the program left the packet, when inside its span */
			const u32 *md = (const u32 *)start;

			if (md[0] >= data && md[0] <= md[1] && md[1] <= data_end) {
				data = md[0];
				data_end = md[1];
			}
		}
		if (pass) {
			out_len = record(out, out_len, (const u8 *)data, data_end - data, stamps[i]);
			written++;
		}
		if (sent) {
			out2_len = record(out2, out2_len, (const u8 *)data, data_end - data, stamps[i]);
			sent_back++;
		}
	}
	for (i = 0; i < NCOUNTS; i++)
		t->counts[i] = counts[i];
	t->other = other;
	t->out_len = out_len;
	t->out2_len = out2_len;
	t->out_count = written;
	t->out2_count = sent_back;
	return packets;
}

char LICENSE[] SEC("license") = "Dual MIT/Apache-2.0";
