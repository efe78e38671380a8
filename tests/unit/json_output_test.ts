/**
 * The operator's surface of issue 20, through the real CLI (scripts/nfqlb) in a private shm directory:
 * `--json` outputs parse and use one key style (snake_case, checked at every depth), plain `show` is
 * unchanged, a missing dataplane is named as such by our own options, bad `--watch` values are one line,
 * `stats --watch` into a pipe writes plain screens, and `health --json`.
 */
import assert from "node:assert/strict";
import { nfqlb } from "../harness/nfqlb.ts";
import { NFQLB } from "../harness/paths.ts";
import { libSandbox } from "../helpers/shm.ts";
import { nonSnakeKeys, snakeJson } from "../helpers/json_keys.ts";
import { snakeCase, snakeKeys } from "../../cli/json.ts";
import { countersShmName, createCountersShm } from "../../core/counters_shm.ts";
import { createFragStatsShm } from "../../core/frag_stats.ts";

async function ok(args: string[], env: Record<string, string>): Promise<string> {
  const r = await nfqlb(args, env);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  assert.equal(r.stderr, "");
  return r.stdout;
}

Deno.test("json: snakeCase and the recursive key check", () => {
  assert.deepEqual(
    ["queueDropped", "objGC", "reAssembled", "ttlMillis", "idSequence", "frag_dropped", "hsize"].map(
      snakeCase,
    ),
    ["queue_dropped", "obj_gc", "re_assembled", "ttl_millis", "id_sequence", "frag_dropped", "hsize"],
  );
  assert.deepEqual(snakeKeys({ aB: [{ cD: 1 }], e: null }), { a_b: [{ c_d: 1 }], e: null });
  assert.deepEqual(
    nonSnakeKeys({ a: { bC: 1 }, d: [{ eF: 2 }], m: { "101": 1, "row:3": 2 } }, new Set(["m"])),
    [
      "$.a.bC",
      "$.d[0].eF",
    ],
  );
});

Deno.test("json: show --json, ct-stats --json, ct-list --json, stats --all: snake_case keys; plain show and show --help keep upstream's text (our --json after it)", async () => {
  using sb = libSandbox();
  await ok(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64"], sb.env);
  await ok(["activate", "--shm=t", "--weight=2", "101"], sb.env);
  await ok(["activate", "--shm=t", "102"], sb.env);
  await ok(
    ["ct-set", "--shm=t", "--src=10.0.0.1:1234", "--dst=10.0.0.2:80", "--proto=tcp", "--fwmark=101"],
    sb.env,
  );

  const show = snakeJson<{ table: string; m: number; n: number; lookup: number[]; targets: unknown[] }>(
    await ok(["show", "--shm=t", "--json"], sb.env),
    "show --json",
  );
  assert.equal(show.table, "t");
  assert.deepEqual([show.m, show.n, show.lookup.length], [97, 4, 25]);
  assert.deepEqual(show.targets, [{ fwmark: 101, row: 0, weight: 2 }, { fwmark: 102, row: 1, weight: 1 }]);
  // the text is upstream's (the lookup rows as show --json's), a weight other than 1 marked w<n>
  assert.equal(
    await ok(["show", "--shm=t"], sb.env),
    `Shm: t\n  Fw: own=0\n  Maglev: M=97, N=4\n   Lookup: ${
      show.lookup.join(" ")
    }...\n   Active: 101(0)w2 102(1)\n`,
  );
  assert.equal(
    await ok(["show", "--help"], sb.env),
    "show [options]\n  Show shared mem structures\n  --shm= Shared memory \n\n" +
      "nfqlb-deno options (not in nfqlb 1.2.0):\n  --json    The table as JSON (snake_case keys)\n" +
      "  --digest  Also print the table's digest (docs/tier.md)\n",
  );

  const ct = snakeJson<{ capacity: number; connections: Record<string, number> }>(
    await ok(["ct-stats", "--shm=t", "--json"], sb.env),
    "ct-stats --json",
    new Set(["connections"]),
  );
  assert.equal(ct.capacity, 64);
  assert.deepEqual(ct.connections, { "101": 1 });
  assert.equal(
    await ok(["ct-stats", "--shm=t"], sb.env),
    await ok(["ct-stats", "--shm=t", "--json"], sb.env),
  );
  const list = snakeJson<unknown[]>(await ok(["ct-list", "--shm=t", "--json"], sb.env), "ct-list --json");
  assert.equal(list.length, 1);

  const counters = createCountersShm(countersShmName("ftshm"), [0, 1], "lb");
  counters.publish();
  const ft = createFragStatsShm("ftshm");
  try {
    const all = snakeJson<{ fragments: Record<string, number>; queues: { kernel: unknown }[] }>(
      await ok(["stats", "--all"], sb.env),
      "stats --all",
    );
    assert.ok("obj_gc" in all.fragments && "buckets_max" in all.fragments, JSON.stringify(all.fragments));
    assert.equal(all.queues.length, 2);
    // upstream's stats keeps upstream's keys
    assert.match(await ok(["stats"], sb.env), /^ {2}"objGC": +0,$/m);
  } finally {
    ft.close();
    counters.close();
  }
});

Deno.test("errors: stats --all/--watch with no dataplane name it; bad --watch values are one line", async () => {
  using sb = libSandbox();
  const none =
    "nfqlb: no lb/flowlb is running for config ftshm (its table .nfqlb-deno/ftshm-counters does not exist)";
  for (const args of [["stats", "--all"], ["stats", "--watch=1"]]) {
    const r = await nfqlb(args, sb.env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", none + "\n"], args.join(" "));
  }
  const applied = await nfqlb(["stats", "--all", "--ft_shm=ftshm.edge"], sb.env);
  assert.equal(
    applied.stderr,
    "nfqlb: no lb/flowlb is running for config edge (its table .nfqlb-deno/ftshm.edge-counters does not exist)\n",
  );
  // upstream's own stats keeps upstream's text
  assert.equal((await nfqlb(["stats"], sb.env)).stderr, "FAILED mapSharedData: ftshm\n");
  for (
    const [args, value] of [[["--watch=abc"], "abc"], [["--watch=0"], "0"], [["--watch=-2"], "-2"], [
      ["--watch", "5"],
      "5",
    ], [["--watch=1.5"], "1.5"]] as const
  ) {
    const r = await nfqlb(["stats", ...args], sb.env);
    const lines = r.stderr.split("\n");
    assert.equal(r.code, 1, `${args}: ${r.stderr}`);
    assert.equal(r.stdout, "");
    assert.equal(lines.length, 2, r.stderr);
    assert.ok(lines[0].includes(`'${value}'`), `${args}: ${r.stderr}`);
  }
});

Deno.test("stats --watch=1 into a pipe: plain screens with weight and expected share, no escape codes, exit 0 on SIGINT", async () => {
  using sb = libSandbox();
  await ok(["init", "--shm=w", "--M=997", "--N=4"], sb.env);
  await ok(["activate", "--shm=w", "--weight=3", "7"], sb.env);
  await ok(["activate", "--shm=w", "8"], sb.env);
  const counters = createCountersShm(countersShmName("ftshm"), [4], "lb");
  counters.publish();
  const ft = createFragStatsShm("ftshm");
  const child = new Deno.Command(NFQLB, {
    args: ["stats", "--watch=1", "--tshm=w"],
    env: sb.env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const killer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    const reader = child.stdout.getReader();
    const dec = new TextDecoder();
    for (let i = 0; i < 1000 && (text.match(/^--- /gm) ?? []).length < 3; i++) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
    }
    child.kill("SIGINT");
    for (let i = 0; i < 1000; i++) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value);
    }
    const st = await child.status;
    await child.stderr.cancel();
    assert.equal(st.code, 0, text);
    assert.ok((text.match(/^--- \d{4}-\d\d-\d\dT[\d:.]+Z$/gm) ?? []).length >= 3, text);
    assert.ok(!text.includes("\x1b"), JSON.stringify(text.slice(0, 300)));
    assert.match(text, /^target fwmark +weight +expected +packets +pkt\/s +bytes +share$/m);
    // weights 3 and 1: Maglev gives about 3/4 and 1/4 of the 997 lookup entries
    const row = (fw: number) => new RegExp(`^ +${fw} +(\\d+) +([\\d.]+) % +0 `, "m").exec(text);
    const a = row(7), b = row(8);
    assert.ok(a && b, text);
    assert.equal(a[1], "3");
    assert.equal(b[1], "1");
    assert.ok(Math.abs(Number(a[2]) - 75) < 3 && Math.abs(Number(a[2]) + Number(b[2]) - 100) < 0.2, text);
    assert.match(text, /^queue +received +pkt\/s +accepted/m);
    assert.match(text, /^ +4 +0 +\S+ +0 /m);
  } finally {
    clearTimeout(killer);
    ft.close();
    counters.close();
  }
});

Deno.test("health --json: one document, snake_case, exit 1 when a target is down", async () => {
  using sb = libSandbox();
  const up = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const upPort = (up.addr as Deno.NetAddr).port;
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const downPort = (closed.addr as Deno.NetAddr).port;
  closed.close();
  const accepting = (async () => {
    for await (const c of up) c.close();
  })();
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-json-" });
  try {
    const file = `${dir}/h.yaml`;
    Deno.writeTextFileSync(
      file,
      [
        "version: 1",
        "name: hjson",
        "services:",
        "  - name: web",
        "    vips: [127.0.0.1]",
        "    health: { type: tcp, intervalMs: 3000, timeoutMs: 2000 }",
        "    targets:",
        `      - { fwmark: 101, address: 127.0.0.1, health: { port: ${upPort} } }`,
        `      - { fwmark: 102, address: 127.0.0.1, health: { port: ${downPort} } }`,
        "dataplane:",
        '  queue: "2"',
      ].join("\n") + "\n",
    );
    const r = await nfqlb(["health", "-f", file, "--json"], sb.env);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const doc = snakeJson<{ up: number; down: number; targets: { target: number; up: boolean }[] }>(
      r.stdout,
      "health --json",
    );
    assert.deepEqual([doc.up, doc.down], [1, 1], r.stdout);
    assert.deepEqual(doc.targets.map((t) => [t.target, t.up]), [[101, true], [102, false]]);
  } finally {
    up.close();
    await accepting.catch(() => {});
    Deno.removeSync(dir, { recursive: true });
  }
});
