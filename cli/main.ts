/**
 * nfqlb command-line entry: dispatch on the first word, parse options with
 * getopt_long_only semantics, run, and map errors to upstream's exit codes.
 */
import { GetoptError, getoptLongOnly, missingRequired } from "./getopt.ts";
import { err, out } from "./io.ts";
import type { Command } from "./command.ts";
import { NfqlbError } from "../core/errors.ts";

/**
 * The dataplane commands, loaded on their own: their start time is the gap
 * of a restart (docs/dataplane.md "Start and stop without loss"), and the
 * registry would load every other command's modules first. Every other
 * command is found in the registry (cli/registry.ts), loaded on demand.
 */
const DATAPLANE: Record<string, () => Promise<Command>> = {
  lb: async () => (await import("./commands/lb.ts")).lb,
  flowlb: async () => (await import("./commands/lb.ts")).flowlb,
};

/** The command named `name`, or undefined. */
async function findCommand(name: string): Promise<Command | undefined> {
  const fast = Object.hasOwn(DATAPLANE, name) ? DATAPLANE[name] : undefined;
  if (fast) return await fast();
  const { COMMANDS } = await import("./registry.ts");
  return COMMANDS.find((c) => c.name === name);
}

/**
 * Runs one nfqlb invocation and returns its exit status.
 * @param args the words after the program name
 * @param argv0 the program name as typed (for the usage text)
 */
export async function main(args: string[], argv0 = "nfqlb"): Promise<number> {
  if (args.length === 0 || args[0] === "-h" || args[0] === "--help") {
    const { COMMANDS } = await import("./registry.ts");
    const { usageText } = await import("./help.ts");
    out(usageText(argv0, COMMANDS));
    return 0;
  }
  if (args[0] === "--version") {
    // ours (upstream: Unknown command); the same line as `version --build`
    const { buildLine } = await import("../core/version.ts");
    out(buildLine() + "\n");
    return 0;
  }
  const cmd = await findCommand(args[0]);
  if (!cmd) {
    // upstream's line, and on it (ours) the closest command name when one is close
    const { COMMANDS } = await import("./registry.ts");
    const { closestCommand } = await import("./help.ts");
    const near = closestCommand(args[0], COMMANDS.map((c) => c.name));
    err(`Unknown command [${args[0]}]${near ? `; did you mean '${near}'?` : ""}\n`);
    return 1;
  }
  try {
    const parsed = getoptLongOnly(cmd.name, args.slice(1), cmd.options);
    if (parsed.help) {
      const { helpText } = await import("./help.ts");
      out(helpText(cmd));
      return 0;
    }
    const missing = missingRequired(parsed, cmd.options);
    if (missing.length > 0) {
      err(missing.map((m) => `Missing option [--${m}]\n`).join(""));
      return 1;
    }
    return await cmd.run({ opts: parsed.values, args: parsed.positionals });
  } catch (e) {
    if (e instanceof GetoptError || e instanceof NfqlbError) {
      err(`${e.message}\n`);
      return e instanceof NfqlbError ? e.exitCode : 1;
    }
    err(`${cmd.name}: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

if (import.meta.main) {
  const argv0 = Deno.env.get("NFQLB_ARGV0") ?? "nfqlb";
  Deno.exit(await main(Deno.args, argv0));
}
