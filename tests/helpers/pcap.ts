/** Minimal pcap reader for the Ethernet captures in tests/testdata/pcap. */

/** One captured packet, Ethernet header removed. */
export interface PcapPacket {
  /** Ethertype (0x0800 IPv4, 0x86dd IPv6) = NFQUEUE hw_protocol. */
  hwProto: number;
  /** The IP packet. */
  data: Uint8Array<ArrayBuffer>;
}

/** Reads a little- or big-endian classic pcap file with link type Ethernet. */
export function readPcap(path: string): PcapPacket[] {
  const buf = Deno.readFileSync(path);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = v.getUint32(0, true);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && v.getUint32(0, false) !== 0xa1b2c3d4 && v.getUint32(0, false) !== 0xa1b23c4d) {
    throw new Error(`${path}: not a pcap file`);
  }
  if (v.getUint32(20, le) !== 1) throw new Error(`${path}: link type is not Ethernet`);
  const out: PcapPacket[] = [];
  for (let off = 24; off + 16 <= buf.length;) {
    const incl = v.getUint32(off + 8, le);
    const start = off + 16;
    if (start + incl > buf.length) break;
    const frame = buf.slice(start, start + incl);
    let type = (frame[12] << 8) | frame[13];
    let l2 = 14;
    if (type === 0x8100) {
      type = (frame[16] << 8) | frame[17];
      l2 = 18;
    }
    out.push({ hwProto: type, data: frame.slice(l2) });
    off = start + incl;
  }
  return out;
}

/** Hex string → bytes. */
export function hex(s: string): Uint8Array<ArrayBuffer> {
  const clean = s.replace(/\s+/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}
