/**
 * iptables objects: our chains, tagged rules, and reading back what of ours
 * `iptables-save` shows. Every rule we add carries the comment
 * `nfqlb:<id> <hash>[ <record>]`, where the hash covers the rule's table,
 * chain, matches and target: so a rule is recognised by its comment alone,
 * whatever canonical form iptables-save prints it in, and a changed rule has a
 * new hash (it is removed and added again).
 */
import { hash8, shellLine } from "./names.ts";
import type { PlumbingKind, PlumbingObject } from "./spec.ts";
import { tagOf } from "./spec.ts";

/** The iptables command of a family. */
export function iptablesCmd(family: 4 | 6): string {
  return family === 4 ? "iptables" : "ip6tables";
}

/** Built-in chains: a rule of ours in one of them is a jump into our chain (except in table raw). */
const BUILTIN = new Set(["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]);

/** A chain object. */
export function chainObject(family: 4 | 6, table: string, chain: string): PlumbingObject {
  const ipt = iptablesCmd(family);
  const add = [ipt, "-w", "-t", table, "-N", chain];
  return {
    key: `ipt${family} ${table} chain ${chain}`,
    kind: "chain",
    family,
    line: shellLine(add),
    add,
    del: [ipt, "-w", "-t", table, "-X", chain],
    check: [ipt, "-w", "-t", table, "-S", chain],
    table,
    chain,
  };
}

/** What a tagged rule is made of. */
export interface RuleParts {
  family: 4 | 6;
  table: string;
  chain: string;
  /** Match arguments (before the comment). */
  matches: string[];
  /** Target arguments (`-j ...`). */
  target: string[];
  /** Extra words in the comment after the hash (the DSR records). */
  record?: string;
}

/**
 * The kind of a rule of ours by where it is: jumps in built-in chains,
 * records in the record chain. Table raw holds no chain of ours: its rules
 * (offload's TCP SYN untracking) are plain rules in raw PREROUTING, placed
 * like those of our chains, ahead of whatever else is there.
 */
function kindOf(table: string, chain: string, recordChains: ReadonlySet<string>): PlumbingKind {
  if (table === "raw") return "rule";
  if (BUILTIN.has(chain)) return "jump";
  return recordChains.has(chain) ? "record" : "rule";
}

/** A tagged rule object of id (appended with -A; apply may insert it at a position instead). */
export function ruleObject(id: string, p: RuleParts, recordChains: ReadonlySet<string>): PlumbingObject {
  const ipt = iptablesCmd(p.family);
  const body = [...p.matches, ...p.target].join(" ");
  const h = hash8(`${p.family} ${p.table} ${p.chain} ${body}${p.record ? ` ${p.record}` : ""}`);
  const comment = `${tagOf(id)} ${h}${p.record ? ` ${p.record}` : ""}`;
  const spec = [...p.matches, "-m", "comment", "--comment", comment, ...p.target];
  const add = [ipt, "-w", "-t", p.table, "-A", p.chain, ...spec];
  return {
    key: `ipt${p.family} ${p.table} ${p.chain} ${h}`,
    kind: kindOf(p.table, p.chain, recordChains),
    family: p.family,
    line: shellLine(add),
    add,
    del: [ipt, "-w", "-t", p.table, "-D", p.chain, ...spec],
    check: [ipt, "-w", "-t", p.table, "-C", p.chain, ...spec],
    table: p.table,
    chain: p.chain,
  };
}

/** Splits an iptables-save line into words (double quotes group, backslash escapes). */
export function splitSaveLine(line: string): string[] {
  const out: string[] = [];
  let cur = "", inWord = false, quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === "\\" && i + 1 < line.length) cur += line[++i];
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') {
      quoted = inWord = true;
    } else if (c === " " || c === "\t") {
      if (inWord) out.push(cur);
      cur = "";
      inWord = false;
    } else {
      if (c === "\\" && i + 1 < line.length) cur += line[++i];
      else cur += c;
      inWord = true;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

/** A rule of ours found in iptables-save output. */
export interface SavedRule {
  object: PlumbingObject;
  /** The comment's words after tag and hash (a DSR record), if any. */
  record?: string;
}

/**
 * Our objects in one family's `iptables-save` text: the chains named in
 * `ourChains` (per table) and every rule whose comment starts with our tag.
 * Their delete argv is built from the saved line itself.
 */
export function parseSave(
  text: string,
  family: 4 | 6,
  id: string,
  ourChains: ReadonlyMap<string, ReadonlySet<string>>,
  recordChains: ReadonlySet<string>,
): { chains: PlumbingObject[]; rules: SavedRule[] } {
  const ipt = iptablesCmd(family);
  const tag = tagOf(id);
  const chains: PlumbingObject[] = [];
  const rules: SavedRule[] = [];
  let table = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line.startsWith("*")) {
      table = line.slice(1);
    } else if (line.startsWith(":")) {
      const name = line.slice(1).split(" ")[0];
      if (ourChains.get(table)?.has(name)) chains.push(chainObject(family, table, name));
    } else if (line.startsWith("-A ")) {
      const words = splitSaveLine(line);
      const ci = words.indexOf("--comment");
      const comment = ci > 0 ? words[ci + 1] ?? "" : "";
      if (!comment.startsWith(`${tag} `)) continue;
      const [, h, ...rest] = comment.split(" ");
      if (!/^[0-9a-f]{8}$/.test(h)) continue;
      const chain = words[1];
      const spec = words.slice(2);
      const record = rest.length ? rest.join(" ") : undefined;
      const add = [ipt, "-w", "-t", table, "-A", chain, ...spec];
      rules.push({
        object: {
          key: `ipt${family} ${table} ${chain} ${h}`,
          kind: kindOf(table, chain, recordChains),
          family,
          line: shellLine(add),
          add,
          del: [ipt, "-w", "-t", table, "-D", chain, ...spec],
          check: [ipt, "-w", "-t", table, "-C", chain, ...spec],
          table,
          chain,
        },
        record,
      });
    }
  }
  return { chains, rules };
}
