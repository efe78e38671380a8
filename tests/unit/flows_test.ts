/**
 * core/flow/ (parse.ts, render.ts, table.ts, shm_targets.ts): the flow
 * session recorded from upstream (scripted flow-set/flow-list steps with
 * exact outputs; tests/unit/flow_server_test.ts runs it through the real CLI)
 * step by step at table level (exact JSON), every validation error as its
 * exact one-line text, priority order, companions, target references,
 * atomic sets, restore/inactive flows, and glibc's inet_ntop text for CIDRs.
 */
import assert from "node:assert/strict";
import type { Flow, FlowDefinition, FlowRequest } from "../../core/flow/types.ts";
import { parseCidr, parseFlowDefinition, parseMatchStatement } from "../../core/flow/parse.ts";
import { canonicalRequest, formatCidr, formatMatch } from "../../core/flow/render.ts";
import { FlowTable, type FlowTableHooks } from "../../core/flow/table.ts";
import { ShmTargets } from "../../core/flow/shm_targets.ts";
import { formatIPv6 } from "../../core/inet.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { libSandbox } from "../helpers/shm.ts";

/** Hooks that accept the targets in `known` and record every call. */
function recorder(known = ["nfqlb", "other"]) {
  const calls: string[] = [];
  const published: (readonly Flow[])[] = [];
  const refs = new Map<string, number>();
  const hooks: FlowTableHooks = {
    acquire(t) {
      calls.push(`acquire ${t}`);
      if (!known.includes(t)) return false;
      refs.set(t, (refs.get(t) ?? 0) + 1);
      return true;
    },
    release(t) {
      calls.push(`release ${t}`);
      refs.set(t, (refs.get(t) ?? 0) - 1);
    },
    changed(flows) {
      published.push(flows);
    },
  };
  return { hooks, calls, published, refs, known };
}

function definitionOf(req: FlowRequest): FlowDefinition {
  const r = parseFlowDefinition(req, "flow");
  if (!r.ok) throw new Error(r.error);
  return r.definition;
}

const FLOW1: FlowRequest = {
  name: "flow-1",
  priority: "100",
  target: "nfqlb",
  protocols: "udp,tcp",
  dsts: "10.0.0.0/32,1000::/128",
  dports: "22,200-300,44,20000",
  srcs: "2000::/64,192.168.2.0/24",
  sports: "20000-30000",
};

const FLOW1_JSON = `{
  "name": "flow-1",
  "priority": 100,
  "protocols": [ "tcp", "udp" ],
  "dests": [
    "::ffff:10.0.0.0/128",
    "1000::/128"
  ],
  "dports": [
    "22",
    "44",
    "200-300",
    "20000"
  ],
  "srcs": [
    "2000::/64",
    "::ffff:192.168.2.0/120"
  ],
  "sports": [
    "20000-30000"
  ],
  "matches_count": 0,
  "user_ref": "nfqlb"
}`;

const SCTP: FlowRequest = {
  name: "sctp",
  target: "nfqlb",
  protocols: "sctp",
  udpencap: "9899",
  priority: "100",
  dsts: "10.0.0.0/32,1000::/128",
  dports: "6000",
};

const SCTP_PAIR = `{
  "name": "#sctp",
  "priority": 100,
  "protocols": [ "udp" ],
  "dests": [
    "::ffff:10.0.0.0/128",
    "1000::/128"
  ],
  "dports": [
    "9899"
  ],
  "udpencap": 9899,
  "matches_count": 0,
  "user_ref": "NULL"
},
{
  "name": "sctp",
  "priority": 100,
  "protocols": [ "sctp" ],
  "dests": [
    "::ffff:10.0.0.0/128",
    "1000::/128"
  ],
  "dports": [
    "6000"
  ],
  "udpencap": 9899,
  "matches_count": 0,
  "user_ref": "nfqlb"
}]
`;

Deno.test("upstream flow session, step 1: an empty table lists [] and no names", () => {
  const t = new FlowTable("flow");
  assert.equal(t.list(), "[]\n");
  assert.equal(t.listNames(), "[]\n");
  assert.equal(t.list("x"), "");
});

Deno.test("upstream flow session, step 2: flow-1 is listed exactly as upstream, without a trailing newline", () => {
  const t = new FlowTable("flow");
  assert.equal(t.set(FLOW1), "OK");
  assert.equal(t.list("flow-1"), FLOW1_JSON);
  assert.equal(t.list(), `[${FLOW1_JSON}]\n`);
  assert.equal(t.listNames(), '[\n  "flow-1"\n]\n');
  assert.deepEqual(JSON.parse(t.list()).length, 1);
});

Deno.test("upstream flow session, step 3: udpencap adds the #companion first; names in priority then insertion order", () => {
  const r = recorder();
  const t = new FlowTable("flow", r.hooks);
  assert.equal(t.set(FLOW1), "OK");
  assert.equal(t.set(SCTP), "OK");
  assert.equal(t.listNames(), '[\n  "flow-1",\n  "#sctp",\n  "sctp"\n]\n');
  assert.equal(t.list(), `[${FLOW1_JSON},\n${SCTP_PAIR}`);
  // the companion takes no target reference; the dataplane sees it with target null
  assert.deepEqual(r.calls, ["acquire nfqlb", "acquire nfqlb"]);
  const companion = r.published.at(-1)!.find((f) => f.name === "#sctp")!;
  assert.equal(companion.target, null);
  assert.equal(companion.companionOf, "sctp");
  assert.deepEqual(companion.protocols, ["udp"]);
  assert.deepEqual(companion.dports, [[9899, 9899]]);
  assert.equal(companion.udpencap, 9899);
});

Deno.test("upstream flow session, steps 4 and 5: udpencap cannot change; delete removes the companion; unknown names delete OK", () => {
  const r = recorder();
  const t = new FlowTable("flow", r.hooks);
  t.set(FLOW1);
  t.set(SCTP);
  const gen = t.generation;
  assert.equal(t.set({ ...SCTP, udpencap: "8000" }), "FAIL: Alter udpencap not allowed");
  assert.equal(t.set({ ...SCTP, udpencap: undefined }), "FAIL: Alter udpencap not allowed");
  assert.equal(t.generation, gen);
  assert.equal(t.delete("sctp"), "OK");
  assert.equal(t.listNames(), '[\n  "flow-1"\n]\n');
  assert.equal(t.delete("nosuch"), "OK");
  assert.equal(t.delete(undefined), "FAIL: no name");
  // a companion cannot be deleted on its own
  t.set(SCTP);
  assert.equal(t.delete("#sctp"), "OK");
  assert.ok(t.get("#sctp"));
  assert.equal(r.refs.get("nfqlb"), 2);
});

Deno.test("upstream flow session, step 6: an unknown target fails and changes nothing", () => {
  const r = recorder();
  const t = new FlowTable("flow", r.hooks);
  assert.equal(t.set({ name: "x", target: "nosuch" }), "FAIL: Couldn't create load-balancer");
  assert.equal(t.size, 0);
  assert.equal(r.published.length, 0);
  // a redefinition to a missing target keeps the flow on its old one
  t.set({ name: "x", target: "nfqlb", protocols: "tcp" });
  assert.equal(t.set({ name: "x", target: "nosuch" }), "FAIL: Couldn't create new load-balancer");
  assert.equal(t.get("x")!.target, "nfqlb");
  assert.equal(r.refs.get("nfqlb"), 1);
});

/** Each bad request and the exact reply (upstream's text where upstream has one). */
const BAD: [string, FlowRequest, string][] = [
  ["protocols", { protocols: "icmp" }, "Invalid protocols"],
  ["protocols in list", { protocols: "tcp,ip" }, "Invalid protocols"],
  ["dsts without length", { dsts: "10.0.0.0" }, "Invalid dsts"],
  ["dsts IPv4 length", { dsts: "10.0.0.0/33" }, "Invalid dsts"],
  ["dsts IPv6 length", { dsts: "1000::/129" }, "Invalid dsts"],
  ["dsts bad address", { dsts: "10.0.0/8" }, "Invalid dsts"],
  ["dsts leading zero", { dsts: "10.0.0.01/32" }, "Invalid dsts"],
  ["dsts leading zero, first octet (inet_pton)", { dsts: "010.0.0.0/8" }, "Invalid dsts"],
  ["dsts leading zero, embedded IPv4", { dsts: "::ffff:010.0.0.0/104" }, "Invalid dsts"],
  ["dsts length junk", { dsts: "10.0.0.0/8x" }, "Invalid dsts"],
  ["dsts > 32", { dsts: Array.from({ length: 33 }, (_, i) => `10.0.${i}.0/24`).join(",") }, "Invalid dsts"],
  ["srcs", { srcs: "2000::/64,zz::/64" }, "Invalid srcs"],
  ["dport 0", { protocols: "tcp", dports: "0" }, "Invalid dports"],
  ["dport 65536", { protocols: "tcp", dports: "65536" }, "Invalid dports"],
  ["dport range reversed", { protocols: "tcp", dports: "300-200" }, "Invalid dports"],
  ["dport junk", { protocols: "tcp", dports: "80x" }, "Invalid dports"],
  ["dport open range", { protocols: "tcp", dports: "80-" }, "Invalid dports"],
  ["sport 70000", { protocols: "tcp", sports: "70000" }, "Invalid sports"],
  ["ports without protocols", { dports: "80" }, "ports specified without protocols"],
  ["udpencap on two protocols", { protocols: "sctp,tcp", udpencap: "9899" }, "FAIL: only sctp for updencap"],
  ["udpencap without protocols", { udpencap: "9899" }, "FAIL: only sctp for updencap"],
  ["udpencap on udp", { protocols: "udp", udpencap: "9899" }, "FAIL: only sctp for updencap"],
  ["udpencap range", { protocols: "sctp", udpencap: "70000" }, "Invalid udpencap [70000]"],
  ["udpencap text", { protocols: "sctp", udpencap: "x" }, "Invalid udpencap [x]"],
  ["priority text", { priority: "high" }, "Invalid priority [high]"],
  ["priority range", { priority: "2147483648" }, "Invalid priority [2147483648]"],
  ["match out of bounds", { match: "tcp[19:2]=1" }, "Match [tcp[19:2]=1] Out of bounds"],
  ["match udp bounds", { match: "udp[8:1]=1" }, "Match [udp[8:1]=1] Out of bounds"],
  ["match sctp bounds", { match: "sctp[10:4]=1" }, "Match [sctp[10:4]=1] Out of bounds"],
  ["match upper case", { match: "TCP[2:2]=1" }, "Match [TCP[2:2]=1] Doesn't match regexp"],
  ["match nbytes 3", { match: "tcp[2:3]=1" }, "Match [tcp[2:3]=1] Doesn't match regexp"],
  ["match trailing space", { match: "tcp[2:2]=1 " }, "Match [tcp[2:2]=1 ] Doesn't match regexp"],
  ["match upper hex", { match: "tcp[2:2]=0xAB" }, "Match [tcp[2:2]=0xAB] Doesn't match regexp"],
  [
    "match too long",
    { match: `tcp[2:2]=${"0".repeat(60)}1` },
    `Match [tcp[2:2]=${"0".repeat(60)}1] String too long`,
  ],
  ["match bad octal", { match: "tcp[2:2]=08" }, "Match [tcp[2:2]=08] Invalid number"],
  ["match > 32 bits", { match: "tcp[0:4]=0x100000000" }, "Match [tcp[0:4]=0x100000000] Invalid number"],
  ["match second statement", { match: "tcp[2:2]=1,udp[0:2]=x" }, "Match [udp[0:2]=x] Doesn't match regexp"],
  ["match control char", { match: "tcp[2:2]=1\nx" }, "Match [tcp[2:2]=1\\nx] Doesn't match regexp"],
  ["no name", { name: undefined }, "No name"],
  ["name too long", { name: "n".repeat(1001) }, "Name too long"],
  ["name with space", { name: "a b" }, "Invalid name [a b] (allowed: A-Z a-z 0-9 . _ + -)"],
  ["name with #", { name: "#x" }, "Invalid name [#x] (allowed: A-Z a-z 0-9 . _ + -)"],
  ["name with quote", { name: 'a"b' }, 'Invalid name [a"b] (allowed: A-Z a-z 0-9 . _ + -)'],
  ["name with newline", { name: "a\nb" }, "Invalid name [a\\nb] (allowed: A-Z a-z 0-9 . _ + -)"],
  ["empty name", { name: "" }, "Invalid name [] (allowed: A-Z a-z 0-9 . _ + -)"],
  ["no target", { target: undefined }, "FAIL: Couldn't create load-balancer"],
  ["target with /", { target: "a/b" }, "FAIL: Couldn't create load-balancer"],
  ["target too long", { target: "t".repeat(256) }, "FAIL: Couldn't create load-balancer"],
];

for (const [what, fields, expected] of BAD) {
  Deno.test(`validation: ${what} → ${JSON.stringify(expected)}`, () => {
    const req: FlowRequest = { name: "x", target: "nfqlb", ...fields };
    const r = recorder();
    const t = new FlowTable("flow", r.hooks);
    assert.equal(t.set(req), expected);
    assert.equal(t.size, 0);
    assert.deepEqual(r.calls, []);
    assert.ok(!expected.includes("\n"));
  });
}

Deno.test("validation order: upstream's field order; with udpencap the companion's addresses first", () => {
  const p = (req: FlowRequest) => {
    const r = parseFlowDefinition({ name: "x", target: "nfqlb", ...req }, "flow");
    return r.ok ? "OK" : r.error;
  };
  assert.equal(p({ protocols: "x", dports: "0", dsts: "bad" }), "Invalid protocols");
  assert.equal(p({ protocols: "tcp", dports: "0", sports: "0", dsts: "bad" }), "Invalid dports");
  assert.equal(p({ protocols: "tcp", dsts: "bad", srcs: "bad", match: "x" }), "Invalid dsts");
  assert.equal(p({ srcs: "bad", match: "x" }), "Invalid srcs");
  assert.equal(p({ protocols: "sctp", udpencap: "1", dports: "0", dsts: "bad" }), "Invalid dsts");
  assert.equal(p({ name: undefined, protocols: "x" }), "No name");
});

Deno.test("parsing: empty values, repeats, case, separators", () => {
  const def = (req: FlowRequest) => {
    const r = parseFlowDefinition({ name: "x", target: "nfqlb", ...req }, "flow");
    assert.ok(r.ok, r.ok ? "" : r.error);
    return r.definition;
  };
  // empty protocols/dsts/srcs/match mean "not set"; empty ports mean "no port" (never matches)
  assert.equal(def({ protocols: "" }).protocols, null);
  assert.equal(def({ dsts: " , " }).dsts, null);
  assert.equal(def({ match: "" }).match, null);
  assert.deepEqual(def({ protocols: "tcp", dports: "" }).dports, []);
  assert.deepEqual(def({ protocols: "UDP tcp,Tcp,sctp" }).protocols, ["tcp", "udp", "sctp"]);
  assert.deepEqual(def({ protocols: "tcp", dports: "5-9,1-4,10,20-30 25-40" }).dports, [[1, 10], [20, 40]]);
  assert.deepEqual(def({ protocols: "tcp", dports: "1-65535,80" }).dports, [[1, 65535]]);
  assert.equal(def({ priority: "-1" }).priority, -1);
  assert.equal(def({ priority: "+7" }).priority, 7);
  assert.equal(def({}).priority, 0);
  // host bits cleared, IPv4 mapped with +96
  assert.deepEqual(def({ dsts: "10.1.2.3/8" }).dsts!.map(formatCidr), ["::ffff:10.0.0.0/104"]);
  assert.deepEqual(def({ dsts: "2001:db8::1/32" }).dsts!.map(formatCidr), ["2001:db8::/32"]);
  assert.deepEqual(def({ dsts: "0.0.0.0/0,::/0" }).dsts!.map(formatCidr), ["::ffff:0.0.0.0/96", "::/0"]);
  assert.equal(def({ dsts: "10.0.0.0/8" }).dsts![0].addr.length, 16);
  // udpencap 0 is "none"
  assert.equal(def({ protocols: "tcp", udpencap: "0" }).udpencap, 0);
  // trace flows: no target, no udpencap
  const tr = parseFlowDefinition({ name: "t", target: "ignored", udpencap: "5" }, "trace");
  assert.ok(tr.ok);
  assert.equal(tr.definition.target, null);
  assert.equal(tr.definition.udpencap, 0);
});

Deno.test("upstream flow session, step 8: match statements print canonically (hex, octal 010 = 8, masks)", () => {
  const t = new FlowTable("flow");
  assert.equal(
    t.set({
      name: "m",
      target: "nfqlb",
      protocols: "tcp",
      match: "tcp[2:1]=0x13, tcp[0:4] & 0x0000ffff = 5001",
    }),
    "OK",
  );
  assert.match(t.list("m"), /"match": \[\n {4}"tcp\[2:1\]=0x13",\n {4}"tcp\[0:4\]&0xffff=0x1389"\n {2}\]/);
  const fmt = (s: string) => {
    const m = parseMatchStatement(s);
    assert.ok(typeof m !== "string", String(m));
    return formatMatch(m);
  };
  assert.equal(fmt("tcp[2:2] = 5001"), "tcp[2:2]=0x1389");
  assert.equal(fmt("tcp[2:2]=010"), "tcp[2:2]=0x8");
  assert.equal(fmt("sctp[010:2]=1"), "sctp[8:2]=0x1");
  assert.equal(fmt("udp[04:4]=0"), "udp[4:4]=0x0");
  assert.equal(fmt("sctp[0:4]&0x0=0xffffffff"), "sctp[0:4]=0xffffffff");
  assert.equal(fmt("tcp[13:1] & 0x12 = 0x2"), "tcp[13:1]&0x12=0x2");
  const m = parseMatchStatement("tcp[2:2]=0x1389");
  assert.deepEqual(m, { proto: 6, offset: 2, nbytes: 2, mask: 0, value: 0x1389 });
});

Deno.test("upstream flow session, step 9: prio -1 prints as 4294967295 and sorts last", () => {
  const t = new FlowTable("flow");
  t.set({ name: "low", target: "nfqlb", priority: "-1" });
  t.set({ name: "zero", target: "nfqlb" });
  t.set({ name: "min", target: "nfqlb", priority: "-2147483648" });
  t.set({ name: "max", target: "nfqlb", priority: "2147483647" });
  assert.deepEqual(t.flows().map((f) => f.name), ["max", "zero", "low", "min"]);
  assert.match(t.list("low"), /"priority": 4294967295,/);
  assert.match(t.list("min"), /"priority": 2147483648,/);
});

Deno.test("upstream flow session, step 10: 64 port ranges are all listed", () => {
  const ranges = ["80-500", "5000-5010"];
  for (let i = 0; i < 62; i++) ranges.push(`${10000 + 20 * i}-${10010 + 20 * i}`);
  const t = new FlowTable("flow");
  assert.equal(t.set({ name: "port64", target: "nfqlb", protocols: "tcp", dports: ranges.join(",") }), "OK");
  assert.equal(JSON.parse(t.list("port64")).dports.length, 64);
});

Deno.test("upstream flow session, step 11: trace flows are listed without user_ref", () => {
  const t = new FlowTable("trace");
  assert.equal(t.set({ name: "t", srcs: "20.0.0.0/24" }), "OK");
  assert.equal(
    t.list(),
    '[{\n  "name": "t",\n  "priority": 0,\n  "srcs": [\n    "::ffff:20.0.0.0/120"\n  ],\n  "matches_count": 0\n}]\n',
  );
  assert.equal(t.listNames(), '[\n  "t"\n]\n');
  assert.equal(t.delete("t"), "OK");
  assert.equal(t.list(), "[]\n");
});

Deno.test("order: ties keep insertion order; a redefinition keeps its slot before the re-sort", () => {
  const t = new FlowTable("flow");
  for (const n of ["a", "b", "c"]) t.set({ name: n, target: "nfqlb", priority: "5" });
  t.set({ name: "d", target: "nfqlb", priority: "9" });
  assert.deepEqual(t.flows().map((f) => f.name), ["d", "a", "b", "c"]);
  // b redefined with the same priority stays between a and c
  t.set({ name: "b", target: "nfqlb", priority: "5", protocols: "tcp" });
  assert.deepEqual(t.flows().map((f) => f.name), ["d", "a", "b", "c"]);
  // c raised to 9: after d (d's slot is earlier)
  t.set({ name: "c", target: "nfqlb", priority: "9" });
  assert.deepEqual(t.flows().map((f) => f.name), ["d", "c", "a", "b"]);
  // d lowered to 5: stays ahead of a and b, which it preceded in the array
  t.set({ name: "d", target: "nfqlb", priority: "5" });
  assert.deepEqual(t.flows().map((f) => f.name), ["c", "d", "a", "b"]);
  // delete and re-add: goes to the end of its priority
  t.delete("d");
  t.set({ name: "d", target: "nfqlb", priority: "5" });
  assert.deepEqual(t.flows().map((f) => f.name), ["c", "a", "b", "d"]);
});

Deno.test("matches_count: from the counts hook, reset by a redefinition (new id)", () => {
  const counts = new Map<number, number>();
  const t = new FlowTable("flow", { counts: (_name, f) => counts.get(f.id) ?? 0 });
  t.set({ name: "a", target: "nfqlb" });
  const id = t.get("a")!.id;
  counts.set(id, 42);
  assert.match(t.list("a"), /"matches_count": 42,/);
  t.set({ name: "a", target: "nfqlb" });
  assert.notEqual(t.get("a")!.id, id);
  assert.match(t.list("a"), /"matches_count": 0,/);
});

Deno.test("targets: same target keeps its reference, a new one is taken before the old is released", () => {
  const r = recorder();
  const t = new FlowTable("flow", r.hooks);
  t.set({ name: "a", target: "nfqlb" });
  t.set({ name: "a", target: "nfqlb", protocols: "tcp" });
  assert.deepEqual(r.calls, ["acquire nfqlb"]);
  t.set({ name: "a", target: "other" });
  assert.deepEqual(r.calls, ["acquire nfqlb", "acquire other", "release nfqlb"]);
  t.set({ name: "b", target: "other" });
  t.delete("a");
  t.delete("b");
  assert.equal(r.refs.get("other"), 0);
  assert.equal(r.refs.get("nfqlb"), 0);
  t.set({ name: "c", target: "nfqlb" });
  t.clear();
  assert.equal(r.refs.get("nfqlb"), 0);
  assert.equal(t.size, 0);
});

Deno.test("atomic: a failed set (companion included) changes nothing and publishes nothing", () => {
  const r = recorder();
  const t = new FlowTable("flow", r.hooks);
  t.set(FLOW1);
  const before = t.list(), gen = t.generation, n = r.published.length;
  // the companion would be valid, the main flow's match is not
  assert.equal(t.set({ ...SCTP, match: "sctp[20:4]=1" }), "Match [sctp[20:4]=1] Out of bounds");
  assert.equal(t.set({ ...FLOW1, dports: "0" }), "Invalid dports");
  assert.equal(t.list(), before);
  assert.equal(t.generation, gen);
  assert.equal(r.published.length, n);
  assert.equal(r.refs.get("nfqlb"), 1);
});

Deno.test("publication: changed() gets the active flows in match order after every change", () => {
  const r = recorder();
  const t = new FlowTable("flow", r.hooks);
  t.set(FLOW1);
  t.set(SCTP);
  assert.deepEqual(r.published.at(-1)!.map((f) => f.name), ["flow-1", "#sctp", "sctp"]);
  const f = r.published.at(-1)![0];
  assert.deepEqual(f.dports, [[22, 22], [44, 44], [200, 300], [20000, 20000]]);
  assert.deepEqual([...f.dsts![0].addr], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 10, 0, 0, 0]);
  assert.equal(f.dsts![0].prefix, 128);
  t.delete("sctp");
  assert.deepEqual(r.published.at(-1)!.map((f) => f.name), ["flow-1"]);
});

Deno.test("restore: flows with a missing target stay listed but inactive until it appears", () => {
  const r = recorder(["nfqlb"]);
  const t = new FlowTable("flow", r.hooks);
  const problems = t.restore([
    canonicalRequest(definitionOf(FLOW1)),
    { ...SCTP, target: "later" },
    { name: "bad name", target: "nfqlb" },
  ]);
  assert.deepEqual(problems, [
    "flow sctp: target later not found; kept inactive until it exists",
    "flow bad name: Invalid name [bad name] (allowed: A-Z a-z 0-9 . _ + -)",
  ]);
  assert.deepEqual(t.flows().map((f) => [f.name, f.active]), [["flow-1", true], ["#sctp", false], [
    "sctp",
    false,
  ]]);
  // published once, at the end
  assert.equal(r.published.length, 1);
  assert.deepEqual(r.published.at(-1)!.map((f) => f.name), ["flow-1"]);
  assert.match(t.list(), /"user_ref": "later"/);
  assert.deepEqual(t.retryInactive(), []);
  r.known.push("later");
  assert.deepEqual(t.retryInactive(), ["sctp"]);
  assert.deepEqual(r.published.at(-1)!.map((f) => f.name), ["flow-1", "#sctp", "sctp"]);
  assert.equal(r.refs.get("later"), 1);
  // deleting an inactive flow releases nothing
  const t2 = new FlowTable("flow", recorder([]).hooks);
  t2.restore([{ name: "x", target: "gone" }]);
  assert.equal(t2.delete("x"), "OK");
});

Deno.test("canonical requests parse back to the same definition and listing", () => {
  const t = new FlowTable("flow");
  t.set(FLOW1);
  t.set(SCTP);
  t.set({ name: "m", target: "other", priority: "-3", protocols: "tcp", dports: "", match: "tcp[2:2]=010" });
  const copy = new FlowTable("flow");
  assert.deepEqual(copy.restore(t.definitions()), []);
  assert.equal(copy.list(), t.list());
  assert.equal(copy.listNames(), t.listNames());
  assert.deepEqual(t.definitions()[2], {
    name: "m",
    target: "other",
    priority: "-3",
    protocols: "tcp",
    dports: "",
    match: "tcp[2:2]=0x8",
  });
  // an empty port list is valid JSON
  assert.deepEqual(JSON.parse(t.list("m")).dports, []);
});

Deno.test("formatIPv6 matches glibc inet_ntop", () => {
  const v: [string, string][] = [
    ["0:0:0:0:0:0:0:0", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["0:0:0:0:0:ffff:a00:0", "::ffff:10.0.0.0"],
    ["0:0:0:0:0:0:102:304", "::1.2.3.4"],
    ["0:0:0:0:1:ffff:102:304", "::1:ffff:102:304"],
    ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
    ["1:0:0:2:0:0:3:4", "1::2:0:0:3:4"],
    ["1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"],
    ["2001:db8:0:0:0:0:0:0", "2001:db8::"],
    ["fe80:0:0:0:0:0:0:1", "fe80::1"],
    ["0:0:1:0:0:0:0:0", "0:0:1::"],
    ["0:0:0:0:0:ffff:0:0", "::ffff:0.0.0.0"],
  ];
  for (const [words, text] of v) {
    const b = new Uint8Array(16);
    words.split(":").forEach((w, i) => {
      const n = parseInt(w, 16);
      b[2 * i] = n >> 8;
      b[2 * i + 1] = n & 0xff;
    });
    assert.equal(formatIPv6(b), text, words);
  }
  assert.equal(formatCidr(parseCidr("192.168.2.7/24")!), "::ffff:192.168.2.0/120");
});

Deno.test("JSON: names and targets are escaped so the list always parses", () => {
  const t = new FlowTable("flow");
  t.set({ name: "a+b_c-d.e", target: 'odd"target\\x' });
  const parsed = JSON.parse(t.list());
  assert.equal(parsed[0].name, "a+b_c-d.e");
  assert.equal(parsed[0].user_ref, 'odd"target\\x');
});

Deno.test("ShmTargets: acquirable when the table exists; reference counted", () => {
  using _sb = libSandbox();
  const targets = new ShmTargets();
  const t = new FlowTable("flow", targets);
  assert.equal(t.set({ name: "a", target: "nfqlb" }), "FAIL: Couldn't create load-balancer");
  TargetShm.create("nfqlb", { M: 997, N: 32, ownFwmark: 0 });
  assert.equal(t.set({ name: "a", target: "nfqlb" }), "OK");
  assert.equal(t.set({ name: "b", target: "nfqlb" }), "OK");
  assert.equal(targets.refs("nfqlb"), 2);
  t.delete("a");
  assert.equal(targets.refs("nfqlb"), 1);
  t.clear();
  assert.equal(targets.refs("nfqlb"), 0);
});
