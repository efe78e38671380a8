/**
 * `nfqlb offload-rules`: the queue and offload rules `apply` installs for
 * some VIPs, as `iptables-restore --noflush` input (docs/offload.md). The
 * text is made from the same objects apply adds (planPlumbing), so the
 * printed rules and the installed ones cannot drift apart
 * (tests/e2e/offload_auto_test.ts compares them through iptables-save).
 */
import { NfqlbError } from "../../core/errors.ts";
import { planPlumbing } from "./plan.ts";
import type { PlumbingHook, PlumbingObject, PlumbingSpec } from "./spec.ts";

/** Options of {@link offloadRestoreText}. */
export interface OffloadRulesPrint {
  /** VIPs: addresses or CIDRs (one family, or pick one with `family`). */
  vips: string[];
  /** `"2"` or `"0:3"`, as lb --queue. */
  queue: string;
  /** Only this family's VIPs (required when the VIPs have both). */
  family?: 4 | 6;
  /** The id in chain names and comments (apply: the config's name). */
  id: string;
  /** NFQUEUE --queue-bypass (apply's default: true). */
  bypass: boolean;
  /** Hooks (apply's default: prerouting). */
  hooks: PlumbingHook[];
  /** NAT targets: the TCP SYNs stay tracked (no raw rule), as apply does when the family has a NAT target. */
  nat: boolean;
}

/** An argv word as iptables-restore reads it: double-quoted when it holds a space or a quote. */
function word(w: string): string {
  return /[\s"'\\]/.test(w) || w === "" ? `"${w.replace(/(["\\])/g, "\\$1")}"` : w;
}

/**
 * The rule line of an object in iptables-restore syntax: its add argv
 * after `-t TABLE` (`-A CHAIN ...`); a rule apply inserts at the top of a
 * built-in chain of table raw becomes `-I CHAIN n`.
 */
function ruleLine(o: PlumbingObject, rawIndex: number): string {
  const at = o.add.indexOf("-A");
  const rest = o.add.slice(at + 2);
  const head = o.kind === "rule" && o.table === "raw"
    ? ["-I", o.add[at + 1], String(rawIndex)]
    : o.add.slice(at, at + 2);
  return [...head, ...rest].map(word).join(" ");
}

/**
 * The iptables-restore text (one family: pipe it into `iptables-restore
 * --noflush`, or ip6tables-restore for IPv6) and the family it is for.
 * @throws NfqlbError one line for a bad VIP, queue or family
 */
export function offloadRestoreText(o: OffloadRulesPrint): { family: 4 | 6; text: string } {
  const spec: PlumbingSpec = {
    id: o.id,
    queue: o.queue,
    bypass: o.bypass,
    hooks: o.hooks,
    vips: o.vips.map((address) => ({ address })),
    targets: [],
    offload: "auto",
  };
  const all = planPlumbing(spec, { nftQueue: false });
  const families = [...new Set(all.map((x) => x.family))];
  const family = o.family ?? (families.length === 1 ? families[0] : undefined);
  if (family === undefined) {
    throw new NfqlbError("offload-rules: the VIPs are IPv4 and IPv6: give --family=4 or --family=6");
  }
  const objects = all.filter((x) => x.family === family && !(o.nat && x.table === "raw"));
  if (objects.length === 0) throw new NfqlbError(`offload-rules: no IPv${family} VIP`);
  const lines: string[] = [];
  for (const table of ["raw", "mangle"]) {
    const mine = objects.filter((x) => x.table === table);
    if (mine.length === 0) continue;
    lines.push(`*${table}`);
    for (const c of mine.filter((x) => x.kind === "chain")) lines.push(`:${c.chain} - [0:0]`);
    let raw = 0;
    for (const r of mine.filter((x) => x.kind !== "chain")) lines.push(ruleLine(r, ++raw));
    lines.push("COMMIT");
  }
  return { family, text: lines.join("\n") + "\n" };
}
