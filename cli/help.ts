/**
 * Help texts, read from the command registry (cli/registry.ts): every option
 * is described once, in its command's table (cli/getopt.ts OptionSpec), and
 * `--help`, `nfqlb help`, the shell completions (cli/completion.ts), the man
 * page and docs/cli.md's option reference (scripts/gen_cli_docs.ts) are all
 * printed from it.
 *
 * Upstream's commands print upstream's text byte for byte (tests/conformance
 * replays it), then, when we added options to them, a block of ours.
 */
import type { Command } from "./command.ts";
import type { OptionSpec } from "./getopt.ts";

/** Upstream nfqlb 1.2.0's commands; every other command is ours. */
export const UPSTREAM_COMMANDS: ReadonlySet<string> = new Set([
  "activate",
  "deactivate",
  "version",
  "flow-set",
  "flow-delete",
  "flow-list",
  "flow-list-names",
  "flowlb",
  "fwmark",
  "lb",
  "init",
  "delete",
  "show",
  "stats",
  "primebelow",
  "trace",
  "loglevel",
  "trace-flow-set",
  "trace-flow-delete",
  "trace-flow-list",
  "trace-flow-list-names",
]);

/** The heading of our block in an upstream command's help. */
export const OURS_HEADING = "nfqlb-deno options (not in nfqlb 1.2.0):";

/** The placeholder of an option's value: its `arg`, else its name in capitals. */
export function argName(o: OptionSpec): string {
  return o.arg ?? o.name.toUpperCase().replaceAll("-", "_");
}

/** How an option is written: `--dry-run` (a flag), `--watch[=N]` (optional value), `--file=FILE`. */
export function optionUsage(o: OptionSpec): string {
  if (o.flag) return `--${o.name}`;
  return o.optional ? `--${o.name}[=${argName(o)}]` : `--${o.name}=${argName(o)}`;
}

/** Whether an option is in upstream's table of the command (and so printed in upstream's layout). */
export function isUpstreamOption(cmd: Command, o: OptionSpec): boolean {
  return UPSTREAM_COMMANDS.has(cmd.name) && !o.ours;
}

/** Upstream's layout: `  --name= help ` with `(required)` or a trailing space. */
function upstreamLine(o: OptionSpec): string {
  return `  --${o.name}= ${o.help} ${o.required ? "(required)" : ""}\n`;
}

/** Our layout: the usage, padded to `width`, then the help; continuation lines indented below it. */
function ourLines(options: OptionSpec[]): string {
  const width = Math.max(...options.map((o) => optionUsage(o).length));
  return options.map((o) => {
    const help = o.help + (o.required ? " (required)" : "");
    const indent = " ".repeat(width + 4);
    const text = help.split("\n").map((l) => l.trim()).join(`\n${indent}`);
    return `  ${optionUsage(o).padEnd(width)}  ${text}\n`;
  }).join("");
}

/** The options of ours a command has (for an upstream command: the ones we added). */
export function ourOptions(cmd: Command): OptionSpec[] {
  return cmd.options.filter((o) => !isUpstreamOption(cmd, o));
}

/**
 * `<cmd> --help`. Upstream's commands: upstream's header and option lines,
 * then, when we added options, a blank line, {@link OURS_HEADING} and ours.
 * Our own commands: the header, then every option in our layout.
 */
export function helpText(cmd: Command): string {
  const ours = ourOptions(cmd);
  if (!UPSTREAM_COMMANDS.has(cmd.name)) return `${cmd.header}\n${ours.length > 0 ? ourLines(ours) : ""}`;
  let text = cmd.header + "\n";
  for (const o of cmd.options) if (!o.ours) text += upstreamLine(o);
  if (ours.length > 0) text += `\n${OURS_HEADING}\n${ourLines(ours)}`;
  return text;
}

/** `nfqlb` alone (and `nfqlb help`): the usage line and the command names, as upstream. */
export function usageText(argv0: string, commands: readonly Command[]): string {
  return `Usage: ${argv0} <command> [opt...]\nCommands:\n${commands.map((c) => `  ${c.name}\n`).join("")}`;
}

/** Optimal string alignment distance (Levenshtein plus swapping two neighbours), bounded by the lengths. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/**
 * The command name closest to a mistyped one, or undefined when none is
 * close: at most 2 edits, and fewer than half the typed word's length (so
 * `nosuchcmd` suggests nothing and prints upstream's line alone). Ties go to
 * the first in listing order. Words longer than 64 characters are not compared.
 */
export function closestCommand(typed: string, names: readonly string[]): string | undefined {
  if (typed.length === 0 || typed.length > 64) return undefined;
  let best: string | undefined;
  let bestD = Infinity;
  for (const n of names) {
    const d = editDistance(typed.toLowerCase(), n);
    if (d < bestD) {
      best = n;
      bestD = d;
    }
  }
  return bestD <= 2 && bestD * 2 < typed.length ? best : undefined;
}
