/**
 * Persistence of a flowlb's flows: opt-in, ours (upstream starts every
 * flowlb with no flows, and so do we unless the operator names a file with
 * `flowlb --flow_store=FILE`). The flow set is a JSON file at exactly that
 * path, replaced atomically (temporary file beside it + rename) after every
 * change, and read back when flowlb starts.
 *
 * Nothing in the file's name is derived (no address, no namespace inode: the
 * kernel reuses inodes, so a new namespace could load a dead one's flows); the
 * operator's path is the key. On load, every entry is checked by exactly the
 * validator `flow-set` uses (./parse.ts parseFlowDefinition), so the store
 * accepts what flow-set accepted; an entry that fails is skipped with one line
 * naming it (and quoting it, so it can be set again by hand), never the whole
 * store. Only a file that is not a flow store at all (not JSON, another
 * format or version) is moved aside to `<file>.corrupt-<time>` (one line says
 * so, and flowlb starts with no flows); if even that fails, saving is
 * disabled for the run.
 */
import { z } from "zod";
import { errorText, NfqlbError } from "../errors.ts";
import { parseFlowDefinition, showValue } from "./parse.ts";
import type { FlowRequest } from "./types.ts";

const strings = z.array(z.string()).optional();

/** One saved flow: the canonical definition, lists as arrays. */
export interface StoredFlow {
  /** Flow name. */
  name: string;
  /** Target shm name. */
  target: string;
  /** Priority (absent: 0). */
  priority?: number;
  /** Protocols ([] with ports: any protocol, as `--protocols=`). */
  protocols?: string[];
  /** Destination CIDRs, canonical. */
  dsts?: string[];
  /** Source CIDRs, canonical. */
  srcs?: string[];
  /** Destination ports and ranges. */
  dports?: string[];
  /** Source ports and ranges. */
  sports?: string[];
  /** Byte-match statements, canonical. */
  match?: string[];
  /** UDP encapsulation port. */
  udpencap?: number;
}

/**
 * The shape of one saved flow: types only (strings, lists of strings,
 * numbers). Whether the values make a valid flow is parseFlowDefinition's
 * call, as for flow-set.
 */
const StoredFlowSchema: z.ZodType<StoredFlow> = z.object({
  name: z.string(),
  target: z.string(),
  priority: z.number().optional(),
  protocols: strings,
  dsts: strings,
  srcs: strings,
  dports: strings,
  sports: strings,
  match: strings,
  udpencap: z.number().optional(),
}).strict();

/** The file around the flows; the flows are checked one by one. */
const FlowStoreFileSchema = z.object({
  format: z.literal("nfqlb-deno-flows"),
  version: z.literal(1),
  flows: z.array(z.unknown()),
}).strict();

/** The saved form of a canonical request. */
export function toStored(r: FlowRequest): StoredFlow {
  const list = (s: string | undefined) => s === undefined ? undefined : s === "" ? [] : s.split(",");
  const f: StoredFlow = { name: r.name ?? "", target: r.target ?? "" };
  if (r.priority !== undefined) f.priority = Number(r.priority);
  if (r.protocols !== undefined) f.protocols = list(r.protocols);
  for (const k of ["dsts", "srcs", "dports", "sports", "match"] as const) {
    if (r[k] !== undefined) f[k] = list(r[k]);
  }
  if (r.udpencap !== undefined && r.udpencap !== "0") f.udpencap = Number(r.udpencap);
  return f;
}

/** The request of a saved flow. */
export function toRequest(f: StoredFlow): FlowRequest {
  const r: FlowRequest = { name: f.name, target: f.target };
  if (f.priority !== undefined) r.priority = String(f.priority);
  if (f.protocols !== undefined) r.protocols = f.protocols.join(",");
  for (const k of ["dsts", "srcs", "dports", "sports", "match"] as const) {
    const v = f[k];
    if (v !== undefined) r[k] = v.join(",");
  }
  if (f.udpencap !== undefined) r.udpencap = String(f.udpencap);
  return r;
}

function pathText(path: readonly PropertyKey[]): string {
  return path.map((p, i) => typeof p === "number" ? `[${p}]` : `${i > 0 ? "." : ""}${String(p)}`).join("");
}

/** An entry as quoted in a log line: its JSON, at most 200 characters. */
function quote(entry: unknown): string {
  const j = JSON.stringify(entry) ?? String(entry);
  return j.length > 200 ? `${j.slice(0, 197)}...` : j;
}

/** What {@link FlowStore.load} found. */
export interface LoadedFlows {
  /** The valid saved flows in match order (empty when there is no usable file). */
  flows: FlowRequest[];
  /**
   * One line per entry skipped (`flow store <file>: entry <i> (flow <name>): <why>; skipped: <json>`), or
   * one line for a file that was unusable as a whole (moved aside, or saving is now disabled).
   */
  problems: string[];
}

/**
 * The saved flow set of one flowlb, in the file the operator named.
 *
 * @example
 * ```ts
 * const store = new FlowStore("/var/lib/nfqlb/flows.json"); // flowlb --flow_store=...
 * const { flows, problems } = store.load();
 * problems.forEach((p) => console.error(p));
 * table.restore(flows).forEach((p) => console.error(p));
 * // after each change: store.save(table.definitions())
 * ```
 */
export class FlowStore {
  /** The file. */
  readonly path: string;
  #disabled = false;

  /**
   * A store for one file; nothing is read or written yet.
   * @param path the file (flowlb's `--flow_store`)
   */
  constructor(path: string) {
    this.path = path;
  }

  /** False after a load found a file it could neither use nor move aside. */
  get enabled(): boolean {
    return !this.#disabled;
  }

  /**
   * Reads the file and checks each entry as flow-set checks a request. A
   * missing file is an empty flow set. Bad entries are skipped (one line
   * each); the rest load.
   */
  load(): LoadedFlows {
    let text: string;
    try {
      text = Deno.readTextFileSync(this.path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { flows: [], problems: [] };
      this.#disabled = true;
      return {
        flows: [],
        problems: [`flow store ${this.path}: ${errorText(e)}; starting with no flows, not saving flows`],
      };
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      return this.#corrupt(`not JSON (${e instanceof Error ? e.message : String(e)})`);
    }
    const file = FlowStoreFileSchema.safeParse(json);
    if (!file.success) {
      const issue = file.error.issues[0];
      return this.#corrupt(`${pathText(issue.path) || "file"}: ${issue.message}`);
    }
    const flows: FlowRequest[] = [];
    const problems: string[] = [];
    const seen = new Map<string, number>();
    file.data.flows.forEach((entry, i) => {
      const named = typeof entry === "object" && entry !== null && "name" in entry &&
          typeof entry.name === "string"
        ? ` (flow ${showValue(entry.name.slice(0, 64))})`
        : "";
      const skip = (why: string) =>
        problems.push(`flow store ${this.path}: entry ${i}${named}: ${why}; skipped: ${quote(entry)}`);
      const shape = StoredFlowSchema.safeParse(entry);
      if (!shape.success) {
        const issue = shape.error.issues[0];
        return skip(`${pathText(issue.path) || "entry"}: ${issue.message}`);
      }
      const req = toRequest(shape.data);
      // exactly flow-set's validation: what flow-set accepted loads
      const parsed = parseFlowDefinition(req, "flow");
      if (!parsed.ok) return skip(parsed.error);
      const first = seen.get(parsed.definition.name);
      if (first !== undefined) return skip(`the name of entry ${first} again`);
      seen.set(parsed.definition.name, i);
      flows.push(req);
    });
    return { flows, problems };
  }

  #corrupt(reason: string): LoadedFlows {
    const aside = `${this.path}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    try {
      Deno.renameSync(this.path, aside);
    } catch (e) {
      this.#disabled = true;
      return {
        flows: [],
        problems: [
          `flow store ${this.path}: ${reason}; cannot move it aside (${
            errorText(e)
          }); starting with no flows, not saving flows`,
        ],
      };
    }
    return {
      flows: [],
      problems: [`flow store ${this.path}: ${reason}; moved to ${aside}, starting with no flows`],
    };
  }

  /**
   * Replaces the file with `flows` (canonical requests, e.g. FlowTable.definitions()):
   * written to a new temporary file beside it, synced, renamed over it.
   * Does nothing when disabled.
   * @throws NfqlbError `flow store <path>: save failed: <reason>`
   */
  save(flows: readonly FlowRequest[]): void {
    if (this.#disabled) return;
    const body = JSON.stringify(
      { format: "nfqlb-deno-flows", version: 1, flows: flows.map(toStored) },
      null,
      2,
    );
    const tmp = `${this.path}.tmp-${Deno.pid}`;
    try {
      // createNew: never write through a file or symlink someone left at the temporary name
      let f: Deno.FsFile;
      try {
        f = Deno.openSync(tmp, { write: true, createNew: true, mode: 0o644 });
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
        Deno.removeSync(tmp);
        f = Deno.openSync(tmp, { write: true, createNew: true, mode: 0o644 });
      }
      try {
        let data = new TextEncoder().encode(body + "\n");
        while (data.length > 0) data = data.subarray(f.writeSync(data));
        f.syncSync();
      } finally {
        f.close();
      }
      Deno.renameSync(tmp, this.path);
    } catch (e) {
      try {
        Deno.removeSync(tmp);
      } catch { /* not created */ }
      throw new NfqlbError(`flow store ${this.path}: save failed: ${errorText(e)}`);
    }
  }
}
