/**
 * The pure parts of `nfqlb apply` (host): targets by diff, flows by
 * diff, the dataplane command line and the plumbing spec of a config. The
 * kernel side runs in tests/e2e/apply_test.ts.
 */
import assert from "node:assert/strict";
import { parseHostConfig } from "../../host/config/load.ts";
import {
  dataplaneArgs,
  dataplaneEnv,
  ftShmOf,
  isDataplane,
  rotateLog,
} from "../../host/dataplane_process.ts";
import {
  derivedAdminAddress,
  derivedFlowAddress,
  derivedFtShm,
  derivedTraceAddress,
  hostNames,
} from "../../host/names.ts";
import { flowSetLine, listedToRequest, planFlows } from "../../host/flow_sync.ts";
import { plumbingSpecOf } from "../../host/plumbing_spec.ts";
import { describeTargetChange, planTargets } from "../../host/target_sync.ts";
import { planPlumbing } from "../../host/plumbing/plan.ts";
import { NfqlbError } from "../../core/errors.ts";

const rows = (...fws: number[]) => Int32Array.from(fws);
const ws = (...w: number[]) => Uint32Array.from(w);

Deno.test("apply targets: rows that stay keep their index, new ones take the lowest free rows", () => {
  const r = planTargets(rows(101, -1, 103, 104), ws(1, 1, 2, 1), [
    { fwmark: 103, weight: 2 },
    { fwmark: 105, weight: 1 },
    { fwmark: 101, weight: 3 },
  ]);
  assert.deepEqual([...r.active], [101, 105, 103, -1]);
  assert.deepEqual([...r.weights], [3, 1, 2, 1]);
  assert.deepEqual(r.changes, [
    { kind: "weight", fwmark: 101, from: 1, to: 3 },
    { kind: "deactivate", fwmark: 104 },
    { kind: "activate", fwmark: 105, weight: 1 },
  ]);
});

Deno.test("apply targets: a target that comes back takes its home row, whatever order they come back in", () => {
  const home = new Map([[101, 0], [102, 1], [103, 2]]);
  // 101 and 103 were removed (health); 103 comes back first: row 2, not the lowest free row 0
  const r = planTargets(rows(-1, 102, -1), ws(1, 1, 1), [{ fwmark: 102, weight: 1 }, {
    fwmark: 103,
    weight: 1,
  }], home);
  assert.deepEqual([...r.active], [-1, 102, 103]);
  const r2 = planTargets(r.active, r.weights, [101, 102, 103].map((fwmark) => ({ fwmark, weight: 1 })), home);
  assert.deepEqual([...r2.active], [101, 102, 103]);
  // without home rows: the lowest free row, as activate
  assert.deepEqual(
    [
      ...planTargets(rows(-1, 102, -1), ws(1, 1, 1), [{ fwmark: 103, weight: 1 }, { fwmark: 102, weight: 1 }])
        .active,
    ],
    [103, 102, -1],
  );
  // a home row taken by another target: the lowest free row
  assert.deepEqual(
    [
      ...planTargets(
        rows(-1, 102, 104),
        ws(1, 1, 1),
        [102, 103, 104].map((fwmark) => ({ fwmark, weight: 1 })),
        home,
      ).active,
    ],
    [103, 102, 104],
  );
});

Deno.test("apply targets: the same set is no change; an empty set deactivates all; too many is one error", () => {
  assert.deepEqual(
    planTargets(rows(101, 102), ws(1, 0), [{ fwmark: 102, weight: 0 }, { fwmark: 101, weight: 1 }]).changes,
    [],
  );
  const off = planTargets(rows(101, 102), ws(1, 1), []);
  assert.deepEqual([...off.active], [-1, -1]);
  assert.equal(off.changes.length, 2);
  assert.throws(
    () => planTargets(rows(-1), ws(1), [{ fwmark: 1, weight: 1 }, { fwmark: 2, weight: 1 }]),
    (e: Error) =>
      e instanceof NfqlbError && e.message === "2 active targets do not fit in a table of N=1 rows",
  );
  // a fwmark in two rows (left by hand with activate --index) keeps one row
  const dup = planTargets(rows(101, 101), ws(1, 1), [{ fwmark: 101, weight: 1 }]);
  assert.deepEqual([...dup.active], [101, -1]);
  assert.deepEqual(dup.changes, []);
});

Deno.test("apply targets: each change reads as the command that makes it", () => {
  assert.equal(
    describeTargetChange("web", { kind: "activate", fwmark: 7, weight: 2 }),
    "activate --shm=web --weight=2 7",
  );
  assert.equal(describeTargetChange("web", { kind: "deactivate", fwmark: 7 }), "deactivate --shm=web 7");
  assert.equal(
    describeTargetChange("web", { kind: "weight", fwmark: 7, from: 1, to: 0 }),
    "activate --shm=web --weight=0 7   (weight 1 -> 0)",
  );
});

const FLOWS = `version: 1
name: edge
services:
  - name: a
    vips: [10.0.0.1, "fd00::1"]
    ports: [{protocol: udp, port: 5000}, {protocol: tcp, port: "8000-8080"}, {protocol: sctp}]
    targets:
      - {fwmark: 101, address: [192.168.1.1, "fd00:1::1"]}
  - name: b
    vips: [10.0.0.2]
    conntrack: {capacity: 1000}
    scheduler: rr
    targets:
      - {fwmark: 201, address: 192.168.2.1, mode: nat, port: 8080}
      - {fwmark: 202, address: 192.168.2.2, mode: nat, active: false}
flows:
  - {name: fa, service: a, priority: 2, protocols: [udp], dsts: [10.0.0.1/32], dports: ["5000"]}
  - {name: fb, service: b, protocols: [tcp], dports: ["80", "81-90"]}
dataplane:
  queue: "0:1"
  offload: true
  options: {mtu: 9000, failOpen: true, promiscuous: true, flowAddress: "unix:edge", ftShm: edge-ft}
`;

Deno.test("apply dataplane: the command line of a config, in a fixed order, and its environment", () => {
  const cfg = parseHostConfig(FLOWS, "edge.yaml");
  assert.equal(cfg.dataplane.program, "flowlb");
  // the file's own names, and the trace address it leaves out derived from the config's name
  assert.deepEqual(dataplaneArgs(cfg), [
    "--queue=0:1",
    "--mtu=9000",
    "--ft_shm=edge-ft",
    "--trace_address=unix:nfqlb-trace.edge",
    "--fail_open",
    "--promiscuous_ping",
  ]);
  assert.deepEqual(dataplaneEnv(cfg), { NFQLB_FLOW_ADDRESS: "unix:edge" });
  assert.equal(ftShmOf(cfg), "edge-ft");
  const lb = parseHostConfig(
    "version: 1\nname: edge\nservices:\n  - name: web\n    vips: [10.0.0.1]\n    targets: [{fwmark: 1, address: 10.1.1.1}]\n",
    "lb.yaml",
  );
  assert.deepEqual(dataplaneArgs(lb), [
    "--queue=2",
    "--tshm=web",
    "--ft_shm=ftshm.edge",
    "--trace_address=unix:nfqlb-trace.edge",
  ]);
  assert.deepEqual(dataplaneEnv(lb), {});
  assert.equal(ftShmOf(lb), "ftshm.edge");
  // flowlb's flow server address too, whatever NFQLB_FLOW_ADDRESS apply itself has
  const flowlb = parseHostConfig(FLOWS.replace('flowAddress: "unix:edge", ', ""), "edge.yaml");
  assert.deepEqual(dataplaneEnv(flowlb), { NFQLB_FLOW_ADDRESS: "unix:nfqlb.edge" });
});

Deno.test("host names: derived from the config's name; the admin address of nfqlb is 127.0.0.1:9110", () => {
  assert.equal(derivedFtShm("edge"), "ftshm.edge");
  assert.ok(!derivedFtShm("edge").includes("tshm-"), "no match for Meridio's grep tshm-");
  assert.equal(derivedTraceAddress("edge"), "unix:nfqlb-trace.edge");
  assert.equal(derivedFlowAddress("edge"), "unix:nfqlb.edge");
  assert.equal(derivedAdminAddress("nfqlb"), "127.0.0.1:9110");
  const seen = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    const a = derivedAdminAddress(`cfg-${i}`);
    assert.equal(a, derivedAdminAddress(`cfg-${i}`), "the same for every call");
    const m = /^127\.(\d+)\.(\d+)\.(\d+):9110$/.exec(a);
    assert.ok(m, a);
    const [x, y, z] = m.slice(1).map(Number);
    assert.ok(x <= 255 && y <= 255 && z >= 2 && z <= 254, a);
    seen.add(a);
  }
  assert.ok(seen.size >= 990, `1000 names, ${seen.size} addresses`);
  const cfg = parseHostConfig(
    "version: 1\nname: edge\nservices:\n  - name: web\n    vips: [10.0.0.1]\n    targets: [{fwmark: 1, address: 10.1.1.1}]\n",
    "lb.yaml",
  );
  assert.equal(cfg.admin.address, derivedAdminAddress("edge"));
  assert.deepEqual(hostNames(cfg), {
    ftShm: "ftshm.edge",
    counters: "ftshm.edge-counters",
    traceAddress: "unix:nfqlb-trace.edge",
    flowAddress: null,
    metrics: null,
  });
});

Deno.test("apply dataplane: a pid is ours only when it runs that program with exactly those arguments", () => {
  // this test process is not an lb
  assert.equal(isDataplane(Deno.pid, "lb", ["--queue=2"]), false);
  assert.equal(isDataplane(null, "lb", []), false);
  assert.equal(isDataplane(0x3fffffff, "lb", []), false);
});

Deno.test("apply plumbing: every service's VIPs with its port filters, a target per address family", () => {
  const cfg = parseHostConfig(FLOWS, "edge.yaml");
  const spec = plumbingSpecOf(cfg);
  assert.equal(spec.id, "edge");
  assert.equal(spec.queue, "0:1");
  assert.equal(spec.offload, true);
  assert.deepEqual(spec.vips, [
    {
      address: "10.0.0.1/32",
      ports: [
        { protocol: "udp", port: 5000, lastPort: 5000 },
        { protocol: "tcp", port: 8000, lastPort: 8080 },
        { protocol: "sctp" },
      ],
    },
    {
      address: "fd00::1/128",
      ports: [
        { protocol: "udp", port: 5000, lastPort: 5000 },
        { protocol: "tcp", port: 8000, lastPort: 8080 },
        { protocol: "sctp" },
      ],
    },
    { address: "10.0.0.2/32" },
  ]);
  assert.deepEqual(spec.targets, [
    { fwmark: 101, address: "192.168.1.1", mode: "dsr", table: 101 },
    { fwmark: 101, address: "fd00:1::1", mode: "dsr", table: 101 },
    { fwmark: 201, address: "192.168.2.1", mode: "nat", table: 201, port: 8080 },
    { fwmark: 202, address: "192.168.2.2", mode: "nat", table: 202 },
  ]);
  // the port filters become iptables matches: a port, a range, a protocol alone
  const lines = planPlumbing(spec, { nftQueue: false }).map((o) => o.line).filter((l) =>
    l.includes("NFQUEUE")
  );
  assert.ok(lines.some((l) => l.includes("-d 10.0.0.1/32 -p udp --dport 5000 ")), lines.join("\n"));
  assert.ok(lines.some((l) => l.includes("-d 10.0.0.1/32 -p tcp --dport 8000:8080 ")), lines.join("\n"));
  assert.ok(
    lines.some((l) => l.includes("-d 10.0.0.1/32 -p sctp ") && !/-p sctp --dport/.test(l)),
    lines.join("\n"),
  );
  assert.ok(lines.some((l) => l.includes("-d 10.0.0.2/32 -m comment")), lines.join("\n"));
});

Deno.test("apply flows: listed flows compare by their canonical form; changes are sets and deletes", () => {
  const cfg = parseHostConfig(FLOWS, "edge.yaml");
  const listedA = listedToRequest({
    name: "fa",
    priority: 2,
    protocols: ["udp"],
    dests: ["10.0.0.1/32"],
    dports: ["5000"],
    user_ref: "a",
  });
  assert.deepEqual(listedA, cfg.flows[0].request);
  // flowlb prints a negative priority as unsigned
  assert.equal(listedToRequest({ name: "n", priority: 0xffffffff, user_ref: "a" })?.priority, "-1");
  // a flow set with `--protocols= --dports=8443` (Meridio's protocols: []) lists no protocols: any protocol
  assert.deepEqual(listedToRequest({ name: "m", priority: 0, dports: ["8443"], user_ref: "a" }), {
    name: "m",
    target: "a",
    protocols: "",
    dports: "8443",
  });
  const have = new Map([
    ["fa", listedA],
    ["old", listedToRequest({ name: "old", priority: 0, user_ref: "a" })],
    ["fb", listedToRequest({ name: "fb", priority: 0, protocols: ["tcp"], dports: ["80"], user_ref: "b" })],
  ]);
  const changes = planFlows(have, cfg.flows);
  assert.deepEqual(
    changes.map((c) => `${c.kind} ${c.name}${c.kind === "set" && c.replaces ? " (replaces)" : ""}`),
    [
      "delete old",
      "set fb (replaces)",
    ],
  );
  assert.deepEqual(planFlows(new Map([["fa", listedA], ["fb", cfg.flows[1].request]]), cfg.flows), []);
  assert.equal(
    flowSetLine(cfg.flows[1].request),
    "flow-set --name=fb --target=b --protocols=tcp --dports=80-90",
  );
  assert.equal(
    flowSetLine(cfg.flows[0].request),
    "flow-set --name=fa --target=a --prio=2 --protocols=udp --dsts=10.0.0.1/32 --dports=5000",
  );
});

Deno.test("rotateLog: a dataplane log over the limit moves to .1 (an older .1 replaced); under it, or none, stays", () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-log-" });
  try {
    const log = `${dir}/host-web.log`;
    assert.equal(rotateLog(log, 10), false, "no log yet");
    Deno.writeTextFileSync(log, "0123456789");
    assert.equal(rotateLog(log, 10), false, "at the limit");
    Deno.writeTextFileSync(`${log}.1`, "older\n");
    Deno.writeTextFileSync(log, "0123456789x");
    assert.equal(rotateLog(log, 10), true);
    assert.equal(Deno.readTextFileSync(`${log}.1`), "0123456789x");
    assert.throws(() => Deno.statSync(log), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
