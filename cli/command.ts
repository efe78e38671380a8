/** What every subcommand provides to the dispatcher. */
import type { OptionSpec } from "./getopt.ts";

/** The parsed invocation handed to a command. */
export interface Invocation {
  /** Option values by long name (flags map to ""). */
  opts: Map<string, string>;
  /** Positional arguments. */
  args: string[];
}

/** A subcommand: its upstream help header, option table and implementation. */
export interface Command {
  /** Name as typed after `nfqlb`. */
  name: string;
  /** Help header (upstream's `help` option text). */
  header: string;
  /** Options in upstream's table order (without `help`). */
  options: OptionSpec[];
  /** Runs the command; returns the exit status. */
  run(inv: Invocation): number | Promise<number>;
}
