/**
 * A strict reader of the Prometheus text exposition format (version 0.0.4),
 * for tests of /metrics endpoints: it throws on anything a scraper could
 * misread — a malformed line, a metric or label name out of the allowed
 * characters, a bad escape, a value that is not a float, a sample before its
 * family's TYPE, a family split in two, a TYPE or HELP given twice, the same
 * series twice, a counter not named `_total` — and returns the samples.
 * `promtool check metrics` (Debian package prometheus) checks the same and
 * more; {@link promtool} runs it when it is installed.
 */

/** One sample. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A parsed exposition. */
export interface Exposition {
  samples: Sample[];
  /** Family name → type. */
  types: Map<string, string>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);
const FLOAT = /^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Inf|NaN)$/;

/** The labels of `{…}`: `a="x",b="y\"z"`. */
function parseLabels(text: string, line: string): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  for (let guard = 0; guard < 1000 && i < text.length; guard++) {
    const eq = text.indexOf("=", i);
    if (eq < 0) throw new Error(`label without value: ${line}`);
    const name = text.slice(i, eq);
    if (!LABEL.test(name)) throw new Error(`bad label name ${JSON.stringify(name)}: ${line}`);
    if (name in out) throw new Error(`label ${name} twice: ${line}`);
    if (text[eq + 1] !== '"') throw new Error(`label value not quoted: ${line}`);
    let v = "", j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === "\\") {
        const e = text[++j];
        if (e === "\\") v += "\\";
        else if (e === '"') v += '"';
        else if (e === "n") v += "\n";
        else throw new Error(`bad escape \\${e}: ${line}`);
      } else if (text[j] === "\n") throw new Error(`newline in a label value: ${line}`);
      else v += text[j];
    }
    if (j >= text.length) throw new Error(`unterminated label value: ${line}`);
    out[name] = v;
    i = j + 1;
    if (i < text.length) {
      if (text[i] !== ",") throw new Error(`expected , between labels: ${line}`);
      i++;
    }
  }
  return out;
}

/** The family a sample belongs to (histogram and summary series carry suffixes). */
function familyOf(name: string, types: Map<string, string>): string {
  for (const suffix of ["_bucket", "_count", "_sum"]) {
    const base = name.slice(0, -suffix.length);
    if (name.endsWith(suffix) && (types.get(base) === "histogram" || types.get(base) === "summary")) {
      return base;
    }
  }
  return name;
}

/** Parses and checks an exposition; throws the first problem, naming the line. */
export function parseExposition(text: string): Exposition {
  if (text !== "" && !text.endsWith("\n")) throw new Error("the exposition does not end with a newline");
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const done = new Set<string>(); // families whose samples are over
  const series = new Set<string>();
  let current = "";
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) (.*)$/.exec(line);
      if (!m) {
        if (/^# (HELP|TYPE)\b/.test(line)) throw new Error(`malformed ${line}`);
        continue; // a comment
      }
      const [, kind, name, rest] = m;
      if (!NAME.test(name)) throw new Error(`bad metric name: ${line}`);
      if (kind === "HELP") {
        if (helps.has(name)) throw new Error(`HELP twice: ${line}`);
        helps.add(name);
      } else {
        if (types.has(name)) throw new Error(`TYPE twice: ${line}`);
        if (!TYPES.has(rest)) throw new Error(`bad type: ${line}`);
        if (samples.some((s) => familyOf(s.name, types) === name)) {
          throw new Error(`TYPE after samples: ${line}`);
        }
        if (rest === "counter" && !name.endsWith("_total")) {
          throw new Error(`counter not named _total: ${line}`);
        }
        types.set(name, rest);
      }
      continue;
    }
    const m = /^([^\s{]+)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$/.exec(line);
    if (!m) throw new Error(`malformed sample: ${line}`);
    const [, name, labelText, value] = m;
    if (!NAME.test(name)) throw new Error(`bad metric name: ${line}`);
    if (!FLOAT.test(value)) throw new Error(`bad value: ${line}`);
    const labels = labelText ? parseLabels(labelText, line) : {};
    const family = familyOf(name, types);
    if (!types.has(family)) throw new Error(`sample without TYPE: ${line}`);
    if (family !== current) {
      if (done.has(family)) throw new Error(`family ${family} split: ${line}`);
      if (current) done.add(current);
      current = family;
    }
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (series.has(key)) throw new Error(`series twice: ${line}`);
    series.add(key);
    samples.push({
      name,
      labels,
      value: Number(value.replace(/^\+?Inf$/, "Infinity").replace(/^-Inf$/, "-Infinity")),
    });
  }
  return { samples, types };
}

/** The value of the one sample `name` with exactly these labels (a subset match); undefined when none. */
export function sampleValue(
  e: Exposition,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  return e.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    ?.value;
}

/**
 * `promtool check metrics` on the text, when promtool is installed (Debian:
 * `apt-get install prometheus`): undefined when it is not, else its exit
 * code and output.
 */
export async function promtool(text: string): Promise<{ code: number; output: string } | undefined> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch {
    return undefined;
  }
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return { code: out.code, output: dec.decode(out.stdout) + dec.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}
