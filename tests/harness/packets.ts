/**
 * Packet crafting for the end-to-end tests: addresses to bytes, the Internet
 * checksum, CRC32c, ICMP "fragmentation needed" (IPv4) and ICMPv6 "packet too
 * big" errors that quote a VIP→client packet, and SCTP packets. Pure
 * functions, no I/O: the agent sends what these build on raw sockets.
 */
import { IPPROTO_ICMP, PROTOCOLS } from "../../core/ip_protocols.ts";

/** Parses dotted-quad IPv4 into 4 bytes; throws on bad input. */
export function ipv4Bytes(s: string): Uint8Array {
  const parts = s.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^[0-9]{1,3}$/.test(p) && Number(p) <= 255)) {
    throw new Error(`bad IPv4 address [${s}]`);
  }
  return Uint8Array.from(parts.map(Number));
}

/** Parses an IPv6 address (RFC 4291 text, no embedded IPv4) into 16 bytes; throws on bad input. */
export function ipv6Bytes(s: string): Uint8Array {
  const words = (part: string): number[] => {
    if (part === "") return [];
    return part.split(":").map((w) => {
      if (!/^[0-9a-fA-F]{1,4}$/.test(w)) throw new Error(`bad IPv6 address [${s}]`);
      return parseInt(w, 16);
    });
  };
  const halves = s.split("::");
  if (halves.length > 2) throw new Error(`bad IPv6 address [${s}]`);
  const head = words(halves[0]);
  const tail = halves.length === 2 ? words(halves[1]) : [];
  const fill = 8 - head.length - tail.length;
  if ((halves.length === 2 && fill < 1) || (halves.length === 1 && fill !== 0)) {
    throw new Error(`bad IPv6 address [${s}]`);
  }
  const all = [...head, ...new Array(halves.length === 2 ? fill : 0).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** 4 or 6: the family of an address in text form. */
export function familyOf(addr: string): 4 | 6 {
  return addr.includes(":") ? 6 : 4;
}

/** The RFC 1071 Internet checksum of `data` (returned in host order, ready to store big-endian). */
export function inetChecksum(data: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i] << 8) | data[i + 1];
  if (data.length % 2 === 1) sum += data[data.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

let crcTable: Uint32Array | undefined;

/** CRC32c (Castagnoli), as SCTP uses it (RFC 9260 appendix A). */
export function crc32c(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const b of data) crc = crcTable[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** Fields of an IPv4 header. */
export interface Ipv4HeaderFields {
  src: string;
  dst: string;
  proto: number;
  /** Value of the total-length field. */
  totalLength: number;
  id?: number;
  ttl?: number;
  /** Compute the header checksum (default true). */
  checksum?: boolean;
  /** The flags and fragment-offset field (default 0x4000: DF). */
  fragField?: number;
}

/** A 20-byte IPv4 header with DF set (or `fragField`). */
export function ipv4Header(f: Ipv4HeaderFields): Uint8Array {
  const h = new Uint8Array(20);
  const v = new DataView(h.buffer);
  h[0] = 0x45;
  v.setUint16(2, f.totalLength);
  v.setUint16(4, f.id ?? 1);
  v.setUint16(6, f.fragField ?? 0x4000);
  h[8] = f.ttl ?? 64;
  h[9] = f.proto;
  h.set(ipv4Bytes(f.src), 12);
  h.set(ipv4Bytes(f.dst), 16);
  if (f.checksum ?? true) v.setUint16(10, inetChecksum(h));
  return h;
}

/** An IPv6 packet: the 40-byte fixed header (hop limit 64) and `payload` with next header `nh`. */
export function ipv6Packet(src: string, dst: string, nh: number, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(40 + payload.length);
  const v = new DataView(p.buffer);
  v.setUint32(0, 0x60000000);
  v.setUint16(4, payload.length);
  p[6] = nh;
  p[7] = 64;
  p.set(ipv6Bytes(src), 8);
  p.set(ipv6Bytes(dst), 24);
  p.set(payload, 40);
  return p;
}

/** The first 8 bytes of a TCP or UDP header with the given ports. */
export function l4Head(proto: "tcp" | "udp", sport: number, dport: number, udpLength = 8): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint16(0, sport);
  v.setUint16(2, dport);
  if (proto === "udp") v.setUint16(4, udpLength);
  else v.setUint32(4, 1); // TCP sequence number
  return b;
}

/** What an ICMP error quotes: the packet the VIP sent to the client. */
export interface QuotedFlow {
  /** The VIP (source of the quoted packet). */
  vip: string;
  /** The service port on the VIP. */
  vipPort: number;
  /** The client (destination of the quoted packet). */
  client: string;
  /** The client's port. */
  clientPort: number;
  proto: "tcp" | "udp";
}

/** Options of {@link icmpFragNeeded}. */
export interface FragNeededOptions {
  /** Source of the ICMP error (a router on the path; here the client itself). */
  from: string;
  /** Next-hop MTU in the error. */
  mtu?: number;
  /** Compute checksums (default true; false reproduces the frag-needed vector of tests/unit/packet_test.ts). */
  checksums?: boolean;
  /** Total-length field of the quoted header (default: its real length, 28). */
  quotedTotalLength?: number;
}

/**
 * A complete IPv4 packet (for an IPPROTO_RAW socket): ICMP type 3 code 4
 * "fragmentation needed" from `from` to the VIP, quoting the flow's VIP→client
 * packet (IPv4 header + 8 bytes of L4 header).
 */
export function icmpFragNeeded(flow: QuotedFlow, o: FragNeededOptions): Uint8Array {
  const sums = o.checksums ?? true;
  const inner = new Uint8Array(28);
  inner.set(
    ipv4Header({
      src: flow.vip,
      dst: flow.client,
      proto: PROTOCOLS[flow.proto],
      totalLength: o.quotedTotalLength ?? 28,
      checksum: sums,
    }),
    0,
  );
  inner.set(l4Head(flow.proto, flow.vipPort, flow.clientPort), 20);
  const icmp = new Uint8Array(8 + inner.length);
  const v = new DataView(icmp.buffer);
  icmp[0] = 3;
  icmp[1] = 4;
  v.setUint16(6, o.mtu ?? 1400);
  icmp.set(inner, 8);
  if (sums) v.setUint16(2, inetChecksum(icmp));
  const outer = ipv4Header({
    src: o.from,
    dst: flow.vip,
    proto: IPPROTO_ICMP,
    totalLength: 20 + icmp.length,
    checksum: sums,
  });
  const pkt = new Uint8Array(20 + icmp.length);
  pkt.set(outer, 0);
  pkt.set(icmp, 20);
  return pkt;
}

/**
 * An ICMPv6 type 2 "packet too big" message (no IPv6 header: an
 * IPPROTO_ICMPV6 raw socket adds it and the kernel fills in the checksum),
 * quoting the flow's VIP→client packet (IPv6 header + 8 bytes of L4 header).
 */
export function icmp6PacketTooBig(flow: QuotedFlow, mtu = 1280): Uint8Array {
  const inner = new Uint8Array(48);
  const iv = new DataView(inner.buffer);
  iv.setUint32(0, 0x60000000);
  iv.setUint16(4, 8);
  inner[6] = PROTOCOLS[flow.proto];
  inner[7] = 64;
  inner.set(ipv6Bytes(flow.vip), 8);
  inner.set(ipv6Bytes(flow.client), 24);
  inner.set(l4Head(flow.proto, flow.vipPort, flow.clientPort), 40);
  const msg = new Uint8Array(8 + inner.length);
  const v = new DataView(msg.buffer);
  msg[0] = 2;
  msg[1] = 0;
  v.setUint32(4, mtu);
  msg.set(inner, 8);
  return msg;
}

/**
 * An SCTP packet (common header + one INIT chunk) with a valid CRC32c, for a
 * raw socket of protocol 132 (the kernel adds the IP header).
 */
export function sctpInit(sport: number, dport: number, tag = 0x01020304): Uint8Array {
  const p = new Uint8Array(12 + 20);
  const v = new DataView(p.buffer);
  v.setUint16(0, sport);
  v.setUint16(2, dport);
  v.setUint32(4, 0); // verification tag 0 in INIT
  p[12] = 1; // INIT
  v.setUint16(14, 20); // chunk length
  v.setUint32(16, tag); // initiate tag
  v.setUint32(20, 65536); // a_rwnd
  v.setUint16(24, 1); // outbound streams
  v.setUint16(26, 1); // inbound streams
  v.setUint32(28, tag); // initial TSN
  v.setUint32(8, crc32c(p), true); // CRC32c is stored little-endian (RFC 9260 appendix A)
  return p;
}

/** Hex text of bytes (for messages and comparisons). */
export function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** A UDP datagram to be fragmented: its addresses, ports, payload and fragment id. */
export interface UdpDatagramFields {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  payload: Uint8Array;
  /** Fragment identification: IPv4 16 bits (not 0: the kernel would pick one), IPv6 32 bits. */
  id: number;
  ttl?: number;
}

/** UDP header + payload with the checksum over the IPv4 or IPv6 pseudo-header (RFC 768 / RFC 8200 §8.1). */
export function udpDatagram(f: Omit<UdpDatagramFields, "id" | "ttl">): Uint8Array {
  const len = 8 + f.payload.length;
  const udp = new Uint8Array(len);
  const v = new DataView(udp.buffer);
  v.setUint16(0, f.sport);
  v.setUint16(2, f.dport);
  v.setUint16(4, len > 0xffff ? 0 : len);
  udp.set(f.payload, 8);
  const v6 = familyOf(f.src) === 6;
  const pseudo = new Uint8Array(v6 ? 40 : 12);
  const pv = new DataView(pseudo.buffer);
  if (v6) {
    pseudo.set(ipv6Bytes(f.src), 0);
    pseudo.set(ipv6Bytes(f.dst), 16);
    pv.setUint32(32, len);
    pseudo[39] = 17;
  } else {
    pseudo.set(ipv4Bytes(f.src), 0);
    pseudo.set(ipv4Bytes(f.dst), 4);
    pseudo[9] = 17;
    pv.setUint16(10, len);
  }
  const all = new Uint8Array(pseudo.length + len);
  all.set(pseudo, 0);
  all.set(udp, pseudo.length);
  v.setUint16(6, inetChecksum(all) || 0xffff);
  return udp;
}

/** Fragment data bytes per packet for a link MTU: a multiple of 8 after the IPv4 header or IPv6 + fragment headers. */
export function fragmentDataSize(fam: 4 | 6, mtu = 1500): number {
  return Math.floor((mtu - (fam === 4 ? 20 : 48)) / 8) * 8;
}

/** How many fragments {@link udpFragments} makes of a UDP payload of `size` bytes. */
export function fragmentCount(fam: 4 | 6, size: number, mtu = 1500): number {
  return Math.ceil((8 + size) / fragmentDataSize(fam, mtu));
}

/**
 * The fragments of a UDP datagram as complete IP packets (IPv4 header, or
 * IPv6 header + fragment header), for a header-included raw socket; index 0
 * is the first fragment (the one with the UDP header). Each fits `mtu`.
 */
export function udpFragments(f: UdpDatagramFields, mtu = 1500): Uint8Array[] {
  const fam = familyOf(f.src);
  const udp = udpDatagram(f);
  const step = fragmentDataSize(fam, mtu);
  const out: Uint8Array[] = [];
  for (let off = 0; off < udp.length; off += step) {
    const data = udp.subarray(off, Math.min(udp.length, off + step));
    const more = off + step < udp.length ? 1 : 0;
    if (fam === 4) {
      const pkt = new Uint8Array(20 + data.length);
      pkt.set(
        ipv4Header({
          src: f.src,
          dst: f.dst,
          proto: 17,
          totalLength: pkt.length,
          id: f.id & 0xffff,
          ttl: f.ttl,
          fragField: (more << 13) | (off / 8),
        }),
        0,
      );
      pkt.set(data, 20);
      out.push(pkt);
    } else {
      const pkt = new Uint8Array(48 + data.length);
      const v = new DataView(pkt.buffer);
      v.setUint32(0, 0x60000000);
      v.setUint16(4, 8 + data.length);
      pkt[6] = 44; // fragment header
      pkt[7] = f.ttl ?? 64;
      pkt.set(ipv6Bytes(f.src), 8);
      pkt.set(ipv6Bytes(f.dst), 24);
      pkt[40] = 17;
      v.setUint16(42, off | more);
      v.setUint32(44, f.id >>> 0);
      pkt.set(data, 48);
      out.push(pkt);
    }
  }
  return out;
}
