/**
 * Option parsing with glibc `getopt_long_only(argc, argv, "", ...)` semantics,
 * as upstream nfqlb uses it: long options written `--opt` or `-opt`, values as
 * `--opt=v` or `--opt v`, unique-prefix abbreviations, GNU permutation of
 * positionals, `--` ends options, and glibc's exact error texts.
 */

/** One option of a command (the `help` entry is implicit and always first). */
export interface OptionSpec {
  /** Long name, without dashes. Case-sensitive. */
  name: string;
  /** One-line help text (may contain a newline, as upstream's trace --selection). */
  help: string;
  /** Printed as `(required)` and checked after parsing. */
  required?: boolean;
  /** Takes no argument (upstream: default value "no"). */
  flag?: boolean;
  /** Takes an argument only as `--opt=value` (getopt's optional_argument); alone it maps to "". */
  optional?: boolean;
  /**
   * Ours, added to one of upstream's commands: `--help` prints it after
   * upstream's text, which stays byte-identical, in a block of its own
   * (cli/help.ts); it matches only by its full name, so every abbreviation
   * upstream accepts or rejects means the same here. (Options of our own
   * commands do not set it: they are all ours, and abbreviate as usual.)
   */
  ours?: boolean;
  /** The value's placeholder in our help, the man page and docs/cli.md (`FILE`, `ADDR:PORT`); none for flags. */
  arg?: string;
  /** The values it takes, when they are a fixed set (offered by shell completion). */
  choices?: readonly string[];
}

/** What a successful parse yields. */
export interface ParsedOptions {
  /** Option values by name (the last occurrence wins); flags map to "". */
  values: Map<string, string>;
  /** Arguments that are not options, in order. */
  positionals: string[];
  /** `--help` (or an unambiguous prefix, or `-h`) was given. */
  help: boolean;
}

/** A parse error; `message` is the exact text for stderr (without newline). */
export class GetoptError extends Error {
  /** @param message the line to print on stderr */
  constructor(message: string) {
    super(message);
    this.name = "GetoptError";
  }
}

const HELP: OptionSpec = { name: "help", help: "", flag: true };

/**
 * Parses `args` (the words after the command name) for command `cmd`.
 * Throws GetoptError with glibc's message on an unknown, ambiguous or
 * malformed option. Missing required options are not checked here (see
 * {@link missingRequired}) because `--help` must win over them.
 *
 * @example
 * ```ts
 * const p = getoptLongOnly("init", ["-M", "97", "--sh=x"], [
 *   { name: "shm", help: "" }, { name: "M", help: "" },
 * ]);
 * // p.values: shm=x, M=97
 * ```
 */
export function getoptLongOnly(cmd: string, args: string[], specs: OptionSpec[]): ParsedOptions {
  const table = [HELP, ...specs];
  const values = new Map<string, string>();
  const positionals: string[] = [];
  let help = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (arg.length < 2 || arg[0] !== "-") {
      positionals.push(arg);
      continue;
    }
    const prefix = arg[1] === "-" ? "--" : "-";
    const body = arg.slice(prefix.length);
    const eq = body.indexOf("=");
    const name = eq >= 0 ? body.slice(0, eq) : body;
    // Deviation (docs/compatibility.md): `-h` is help even where other options start with h.
    const opt = name === "h" && prefix === "-" && eq < 0 ? HELP : findOption(cmd, table, name, prefix, arg);
    let value: string;
    if (opt.flag) {
      if (eq >= 0) throw new GetoptError(`${cmd}: option '${prefix}${opt.name}' doesn't allow an argument`);
      value = "";
    } else if (eq >= 0) {
      value = body.slice(eq + 1);
    } else if (opt.optional) {
      value = "";
    } else if (i + 1 < args.length) {
      value = args[++i];
    } else {
      throw new GetoptError(`${cmd}: option '${prefix}${opt.name}' requires an argument`);
    }
    if (opt === HELP) {
      help = true;
      // upstream prints help at once, whatever follows
      break;
    }
    values.set(opt.name, value);
  }
  return { values, positionals, help };
}

function findOption(cmd: string, table: OptionSpec[], name: string, prefix: string, arg: string): OptionSpec {
  const exact = table.find((o) => o.name === name);
  if (exact) return exact;
  // our extensions to upstream's commands match only by their full name, so every abbreviation
  // upstream accepts or rejects means the same here
  const matches = name.length > 0 ? table.filter((o) => !o.ours && o.name.startsWith(name)) : [];
  if (matches.length === 1) return matches[0];
  if (matches.length > 1) {
    const list = matches.map((o) => `'${prefix}${o.name}'`).join(" ");
    throw new GetoptError(`${cmd}: option '${arg}' is ambiguous; possibilities: ${list}`);
  }
  throw new GetoptError(`${cmd}: unrecognized option '${arg}'`);
}

/** Names of required options that `parsed` lacks, in table order. */
export function missingRequired(parsed: ParsedOptions, specs: OptionSpec[]): string[] {
  return specs.filter((o) => o.required && !parsed.values.has(o.name)).map((o) => o.name);
}
