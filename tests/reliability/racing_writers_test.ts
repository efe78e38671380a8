/**
 * Writers racing readers and each other. A reader in another process never sees an empty slot while targets
 * are activated and deactivated: commits go to the spare buffer and are published atomically (c/tshm.c),
 * unlike upstream's in-place re-populate. Several CLI processes writing one table at once (upstream: 174
 * SIGSEGV in the probe that found it) all succeed, and no change is lost: writers serialize on the table's
 * lock, each reading the table it changes.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import { TargetShm } from "../../core/target_shm.ts";
import { ROOT } from "../harness/paths.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { libSandbox } from "../helpers/shm.ts";
import { mulberry32 } from "../helpers/models.ts";

const ReaderReport = z.object({
  iterations: z.number().int(),
  emptySeen: z.number().int(),
  emptySlotsMax: z.number().int(),
  lookups: z.number().int(),
  badLookups: z.number().int(),
  generations: z.number().int(),
  replaced: z.boolean(),
  stoppedBy: z.enum(["replaced", "stop-file", "time", "iterations"]),
});

const M = 9973, N = 100, OPS = 1000;

function reader(sb: { dir: string; env: Record<string, string> }, maxIterations: number, shm = "c") {
  const ready = `${sb.dir}/.ready`, stop = `${sb.dir}/.stop`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      `${ROOT}/tests/helpers/tshm_reader.ts`,
      shm,
      ready,
      stop,
      String(maxIterations),
      "60000",
    ],
    env: sb.env,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  return { child, ready, stop, output: child.output() };
}

async function reportOf(
  output: Promise<Deno.CommandOutput>,
): Promise<[z.infer<typeof ReaderReport>, string]> {
  const res = await output;
  const text = new TextDecoder().decode(res.stdout);
  assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
  return [ReaderReport.parse(JSON.parse(text)), text];
}

async function waitFor(path: string, child: Deno.ChildProcess, tries: number): Promise<void> {
  let exited = false;
  child.status.then(() => exited = true);
  for (let i = 0; i < tries; i++) {
    try {
      Deno.statSync(path);
      return;
    } catch { /* not yet */ }
    if (exited) throw new Error("reader exited before it was ready");
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`reader not ready after ${tries} polls`);
}

Deno.test("a reader process sees no empty slot during 1000 activate/deactivate commits", async () => {
  using sb = libSandbox();
  TargetShm.create("c", { M, N, ownFwmark: 0 });
  const active = new Set<number>([0]); // row 0 (fwmark 1000) stays active throughout
  TargetShm.update("c", (a) => {
    a[0] = 1000;
    return true;
  });
  const { child, ready, stop, output } = reader(sb, 5_000_000);
  try {
    await waitFor(ready, child, 400);
    const rnd = mulberry32(99);
    let cliOps = 0;
    for (let op = 0; op < OPS; op++) {
      const row = 1 + Math.floor(rnd() * (N - 1));
      if (op % 200 === 100) {
        // a handful through the real CLI (fwmarks 5000+)
        const fw = 5000 + op;
        const r = await nfqlb(["activate", "--shm=c", String(fw)], sb.env);
        assert.deepEqual([r.code, r.stderr], [0, ""]);
        const d = await nfqlb(["deactivate", "--shm=c", String(fw)], sb.env);
        assert.deepEqual([d.code, d.stderr], [0, ""]);
        cliOps += 2;
        continue;
      }
      TargetShm.update("c", (a) => {
        if (active.has(row)) {
          a[row] = -1;
          active.delete(row);
        } else {
          a[row] = 1000 + row;
          active.add(row);
        }
        return true;
      });
    }
    assert.equal(cliOps, 10);
    // the library and the file agree on the final active set
    const t = TargetShm.open("c");
    try {
      const rows = Array.from(t.snapshot(0).active).flatMap((fw, i) => fw >= 0 ? [i] : []);
      assert.deepEqual(rows, [...active].sort((a, b) => a - b));
      assert.equal(t.countEmpty(), 0);
    } finally {
      t.close();
    }
    // re-init tells the reader to stop (it sees `replaced`)
    const init = await nfqlb(["init", "--shm=c", `--M=${M}`, `--N=${N}`], sb.env);
    assert.equal(init.code, 0);
  } finally {
    Deno.writeTextFileSync(stop, "stop");
  }
  const [report, text] = await reportOf(output);
  console.log(`reader: ${text.trim()}`);
  assert.ok(report.iterations > 100, `reader iterations: ${text}`);
  assert.equal(report.emptySeen, 0, `reader saw empty slots: ${text}`);
  assert.equal(report.badLookups, 0, `reader got lookups without a target: ${text}`);
  assert.ok(report.generations >= 2, `reader saw the table change: ${text}`);
  assert.equal(report.replaced, true);
  assert.equal(report.stoppedBy, "replaced");
});

Deno.test("the reader detects empty slots (control: a table without targets)", async () => {
  using sb = libSandbox();
  TargetShm.create("c", { M, N, ownFwmark: 0 });
  const { child, ready, stop, output } = reader(sb, 200);
  try {
    await waitFor(ready, child, 400);
  } finally {
    Deno.writeTextFileSync(stop, "stop");
  }
  const [report, text] = await reportOf(output);
  assert.ok(report.iterations >= 64 && report.iterations <= 200, text);
  assert.equal(report.emptySeen, report.iterations, text);
  assert.equal(report.emptySlotsMax, M, text);
  assert.equal(report.badLookups, report.lookups, text);
});

Deno.test("racing writers: 6 CLI processes change one table at once while a reader reads; none fails, none is lost", async () => {
  using sb = libSandbox();
  TargetShm.create("r", { M, N, ownFwmark: 0 });
  TargetShm.update("r", (a) => {
    a[0] = 1000; // one row stays active throughout, so the reader can require a target for every lookup
    return true;
  });
  const { child, ready, stop, output } = reader(sb, 5_000_000, "r");
  const WRITERS = 6, ROUNDS = 12;
  const failures: string[] = [];
  let commands = 0;
  try {
    await waitFor(ready, child, 400);
    // writer w owns fwmarks 2000+10w..2000+10w+4; each round activates them with a weight, deactivates one,
    // and the last round leaves all five active with weight w+1: the final table is known exactly
    await Promise.all(Array.from({ length: WRITERS }, async (_, w) => {
      const own = Array.from({ length: 5 }, (_, k) => String(2000 + 10 * w + k));
      for (let round = 0; round < ROUNDS; round++) {
        const last = round === ROUNDS - 1;
        const steps = [
          ["activate", "--shm=r", `--weight=${last ? w + 1 : 1 + (round % 3)}`, ...own],
          ...(last ? [] : [["deactivate", "--shm=r", own[round % 5]]]),
        ];
        for (const args of steps) {
          const r = await nfqlb(args, sb.env);
          commands++;
          if (r.code !== 0 || r.stderr !== "") {
            failures.push(`${args.join(" ")}: ${r.code} ${r.stderr.trim()}`);
          }
        }
      }
    }));
  } finally {
    Deno.writeTextFileSync(stop, "stop");
  }
  const [report, text] = await reportOf(output);
  console.log(
    `racing writers: ${commands} commands from ${WRITERS} processes at once; reader: ${text.trim()}`,
  );
  assert.deepEqual(failures, []);
  assert.equal(report.emptySeen, 0, `reader saw empty slots: ${text}`);
  assert.equal(report.badLookups, 0, `reader got lookups without a target: ${text}`);
  const t = TargetShm.open("r");
  try {
    const snap = t.snapshot(0);
    const got = new Map<number, number>();
    Array.from(snap.active).forEach((fw, i) => {
      if (fw >= 0) got.set(fw, snap.weights[i]);
    });
    const want = new Map<number, number>([[1000, 1]]);
    for (let w = 0; w < WRITERS; w++) for (let k = 0; k < 5; k++) want.set(2000 + 10 * w + k, w + 1);
    assert.deepEqual([...got].sort((a, b) => a[0] - b[0]), [...want].sort((a, b) => a[0] - b[0]));
    assert.equal(t.countEmpty(), 0);
  } finally {
    t.close();
  }
});
