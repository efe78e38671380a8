/**
 * Persistence of a flowlb's flows (ours; upstream starts every flowlb with no
 * flows). The flow set is a JSON file beside the shm files,
 * `<shm dir>/nfqlb-flows-<address>.json`, replaced atomically (temporary file
 * + rename) after every change and validated with zod when flowlb starts.
 *
 * A file that cannot be used is never silently overwritten: it is renamed to
 * `<file>.corrupt-<time>` (one line says so, and flowlb starts with no flows);
 * if even that fails, saving is disabled for the run.
 */
import { z } from "zod";
import { errorText, NfqlbError } from "../errors.ts";
import { parseFlowDefinition, showValue } from "./parse.ts";
import type { FlowRequest } from "./types.ts";
import { shmDir } from "../shm_dir.ts";
import { PORT_PROTOCOLS, type PortProtocol } from "../ip_protocols.ts";

/**
 * The file of the flows of the flowlb listening on `address` in this network
 * namespace (`unix:nfqlb` → `nfqlb-flows-unix_nfqlb-net4026531840.json`).
 * Abstract sockets are per network namespace while /dev/shm may be shared by
 * several, so the namespace (its inode) is part of the name: two flowlbs in
 * two namespaces never restore each other's flows.
 */
export function flowStorePath(address: string): string {
  let ns = "";
  try {
    ns = `-net${Deno.statSync("/proc/self/ns/net").ino}`;
  } catch { /* not Linux, or /proc hidden: one file per address */ }
  return `${shmDir()}/nfqlb-flows-${address.replace(/[^A-Za-z0-9._-]/g, "_")}${ns}.json`;
}

const strings = z.array(z.string()).optional();

/** One saved flow: the canonical definition, lists as arrays. */
export interface StoredFlow {
  /** Flow name. */
  name: string;
  /** Target shm name. */
  target: string;
  /** Priority (absent: 0). */
  priority?: number;
  /** Protocols. */
  protocols?: PortProtocol[];
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

/** Schema of one saved flow. */
const StoredFlowSchema: z.ZodType<StoredFlow> = z.object({
  name: z.string(),
  target: z.string(),
  priority: z.number().int().min(-2147483648).max(2147483647).optional(),
  protocols: z.array(z.enum(PORT_PROTOCOLS)).optional(),
  dsts: strings,
  srcs: strings,
  dports: strings,
  sports: strings,
  match: strings,
  udpencap: z.number().int().min(1).max(65535).optional(),
}).strict();

/** Schema of the file: the structure, unique names, and every flow a valid definition. */
const FlowStoreFileSchema = z.object({
  format: z.literal("nfqlb-deno-flows"),
  version: z.literal(1),
  flows: z.array(StoredFlowSchema),
}).strict().superRefine((file, ctx) => {
  const seen = new Set<string>();
  file.flows.forEach((f, i) => {
    if (seen.has(f.name)) {
      ctx.addIssue({
        code: "custom",
        path: ["flows", i, "name"],
        message: `duplicate flow [${showValue(f.name)}]`,
      });
    }
    seen.add(f.name);
    const p = parseFlowDefinition(toRequest(f), "flow");
    if (!p.ok) ctx.addIssue({ code: "custom", path: ["flows", i, p.field], message: p.error });
  });
});

/** The saved form of a canonical request. */
export function toStored(r: FlowRequest): StoredFlow {
  const list = (s: string | undefined) => s === undefined ? undefined : s === "" ? [] : s.split(",");
  const f: StoredFlow = { name: r.name ?? "", target: r.target ?? "" };
  if (r.priority !== undefined) f.priority = Number(r.priority);
  if (r.protocols !== undefined) f.protocols = list(r.protocols) as StoredFlow["protocols"];
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

/** What {@link FlowStore.load} found. */
export interface LoadedFlows {
  /** The saved flows in match order (empty when there is no usable file). */
  flows: FlowRequest[];
  /** One line when the file was unusable (it was moved aside, or saving is now disabled). */
  problem?: string;
}

/**
 * The saved flow set of one flowlb.
 *
 * @example
 * ```ts
 * const store = new FlowStore(flowStorePath("unix:nfqlb"));
 * const { flows, problem } = store.load();
 * if (problem) console.error(problem);
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
   * @param path the file (see {@link flowStorePath})
   */
  constructor(path: string) {
    this.path = path;
  }

  /** False after a load found a file it could neither use nor move aside. */
  get enabled(): boolean {
    return !this.#disabled;
  }

  /** Reads and validates the file. A missing file is an empty flow set. */
  load(): LoadedFlows {
    let text: string;
    try {
      text = Deno.readTextFileSync(this.path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { flows: [] };
      this.#disabled = true;
      return {
        flows: [],
        problem: `flow store ${this.path}: ${errorText(e)}; starting with no flows, not saving flows`,
      };
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      return this.#corrupt(`not JSON (${e instanceof Error ? e.message : String(e)})`);
    }
    const r = FlowStoreFileSchema.safeParse(json);
    if (!r.success) {
      const issue = r.error.issues[0];
      return this.#corrupt(`${pathText(issue.path) || "file"}: ${issue.message}`);
    }
    return { flows: r.data.flows.map(toRequest) };
  }

  #corrupt(reason: string): LoadedFlows {
    const aside = `${this.path}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}`;
    try {
      Deno.renameSync(this.path, aside);
    } catch (e) {
      this.#disabled = true;
      return {
        flows: [],
        problem: `flow store ${this.path}: ${reason}; cannot move it aside (${
          errorText(e)
        }); starting with no flows, not saving flows`,
      };
    }
    return {
      flows: [],
      problem: `flow store ${this.path}: ${reason}; moved to ${aside}, starting with no flows`,
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
