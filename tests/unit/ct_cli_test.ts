/**
 * The connection-table commands through the real CLI (scripts/nfqlb) in a
 * private shm directory: init --conntrack, ct-set, ct-list, ct-delete,
 * ct-stats, bad input and a missing table.
 */
import assert from "node:assert/strict";
import { nfqlb } from "../harness/nfqlb.ts";
import { libSandbox, own } from "../helpers/shm.ts";
import { ConntrackShm, flowKey } from "../../core/conntrack_shm.ts";

const UPSTREAM_INIT_HELP = "init [options]\n  Initiate shared mem structures\n" +
  "  --ownfw= Own FW mark. Only used in the LB-tier! \n" +
  "  --shm= Target shared memory \n" +
  "  --N= Maglev max targets \n" +
  "  --M= Maglev lookup table size \n";

const FLOW = ["--src=10.0.0.1:1234", "--dst=10.0.0.2:80", "--proto=tcp"];

async function ok(args: string[], env: Record<string, string>): Promise<string> {
  const r = await nfqlb(args, env);
  assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
  assert.equal(r.stderr, "");
  return r.stdout;
}

Deno.test("ct cli: init --conntrack creates <shm>-ct; init --help upstream's, then ours; --conntrack=0 deletes", async () => {
  using sb = libSandbox();
  const help = await ok(["init", "--help"], sb.env);
  assert.ok(help.startsWith(UPSTREAM_INIT_HELP + "\nnfqlb-deno options"), help);
  assert.match(help.slice(UPSTREAM_INIT_HELP.length), /^ {2}--conntrack=MAX {2,}Connection table entries/m);
  await ok(["init", "--shm=t", "--M=97", "--N=4"], sb.env);
  assert.equal(sb.bytes(own("t-ct")), undefined);
  await ok(
    ["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64", "--ct_ttl=1000,2000,3000", "--ct_flood=50"],
    sb.env,
  );
  assert.ok(sb.bytes(own("t-ct"))!.length > 0);
  const s = JSON.parse(await ok(["ct-stats", "--shm=t"], sb.env));
  assert.equal(s.capacity, 64);
  assert.deepEqual(s.ttl_ms, { tcp: 1000, udp: 2000, other: 3000 });
  assert.equal(s.flood_per_second, 50);
  assert.equal(s.ctx_slots, 0);
  // init without --conntrack leaves the table alone
  const before = sb.bytes(own("t-ct"))!;
  await ok(["init", "--shm=t", "--M=97", "--N=4"], sb.env);
  assert.deepEqual(sb.bytes(own("t-ct")), before);
  await ok(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=0"], sb.env);
  assert.equal(sb.bytes(own("t-ct")), undefined);
  assert.ok(sb.bytes("t")!.length > 0);
});

Deno.test("ct cli: ct-set pins a flow, ct-list shows it, filters, ct-delete, ct-stats move", async () => {
  using sb = libSandbox();
  await ok(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64", "--ct_contexts=8"], sb.env);
  await ok(["activate", "--shm=t", "101", "102"], sb.env);
  assert.equal(await ok(["ct-list", "--shm=t"], sb.env), "[]\n");
  await ok(["ct-set", "--shm=t", ...FLOW, "--fwmark=102", "--pin", "--context=vip-a"], sb.env);
  await ok(
    ["ct-set", "--shm=t", "--src=[1000::1]:5", "--dst=[1000::2]:6", "--proto=udp", "--fwmark=101"],
    sb.env,
  );
  const all = JSON.parse(await ok(["ct-list", "--shm=t"], sb.env));
  assert.equal(all.length, 2);
  const tcp = all.find((e: { proto: string }) => e.proto === "tcp");
  assert.equal(tcp.src, "10.0.0.1");
  assert.equal(tcp.sport, 1234);
  assert.equal(tcp.dst, "10.0.0.2");
  assert.equal(tcp.dport, 80);
  assert.equal(tcp.fwmark, 102);
  assert.equal(tcp.row, 1);
  assert.deepEqual(tcp.flags, ["pinned"]);
  assert.equal(tcp.context, "vip-a");
  for (const f of ["age_ms", "idle_ms", "packets", "bytes"]) assert.equal(typeof tcp[f], "number", f);
  // --json: the same value, indented
  const pretty = await ok(["ct-list", "--shm=t", "--json"], sb.env);
  assert.match(pretty, /^\[\n {2}\{\n {4}"src"/);
  assert.equal(JSON.parse(pretty).length, 2);

  const list = async (...f: string[]) => JSON.parse(await ok(["ct-list", "--shm=t", ...f], sb.env));
  assert.deepEqual((await list("--target=101")).map((e: { dst: string }) => e.dst), ["1000::2"]);
  assert.deepEqual((await list("--address=10.0.0.2")).map((e: { fwmark: number }) => e.fwmark), [102]);
  assert.deepEqual((await list("--address=1000:0::1")).map((e: { fwmark: number }) => e.fwmark), [101]);
  assert.deepEqual((await list("--port=1234")).map((e: { fwmark: number }) => e.fwmark), [102]);
  assert.deepEqual(await list("--port=1234", "--target=101"), []);

  // change an existing entry: unpin, lifetime, clear the context
  await ok(["ct-set", "--shm=t", ...FLOW, "--unpin", "--lifetime=5000", "--context="], sb.env);
  // --offload also sets the kernel connmark (docs/conntrack.md "Offload"); the kernel does not track this
  // flow: a note and the flag, or, without CAP_NET_ADMIN, refused with the table unchanged
  const off = await nfqlb(["ct-set", "--shm=t", ...FLOW, "--offload"], sb.env);
  assert.match(
    off.stderr,
    off.code === 0
      ? /^nfqlb: no kernel conntrack entry for tcp 10\.0\.0\.1:1234 -> 10\.0\.0\.2:80; [^\n]*\n$/
      : /^ct-set: cannot set the kernel connmark of tcp 10\.0\.0\.1:1234 -> [^\n]*: Operation not permitted\n$/,
  );
  const [changed] = await list("--target=102");
  assert.deepEqual(changed.flags, off.code === 0 ? ["offloaded"] : []);
  assert.equal(changed.lifetime_ms, 5000);
  assert.equal(changed.context, null);

  // the dataplane's lookups show in ct-stats
  const ct = ConntrackShm.open("t-ct");
  try {
    const key = flowKey({ src: "10.0.0.1", dst: "10.0.0.2", proto: "tcp", sport: 1234, dport: 80 });
    assert.equal(ct.lookup(key, 100), 102);
    assert.equal(ct.lookup(flowKey({ src: "10.9.9.9", dst: "10.0.0.2", proto: "tcp" })), -1);
  } finally {
    ct.close();
  }
  const s = JSON.parse(await ok(["ct-stats", "--shm=t"], sb.env));
  assert.equal(s.entries, 2);
  assert.equal(s.hits, 1);
  assert.equal(s.misses, 1);
  assert.equal(s.hit_ratio, 0.5);
  assert.equal(s.inserts, 2);
  assert.equal((await list("--target=102"))[0].packets, 1);

  await ok(["ct-delete", "--shm=t", ...FLOW], sb.env);
  await ok(["ct-delete", "--shm=t", ...FLOW], sb.env); // a missing one is fine
  assert.deepEqual((await list()).map((e: { fwmark: number }) => e.fwmark), [101]);
  const s2 = JSON.parse(await ok(["ct-stats", "--shm=t"], sb.env));
  assert.equal(s2.entries, 1);
  assert.equal(s2.deletes, 1);
});

const BAD: { args: string[]; value: string }[] = [
  { args: ["init", "--shm=t", "--conntrack=x"], value: "x" },
  { args: ["init", "--shm=t", "--conntrack=-1"], value: "-1" },
  { args: ["init", "--shm=t", "--conntrack=9999999999"], value: "9999999999" },
  { args: ["init", "--shm=t", "--conntrack=8", "--ct_ttl=1,2"], value: "1,2" },
  { args: ["init", "--shm=t", "--conntrack=8", "--ct_ttl=1,2,x"], value: "1,2,x" },
  { args: ["init", "--shm=t", "--conntrack=8", "--ct_flood=1.5"], value: "1.5" },
  { args: ["init", "--shm=t", "--conntrack=8", "--ct_contexts=-2"], value: "-2" },
  { args: ["init", "--shm=t", "--ct_flood=5"], value: "5" },
  { args: ["ct-set", "--shm=t", ...FLOW, "--fwmark=abc"], value: "abc" },
  { args: ["ct-set", "--shm=t", ...FLOW, "--fwmark=-5"], value: "-5" },
  { args: ["ct-set", "--shm=t", ...FLOW, "--lifetime=99999999999"], value: "99999999999" },
  { args: ["ct-set", "--shm=t", ...FLOW, "--context=" + "x".repeat(257)], value: "257" },
  {
    args: ["ct-set", "--shm=t", "--src=10.0.0.1", "--dst=10.0.0.2:80", "--proto=tcp", "--pin"],
    value: "10.0.0.1",
  },
  {
    args: ["ct-set", "--shm=t", "--src=10.0.0.1:1", "--dst=10.0.0.2:80", "--proto=icmp", "--pin"],
    value: "icmp",
  },
  {
    args: ["ct-set", "--shm=t", "--src=10.0.0.999:1", "--dst=10.0.0.2:8", "--proto=tcp", "--pin"],
    value: "999",
  },
  { args: ["ct-set", "--shm=t", ...FLOW, "--pin", "--unpin"], value: "--unpin" },
  { args: ["ct-set", "--shm=t", ...FLOW, "--offload", "--no-offload"], value: "--no-offload" },
  { args: ["ct-set", "--shm=t", ...FLOW], value: "nothing to set" },
  {
    args: ["ct-set", "--shm=t", "--src=10.0.0.5:1", "--dst=10.0.0.2:80", "--proto=tcp", "--pin"],
    value: "no such",
  },
  { args: ["ct-delete", "--shm=t", "--src=10.0.0.1:1", "--dst=x:80", "--proto=tcp"], value: "x:80" },
  { args: ["ct-list", "--shm=t", "--target=1x"], value: "1x" },
  { args: ["ct-list", "--shm=t", "--address=10.0.0"], value: "10.0.0" },
  { args: ["ct-list", "--shm=t", "--port=65536"], value: "65536" },
  { args: ["ct-list", "--shm=nope"], value: "FAILED mapSharedData: nope-ct" },
  { args: ["ct-stats", "--shm=nope"], value: "FAILED mapSharedData: nope-ct" },
  { args: ["ct-set", "--shm=nope", ...FLOW, "--fwmark=1"], value: "FAILED mapSharedData: nope-ct" },
  { args: ["ct-delete", "--shm=nope", ...FLOW], value: "FAILED mapSharedData: nope-ct" },
];

Deno.test("ct cli: bad input exits 1 with one stderr line naming the value; tables unchanged", async () => {
  using sb = libSandbox();
  await ok(["init", "--shm=t", "--M=97", "--N=4", "--conntrack=64"], sb.env);
  await ok(["ct-set", "--shm=t", ...FLOW, "--fwmark=7", "--pin"], sb.env);
  const files = ["t", own("t-ct")];
  const before = files.map((f) => sb.bytes(f));
  const failures: string[] = [];
  for (const c of BAD) {
    const r = await nfqlb(c.args, sb.env);
    const lines = r.stderr.split("\n");
    if (r.code !== 1 || r.stdout !== "" || lines.length !== 2 || !lines[0].includes(c.value)) {
      failures.push(
        `${c.args.join(" ")}: rc=${r.code} out=${JSON.stringify(r.stdout)} err=${JSON.stringify(r.stderr)}`,
      );
    }
    files.forEach((f, i) => {
      if (JSON.stringify(sb.bytes(f)) !== JSON.stringify(before[i])) {
        failures.push(`${c.args.join(" ")}: ${f} changed`);
      }
    });
  }
  assert.deepEqual(failures, []);
  // the missing-table line is exactly upstream's mapSharedData text
  assert.equal((await nfqlb(["ct-stats", "--shm=nope"], sb.env)).stderr, "FAILED mapSharedData: nope-ct\n");
  assert.equal(sb.bytes(own("nope-ct")), undefined);
});
