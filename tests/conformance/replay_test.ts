/**
 * Replays the sessions recorded from the real upstream nfqlb 1.2.0 binary
 * (tests/testdata/conformance) against scripts/nfqlb and requires the same
 * stdout and exit code (and stderr for cli.json). Each case runs in its own
 * shm directory so cases can run in parallel. One deliberate difference
 * (docs/compatibility.md): a `--help` of a command we added options to is
 * upstream's text byte for byte, then a block of ours (cli/help.ts).
 */
import assert from "node:assert/strict";
import { z } from "zod";
import { TESTDATA } from "../harness/paths.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { shmSandbox } from "../helpers/shm.ts";
import { pool } from "../helpers/pool.ts";
import { OURS_HEADING } from "../../cli/help.ts";

/**
 * What may follow upstream's help text: an empty line, our heading, and per option one `  --opt  help` line
 * (and its continuation lines, indented).
 */
const OURS_BLOCK = new RegExp(
  `^\\n${
    OURS_HEADING.replace(/[().]/g, "\\$&")
  }\\n(?: {2}--[a-z_-]+(?:\\[?=[^\\s\\]]+\\]?)? {2,}\\S.*\\n(?: {4,}\\S.*\\n)*)+$`,
);

/** Whether `got` is upstream's help `want`, byte for byte, followed by our block. */
function helpWithOurs(args: string[], got: string, want: string): boolean {
  const isHelp = args.some((a) => /^--?h(e(lp?)?)?$/.test(a));
  return isHelp && got.startsWith(want) && OURS_BLOCK.test(got.slice(want.length));
}

const CliCase = z.object({
  args: z.array(z.string()),
  rc: z.number().int(),
  stdout: z.string(),
  stderr: z.string(),
});
const CliFile = z.object({ reference: z.string(), cases: z.array(CliCase).min(1) });

const Step = z.object({ args: z.array(z.string()), rc: z.number().int(), stdout: z.string() });
const SessionFile = z.object({
  reference: z.string(),
  cases: z.array(z.object({ shm: z.string(), steps: z.array(Step).min(1) })).min(1),
});

function load<T>(schema: z.ZodType<T>, file: string): T {
  return schema.parse(JSON.parse(Deno.readTextFileSync(`${TESTDATA}/conformance/${file}`)));
}

Deno.test("conformance: every cli.json case gives upstream's stdout, stderr and exit code", async () => {
  const { cases } = load(CliFile, "cli.json");
  // cli.json is one session: later cases depend on earlier ones (init, then show).
  using sb = shmSandbox();
  const failures: string[] = [];
  for (const c of cases) {
    const r = await nfqlb(c.args, sb.env);
    const stdoutOk = r.stdout === c.stdout || helpWithOurs(c.args, r.stdout, c.stdout);
    if (r.code !== c.rc || !stdoutOk || r.stderr !== c.stderr) {
      failures.push(
        `${JSON.stringify(c.args)}: got rc=${r.code} out=${JSON.stringify(r.stdout)} err=${
          JSON.stringify(r.stderr)
        }` +
          `; want rc=${c.rc} out=${JSON.stringify(c.stdout)} err=${JSON.stringify(c.stderr)}`,
      );
    }
  }
  assert.deepEqual(failures, [], `${failures.length} of ${cases.length} cases differ`);
});

Deno.test("conformance: every maglev-fwmark.json session replays step by step", async () => {
  const { cases } = load(SessionFile, "maglev-fwmark.json");
  const failures = (await pool(cases, 3, async (c) => {
    using sb = shmSandbox();
    const bad: string[] = [];
    for (const s of c.steps) {
      const r = await nfqlb(s.args, sb.env);
      // A negative rc means upstream crashed there: ours must not crash (rc 0/1).
      const rcOk = s.rc < 0 ? r.code === 0 || r.code === 1 : r.code === s.rc;
      const outOk = s.rc < 0 ? true : r.stdout === s.stdout;
      if (!rcOk || !outOk) {
        bad.push(
          `${JSON.stringify(s.args)}: got rc=${r.code} ${JSON.stringify(r.stdout)} want rc=${s.rc} ${
            JSON.stringify(s.stdout)
          }`,
        );
        break; // later steps depend on this one
      }
    }
    return bad;
  })).flat();
  const steps = cases.reduce((n, c) => n + c.steps.length, 0);
  assert.deepEqual(failures, [], `${failures.length} sessions differ (of ${cases.length}, ${steps} steps)`);
});
