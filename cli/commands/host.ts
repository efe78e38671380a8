/**
 * apply, teardown, status (ours, docs/apply.md): a whole load-balancer host
 * from one config file (docs/config.md). Their code (zod, yaml, the kernel
 * plumbing) loads only when one of them runs.
 */
import type { Command } from "../command.ts";
import { out } from "../io.ts";
import { NfqlbError } from "../../core/errors.ts";
import { jsonText } from "../json.ts";

const load = async (file: string) => (await import("../../host/config/load.ts")).loadHostConfig(file);
const say = (line: string) => out(line + "\n");

/** `--json` of our own commands (docs/cli.md "JSON output"): one document on stdout, snake_case keys. */
const JSON_OPTION = {
  name: "json",
  help: "Print one JSON document (snake_case keys) instead of lines",
  flag: true,
};

/** One change line of apply/teardown (`+ …` added, `- …` removed, `~ …` changed) for `--json`. */
export interface ChangeJson {
  op: "add" | "remove" | "change";
  what: string;
}

/** Sorts the lines apply and teardown say into changes and notes (the `shm:` line, `kept …`). */
function collect(): { say: (line: string) => void; changes: ChangeJson[]; notes: string[] } {
  const changes: ChangeJson[] = [], notes: string[] = [];
  const ops: Record<string, ChangeJson["op"]> = { "+": "add", "-": "remove", "~": "change" };
  return {
    changes,
    notes,
    say(line) {
      const m = /^([+~-]) (.*)$/.exec(line);
      if (m) changes.push({ op: ops[m[1]], what: m[2] });
      else notes.push(line.trim());
    },
  };
}

/**
 * `apply -f FILE [--dry-run] [--json]`. A dry run exits 2 when there are changes, 0 when none (as `diff`,
 * `terraform plan -detailed-exitcode`), so a script can tell drift without parsing.
 */
export const apply: Command = {
  name: "apply",
  header:
    "apply --file=FILE [--dry-run] [--json]\n  Make this host match a config file (tables, targets, lb, kernel rules, flows)",
  options: [
    { name: "file", help: "The config file (YAML or JSON; docs/config.md)", required: true },
    {
      name: "dry-run",
      help: "Print what would change, change nothing; exit 2 when something would change, 0 when not",
      flag: true,
    },
    JSON_OPTION,
  ],
  async run({ opts }) {
    const file = opts.get("file")!;
    const cfg = await load(file);
    const dryRun = opts.has("dry-run");
    const json = opts.has("json");
    const c = collect();
    const { applyHost } = await import("../../host/apply.ts");
    const n = await applyHost(cfg, {
      file: await absolute(file),
      label: file,
      dryRun,
      say: json ? c.say : say,
    });
    const status = dryRun && n > 0 ? 2 : 0;
    if (json) {
      out(jsonText({
        config: cfg.name,
        file,
        dry_run: dryRun,
        // a dry run's changes are the plan; otherwise they were made
        applied: !dryRun && n > 0,
        change_count: n,
        changes: c.changes,
        notes: c.notes,
      }));
      return status;
    }
    const changes = `${n} change${n === 1 ? "" : "s"}`;
    if (n === 0) say(`nothing to change: the host matches ${file}`);
    else say(dryRun ? `dry run: ${changes}, none made` : `applied ${file}: ${changes}`);
    return status;
  },
};

/** `teardown -f FILE`. */
export const teardown: Command = {
  name: "teardown",
  header: "teardown --file=FILE [--json]\n  Remove what apply set up for a config file, and nothing else",
  options: [{ name: "file", help: "The config file apply used", required: true }, JSON_OPTION],
  async run({ opts }) {
    const file = opts.get("file")!;
    const cfg = await load(file);
    const { teardownHost } = await import("../../host/teardown.ts");
    if (opts.has("json")) {
      const c = collect();
      const n = await teardownHost(cfg, c.say);
      out(jsonText({ config: cfg.name, file, removed_count: n, changes: c.changes, notes: c.notes }));
      return 0;
    }
    const n = await teardownHost(cfg, say);
    say(n === 0 ? `nothing to remove for ${cfg.name}` : `removed ${n} things of ${cfg.name}`);
    return 0;
  },
};

/** `status [-f FILE]`: exit 0 when the host matches, 1 when it differs. */
export const status: Command = {
  name: "status",
  header:
    "status [--file=FILE] [--json]\n  Show this host against a config file (default: every applied config)",
  options: [{ name: "file", help: "The config file (default: the files apply recorded)" }, JSON_OPTION],
  async run({ opts }) {
    const { hostStatus } = await import("../../host/status.ts");
    let files: string[];
    const given = opts.get("file");
    if (given !== undefined) files = [given];
    else {
      const { listStates, readState } = await import("../../host/state.ts");
      files = listStates().map((n) => readState(n)?.file).filter((f): f is string => f !== undefined);
      if (files.length === 0) {
        throw new NfqlbError("no applied config on this host; give one with --file=FILE");
      }
    }
    let drift = 0;
    const docs = [];
    for (const f of files) {
      const st = await hostStatus(await load(f), f);
      if (opts.has("json")) docs.push(st.json);
      else for (const l of st.lines) say(l);
      drift += st.drift;
    }
    if (opts.has("json")) out(jsonText({ matches: drift === 0, differences: drift, configs: docs }));
    return drift === 0 ? 0 : 1;
  },
};

async function absolute(path: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch {
    return path;
  }
}

/** `health -f FILE`: every health check once, as a table; exit 1 when a target is down. */
export const health: Command = {
  name: "health",
  header:
    "health --file=FILE [--json]\n  Run every health check of a config once and print a table (exit 1 when a target is down)",
  options: [{
    name: "file",
    help: "The config file (YAML or JSON; docs/config.md, docs/health.md)",
    required: true,
  }, JSON_OPTION],
  async run({ opts }) {
    const file = opts.get("file")!;
    const cfg = await load(file);
    const { checkOnce, onceTable } = await import("../../host/health/once.ts");
    const rows = await checkOnce(cfg);
    const down = rows.filter((r) => !r.ok).length;
    if (opts.has("json")) {
      out(jsonText({
        config: cfg.name,
        file,
        up: rows.length - down,
        down,
        targets: rows.map((r) => ({
          table: r.service,
          target: r.fwmark,
          type: r.type,
          checked: r.where,
          up: r.ok,
          latency_ms: r.ms,
          error: r.error,
        })),
      }));
      return down === 0 ? 0 : 1;
    }
    if (rows.length === 0) {
      say(`no health checks in ${file}`);
      return 0;
    }
    for (const l of onceTable(rows)) say(l);
    say(down === 0 ? `all ${rows.length} targets up` : `${down} of ${rows.length} targets down`);
    return down === 0 ? 0 : 1;
  },
};
