/**
 * What `nfqlb run` serves on `/metrics`: the agent's own metrics (reloads by
 * result, dataplane restarts, the config being served) and everything the
 * dataplane exports. The dataplane's part is fetched from its own metrics
 * server when the file gives it one (`dataplane.options.metrics`), so the two
 * endpoints agree to the byte; otherwise it is rendered here from the same
 * shm files with the same code (dataplane/metrics.ts), which also works while
 * the dataplane is down or restarting (the counters file keeps the last
 * values).
 */
import type { HostConfig } from "../config/types.ts";
import { countersShmName } from "../../core/counters_shm.ts";
import { parseMetricsAddress } from "../../core/address.ts";
import { flowExchange } from "../../core/flow/client.ts";
import type { ListedFlow } from "../../core/flow/render.ts";
import { ownExists } from "../../core/shm_dir.ts";
import { readTableDigest } from "../../core/table_digest.ts";
import { renderMetrics, renderProcessMetrics } from "../../dataplane/metrics.ts";
import { escapeLabel, familyHeader, METRIC_FAMILIES } from "../../dataplane/metric_families.ts";
import { ftShmOf } from "../dataplane_process.ts";

/** The agent's counters. */
export interface AgentCounters {
  /** Reloads by result. */
  reloads: { ok: number; error: number };
  /** Dataplane restarts after it exited on its own. */
  restarts: number;
  /** The config being served (the last one accepted). */
  config?: { name: string; digest: string };
  /** Whether the dataplane runs now. */
  dataplaneUp: boolean;
  /** The digest of each service's target table (core/table_digest.ts); a missing table is left out. */
  tables?: { table: string; digest: string }[];
}

/**
 * The agent's own metric families, Prometheus text format, after this process's `nfqlb_build_info` and
 * `process_start_time_seconds` (the dataplane's are left out of {@link dataplaneMetrics}: one endpoint, one
 * process).
 */
export function renderAgentMetrics(c: AgentCounters): string {
  const out: string[] = [renderProcessMetrics().trimEnd()];
  const family = (name: string) => out.push(...familyHeader(name));
  family("nfqlb_agent_reloads_total");
  out.push(`nfqlb_agent_reloads_total{result="ok"} ${c.reloads.ok}`);
  out.push(`nfqlb_agent_reloads_total{result="error"} ${c.reloads.error}`);
  family("nfqlb_dataplane_restarts_total");
  out.push(`nfqlb_dataplane_restarts_total ${c.restarts}`);
  family("nfqlb_dataplane_up");
  out.push(`nfqlb_dataplane_up ${c.dataplaneUp ? 1 : 0}`);
  if (c.config) {
    family("nfqlb_config_info");
    out.push(
      `nfqlb_config_info{name="${escapeLabel(c.config.name)}",digest="${escapeLabel(c.config.digest)}"} 1`,
    );
  }
  if (c.tables && c.tables.length > 0) {
    family("nfqlb_table_info");
    for (const t of c.tables) {
      out.push(`nfqlb_table_info{table="${escapeLabel(t.table)}",digest="${escapeLabel(t.digest)}"} 1`);
    }
  }
  return out.join("\n") + "\n";
}

/**
 * `text` without the families named in `drop` (their HELP, TYPE and samples): the dataplane's `process`
 * families, which `nfqlb run` writes for itself.
 */
export function withoutFamilies(text: string, drop: ReadonlySet<string>): string {
  const lines = text.split("\n");
  const kept = lines.filter((l) => {
    const m = /^# (?:HELP|TYPE) (\S+)/.exec(l) ?? /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(l);
    return !(m && drop.has(m[1]));
  });
  return kept.join("\n");
}

const PROCESS_FAMILIES: ReadonlySet<string> = new Set(
  METRIC_FAMILIES.filter((f) => f.source === "process").map((f) => f.name),
);

/** The URL of a dataplane's metrics server (a wildcard address is asked on loopback). */
export function metricsUrl(address: string): string {
  const { hostname, port } = parseMetricsAddress(address);
  const host = hostname === "0.0.0.0" ? "127.0.0.1" : hostname === "::" ? "::1" : hostname;
  return `http://${host.includes(":") ? `[${host}]` : host}:${port}/metrics`;
}

/** flowlb's matches per flow, from its flow server; none when it does not answer. */
async function flowMatches(cfg: HostConfig): Promise<{ flow: string; matches: number }[]> {
  try {
    const reply = await flowExchange({ action: "list" }, cfg.dataplane.options.flowAddress);
    const text = new TextDecoder().decode(reply).trim();
    const listed = text === "" ? [] : JSON.parse(text) as ListedFlow[];
    return listed.map((f) => ({ flow: f.name, matches: f.matches_count }));
  } catch {
    return [];
  }
}

/**
 * The dataplane's metrics of a config: fetched from its metrics server
 * (`dataplane.options.metrics`, 1 s), else rendered from its shm files.
 * Empty when it never ran (no counters file).
 */
export async function dataplaneMetrics(cfg: HostConfig): Promise<string> {
  const address = cfg.dataplane.options.metrics;
  if (address !== undefined) {
    try {
      const r = await fetch(metricsUrl(address), { signal: AbortSignal.timeout(1000) });
      const text = await r.text();
      if (r.ok) return withoutFamilies(text, PROCESS_FAMILIES);
    } catch { /* down or restarting: render it here */ }
  }
  const ftShm = ftShmOf(cfg);
  if (!ownExists(countersShmName(ftShm))) return "";
  const flows = cfg.dataplane.program === "flowlb" ? await flowMatches(cfg) : undefined;
  try {
    return await renderMetrics({
      counters: countersShmName(ftShm),
      ftShm,
      tables: () => cfg.services.map((s) => s.name),
      flows: flows ? () => flows : undefined,
    }, { process: false });
  } catch {
    return ""; // a counters file being replaced by a starting dataplane: the next scrape has it
  }
}

/** The digest of each service's table of `cfg`; a table that cannot be read (missing, being replaced) is left out. */
export async function tableDigests(cfg: HostConfig): Promise<{ table: string; digest: string }[]> {
  const out: { table: string; digest: string }[] = [];
  for (const s of cfg.services) {
    try {
      out.push({ table: s.name, digest: await readTableDigest(s.name) });
    } catch { /* no table now: no series */ }
  }
  return out;
}
