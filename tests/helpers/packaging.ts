/**
 * Readers of the packaging files (packaging/, deploy/), for the tests that check them where the real tools
 * cannot run here: a systemd unit as systemd reads it (sections, keys in order, continuation lines, a
 * repeated key appending and an empty value resetting) and a Dockerfile as docker reads it (instructions,
 * continuation lines, comments, exec-form JSON arguments).
 */

/** A unit file: section name → its assignments in file order (a key may repeat, as ExecStart= does). */
export type Unit = Map<string, [key: string, value: string][]>;

/**
 * Parses a systemd unit file (systemd.syntax(7)): `[Section]` headers, `Key=Value` lines, `#`/`;` comments,
 * and a trailing backslash continuing a line (systemd joins the pieces with a space).
 *
 * @example
 * ```ts
 * values(parseUnit("[Service]\nExecStart=/bin/true\n"), "Service", "ExecStart"); // ["/bin/true"]
 * ```
 */
export function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section = "";
  let pending = "";
  for (const raw of text.split("\n")) {
    const trimmed = raw.trim();
    if (pending === "" && (trimmed.startsWith("#") || trimmed.startsWith(";"))) continue;
    if (trimmed.endsWith("\\")) {
      pending += trimmed.slice(0, -1).trimEnd() + " ";
      continue;
    }
    const line = (pending + trimmed).trim();
    pending = "";
    if (line === "") continue;
    const header = /^\[([^\]]+)\]$/.exec(line);
    if (header) {
      section = header[1];
      if (!unit.has(section)) unit.set(section, []);
      continue;
    }
    const eq = line.indexOf("=");
    if (eq < 0 || section === "") throw new Error(`unit: not an assignment in a section: ${line}`);
    unit.get(section)!.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()]);
  }
  return unit;
}

/**
 * The effective values of `key` in `section`, as systemd merges them: each assignment appends, an empty
 * one clears what came before (`ExecStart=` in a drop-in).
 */
export function values(unit: Unit, section: string, key: string): string[] {
  let out: string[] = [];
  for (const [k, v] of unit.get(section) ?? []) {
    if (k !== key) continue;
    if (v === "") out = [];
    else out.push(v);
  }
  return out;
}

/** The one effective value of `key` (the last assignment wins), or undefined. */
export function value(unit: Unit, section: string, key: string): string | undefined {
  const all = values(unit, section, key);
  return all.length === 0 ? undefined : all[all.length - 1];
}

/** One Dockerfile instruction. */
export interface Instruction {
  /** The instruction, upper case (`FROM`, `RUN`, ...). */
  cmd: string;
  /** Its text after the instruction word, continuation lines joined with a space. */
  text: string;
  /** The words of the exec (JSON) form, when the text is a JSON array of strings. */
  json?: string[];
  /** Flags before the arguments (`--from=build`, `--interval=10s`), `name` → value. */
  flags: Record<string, string>;
  /** 1-based line of the instruction's first line. */
  line: number;
}

/**
 * Parses a Dockerfile: instructions, `#` comment lines (also inside a continued instruction, as docker
 * skips them), trailing-backslash continuations, `--flag=value` options and exec-form JSON arguments.
 * Parser directives and heredocs are not supported (the files here use neither).
 */
export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let buf = "";
  let start = 0;
  const lines = text.split("\n");
  lines.forEach((raw, i) => {
    const trimmed = raw.trim();
    if (trimmed.startsWith("#")) return;
    if (buf === "" && trimmed === "") return;
    if (buf === "") start = i + 1;
    if (trimmed.endsWith("\\")) {
      buf += trimmed.slice(0, -1) + " ";
      return;
    }
    buf += trimmed;
    const m = /^([A-Za-z]+)\s*(.*)$/s.exec(buf.trim());
    buf = "";
    if (!m) throw new Error(`Dockerfile:${start}: not an instruction`);
    let rest = m[2].trim();
    const flags: Record<string, string> = {};
    for (let f = /^--([a-z-]+)=(\S+)\s*/.exec(rest); f; f = /^--([a-z-]+)=(\S+)\s*/.exec(rest)) {
      flags[f[1]] = f[2];
      rest = rest.slice(f[0].length);
    }
    const ins: Instruction = { cmd: m[1].toUpperCase(), text: rest, flags, line: start };
    if (rest.startsWith("[")) {
      try {
        const j = JSON.parse(rest);
        if (Array.isArray(j) && j.every((w) => typeof w === "string")) ins.json = j;
      } catch { /* shell form that starts with a bracket */ }
    }
    out.push(ins);
  });
  if (buf !== "") throw new Error("Dockerfile: ends inside a continued instruction");
  return out;
}
