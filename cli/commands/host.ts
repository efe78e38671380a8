/**
 * apply, teardown, status (ours, docs/apply.md): a whole load-balancer host
 * from one config file (docs/config.md). Their code (zod, yaml, the kernel
 * plumbing) loads only when one of them runs.
 */
import type { Command } from "../command.ts";
import { out } from "../io.ts";
import { NfqlbError } from "../../core/errors.ts";

const load = async (file: string) => (await import("../../host/config/load.ts")).loadHostConfig(file);
const say = (line: string) => out(line + "\n");

/** `apply -f FILE [--dry-run]`. */
export const apply: Command = {
  name: "apply",
  header:
    "apply --file=FILE [--dry-run]\n  Make this host match a config file (tables, targets, lb, kernel rules, flows)",
  options: [
    { name: "file", help: "The config file (YAML or JSON; docs/config.md)", required: true },
    { name: "dry-run", help: "Print what would change, change nothing", flag: true },
  ],
  async run({ opts }) {
    const file = opts.get("file")!;
    const cfg = await load(file);
    const dryRun = opts.has("dry-run");
    const { applyHost } = await import("../../host/apply.ts");
    const n = await applyHost(cfg, { file: await absolute(file), dryRun, say });
    const changes = `${n} change${n === 1 ? "" : "s"}`;
    if (n === 0) say(`nothing to change: the host matches ${file}`);
    else say(dryRun ? `dry run: ${changes}, none made` : `applied ${file}: ${changes}`);
    return 0;
  },
};

/** `teardown -f FILE`. */
export const teardown: Command = {
  name: "teardown",
  header: "teardown --file=FILE\n  Remove what apply set up for a config file, and nothing else",
  options: [{ name: "file", help: "The config file apply used", required: true }],
  async run({ opts }) {
    const file = opts.get("file")!;
    const cfg = await load(file);
    const { teardownHost } = await import("../../host/teardown.ts");
    const n = await teardownHost(cfg, say);
    say(n === 0 ? `nothing to remove for ${cfg.name}` : `removed ${n} things of ${cfg.name}`);
    return 0;
  },
};

/** `status [-f FILE]`: exit 0 when the host matches, 1 when it differs. */
export const status: Command = {
  name: "status",
  header: "status [--file=FILE]\n  Show this host against a config file (default: every applied config)",
  options: [{ name: "file", help: "The config file (default: the files apply recorded)" }],
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
    for (const f of files) {
      const st = await hostStatus(await load(f), f);
      for (const l of st.lines) say(l);
      drift += st.drift;
    }
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
    "health --file=FILE\n  Run every health check of a config once and print a table (exit 1 when a target is down)",
  options: [{
    name: "file",
    help: "The config file (YAML or JSON; docs/config.md, docs/health.md)",
    required: true,
  }],
  async run({ opts }) {
    const file = opts.get("file")!;
    const cfg = await load(file);
    const { checkOnce, onceTable } = await import("../../host/health/once.ts");
    const rows = await checkOnce(cfg);
    if (rows.length === 0) {
      say(`no health checks in ${file}`);
      return 0;
    }
    for (const l of onceTable(rows)) say(l);
    const down = rows.filter((r) => !r.ok).length;
    say(down === 0 ? `all ${rows.length} targets up` : `${down} of ${rows.length} targets down`);
    return down === 0 ? 0 : 1;
  },
};
