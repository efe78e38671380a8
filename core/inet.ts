/**
 * Address text → bytes, strictly (RFC 4291 text forms, dotted-quad IPv4).
 * IPv4 becomes IPv4-mapped IPv6 (::ffff:a.b.c.d), as upstream's keys hold it.
 * And bytes → text the way glibc's inet_ntop prints it.
 */

/** Parses dotted-quad IPv4 into 4 bytes, or undefined. */
export function parseIPv4(s: string): Uint8Array | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^[0-9]{1,3}$/.test(parts[i])) return undefined;
    const n = Number(parts[i]);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

/** Parses an IPv6 address (with optional embedded IPv4 tail) into 16 bytes, or undefined. */
export function parseIPv6(s: string): Uint8Array | undefined {
  if (s.length === 0 || s.length > 45) return undefined;
  const out = new Uint8Array(16);
  let head = s, tail = "";
  const dbl = s.indexOf("::");
  if (dbl >= 0) {
    if (s.indexOf("::", dbl + 1) >= 0) return undefined;
    head = s.slice(0, dbl);
    tail = s.slice(dbl + 2);
  }
  const groups = (part: string): number[] | undefined => {
    if (part === "") return [];
    const words: number[] = [];
    const items = part.split(":");
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      if (i === items.length - 1 && it.includes(".")) {
        const v4 = parseIPv4(it);
        if (!v4) return undefined;
        words.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(it)) return undefined;
        words.push(parseInt(it, 16));
      }
    }
    return words;
  };
  const h = groups(head), t = groups(tail);
  if (!h || !t) return undefined;
  if (dbl < 0 && h.length !== 8) return undefined;
  if (dbl >= 0 && h.length + t.length > 7) return undefined;
  // an embedded IPv4 may only be last
  if (dbl >= 0 && head.includes(".")) return undefined;
  const words = [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** IPv6 text as glibc's inet_ntop(AF_INET6) writes it (so IPv4-mapped as `::ffff:a.b.c.d`). */
export function formatIPv6(a: Uint8Array): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push((a[2 * i] << 8) | a[2 * i + 1]);
  // the longest run of zero words (first on ties), if at least 2 long
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) best = -1;
  let out = "";
  for (let i = 0; i < 8; i++) {
    if (best >= 0 && i >= best && i < best + bestLen) {
      if (i === best) out += ":";
      continue;
    }
    if (i !== 0) out += ":";
    // an encapsulated IPv4 (::a.b.c.d or ::ffff:a.b.c.d)
    if (i === 6 && best === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
      out += `${a[12]}.${a[13]}.${a[14]}.${a[15]}`;
      break;
    }
    out += w[i].toString(16);
  }
  if (best >= 0 && best + bestLen === 8) out += ":";
  return out;
}

/** IPv4-mapped IPv6 bytes of an IPv4 address. */
export function mapIPv4(v4: Uint8Array): Uint8Array {
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(v4, 12);
  return out;
}

/** An address and port as upstream's `fwmark --src/--dst` take them. */
export interface AddrPort {
  /** 16 bytes, IPv4 mapped. */
  addr: Uint8Array;
  /** Port, host order. */
  port: number;
}

/**
 * Parses `[ipv6]:port` (an optional `%scope` is accepted and ignored) or
 * `a.b.c.d:port`, with upstream's error texts.
 * @throws Error `Address too long [s]` / `No port in [s]` / `Parse address failed [s]`
 */
export function parseAddrPort(s: string): AddrPort {
  if (s.length > 60) throw new Error(`Address too long [${s}]`);
  const colon = s.lastIndexOf(":");
  if (colon < 0) throw new Error(`No port in [${s}]`);
  const host = s.slice(0, colon), portText = s.slice(colon + 1);
  const fail = () => new Error(`Parse address failed [${s}]`);
  if (!/^[0-9]{1,5}$/.test(portText) || Number(portText) > 65535) throw fail();
  let addr: Uint8Array | undefined;
  if (host.startsWith("[") && host.endsWith("]")) {
    const inner = host.slice(1, -1).replace(/%[A-Za-z0-9_.-]+$/, "");
    addr = parseIPv6(inner);
  } else {
    const v4 = parseIPv4(host);
    addr = v4 ? mapIPv4(v4) : undefined;
  }
  if (!addr) throw fail();
  return { addr, port: Number(portText) };
}
