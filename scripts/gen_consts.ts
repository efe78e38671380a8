/**
 * Writes ffi/consts.ts, the constants TypeScript shares with the C library,
 * from c/nfqlb.h: every #define run, enum and struct whose comment starts
 * with `ts:` (see the header's top comment). Each constant keeps its C name
 * and gets its comment as JSDoc; a struct becomes `<NAME>_OFF`, the byte
 * offset of each field, and `<NAME>_SIZEOF`.
 *
 *   deno run -A scripts/gen_consts.ts           write ffi/consts.ts (deno task consts)
 *   deno run -A scripts/gen_consts.ts --check   exit 1, naming what differs, when it is stale
 *
 * Struct layouts are computed with the C rules for the fixed-width types the
 * header uses (natural alignment) and checked against the offsets the field
 * comments state; the C side asserts sizes and offsets with _Static_assert,
 * and tests/unit/consts_test.ts compares sizes with the library's.
 */

/** Paths, relative to the repository root. */
export const HEADER_FILE = "c/nfqlb.h";
export const CONSTS_FILE = "ffi/consts.ts";

/** One exported value. */
interface Constant {
  name: string;
  /** The value as TypeScript source. */
  value: string;
  /** Why-comment (JSDoc). */
  doc: string;
}

/** A marked #define run, enum or struct. */
interface Group {
  /** The C file whose section holds it. */
  file: string;
  /** `enum <name>`, `struct <name>`, or "" for #defines. */
  what: string;
  /** The `ts:` comment, without `ts:`. */
  why: string;
  items: Constant[];
}

const LINE_WIDTH = 110;

class HeaderError extends Error {}

/** C integer expressions of the header: literals, NFQLB_ names, ( ) ~ - * / + << >> & |. */
function evaluate(expr: string, symbols: Map<string, bigint>, where: string): bigint {
  const tokens = expr.match(/0[xX][0-9a-fA-F]+[uUlL]*|\d+[uUlL]*|[A-Za-z_]\w*|<<|>>|[-+*/()|&~]/g) ?? [];
  if (tokens.join("").replace(/\s/g, "") !== expr.replace(/\s/g, "")) {
    throw new HeaderError(`${where}: cannot evaluate \`${expr}\``);
  }
  let i = 0;
  const peek = () => tokens[i];
  const take = () => tokens[i++];
  const binary =
    (next: () => bigint, ops: Record<string, (a: bigint, b: bigint) => bigint>) => (): bigint => {
      let v = next();
      while (peek() !== undefined && peek() in ops) {
        const op = take();
        v = ops[op](v, next());
      }
      return v;
    };
  const primary = (): bigint => {
    const t = take();
    if (t === undefined) throw new HeaderError(`${where}: \`${expr}\` ends early`);
    if (t === "(") {
      const v = or();
      if (take() !== ")") throw new HeaderError(`${where}: unbalanced \`${expr}\``);
      return v;
    }
    if (t === "-") return -primary();
    if (t === "~") return ~primary();
    if (/^\d|^0[xX]/.test(t)) return BigInt(t.replace(/[uUlL]+$/, ""));
    const s = symbols.get(t);
    if (s === undefined) throw new HeaderError(`${where}: unknown name ${t} in \`${expr}\``);
    return s;
  };
  const mul = binary(primary, { "*": (a, b) => a * b, "/": (a, b) => a / b });
  const add = binary(mul, { "+": (a, b) => a + b, "-": (a, b) => a - b });
  const shift = binary(add, { "<<": (a, b) => a << b, ">>": (a, b) => a >> b });
  const and = binary(shift, { "&": (a, b) => a & b });
  const or: () => bigint = binary(and, { "|": (a, b) => a | b });
  const v = or();
  if (i !== tokens.length) throw new HeaderError(`${where}: trailing tokens in \`${expr}\``);
  return v;
}

/** A value as TypeScript source: a plain literal as written (without C suffixes), else the evaluated number. */
function tsValue(expr: string, v: bigint): string {
  const lit = /^(-?)(0[xX][0-9a-fA-F]+|\d+)[uUlL]*$/.exec(expr.trim());
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) return `${v}n`;
  if (lit) return `${lit[1]}${lit[2].toLowerCase()}`;
  return String(v);
}

/** The text of a comment (its lines joined), without the comment marks. */
function commentText(lines: string[]): string {
  return lines.join("\n").replace(/^\s*\/\*\*?/, "").replace(/\*\/\s*$/, "").split("\n")
    .map((l) => l.replace(/^\s*\* ?/, "").trim()).filter((l) => l !== "").join(" ").trim();
}

const SIZES: Record<string, number> = {
  uint8_t: 1,
  int8_t: 1,
  uint16_t: 2,
  int16_t: 2,
  uint32_t: 4,
  int32_t: 4,
  uint64_t: 8,
  int64_t: 8,
};

/** Parses the marked groups of c/nfqlb.h. */
export function parseHeader(text: string): Group[] {
  const lines = text.split("\n");
  const symbols = new Map<string, bigint>();
  // every object-like NFQLB_ define with an integer value, for the expressions of the others
  for (const [n, l] of lines.entries()) {
    const d = /^#define (NFQLB_\w+)\s+(.+?)\s*(?:\/\*.*\*\/)?\s*$/.exec(l);
    if (!d) continue;
    try {
      symbols.set(d[1], evaluate(d[2], symbols, `${HEADER_FILE}:${n + 1}`));
    } catch { /* not an integer constant (none today); only an error if it is exported */ }
  }
  const groups: Group[] = [];
  // before the first section banner: the header's own constants
  let file = "nfqlb.h";
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*\/\*/.test(lines[i])) continue;
    // a comment: a section banner names its file; a `ts:` comment marks what follows
    if (lines[i].startsWith("/* ---")) file = /^ \* (\w+\.c)\b/.exec(lines[i + 1])?.[1] ?? file;
    const start = i;
    while (!lines[i].includes("*/")) i++;
    const doc = commentText(lines.slice(start, i + 1));
    if (!/^ts:/.test(doc)) continue;
    const why = doc.replace(/^ts:\s*/, "");
    const where = (k: number) => `${HEADER_FILE}:${k + 1}`;
    const next = lines[i + 1] ?? "";
    if (next.startsWith("#define ")) {
      const items: Constant[] = [];
      for (i++; lines[i]?.startsWith("#define "); i++) {
        const d = /^#define (NFQLB_\w+)\s+(.+?)\s*(?:\/\*\s*(.*?)\s*\*\/)?\s*$/.exec(lines[i]);
        if (!d) throw new HeaderError(`${where(i)}: not a constant: ${lines[i]}`);
        const v = evaluate(d[2], symbols, where(i));
        const literal = /^-?(0[xX][0-9a-fA-F]+|\d+)[uUlL]*$/.test(d[2].trim());
        const c = literal ? "" : ` (C: \`${d[2].trim()}\`)`;
        items.push({ name: d[1], value: tsValue(d[2], v), doc: `${d[3] ?? why}${c}` });
      }
      i--;
      groups.push({ file, what: "", why, items });
    } else if (/^enum \w+ \{$/.test(next)) {
      const name = /^enum (\w+)/.exec(next)![1];
      const items: Constant[] = [];
      let v = -1n;
      for (i += 2; !/^\};/.test(lines[i]); i++) {
        if (lines[i].trim() === "") continue;
        const m = /^\s*(NFQLB_\w+)\s*(?:=\s*([^,/]+?))?\s*,?\s*(?:\/\*\s*(.*?)\s*\*\/)?\s*$/.exec(lines[i]);
        if (!m) throw new HeaderError(`${where(i)}: not an enum member: ${lines[i]}`);
        v = m[2] !== undefined ? evaluate(m[2], symbols, where(i)) : v + 1n;
        symbols.set(m[1], v);
        items.push({ name: m[1], value: tsValue(String(v), v), doc: m[3] ?? why });
      }
      groups.push({ file, what: `enum ${name}`, why, items });
    } else if (/^struct \w+ \{$/.test(next)) {
      const name = /^struct (\w+)/.exec(next)![1];
      const fields: { name: string; off: number; doc: string }[] = [];
      let off = 0, align = 1;
      for (i += 2; !/^\};/.test(lines[i]); i++) {
        const m = /^\s*(\w+)\s+(\w+)(?:\[([^\]]+)\])?;\s*(?:\/\*\s*(.*?)\s*\*\/)?\s*$/.exec(lines[i]);
        if (!m || !(m[1] in SIZES)) {
          throw new HeaderError(`${where(i)}: not a fixed-width field: ${lines[i]}`);
        }
        const size = SIZES[m[1]];
        const n = m[3] === undefined ? 1 : Number(evaluate(m[3], symbols, where(i)));
        off = Math.ceil(off / size) * size;
        align = Math.max(align, size);
        // a comment that starts with a number states the offset: it must agree
        const stated = /^(\d+)\b\s*(.*)$/.exec(m[4] ?? "");
        if (stated && Number(stated[1]) !== off) {
          throw new HeaderError(
            `${where(i)}: ${name}.${m[2]} is at offset ${off}, its comment says ${stated[1]}`,
          );
        }
        fields.push({ name: m[2], off, doc: stated ? stated[2] : m[4] ?? "" });
        off += size * n;
      }
      const sizeof = Math.ceil(off / align) * align;
      const upper = name.toUpperCase();
      const body = fields.map((f) => `${f.doc ? `${jsdoc(f.doc, "  ")}\n` : ""}  ${f.name}: ${f.off},`);
      groups.push({
        file,
        what: `struct ${name}`,
        why,
        items: [
          {
            name: `${upper}_OFF`,
            value: `{\n${body.join("\n")}\n} as const`,
            doc: `Byte offsets of the fields.`,
          },
          { name: `${upper}_SIZEOF`, value: String(sizeof), doc: `sizeof(struct ${name}).` },
        ],
      });
    } else {
      throw new HeaderError(
        `${where(i)}: a \`ts:\` comment must stand right above #defines, an enum or a struct`,
      );
    }
  }
  return groups;
}

/** A JSDoc comment, on one line when it fits. */
function jsdoc(text: string, indent = ""): string {
  const t = text.replace(/\*\//g, "*\\/");
  const one = `${indent}/** ${t} */`;
  if (one.length <= LINE_WIDTH) return one;
  const out: string[] = [];
  let line = "";
  for (const w of t.split(/\s+/)) {
    if (line && `${indent} * ${line} ${w}`.length > LINE_WIDTH) {
      out.push(line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) out.push(line);
  return [`${indent}/**`, ...out.map((l) => `${indent} * ${l}`), `${indent} */`].join("\n");
}

/** The text of ffi/consts.ts for a header. */
export function generate(headerText: string): string {
  const out = [
    "/**",
    ` * Constants shared with the C library, generated by scripts/gen_consts.ts from ${HEADER_FILE}`,
    " * (what it marks with `ts:`): do not edit. `deno task consts` rewrites this file, `deno task check`",
    " * fails when it is stale.",
    " */",
  ];
  for (const g of parseHeader(headerText)) {
    out.push("", `// ${g.file}${g.what ? `, ${g.what}` : ""}: ${g.why}`);
    for (const c of g.items) out.push(jsdoc(c.doc), `export const ${c.name} = ${c.value};`);
  }
  return out.join("\n") + "\n";
}

/** name -> value text of the `export const`s of a consts file. */
function exportsOf(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of text.matchAll(/^export const (\w+) = ([\s\S]*?);$/gm)) {
    m.set(e[1], e[2].replace(/\/\*\*[\s\S]*?\*\//g, "").replace(/\s+/g, " "));
  }
  return m;
}

/** What makes `current` (the file) differ from `expected` (generated), one line each; [] when equal. */
export function staleness(current: string, expected: string): string[] {
  if (current === expected) return [];
  const have = exportsOf(current), want = exportsOf(expected);
  const out: string[] = [];
  for (const [n, v] of want) {
    if (!have.has(n)) out.push(`${n}: missing (c/nfqlb.h: ${v})`);
    else if (have.get(n) !== v) out.push(`${n}: ${CONSTS_FILE} has ${have.get(n)}, c/nfqlb.h gives ${v}`);
  }
  for (const n of have.keys()) if (!want.has(n)) out.push(`${n}: no longer exported by c/nfqlb.h`);
  if (out.length === 0) out.push("the values agree; comments, order or formatting differ");
  return out;
}

if (import.meta.main) {
  const root = new URL("../", import.meta.url);
  const expected = generate(Deno.readTextFileSync(new URL(HEADER_FILE, root)));
  const target = new URL(CONSTS_FILE, root);
  if (Deno.args.includes("--check")) {
    let current = "";
    try {
      current = Deno.readTextFileSync(target);
    } catch { /* missing: everything differs */ }
    const diff = staleness(current, expected);
    if (diff.length) {
      console.error(`${CONSTS_FILE} is stale (run: deno task consts):\n  ${diff.join("\n  ")}`);
      Deno.exit(1);
    }
  } else {
    Deno.writeTextFileSync(target, expected);
    console.log(`wrote ${CONSTS_FILE}`);
  }
}
