/**
 * The nft backend of the NFQUEUE rules, used only where the kernel's
 * nf_tables has the `queue` expression (nft_queue): one table
 * `inet nfqlb-<id>` with a base chain per hook (priority mangle) that jumps
 * VIP traffic into chain `vip` (offload rules, then the queue rules). The
 * table's comment `nfqlb:<id> <hash>` identifies its exact content. The
 * other plumbing stays iptables.
 */
import { runCommand } from "./exec.ts";
import { hash8, nftTableName, shellLine } from "./names.ts";
import type { PlumbingObject } from "./spec.ts";
import { tagOf } from "./spec.ts";
import { dportText, type NormalSpec } from "./validate.ts";

/** The `queue` statement of a spec. */
function queueStatement(s: NormalSpec): string {
  const [a, b] = s.queue;
  return `queue num ${a === b ? a : `${a}-${b}`}${s.bypass ? " bypass" : ""}`;
}

/** The nft script (without the table comment) of a spec's queue rules. */
function scriptBody(s: NormalSpec): string[] {
  const out: string[] = [];
  const daddr = (family: 4 | 6, cidr: string) => `${family === 4 ? "ip" : "ip6"} daddr ${cidr}`;
  for (const hook of s.hooks) {
    // the output chain must be of type route so that a new mark re-routes local packets
    const type = hook === "output" ? "route" : "filter";
    out.push(`\tchain ${hook} {`, `\t\ttype ${type} hook ${hook} priority mangle; policy accept;`);
    // output: a local packet with a mark of its own (a health check routed by a DSR target's fwmark) is not
    // queued, as in the iptables form
    const unmarked = hook === "output" ? "meta mark 0 " : "";
    for (const v of s.vips) out.push(`\t\t${unmarked}${daddr(v.family, v.cidr)} jump vip`);
    out.push("\t}");
  }
  out.push("\tchain vip {");
  if (s.offload) out.push("\t\tct mark != 0 meta mark set ct mark", "\t\tct mark != 0 accept");
  const q = queueStatement(s);
  for (const v of s.vips) {
    if (v.ports.length === 0) out.push(`\t\t${daddr(v.family, v.cidr)} ${q}`);
    for (const p of v.ports) {
      const l4 = p.first === null ? `meta l4proto ${p.protocol}` : `${p.protocol} dport ${dportText(p, "-")}`;
      out.push(`\t\t${daddr(v.family, v.cidr)} ${l4} ${q}`);
    }
  }
  out.push("\t}");
  return out;
}

/** The full nft script that creates our table for a spec. */
export function nftScript(s: NormalSpec): { text: string; hash: string } {
  const body = scriptBody(s);
  const name = nftTableName(s.id);
  const hash = hash8(`${name}\n${body.join("\n")}`);
  const text = [`table inet ${name} {`, `\tcomment "${tagOf(s.id)} ${hash}"`, ...body, "}", ""].join("\n");
  return { text, hash };
}

/** Key of our nft table with content hash `hash`. */
export function nftKey(id: string, hash: string): string {
  return `nft inet ${nftTableName(id)} ${hash}`;
}

/** The nft table object of a spec. */
export function nftObject(s: NormalSpec): PlumbingObject {
  const { text, hash } = nftScript(s);
  const name = nftTableName(s.id);
  const add = ["nft", "-f", "-"];
  return {
    key: nftKey(s.id, hash),
    kind: "nft",
    family: 4,
    line: `nft -f - <<< 'table inet ${name} { ... }'  # ${text.split("\n").length - 4} rules, hash ${hash}`,
    add,
    stdin: text,
    del: ["nft", "delete", "table", "inet", name],
    check: ["nft", "list", "table", "inet", name],
  };
}

/** The object of our table as `nft list table inet nfqlb-<id>` prints it, or undefined when it is not ours. */
export function parseNftTable(text: string, id: string): PlumbingObject | undefined {
  const name = nftTableName(id);
  const m = new RegExp(`^\\s*comment "${tagOf(id).replace(/[.+]/g, "\\$&")} ([0-9a-f]{8})"`, "m").exec(text);
  const hash = m ? m[1] : "unknown";
  const del = ["nft", "delete", "table", "inet", name];
  return {
    key: nftKey(id, hash),
    kind: "nft",
    family: 4,
    line: `table inet ${name} (hash ${hash})`,
    add: ["nft", "-f", "-"],
    stdin: text,
    del,
    check: ["nft", "list", "table", "inet", name],
  };
}

/** The probe: a queue rule in a table of a throwaway network namespace (`unshare -n`). */
const PROBE = [
  "table inet nfqlb-probe {",
  "\tchain prerouting {",
  "\t\ttype filter hook prerouting priority mangle; policy accept;",
  "\t\tmeta l4proto udp queue num 0 bypass",
  "\t}",
  "}",
  "",
].join("\n");

let cached: Promise<{ queue: boolean; reason: string }> | undefined;

/**
 * Whether nf_tables here has the `queue` expression: adds a queue rule in a
 * throwaway, unnamed network namespace (gone when the command exits). The
 * answer is cached for the process. False when nft or unshare is missing or
 * not permitted too; `reason` says why.
 */
export function probeNftQueue(): Promise<{ queue: boolean; reason: string }> {
  cached ??= (async () => {
    const r = await runCommand(["unshare", "-n", "nft", "-f", "-"], { stdin: PROBE, timeoutMs: 10_000 });
    if (r.code === 0) return { queue: true, reason: "nft queue rule accepted" };
    const first = r.stderr.split("\n").find((l) => l.trim() !== "") ?? `exit ${r.code}`;
    return { queue: false, reason: `${shellLine(["unshare", "-n", "nft", "-f", "-"])}: ${first.trim()}` };
  })();
  return cached;
}

/** True when the kernel's nf_tables has `queue` (see {@link probeNftQueue}). */
export async function detectNftQueue(): Promise<boolean> {
  return (await probeNftQueue()).queue;
}
