/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * SCTP port rewrites. SCTP's checksum is CRC32c over the SCTP packet alone
 * (RFC 9260 appendix A): no pseudo header, so a new address changes nothing
 * in it, but a new port does. Recomputing the CRC over the whole packet
 * would cost a pass over every byte; instead it is updated: CRC is linear
 * over GF(2), so for two packets of equal length that differ only in the
 * four port bytes at the front,
 *
 *   crc(new) = crc(old) ^ crc0(delta) * x^(8 * (len - 4)) mod P
 *
 * where crc0 is the CRC without its initial and final inversion (they
 * cancel) and the multiplication carries the delta through the len - 4
 * bytes that follow. x^(8n) is built by squaring (a table of x^(2^k)), the
 * way zlib's crc32_combine works: 16 multiplications of 32 steps at most,
 * whatever the packet's length.
 *
 * The checksum field holds the CRC least significant byte first (Linux's
 * sctp_compute_cksum stores cpu_to_le32), so it is read and written as a
 * little-endian u32, which is the BPF target's order.
 *
 * A field of zero is left alone: that is an SCTP stack that offloads the
 * CRC (CHECKSUM_PARTIAL, csum_not_inet), and the CRC is computed after us
 * from the bytes as we leave them. (A real CRC of zero is 1 in 2^32.)
 */
#ifndef WEIR_SCTP_H
#define WEIR_SCTP_H

#include "parse.h"

#define CRC32C_POLY 0x82f63b78 /* reflected: bit 31 is x^0 */
#define SCTP_CSUM_OFF 8 /* struct sctphdr: source, dest, vtag, checksum */

/* x^(2^k) mod P for k = 3..18: x^(8n) for any n < 2^16 (an IPv4 total or IPv6 payload length). */
static const __u32 crc32c_x2n[16] = {
	0x00800000, 0x00008000, 0x82f63b78, 0x6ea2d55c, 0x18b8ea18, 0x510ac59a, 0xb82be955, 0xb8fdb1e7,
	0x88e56f72, 0x74c360a4, 0xe4172b16, 0x0d65762a, 0x35d73a62, 0x28461564, 0xbf455269, 0xe2ea32dc,
};

/* a * b mod P, in the reflected representation. */
static __always_inline __u32 crc32c_mulmod(__u32 a, __u32 b)
{
	__u32 p = 0;

	for (int i = 0; i < 32; i++) {
		if (a & (0x80000000u >> i))
			p ^= b;
		b = (b >> 1) ^ (CRC32C_POLY & -(b & 1));
	}
	return p;
}

/* What the CRC field changes by when the first 4 bytes of a len-byte SCTP packet change by delta (wire order, read LE).
 */
static __always_inline __u32 crc32c_port_delta(__u32 delta, __u32 len)
{
	__u32 c = delta, shift = 0x80000000u; /* x^0 */
	__u32 n = len - 4;

	/* crc0 of the 4 delta bytes: they enter the register as one LE word. */
	for (int i = 0; i < 32; i++)
		c = (c >> 1) ^ (CRC32C_POLY & -(c & 1));
	for (int k = 0; k < 16; k++) {
		if (n & (1u << k))
			shift = crc32c_mulmod(crc32c_x2n[k], shift);
	}
	return crc32c_mulmod(c, shift);
}

/*
 * Write the source (is_src) or destination port of an SCTP packet and
 * update its CRC32c. Through helpers with BPF_F_RECOMPUTE_CSUM: unlike a
 * TCP/UDP port change, nothing in the packet compensates in a
 * CHECKSUM_COMPLETE sum. 0 on success.
 *
 * A global function, verified once on its own (kernel 5.6+): inlined at
 * every NAT site of every program, its loops and branches multiplied the
 * verifier's work about fivefold and the programs' load time with it.
 * Hence scalar arguments only, besides the context, and at most five:
 * ports holds the old port in its low 16 bits and the new one above.
 *
 * Both families: ihl is the length of everything from the IP header to
 * the SCTP header (IPv4 header with options; IPv6 header with extension
 * headers), and the SCTP packet's length is the IPv4 total length, or the
 * IPv6 payload length plus its fixed header, less that.
 */
__attribute__((noinline)) int sctp_set_port(struct __sk_buff *skb, __u32 l4_off, __u32 ihl, __u32 is_src, __u32 ports)
{
	__be16 old_port = (__be16)ports;
	__be16 new_port = (__be16)(ports >> 16);
	/* The changed bytes as the LE word the CRC reads: source port at bytes 0-1, destination at 2-3. */
	__u32 delta = (__u16)(old_port ^ new_port);
	__u32 sctp_len;
	__u8 l3[6]; /* version, then the IPv4 total length at 2 or the IPv6 payload length at 4 */
	__u32 crc;

	if (old_port == new_port)
		return 0;
	if (!is_src)
		delta <<= 16;
	if (l4_off > 0xffff)
		return -1;
	if (bpf_skb_load_bytes(skb, L3_OFF, l3, sizeof(l3)) ||
	    bpf_skb_load_bytes(skb, l4_off + SCTP_CSUM_OFF, &crc, sizeof(crc)))
		return -1;
	if (bpf_skb_store_bytes(skb, l4_off + (is_src ? 0 : 2), &new_port, sizeof(new_port), BPF_F_RECOMPUTE_CSUM))
		return -1;
	if (!crc)
		return 0;
	if ((l3[0] >> 4) == 6)
		sctp_len = ((__u32)l3[4] << 8 | l3[5]) + 40 - ihl;
	else
		sctp_len = ((__u32)l3[2] << 8 | l3[3]) - ihl;
	if (sctp_len < 12 || sctp_len > 0xffff)
		return -1; /* no SCTP common header: nothing to update */
	crc ^= crc32c_port_delta(delta, sctp_len);
	return bpf_skb_store_bytes(skb, l4_off + SCTP_CSUM_OFF, &crc, sizeof(crc), BPF_F_RECOMPUTE_CSUM) ? -1 : 0;
}

#endif
