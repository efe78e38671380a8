/**
 * Names and text helpers of the plumbing: our chain names, content hashes
 * (which make a rule's comment identify its exact content), and command
 * lines for humans.
 */

/** iptables refuses chain names of 29 characters or more. */
const MAX_CHAIN = 28;

/** FNV-1a 32-bit hash of a text, as 8 hex digits. */
export function hash8(text: string): string {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(text)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/**
 * Our iptables chain of an id: `NFQLB-<id><suffix>`; ids too long for
 * iptables' 28 characters keep their first 10 characters plus a hash of the
 * whole id, so distinct ids still get distinct chains.
 */
export function chainName(id: string, suffix = ""): string {
  const plain = `NFQLB-${id}${suffix}`;
  if (plain.length <= MAX_CHAIN) return plain;
  return `NFQLB-${id.slice(0, 10)}-${hash8(id)}${suffix}`;
}

/** Our nft table of an id (family inet). */
export function nftTableName(id: string): string {
  return `nfqlb-${id}`;
}

/** A command line for humans: arguments with spaces or quotes are double-quoted. */
export function shellLine(argv: readonly string[]): string {
  return argv.map((a) => (a === "" || /[\s"'\\$`]/.test(a) ? `"${a.replace(/(["\\$`])/g, "\\$1")}"` : a))
    .join(" ");
}
