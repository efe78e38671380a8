/**
 * The kernel side of connection offload (docs/conntrack.md, "Offload"): the
 * iptables rules that let packets of connections with a connmark skip the
 * NFQUEUE (and that let conntrack follow TCP under DSR), and the ctnetlink
 * call that sets a connection's connmark.
 */
import { z } from "zod";
import { lib } from "../../ffi/lib.ts";
import { NfqlbError } from "../../core/errors.ts";
import { parseIPv4, parseIPv6 } from "../../core/inet.ts";
import { KEY_LEN } from "../../core/key.ts";

/** The `-m comment` text of every offload rule, so they can be found and removed. */
export const OFFLOAD_COMMENT = "nfqlb-offload";

/** Options of {@link offloadRules}. */
export interface OffloadRulesOptions {
  /** VIPs (IPv4 or IPv6 address, optionally with a /prefix); each gets its own pair of rules. */
  vips: string[];
  /** Chain of table mangle holding the NFQUEUE rules (default PREROUTING). */
  chain?: string;
  /**
   * 1-based position of the first offload rule in the chain, per family
   * (default 1: ahead of everything, so ahead of the NFQUEUE rules).
   */
  insertAt?: number;
  /**
   * Also untrack the TCP SYNs to each VIP in table raw (default true), see
   * {@link tcpSynNotrack}. Pass false where the VIPs' traffic is DNATed on
   * this host (NAT targets): NAT is decided on a connection's first packet,
   * which must then be tracked; the replies pass the host anyway.
   */
  tcpSynNotrack?: boolean;
}

/** Argument vectors (argv[0] is `iptables` or `ip6tables`) to install and to remove the rules. */
export interface OffloadRules {
  /**
   * Run in order: `-I` at increasing positions keeps the pairs in order.
   * The mangle rules come first, then the raw ones (positions counted per
   * family and table).
   */
  add: string[][];
  /** Run in any order; each removes one rule of `add`. */
  delete: string[][];
}

const Options = z.object({
  vips: z.array(z.string()).min(1, { message: "no VIP" }),
  chain: z.string().regex(/^[A-Za-z0-9_.-]{1,28}$/, { message: "invalid chain name" }).optional(),
  insertAt: z.number().int().min(1).max(1_000_000).optional(),
  tcpSynNotrack: z.boolean().optional(),
});

/**
 * The raw-table rule (PREROUTING) that untracks the TCP SYNs to a VIP
 * (optionally one destination port or range, iptables' `--dport` text).
 *
 * Why: under DSR the replies never pass this host, so conntrack sees the
 * SYN (SYN_SENT) and then client ACKs without a SYN-ACK, which it treats as
 * INVALID: no conntrack entry, no connmark, no offload. With the SYN
 * untracked, conntrack first sees the client's first ACK and, with
 * `net.netfilter.nf_conntrack_tcp_loose=1` (the default), picks the
 * connection up mid-stream as ESTABLISHED in the client's direction, with
 * liberal window tracking; its later packets are tracked and carry the
 * connmark. The SYN itself still reaches the NFQUEUE (mangle comes after
 * raw, and queueing needs no conntrack).
 */
export function tcpSynNotrack(cidr: string, dport?: string): { matches: string[]; target: string[] } {
  return {
    matches: ["-d", cidr, "-p", "tcp", ...(dport === undefined ? [] : ["--dport", dport]), "--syn"],
    target: ["-j", "CT", "--notrack"],
  };
}

/**
 * The mangle POSTROUTING rule of `--offload=auto` for one VIP (`cidr` with
 * its prefix): it stores the mark the lb's verdict gave a connection's
 * packet in the kernel connection (`CONNMARK --save-mark`), so that the
 * restore rules ahead of the NFQUEUE rule steer the rest of the connection
 * in the kernel. Why each part:
 *
 * - POSTROUTING: after the verdict (mangle PREROUTING / OUTPUT), on
 *   forwarded and locally sent packets alike, and before conntrack confirms
 *   a new entry, so the entry goes into the table with its mark: no extra
 *   syscall, no ctnetlink message per connection.
 * - `-m conntrack --ctorigdst VIP`: the connection's original destination,
 *   which is still the VIP after a DNAT (NAT and full NAT targets) and
 *   never matches an untracked packet (the DSR TCP SYN, see
 *   {@link tcpSynNotrack}).
 * - `! -p icmp`: an ICMP error is RELATED to the connection it is about and
 *   carries its entry; it never decides it (ICMP keeps today's handling).
 * - `-m connmark --mark 0`: only connections not yet decided (a connmark
 *   set by `ct-set --offload`, or saved before, is left as it is).
 * - `-m mark ! --mark 0`: a packet the lb gave no mark (bypass while no lb
 *   listens, a dropped one never gets here) leaves the connection undecided.
 *
 * A host VIP is given without its /32 (/128): iptables-save prints it so,
 * and iptables-nft deletes a conntrack match only in the form it was added.
 */
export function saveMarkRule(cidr: string, family: 4 | 6): { matches: string[]; target: string[] } {
  const host = cidr.endsWith(family === 4 ? "/32" : "/128");
  const orig = host ? cidr.slice(0, cidr.lastIndexOf("/")) : cidr;
  return {
    // ICMP never decides a connection: an error carries the connection's own entry (RELATED)
    // cheapest test first: a packet of a connection already decided (all but the first) fails at once
    matches: [
      "!",
      "-p",
      icmpName(family),
      "-m",
      "connmark",
      "--mark",
      "0",
      "-m",
      "mark",
      "!",
      "--mark",
      "0",
      "-m",
      "conntrack",
      "--ctorigdst",
      orig,
    ],
    target: ["-j", "CONNMARK", "--save-mark"],
  };
}

/** The ICMP protocol name of a family, as iptables-save prints it. */
export function icmpName(family: 4 | 6): string {
  return family === 4 ? "icmp" : "ipv6-icmp";
}

/** `addr[/prefix]` as iptables' `-d` value with an explicit prefix, and its family. */
function parseVip(vip: string): { cidr: string; family: 4 | 6 } {
  const m = /^([^/]+)(?:\/([0-9]{1,3}))?$/.exec(vip);
  const family = m && parseIPv4(m[1]) ? 4 : m && parseIPv6(m[1]) ? 6 : undefined;
  const max = family === 4 ? 32 : 128;
  const prefix = m?.[2] === undefined ? max : Number(m[2]);
  if (!m || family === undefined || prefix > max) {
    throw new NfqlbError(`offload rules: invalid VIP '${vip}' (an IPv4 or IPv6 address, optionally /prefix)`);
  }
  return { cidr: `${m[1]}/${prefix}`, family };
}

/**
 * The rules, for each VIP in table mangle, that must come before the VIP's
 * NFQUEUE rule:
 *
 * ```
 * -d VIP ! -p icmp -m connmark ! --mark 0 -m comment --comment nfqlb-offload -j CONNMARK --restore-mark
 * -d VIP ! -p icmp -m connmark ! --mark 0 -m comment --comment nfqlb-offload -j ACCEPT
 * ```
 *
 * The first puts the connection's mark (the target's fwmark, set by
 * `ct-set --offload`) on the packet for the fwmark routing; the second ends
 * the chain for it, so the NFQUEUE rule after it never sees the packet.
 * Both test the connmark, not the packet mark, so a packet that arrives
 * with some other mark is still queued. Unless `tcpSynNotrack` is false,
 * each VIP also gets, in table raw, chain PREROUTING (from position 1):
 *
 * ```
 * -d VIP -p tcp --syn -m comment --comment nfqlb-offload -j CT --notrack
 * ```
 *
 * so that TCP connections can be offloaded under DSR ({@link tcpSynNotrack}).
 * @throws NfqlbError one line naming a bad VIP or option
 */
export function offloadRules(opts: OffloadRulesOptions): OffloadRules {
  const r = Options.safeParse(opts);
  if (!r.success) {
    const i = r.error.issues[0];
    throw new NfqlbError(`offload rules: ${i.message} (${i.path.join(".") || "options"})`);
  }
  const chain = r.data.chain ?? "PREROUTING";
  const first = r.data.insertAt ?? 1;
  const next = { 4: first, 6: first };
  const add: string[][] = [];
  const del: string[][] = [];
  const rawAdd: string[][] = [];
  const rawDel: string[][] = [];
  const nextRaw = { 4: 1, 6: 1 };
  const comment = ["-m", "comment", "--comment", OFFLOAD_COMMENT];
  for (const vip of r.data.vips) {
    const { cidr, family } = parseVip(vip);
    const ipt = family === 4 ? "iptables" : "ip6tables";
    // ICMP keeps today's handling (docs/offload.md): an error about a connection is RELATED to it and would
    // otherwise take its connmark; echo requests are queued as without offload
    const match = ["-d", cidr, "!", "-p", icmpName(family), "-m", "connmark", "!", "--mark", "0", ...comment];
    for (const target of [["-j", "CONNMARK", "--restore-mark"], ["-j", "ACCEPT"]]) {
      add.push([ipt, "-w", "-t", "mangle", "-I", chain, String(next[family]++), ...match, ...target]);
      del.push([ipt, "-w", "-t", "mangle", "-D", chain, ...match, ...target]);
    }
    if (r.data.tcpSynNotrack ?? true) {
      const { matches, target } = tcpSynNotrack(cidr);
      const spec = [...matches, ...comment, ...target];
      rawAdd.push([ipt, "-w", "-t", "raw", "-I", "PREROUTING", String(nextRaw[family]++), ...spec]);
      rawDel.push([ipt, "-w", "-t", "raw", "-D", "PREROUTING", ...spec]);
    }
  }
  return { add: [...add, ...rawAdd], delete: [...del, ...rawDel] };
}

const ERRNO_TEXT: Record<number, string> = {
  1: "Operation not permitted",
  2: "no such kernel conntrack entry",
  13: "Permission denied",
  22: "Invalid argument",
  93: "Protocol not supported",
  97: "Address family not supported",
  110: "no answer from the kernel",
};

/** Text for a -errno of {@link setKernelConnmark}. */
export function connmarkErrorText(rc: number): string {
  return ERRNO_TEXT[-rc] ?? `errno ${-rc}`;
}

/** -ENOENT: the kernel tracks no connection with that tuple. */
export const ENOENT = -2;

/**
 * Sets the mark of the kernel conntrack entry of the flow `key` (a 40-byte
 * key, core/key.ts; TCP, UDP or SCTP) in this process's network
 * namespace, without creating one. Returns 0 or -errno ({@link ENOENT}:
 * no such entry; -EPERM without CAP_NET_ADMIN).
 */
export function setKernelConnmark(key: Uint8Array, mark: number): number {
  if (key.length !== KEY_LEN) throw new NfqlbError(`offload: key of ${key.length} bytes (want ${KEY_LEN})`);
  if (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff) {
    throw new NfqlbError(`offload: invalid connmark '${mark}'`);
  }
  return lib().nfqlb_ctnl_set_mark(new Uint8Array(key), KEY_LEN, mark);
}
