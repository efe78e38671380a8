/**
 * core/flow/store.ts, entry by entry: every saved flow is checked by exactly
 * flow-set's validator (parseFlowDefinition), so what flow-set accepted loads
 * back, and an entry that fails is skipped with one line naming it while the
 * others load (the whole store is never thrown away for one entry).
 */
import assert from "node:assert/strict";
import { FlowStore } from "../../core/flow/store.ts";
import { FlowTable } from "../../core/flow/table.ts";
import { parseFlowDefinition } from "../../core/flow/parse.ts";
import { PORTS_WITHOUT_PROTOCOLS } from "../../core/flow/types.ts";
import type { FlowRequest } from "../../core/flow/types.ts";
import { listDir, shmSandbox } from "../helpers/shm.ts";
import { nfqlb } from "../harness/nfqlb.ts";

/** A store file with these entries (raw JSON values). */
function storeFile(dir: string, flows: unknown[]): string {
  const path = `${dir}/flows.json`;
  Deno.writeTextFileSync(path, JSON.stringify({ format: "nfqlb-deno-flows", version: 1, flows }));
  return path;
}

/** What flow-set accepts, in the option forms clients (Meridio among them) send. */
const ACCEPTED: FlowRequest[] = [
  // Meridio, a stream with `protocols: []`: --protocols= --dports=8443
  { name: "tshm-s-any", target: "tshm-s", priority: "1", protocols: "", dsts: "10.0.0.1/32", dports: "8443" },
  { name: "tshm-s-tcp", target: "tshm-s", priority: "2", protocols: "tcp", dsts: "10.0.0.1/32,fd00::1/128" },
  { name: "empty-sports", target: "t", protocols: "udp", sports: "" },
  { name: "empty-dports-any", target: "t", protocols: "", dports: "" },
  { name: "sctp-encap", target: "t", priority: "-5", protocols: "sctp", dports: "6000", udpencap: "9899" },
  { name: "match", target: "t", protocols: "tcp", match: "tcp[2:2]=010,tcp[0:4]&0xffff=0x1389" },
  { name: "any", target: "t" },
  { name: "srcs", target: "t", protocols: "TCP udp", srcs: "192.168.0.0/16", sports: "1024-65535" },
];

Deno.test("store: everything flow-set accepts is saved and loads back, unchanged and without a problem", () => {
  using sb = shmSandbox();
  const t = new FlowTable("flow");
  for (const r of ACCEPTED) assert.equal(t.set(r), "OK", JSON.stringify(r));
  const store = new FlowStore(`${sb.dir}/flows.json`);
  store.save(t.definitions());
  const loaded = store.load();
  assert.deepEqual(loaded.problems, []);
  const copy = new FlowTable("flow");
  assert.deepEqual(copy.restore(loaded.flows), []);
  assert.equal(copy.list(), t.list());
  // and each loaded request is one flow-set accepts
  for (const r of loaded.flows) assert.ok(parseFlowDefinition(r, "flow").ok, JSON.stringify(r));
});

Deno.test("store: one bad entry is skipped with one line naming it; the others load", async (t) => {
  const good = { name: "good", target: "t", protocols: ["tcp"], dports: ["80"] };
  const cases: { name: string; entry: unknown; why: RegExp }[] = [
    {
      name: "a value flow-set refuses",
      entry: { name: "bad", target: "t", protocols: ["tcp"], dports: ["0"] },
      why: /^entry 1 \(flow bad\): Invalid dports; skipped: \{"name":"bad",.*"dports":\["0"\]\}$/,
    },
    {
      name: "ports without a protocols field (what an older nfqlb-deno saved for --protocols=)",
      entry: { name: "tshm-s-any", target: "tshm-s", dports: ["8443"] },
      why: new RegExp(`^entry 1 \\(flow tshm-s-any\\): ${PORTS_WITHOUT_PROTOCOLS}; skipped: `),
    },
    {
      name: "a name flow-set refuses",
      entry: { name: "a b", target: "t" },
      why: /^entry 1 \(flow a b\): Invalid name \[a b\] \(allowed: A-Z a-z 0-9 \. _ \+ -\); skipped: /,
    },
    {
      name: "a priority out of int32",
      entry: { name: "big", target: "t", priority: 2 ** 31 },
      why: /^entry 1 \(flow big\): Invalid priority \[2147483648\]; skipped: /,
    },
    {
      name: "a field of the wrong type",
      entry: { name: "typed", target: "t", protocols: "tcp" },
      why: /^entry 1 \(flow typed\): protocols: .*; skipped: /,
    },
    {
      name: "an unknown key",
      entry: { name: "extra", target: "t", prio: 1 },
      why: /^entry 1 \(flow extra\): entry: .*prio.*; skipped: /,
    },
    { name: "not an object", entry: 42, why: /^entry 1: entry: .*; skipped: 42$/ },
    { name: "no name", entry: { target: "t" }, why: /^entry 1: name: .*; skipped: \{"target":"t"\}$/ },
    {
      name: "a name already loaded",
      entry: { name: "good", target: "u" },
      why: /^entry 1 \(flow good\): the name of entry 0 again; skipped: /,
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      using sb = shmSandbox();
      const last = { name: "last", target: "t", priority: 3 };
      const path = storeFile(sb.dir, [good, c.entry, last]);
      const store = new FlowStore(path);
      const r = store.load();
      assert.equal(r.problems.length, 1, r.problems.join("\n"));
      const line = r.problems[0];
      assert.ok(!line.includes("\n"), line);
      assert.ok(line.startsWith(`flow store ${path}: `), line);
      assert.match(line.slice(`flow store ${path}: `.length), c.why);
      assert.deepEqual(r.flows.map((f) => f.name), ["good", "last"]);
      // the file stays where it is (no .corrupt- copy) and saving goes on
      assert.deepEqual(listDir(sb.dir), ["flows.json"]);
      assert.ok(store.enabled);
    });
  }
});

Deno.test("store: every bad entry of a file gets its own line, in file order", () => {
  using sb = shmSandbox();
  const path = storeFile(sb.dir, [
    { name: "x", target: "t", dsts: ["10.0.0.1"], protocols: [] },
    { name: "ok", target: "t" },
    { name: "y", target: "t", protocols: ["icmp"] },
  ]);
  const r = new FlowStore(path).load();
  assert.deepEqual(r.flows, [{ name: "ok", target: "t" }]);
  assert.equal(r.problems.length, 2);
  assert.match(r.problems[0], /: entry 0 \(flow x\): Invalid dsts; skipped: /);
  assert.match(r.problems[1], /: entry 2 \(flow y\): Invalid protocols; skipped: /);
});

Deno.test("store: a long bad entry is quoted in at most 200 characters", () => {
  using sb = shmSandbox();
  const path = storeFile(sb.dir, [{ name: "long", target: "t", match: ["x".repeat(5000)] }]);
  const [line] = new FlowStore(path).load().problems;
  const quoted = line.slice(line.indexOf("; skipped: ") + "; skipped: ".length);
  assert.equal(quoted.length, 200);
  assert.ok(quoted.endsWith("..."));
});

Deno.test("flowlb --flow_store: full name only, and a bad value is one line, exit 1, before anything starts", async () => {
  using sb = shmSandbox();
  const cases: [string, string][] = [
    ["--flow_store=", "flowlb: invalid --flow_store value '' (expected a file path)"],
    [
      `--flow_store=${sb.dir}/no/such/flows.json`,
      `flowlb: invalid --flow_store value '${sb.dir}/no/such/flows.json' (no directory ${sb.dir}/no/such)`,
    ],
    [
      `--flow_store=${sb.dir}`,
      `flowlb: invalid --flow_store value '${sb.dir}' (a directory, expected a file)`,
    ],
    // ours match only by their full name: upstream's abbreviations keep their meaning
    ["--flow=x", "flowlb: unrecognized option '--flow=x'"],
    ["--flow_s=x", "flowlb: unrecognized option '--flow_s=x'"],
  ];
  for (const [arg, line] of cases) {
    const r = await nfqlb(["flowlb", arg], sb.env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", line + "\n"], arg);
  }
  // nothing was created: no trace shm, no counters, no store
  assert.deepEqual(listDir(sb.dir), []);
  // and --help shows it only after upstream's text, in our block
  const help = (await nfqlb(["flowlb", "--help"], sb.env)).stdout;
  assert.ok(help.indexOf("--flow_store=FILE") > help.indexOf("nfqlb-deno options"), help);
});
