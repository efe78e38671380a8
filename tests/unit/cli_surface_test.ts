/**
 * The operator's surface (docs/cli.md): every option in `--help`, `version
 * --build`, `nfqlb help`, a suggestion for a mistyped command, the shell
 * completions (loaded in a real bash), the man page (fresh, rendered by
 * groff without warnings), scripts/install.sh into a temporary prefix, and
 * the docs: every `nfqlb <command> --option` they show is accepted.
 */
import assert from "node:assert/strict";
import { COMMANDS } from "../../cli/registry.ts";
import { GetoptError, getoptLongOnly } from "../../cli/getopt.ts";
import {
  closestCommand,
  helpText,
  optionUsage,
  ourOptions,
  OURS_HEADING,
  UPSTREAM_COMMANDS,
} from "../../cli/help.ts";
import { completionScript } from "../../cli/completion.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { NFQLB, ROOT } from "../harness/paths.ts";

/** Runs a program to its end (bounded by `timeout` ms); returns code, stdout, stderr. */
async function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  const r = await new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

/** Whether a program is on the PATH. */
async function have(program: string): Promise<boolean> {
  return (await run("bash", ["-c", `command -v ${program}`])).code === 0;
}

Deno.test("help: every option of every command is in its --help; ours after upstream's text; flags without '='", () => {
  for (const c of COMMANDS) {
    const text = helpText(c);
    for (const o of c.options) assert.ok(text.includes(`--${o.name}`), `${c.name} --help lacks --${o.name}`);
    const ours = ourOptions(c);
    if (UPSTREAM_COMMANDS.has(c.name) && ours.length > 0) {
      const at = text.indexOf(`\n${OURS_HEADING}\n`);
      assert.ok(at > 0, `${c.name}: no block of ours`);
      // upstream's part has none of ours; ours are all below the heading
      for (const o of ours) assert.ok(text.indexOf(`--${o.name}`) > at, `${c.name} --${o.name}`);
    }
    for (const o of ours) {
      assert.match(text, new RegExp(`^ {2}${optionUsage(o).replace(/[[\]]/g, "\\$&")} {2,}\\S`, "m"));
      if (o.flag) {
        assert.doesNotMatch(text, new RegExp(`--${o.name}=`), `${c.name}: flag --${o.name} with '='`);
      }
    }
  }
  // the options the issue found invisible
  const want: Record<string, string[]> = {
    lb: ["metrics", "fail_open", "batch"],
    stats: ["all", "watch"],
    init: ["conntrack", "scheduler"],
    activate: ["weight"],
  };
  for (const [name, opts] of Object.entries(want)) {
    const text = helpText(COMMANDS.find((c) => c.name === name)!);
    for (const o of opts) assert.ok(text.includes(`--${o}`), `${name} --${o}`);
  }
});

Deno.test("version: plain is 1.2.0; --build and nfqlb --version name ours, upstream, deno and the C library", async () => {
  const denoJson = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`));
  const header = Deno.readTextFileSync(`${ROOT}/c/nfqlb.h`);
  const lib = ["MAJOR", "MINOR", "PATCH"].map((p) =>
    new RegExp(`#define NFQLB_LIB_VERSION_${p} (\\d+)`).exec(header)![1]
  ).join(".");
  const line = `nfqlb-deno ${denoJson.version} (compatible with nfqlb 1.2.0), deno ${Deno.version.deno}, ` +
    `C library ${lib}\n`;
  assert.deepEqual(await nfqlb(["version"]), { code: 0, stdout: "1.2.0\n", stderr: "" });
  assert.deepEqual(await nfqlb(["version", "--build"]), { code: 0, stdout: line, stderr: "" });
  assert.deepEqual(await nfqlb(["--version"]), { code: 0, stdout: line, stderr: "" });
});

Deno.test("nfqlb help [command]; an unknown command suggests the closest name, exit 1", async () => {
  const all = await nfqlb([]);
  assert.equal(all.code, 0);
  assert.deepEqual(await nfqlb(["help"]), all);
  for (const c of ["lb", "apply", "init"]) {
    assert.deepEqual(await nfqlb(["help", c]), await nfqlb([c, "--help"]), c);
  }
  assert.deepEqual(await nfqlb(["help", "lbb"]), {
    code: 1,
    stdout: "",
    stderr: "help: unknown command 'lbb'; did you mean 'lb'?\n",
  });
  assert.deepEqual(await nfqlb(["shwo"]), {
    code: 1,
    stdout: "",
    stderr: "Unknown command [shwo]; did you mean 'show'?\n",
  });
  // nothing close: upstream's line alone (as recorded in tests/testdata/conformance/cli.json)
  assert.deepEqual(await nfqlb(["nosuchcmd"]), {
    code: 1,
    stdout: "",
    stderr: "Unknown command [nosuchcmd]\n",
  });
  const names = COMMANDS.map((c) => c.name);
  assert.equal(closestCommand("stat", names), "stats");
  assert.equal(closestCommand("acitvate", names), "activate");
  assert.equal(closestCommand("flowlist", names), "flow-list");
  assert.equal(closestCommand("x", names), undefined);
  assert.equal(closestCommand("", names), undefined);
  assert.equal(closestCommand("a".repeat(100_000), names), undefined);
});

Deno.test("completion: the bash script loads and completes commands, options and values", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-compl-" });
  try {
    Deno.writeTextFileSync(`${dir}/host.yaml`, "");
    const script = `${dir}/nfqlb.bash`;
    const r0 = await nfqlb(["completion", "bash"]);
    assert.equal(r0.code, 0, r0.stderr);
    Deno.writeTextFileSync(script, r0.stdout);
    const probe = `set -u
source ${script}
complete -p nfqlb
t() { COMP_WORDS=("$@"); COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 )); _nfqlb; echo "\${COMPREPLY[*]}"; }
t nfqlb sho
t nfqlb lb --met
t nfqlb stats --
t nfqlb init --scheduler = w
t nfqlb init --scheduler=w
t nfqlb apply -f ho
t nfqlb help complet
t nfqlb completion z
`;
    const r = await run("bash", ["--norc", "-c", probe], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    assert.deepEqual(r.stdout.split("\n"), [
      "complete -F _nfqlb nfqlb",
      "show",
      "--metrics=",
      "--help --ft_shm= --all --watch --tshm=",
      "wrr wlc",
      "--scheduler=wrr --scheduler=wlc",
      "host.yaml",
      "completion",
      "zsh",
      "",
    ]);
    // the other shells: their own syntax check, when installed
    for (const [shell, check] of [["zsh", ["-n"]], ["fish", ["-n"]]] as const) {
      if (!(await have(shell))) {
        console.log(`  ${shell} not installed: its script not checked`);
        continue;
      }
      const f = `${dir}/nfqlb.${shell}`;
      Deno.writeTextFileSync(f, completionScript(shell, COMMANDS));
      const c = await run(shell, [...check, f]);
      assert.equal(c.code, 0, `${shell}: ${c.stderr}`);
    }
    assert.deepEqual(await nfqlb(["completion", "tcsh"]), {
      code: 1,
      stdout: "",
      stderr: "completion: invalid shell 'tcsh' (expected one of bash, zsh, fish)\n",
    });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("man page and docs/cli.md's option reference are fresh; groff renders the page without warnings", async () => {
  const fresh = await run(Deno.execPath(), [
    "run",
    "--allow-read",
    "--allow-run",
    "scripts/gen_cli_docs.ts",
    "--check",
  ], {
    cwd: ROOT,
  });
  assert.equal(fresh.code, 0, fresh.stderr);
  const page = Deno.readTextFileSync(`${ROOT}/docs/nfqlb.1`);
  for (const s of [".TH NFQLB 1", ".SH NAME", ".SH SYNOPSIS", ".SH COMMANDS", ".SH ENVIRONMENT"]) {
    assert.ok(page.includes(s), s);
  }
  for (const c of COMMANDS) assert.ok(page.includes(`.SS ${c.name.replaceAll("-", "\\-")}\n`), c.name);
  if (!(await have("groff"))) {
    console.log("  groff not installed: the page's structure checked only");
    return;
  }
  const r = await run("groff", ["-man", "-Tutf8", "-ww", "-z", `${ROOT}/docs/nfqlb.1`]);
  assert.deepEqual([r.code, r.stderr], [0, ""]);
});

Deno.test("scripts/install.sh into a temporary prefix: nfqlb on its bin, completions, man page; --uninstall", async () => {
  const prefix = Deno.makeTempDirSync({ prefix: "nfqlb-install-" });
  try {
    const env = { PREFIX: prefix };
    const r = await run("bash", [`${ROOT}/scripts/install.sh`], { env });
    assert.equal(r.code, 0, r.stderr);
    const files = [
      "bin/nfqlb",
      "share/bash-completion/completions/nfqlb",
      "share/zsh/site-functions/_nfqlb",
      "share/fish/vendor_completions.d/nfqlb.fish",
      "share/man/man1/nfqlb.1",
    ];
    for (const f of files) assert.ok(Deno.statSync(`${prefix}/${f}`).isFile, f);
    const v = await run(`${prefix}/bin/nfqlb`, ["version"]);
    assert.deepEqual([v.code, v.stdout], [0, "1.2.0\n"]);
    // found on the PATH, with the installed completion loaded
    const onPath = await run("bash", [
      "--norc",
      "-c",
      `source ${prefix}/share/bash-completion/completions/nfqlb; complete -p nfqlb; nfqlb version --build`,
    ], { env: { PATH: `${prefix}/bin:${Deno.env.get("PATH")}` } });
    assert.equal(onPath.code, 0, onPath.stderr);
    assert.match(
      onPath.stdout,
      /^complete -F _nfqlb nfqlb\nnfqlb-deno \S+ \(compatible with nfqlb 1\.2\.0\)/,
    );
    const u = await run("bash", [`${ROOT}/scripts/install.sh`, "--uninstall"], { env });
    assert.equal(u.code, 0, u.stderr);
    for (const f of files) assert.throws(() => Deno.lstatSync(`${prefix}/${f}`), f);
  } finally {
    Deno.removeSync(prefix, { recursive: true });
  }
});

/** The code of a markdown text: fenced blocks and inline code spans. */
function codeOf(md: string): string[] {
  const out: string[] = [];
  const fence = /^```[^\n]*\n([\s\S]*?)^```/gm;
  for (const m of md.matchAll(fence)) out.push(...m[1].split("\n"));
  const prose = md.replace(fence, "");
  for (const m of prose.matchAll(/`([^`\n]+)`/g)) out.push(m[1]);
  return out;
}

/**
 * Every `nfqlb <command> [words]` in a line of code: the command, its option words (up to `|`, `;`, `&`, `)`,
 * `--`), and whether the line starts with it. Shell comments are dropped; `docker exec nfqlb nfqlb status`
 * is `status`; `kubectl -n nfqlb ...` names a namespace, not a command.
 */
export function invocations(
  code: string,
): { cmd: string; options: string[]; text: string; leads: boolean }[] {
  const line = code.replace(/(^|\s)#.*$/, "");
  const found = [];
  const re = /(?<!-n\s)(?<=^|[\s/(])nfqlb\s+(?!nfqlb\b)([a-z][a-z0-9-]*)([^|;&)`\n]*)/g;
  for (const m of line.matchAll(re)) {
    const options: string[] = [];
    for (const w of m[2].trim().split(/\s+/)) {
      if (w === "--") break;
      const word = w.replace(/^\[+/, "");
      if (/^--?[A-Za-z]/.test(word)) options.push(word.replace(/[=[\]].*$/, ""));
    }
    const leads = /^\s*(?:\$\s+)?(?:\.?\/?[\w.-]*\/)?$/.test(line.slice(0, m.index));
    found.push({ cmd: m[1], options, text: m[0].trim(), leads });
  }
  return found;
}

Deno.test("docs: every `nfqlb <command> --option` in README.md and docs/*.md is a command that takes the option", () => {
  const pages = [
    "README.md",
    ...[...Deno.readDirSync(`${ROOT}/docs`)].filter((e) => e.name.endsWith(".md"))
      .map((e) => `docs/${e.name}`),
  ];
  const bad: string[] = [];
  let checked = 0;
  for (const page of pages) {
    for (const line of codeOf(Deno.readTextFileSync(`${ROOT}/${page}`))) {
      for (const inv of invocations(line)) {
        const cmd = COMMANDS.find((c) => c.name === inv.cmd);
        if (!cmd) {
          // prose in code (`not an nfqlb target table`) is not an invocation: an unknown word is one only
          // when the line starts with it or options follow it
          if (inv.leads || inv.options.length > 0) {
            bad.push(`${page}: \`${inv.text}\`: no command ${inv.cmd}`);
          }
          continue;
        }
        for (const o of inv.options) {
          checked++;
          try {
            // one word after it: a value option takes it, a flag leaves it as a positional
            getoptLongOnly(cmd.name, [o, "v"], cmd.options);
          } catch (e) {
            if (!(e instanceof GetoptError)) throw e;
            bad.push(`${page}: \`${inv.text}\`: ${e.message}`);
          }
        }
      }
    }
  }
  assert.deepEqual(bad, []);
  assert.ok(checked > 100, `only ${checked} options found in the docs`);
  // stale claims the issue found
  const stale: [string, RegExp][] = [
    ["docs/cli.md", /not available yet/],
    ["docs/observability.md", /trace server is not implemented|not implemented yet/],
  ];
  for (const [page, re] of stale) assert.doesNotMatch(Deno.readTextFileSync(`${ROOT}/${page}`), re, page);
});

Deno.test("docs/cli.md's option reference lists every option of every command", () => {
  const doc = Deno.readTextFileSync(`${ROOT}/docs/cli.md`);
  const ref = doc.slice(doc.indexOf("## Option reference"));
  for (const c of COMMANDS) {
    const at = ref.indexOf(`### \`${c.name}\`\n`);
    assert.ok(at >= 0, c.name);
    const next = ref.indexOf("\n### ", at + 1);
    const section = ref.slice(at, next < 0 ? undefined : next);
    for (const o of c.options) assert.ok(section.includes(`\`--${o.name}`), `${c.name} --${o.name}`);
  }
});

Deno.test("the README's quick start says how nfqlb gets on the PATH", () => {
  const readme = Deno.readTextFileSync(`${ROOT}/README.md`);
  const quick = readme.slice(readme.indexOf("## Quick start"));
  assert.match(quick.slice(0, quick.indexOf("```")), /scripts\/install\.sh/);
  assert.ok(NFQLB.endsWith("scripts/nfqlb"));
});
