/**
 * The names a host config uses on the host beside its target tables: the
 * fragment-stats shm and the counters file of its dataplane, the trace and
 * flow server addresses, `nfqlb run`'s admin address, its state and log
 * files. Each derives from the config's `name` unless the file sets it, so
 * configs with different names can share a host (docs/config.md "Names on
 * the host"). Upstream's defaults (`ftshm`, `unix:nfqlb-trace`,
 * `unix:nfqlb`) stay those of the commands run by hand (`lb`, `flowlb`,
 * `stats`, `trace`, `flow-*`), where Meridio relies on them; a config file is
 * ours, so it gets its own.
 */
import type { HostConfig } from "./config/types.ts";
import { countersShmName } from "../core/counters_shm.ts";
import { hash8 } from "./plumbing/names.ts";

/** The config name of a file without `name:` (schema default). */
export const DEFAULT_CONFIG_NAME = "nfqlb";

/** The admin port of `nfqlb run`; the default config serves on 127.0.0.1 there (issue 16 pins it). */
export const ADMIN_PORT = 9110;

/** Where `nfqlb run` serves when neither the file nor `--admin` says, for the default config name. */
export const DEFAULT_ADMIN_ADDRESS = `127.0.0.1:${ADMIN_PORT}`;

/** What one config uses on the host, besides its target tables and kernel rules. */
export interface HostNames {
  /** The fragment-stats shm of its dataplane (`--ft_shm`, top of the shm directory). */
  readonly ftShm: string;
  /** The dataplane's counters file (in `.nfqlb-deno/`). */
  readonly counters: string;
  /** The dataplane's trace server (`--trace_address`). */
  readonly traceAddress: string;
  /** flowlb's flow server (NFQLB_FLOW_ADDRESS); null for lb. */
  readonly flowAddress: string | null;
  /** The dataplane's Prometheus server (`--metrics`); null: none (the file sets none). */
  readonly metrics: string | null;
}

/** The fragment-stats shm a config's dataplane gets when the file sets no `ftShm`: `ftshm.<name>`. */
export function derivedFtShm(name: string): string {
  // a dot, not a dash: `ftshm-<name>` would contain `tshm-`, which Meridio's log collector greps for
  return `ftshm.${name}`;
}

/** The trace address a config's dataplane gets when the file sets none: `unix:nfqlb-trace.<name>`. */
export function derivedTraceAddress(name: string): string {
  return `unix:nfqlb-trace.${name}`;
}

/** The flow server address a config's flowlb gets when the file sets none: `unix:nfqlb.<name>`. */
export function derivedFlowAddress(name: string): string {
  return `unix:nfqlb.${name}`;
}

/**
 * `nfqlb run`'s admin address when neither the file nor `--admin` sets one:
 * `127.0.0.1:9110` for the default config name (`nfqlb`), and for any other
 * name a loopback address of its own on the same port, `127.A.B.C:9110`
 * with A.B.C from a hash of the name. Linux answers on all of 127.0.0.0/8,
 * so this binds wherever 127.0.0.1 does; another port could be any other
 * program's, another loopback address on port 9110 hardly is.
 *
 * @example
 * ```ts
 * derivedAdminAddress("nfqlb"); // "127.0.0.1:9110"
 * derivedAdminAddress("edge");  // "127.x.y.z:9110", the same for every run
 * ```
 */
export function derivedAdminAddress(name: string): string {
  if (name === DEFAULT_CONFIG_NAME) return DEFAULT_ADMIN_ADDRESS;
  const h = parseInt(hash8(name), 16);
  // the last byte 2..254: never 127.0.0.1 (the default's), never .0 or .255
  const a = (h >>> 24) & 255, b = (h >>> 16) & 255, c = 2 + (h & 0xffff) % 253;
  return `127.${a}.${b}.${c}:${ADMIN_PORT}`;
}

/**
 * The names config `cfg` uses on the host (the file's own where it sets
 * them, else derived from its name).
 */
export function hostNames(cfg: HostConfig): HostNames {
  const o = cfg.dataplane.options;
  const ftShm = o.ftShm ?? derivedFtShm(cfg.name);
  return {
    ftShm,
    counters: countersShmName(ftShm),
    traceAddress: o.traceAddress ?? derivedTraceAddress(cfg.name),
    flowAddress: cfg.dataplane.program === "flowlb" ? o.flowAddress ?? derivedFlowAddress(cfg.name) : null,
    metrics: o.metrics ?? null,
  };
}
