/**
 * Bench (c): wall time of one CLI process, spawn to exit.
 *
 * Ours: `scripts/nfqlb activate 101` / `deactivate 101`, alternating, on a
 * Meridio-sized table (init --M=10000 --N=100) in a temp shm directory.
 * Baselines: `deno run` of an empty script with the same flags as the
 * wrapper uses, and /bin/true. For context: `deno run cli/main.ts` directly
 * (the same work without the bash wrapper).
 * Every round runs each subject once, so all see the same machine noise.
 */
import { TargetShm } from "../../core/target_shm.ts";
import { type Goal, goal, type Row, summarize } from "./report.ts";
import { NFQLB } from "../harness/paths.ts";
import { exists } from "../helpers/fs.ts";

/** Rounds (each subject runs once per round; activate and deactivate alternate). */
const ROUNDS = 21;

async function run(cmd: string, args: string[], env: Record<string, string>): Promise<number> {
  const t0 = performance.now();
  const r = await new Deno.Command(cmd, { args, env, stdin: "null", stdout: "null", stderr: "piped" })
    .output();
  const ms = performance.now() - t0;
  if (!r.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(r.stderr)}`);
  return ms;
}

/**
 * Runs the CLI bench.
 * @param root repository root
 * @param deno path of the deno binary
 */
export async function benchCli(
  root: string,
  deno: string,
): Promise<{ rows: Row[]; goals: Goal[]; checks: Record<string, boolean>; mode: string }> {
  const dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "nfqlb-bench-" });
  const env = { NFQLB_SHM_DIR: dir };
  const nfqlb = NFQLB;
  const denoFlags = ["run", "--quiet", "--no-prompt", "--allow-all", "--config", `${root}/deno.json`];
  const mode = Deno.env.get("NFQLB_FROM_SOURCE") === undefined && exists(`${root}/dist/nfqlb`)
    ? "compiled binary dist/nfqlb"
    : "deno run cli/main.ts (source)";
  try {
    await run(nfqlb, ["init", "--shm=bench", "--M=10000", "--N=100"], env);
    const subjects: [string, (i: number) => Promise<number>][] = [
      ["scripts/nfqlb activate|deactivate 101", (i) => run(nfqlb, [op(i), "--shm=bench", "101"], env)],
      [
        "deno run empty.ts (same flags)",
        () => run(deno, [...denoFlags, `${root}/tests/bench/empty.ts`], env),
      ],
      ["/bin/true", () => run("/bin/true", [], env)],
      [
        "deno run cli/main.ts activate|deactivate (no wrapper)",
        (i) => run(deno, [...denoFlags, `${root}/cli/main.ts`, op(i), "--shm=bench", "102"], env),
      ],
    ];
    const samples = subjects.map(() => [] as number[]);
    for (const [, fn] of subjects) await fn(1); // warm-up: module cache, page cache
    for (let i = 0; i < ROUNDS; i++) {
      for (let s = 0; s < subjects.length; s++) samples[s].push(await subjects[s][1](i));
    }
    // the last round (i = ROUNDS-1, even) activated 101 and 102
    const before = Deno.env.get("NFQLB_SHM_DIR");
    Deno.env.set("NFQLB_SHM_DIR", dir);
    let applied = false;
    try {
      const t = TargetShm.open("bench");
      const active = t.snapshot(0).active;
      applied = active.includes(101) && active.includes(102);
      t.close();
    } finally {
      if (before === undefined) Deno.env.delete("NFQLB_SHM_DIR");
      else Deno.env.set("NFQLB_SHM_DIR", before);
    }
    const ours = summarize(samples[0]);
    const rows: Row[] = subjects.map(([subject], s) => {
      const st = summarize(samples[s]);
      return {
        section: "cli",
        case: "init --M=10000 --N=100",
        subject,
        unit: "ms",
        stats: st,
        ours: s === 0 || s === 3,
        ratio: s === 1 || s === 2 ? ours.median / st.median : undefined,
      };
    });
    return {
      rows,
      goals: [goal("one `scripts/nfqlb activate` process", ours.median, 80, "ms")],
      checks: { "cli: activate/deactivate took effect": applied },
      mode,
    };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function op(i: number): string {
  return i % 2 === 0 ? "activate" : "deactivate";
}
