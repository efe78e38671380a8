/**
 * host/config/load.ts: valid YAML and JSON files with their defaults, the
 * shipped examples (each also planned into kernel rules), fullnat's source
 * addresses, a table of bad files each with its exact one-line
 * message, the read error, and the published JSON Schema being up to date.
 */
import assert from "node:assert/strict";
import { ConfigError, type HostConfig, loadHostConfig, parseHostConfig } from "../../host/config/load.ts";
import { primeBelow } from "../../core/prime.ts";
import { configJsonSchema, SCHEMA_FILE } from "../../scripts/gen_config_schema.ts";
import { planPlumbing } from "../../host/plumbing/plan.ts";
import { plumbingSpecOf } from "../../host/plumbing_spec.ts";
import { ROOT } from "../harness/paths.ts";

/** A minimal valid lb file; `svc` is added to the service, `top` at the end. */
function lbFile(svc = "", top = ""): string {
  return `version: 1
services:
  - name: web
    vips: [10.0.0.1]
    targets:
      - fwmark: 101
        address: 192.168.1.1
${svc}${top}`;
}

function errorOf(text: string, file = "hosts.yaml"): string {
  try {
    parseHostConfig(text, file);
  } catch (e) {
    assert.ok(e instanceof ConfigError, `not a ConfigError: ${e}`);
    assert.equal(e.exitCode, 1);
    assert.ok(!e.message.includes("\n"), `two lines: ${e.message}`);
    return e.message;
  }
  throw new Error(`accepted:\n${text}`);
}

Deno.test("host config: a minimal YAML file gets every default", () => {
  const cfg = parseHostConfig(lbFile(), "hosts.yaml");
  const expected: HostConfig = {
    version: 1,
    name: "nfqlb",
    services: [{
      name: "web",
      m: 997,
      requestedM: 997,
      n: 32,
      scheduler: "maglev",
      conntrack: null,
      vips: [{ cidr: "10.0.0.1/32", family: "ipv4" }],
      ports: null,
      targets: [{
        fwmark: 101,
        ipv4: "192.168.1.1",
        ipv6: null,
        port: null,
        weight: 1,
        mode: "dsr",
        table: 101,
        snat: null,
        active: true,
        health: null,
      }],
    }],
    flows: [],
    dataplane: {
      program: "lb",
      queue: "2",
      queues: { first: 2, last: 2 },
      bypass: true,
      hooks: ["prerouting"],
      // the names on the host the file leaves out derive from the config's name (host/names.ts)
      options: { ftShm: "ftshm.nfqlb", traceAddress: "unix:nfqlb-trace.nfqlb" },
      start: true,
      offload: false,
    },
    admin: { address: "127.0.0.1:9110" },
    bgp: null,
  };
  assert.deepEqual(cfg, expected);
});

Deno.test("host config: JSON (by name and by a leading brace) gives what the same YAML gives", () => {
  const json = JSON.stringify(
    {
      version: 1,
      services: [{
        name: "web",
        m: 1000,
        conntrack: { capacity: 1000, ttlMs: { udp: 5000 } },
        scheduler: "wlc",
        vips: ["10.0.0.1", "fd00::1", "10.0.1.0/24"],
        ports: [{ protocol: "tcp", port: 80 }, { protocol: "udp", port: "5000-5010" }, { protocol: "sctp" }],
        targets: [{ fwmark: 101, address: ["192.168.1.1", "FD00:1:0::1"], weight: 3, table: 1000 }],
      }],
      dataplane: { queue: "0:3", hooks: ["output", "prerouting"], options: { mtu: 9000, sctpEncap: 9899 } },
    },
    null,
    2,
  );
  const yaml = `version: 1
services:
  - name: web
    m: 1000
    conntrack: {capacity: 1000, ttlMs: {udp: 5000}}
    scheduler: wlc
    vips: [10.0.0.1, "fd00::1", 10.0.1.0/24]
    ports: [{protocol: tcp, port: 80}, {protocol: udp, port: 5000-5010}, {protocol: sctp}]
    targets: [{fwmark: 101, address: [192.168.1.1, "FD00:1:0::1"], weight: 3, table: 1000}]
dataplane: {queue: "0:3", hooks: [output, prerouting], options: {mtu: 9000, sctpEncap: 9899}}
`;
  const a = parseHostConfig(json, "hosts.json");
  assert.deepEqual(parseHostConfig(json, "hosts.conf"), a);
  assert.deepEqual(parseHostConfig(yaml, "hosts.yaml"), a);
  const s = a.services[0];
  assert.equal(s.m, primeBelow(1000)); // lowered to a prime as init does
  assert.equal(s.requestedM, 1000);
  assert.deepEqual(s.conntrack, {
    capacity: 1000,
    ttlMs: { tcp: 300000, udp: 5000, other: 30000 },
    floodPerSecond: 0,
    contexts: 0,
  });
  assert.deepEqual(s.vips.map((v) => v.cidr), ["10.0.0.1/32", "fd00::1/128", "10.0.1.0/24"]);
  assert.deepEqual(s.ports, [
    { protocol: "tcp", ports: { first: 80, last: 80 } },
    { protocol: "udp", ports: { first: 5000, last: 5010 } },
    { protocol: "sctp", ports: null },
  ]);
  assert.deepEqual(s.targets[0], {
    fwmark: 101,
    ipv4: "192.168.1.1",
    ipv6: "fd00:1::1",
    port: null,
    weight: 3,
    mode: "dsr",
    table: 1000,
    snat: null,
    active: true,
    health: null,
  });
  assert.deepEqual(a.dataplane.queues, { first: 0, last: 3 });
  assert.deepEqual(a.dataplane.options, {
    mtu: 9000,
    sctpEncap: 9899,
    ftShm: "ftshm.nfqlb",
    traceAddress: "unix:nfqlb-trace.nfqlb",
  });
});

Deno.test("host config: the examples in docs/examples parse", async () => {
  const dsr = await loadHostConfig(`${ROOT}/docs/examples/dsr.yaml`);
  assert.equal(dsr.dataplane.program, "lb");
  assert.deepEqual(dsr.services[0].vips.map((v) => v.family), ["ipv4", "ipv6"]);
  assert.deepEqual(dsr.services[0].targets.map((t) => [t.fwmark, t.table, t.weight]), [
    [101, 101, 1],
    [102, 102, 1],
    [103, 103, 0],
  ]);
  const nat = await loadHostConfig(`${ROOT}/docs/examples/nat.yaml`);
  assert.equal(nat.dataplane.program, "flowlb");
  assert.deepEqual(nat.services.map((s) => s.name), ["web", "sip"]);
  assert.deepEqual(nat.services[0].targets.map((t) => [t.mode, t.port, t.table]), [
    ["nat", 8080, null],
    ["nat", 8080, null],
  ]);
  // the flow is flow-set's request, canonical, with the service as its target
  assert.deepEqual(nat.flows.map((f) => f.request), [
    { name: "http", target: "web", protocols: "tcp", dsts: "::ffff:10.0.0.1/128", dports: "80,8000-8080" },
    {
      name: "sip",
      target: "sip",
      priority: "10",
      protocols: "udp",
      dsts: "::ffff:10.0.0.1/128",
      dports: "5060",
    },
  ]);
});

Deno.test("host config: the fullnat example: every target full NAT, the third with its own source addresses", async () => {
  const cfg = await loadHostConfig(`${ROOT}/docs/examples/fullnat.yaml`);
  assert.deepEqual(cfg.services[0].targets.map((t) => [t.fwmark, t.mode, t.port, t.snat]), [
    [101, "fullnat", 8443, { ipv4: "192.168.1.254", ipv6: "fd00:1::254" }],
    [102, "fullnat", 8443, { ipv4: "192.168.1.254", ipv6: "fd00:1::254" }],
    [103, "fullnat", 8443, { ipv4: "192.168.2.254", ipv6: "fd00:2::254" }],
  ]);
  const snat = planPlumbing(plumbingSpecOf(cfg)).filter((o) => o.add.includes("SNAT")).map((o) => o.add);
  assert.deepEqual(snat.map((a) => [a[0], a.at(-1)]), [
    ["iptables", "192.168.1.254"],
    ["iptables", "192.168.1.254"],
    ["iptables", "192.168.2.254"],
    ["ip6tables", "fd00:1::254"],
    ["ip6tables", "fd00:1::254"],
    ["ip6tables", "fd00:2::254"],
  ]);
});

Deno.test("host config: every file in docs/examples parses and plans its kernel rules", async () => {
  const names = [...Deno.readDirSync(`${ROOT}/docs/examples`)].map((e) => e.name).sort();
  assert.deepEqual(names, ["dsr.yaml", "fullnat.yaml", "nat.yaml"], "a new example: check it above too");
  for (const name of names) {
    const cfg = await loadHostConfig(`${ROOT}/docs/examples/${name}`);
    assert.ok(planPlumbing(plumbingSpecOf(cfg)).length > 0, name);
  }
});

Deno.test("host config: fullnat: the service's snat is the default, a target's own wins per family", () => {
  const text = `version: 1
services:
  - name: web
    vips: [10.0.0.1, "fd00::1"]
    ports: [{ protocol: udp, port: 53 }]
    snat: { ipv4: 192.168.0.254, ipv6: "FD01:0::254" }
    targets:
      - { fwmark: 101, address: [192.168.1.1, "fd01::1"], mode: fullnat }
      - { fwmark: 102, address: [192.168.2.1, "fd02::1"], mode: fullnat, port: 5353, snat: { ipv4: 192.168.2.254 } }
      - { fwmark: 103, address: [192.168.3.1, "fd03::1"], mode: nat }
`;
  const cfg = parseHostConfig(text, "h.yaml");
  const [a, b, c] = cfg.services[0].targets;
  assert.deepEqual([a.mode, a.table, a.port, a.snat], ["fullnat", null, null, {
    ipv4: "192.168.0.254",
    ipv6: "fd01::254", // canonical
  }]);
  assert.deepEqual([b.port, b.snat], [5353, { ipv4: "192.168.2.254", ipv6: "fd01::254" }]);
  assert.deepEqual([c.mode, c.snat], ["nat", null]);
  // an IPv4-only service needs only an IPv4 source address
  const v4 = parseHostConfig(
    lbFile("        mode: fullnat\n        snat: { ipv4: 192.168.1.254 }\n"),
    "h.yaml",
  );
  assert.deepEqual(v4.services[0].targets[0].snat, { ipv4: "192.168.1.254", ipv6: null });
});

Deno.test("host config: the YAML examples in docs/config.md parse", async () => {
  const md = await Deno.readTextFile(`${ROOT}/docs/config.md`);
  const blocks = [...md.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.equal(blocks.length, 3);
  assert.deepEqual(blocks.map((b) => parseHostConfig(b, "config.md").dataplane.program), [
    "lb",
    "flowlb",
    "lb",
  ]);
});

/** Bad files and their exact messages. */
const BAD: { name: string; text: string; file?: string; message: string }[] = [
  {
    name: "empty file",
    text: "\n",
    message: "hosts.yaml:1: (top level): expected a mapping with version: 1, got an empty file",
  },
  {
    name: "only a comment",
    text: "# nothing yet\n",
    message: "hosts.yaml:1: (top level): expected a mapping with version: 1, got nothing",
  },
  {
    name: "not a mapping",
    text: "- 1\n- 2\n",
    message:
      "hosts.yaml:1: (top level): expected a mapping with version, services (and name, flows, dataplane, admin, bgp), got [1,2]",
  },
  {
    name: "YAML syntax",
    text: "version: 1\nservices: [\n  {name: web\n",
    message:
      "hosts.yaml:4:1: YAML syntax: Flow map in block collection must be sufficiently indented and end with a }",
  },
  {
    name: "JSON syntax",
    text: '{"version": 1,\n "services" }',
    file: "hosts.json",
    message: "hosts.json:2:13: JSON syntax: Expected ':' after property name",
  },
  {
    name: "duplicate JSON key",
    text: '{"version": 1,\n "version": 1}',
    file: "hosts.json",
    message: "hosts.json:2:2: JSON syntax: Map keys must be unique",
  },
  {
    name: "wrong version (other keys not judged)",
    text: "version: 2\nservicez: []\n",
    message: "hosts.yaml:1: version: expected 1 (the only format version), got 2",
  },
  {
    name: "missing version",
    text: "services: []\n",
    message: "hosts.yaml:1: version: expected 1 (the only format version), got nothing",
  },
  {
    name: "unknown key (a typo), and the count of the others",
    text: lbFile("        wieght: 2\n        mode: dnat\n"),
    message:
      'hosts.yaml:8: services[0].targets[0].wieght: expected one of the keys fwmark, address, port, weight, mode, table, snat, active, health, got "wieght" (and 1 more)',
  },
  {
    name: "weight out of range",
    text: lbFile("        weight: 70000\n"),
    message: "hosts.yaml:8: services[0].targets[0].weight: expected an integer 0..65535, got 70000",
  },
  {
    name: "fwmark not an integer",
    text: lbFile().replace("fwmark: 101", 'fwmark: "101"'),
    message: 'hosts.yaml:6: services[0].targets[0].fwmark: expected an integer 1..2147483647, got "101"',
  },
  {
    name: "fwmark 0",
    text: lbFile().replace("fwmark: 101", "fwmark: 0"),
    message: "hosts.yaml:6: services[0].targets[0].fwmark: expected an integer 1..2147483647, got 0",
  },
  {
    name: "missing targets",
    text: "version: 1\nservices:\n  - name: web\n    vips: [10.0.0.1]\n",
    message: "hosts.yaml:3: services[0].targets: expected a list of targets, got nothing",
  },
  {
    name: "no services",
    text: "version: 1\nservices: []\n",
    message: "hosts.yaml:2: services: expected a list of services (at least one), got []",
  },
  {
    name: "bad service name",
    text: lbFile().replace("name: web", "name: web/1"),
    message:
      'hosts.yaml:3: services[0].name: expected a name of 1..64 of A-Z a-z 0-9 . _ + - (not . or ..), got "web/1"',
  },
  {
    name: "bad scheduler",
    text: lbFile("    scheduler: random\n"),
    message: 'hosts.yaml:8: services[0].scheduler: expected one of maglev, rr, wrr, lc, wlc, got "random"',
  },
  {
    name: "scheduler other than maglev without conntrack",
    text: lbFile("    scheduler: wlc\n"),
    message:
      'hosts.yaml:8: services[0].scheduler: expected maglev, or a conntrack section (per-connection schedulers keep state there), got "wlc"',
  },
  {
    name: "conntrack capacity 0",
    text: lbFile("    conntrack: {capacity: 0}\n"),
    message: "hosts.yaml:8: services[0].conntrack.capacity: expected an integer 1..268435456, got 0",
  },
  {
    name: "n larger than the prime m",
    text: lbFile("    m: 100\n    n: 100\n"),
    message:
      "hosts.yaml:9: services[0].n: expected an integer 1..97 (n ≤ m, and m 100 becomes the prime 97), got 100",
  },
  {
    name: "bad address",
    text: lbFile().replace("address: 192.168.1.1", "address: 192.168.1.256"),
    message:
      'hosts.yaml:7: services[0].targets[0].address: expected an IPv4 or IPv6 address, got "192.168.1.256"',
  },
  {
    name: "address of a family without VIPs",
    text: lbFile().replace("address: 192.168.1.1", 'address: [192.168.1.1, "fd00::5"]'),
    message:
      'hosts.yaml:7: services[0].targets[0].address[1]: expected an address of the family of the VIPs (ipv4), got "fd00::5"',
  },
  {
    name: "a VIP family the target has no address of",
    text: lbFile().replace("vips: [10.0.0.1]", 'vips: [10.0.0.1, "fd00::1"]'),
    message:
      'hosts.yaml:7: services[0].targets[0].address: expected an IPv6 address too (the service has IPv6 VIPs), got "192.168.1.1"',
  },
  {
    name: "bad CIDR",
    text: lbFile().replace("vips: [10.0.0.1]", "vips: [10.0.0.0/33]"),
    message:
      'hosts.yaml:4: services[0].vips[0]: expected an IP address or CIDR (10.0.0.1, fd00::/64), got "10.0.0.0/33"',
  },
  {
    name: "CIDR with host bits",
    text: lbFile().replace("vips: [10.0.0.1]", "vips: [10.0.0.1, 10.0.1.5/24]"),
    message:
      'hosts.yaml:4: services[0].vips[1]: expected a CIDR with no host bits set (10.0.1.0/24), got "10.0.1.5/24"',
  },
  {
    name: "port with dsr",
    text: lbFile("        port: 8080\n"),
    message:
      "hosts.yaml:8: services[0].targets[0].port: expected no port with mode dsr (port translation needs mode: nat or fullnat), got 8080",
  },
  {
    name: "table with nat",
    text: lbFile("        mode: nat\n        table: 7\n"),
    message:
      "hosts.yaml:9: services[0].targets[0].table: expected no table with mode nat (NAT'ed packets are routed by the main table), got 7",
  },
  {
    name: "mode typo",
    text: lbFile("        mode: full-nat\n"),
    message: 'hosts.yaml:8: services[0].targets[0].mode: expected one of dsr, nat, fullnat, got "full-nat"',
  },
  {
    name: "fullnat without a source address",
    text: lbFile("        mode: fullnat\n"),
    message:
      'hosts.yaml:8: services[0].targets[0].mode: expected an IPv4 source address with fullnat (snat.ipv4 on the target or its service; the service has IPv4 VIPs), got "fullnat"',
  },
  {
    name: "fullnat: the service's snat lacks a VIP family",
    text: lbFile("        mode: fullnat\n    snat: { ipv4: 10.0.0.2 }\n")
      .replace("vips: [10.0.0.1]", 'vips: [10.0.0.1, "fd00::1"]')
      .replace("address: 192.168.1.1", 'address: [192.168.1.1, "fd00:1::1"]'),
    message:
      'hosts.yaml:8: services[0].targets[0].mode: expected an IPv6 source address with fullnat (snat.ipv6 on the target or its service; the service has IPv6 VIPs), got "fullnat"',
  },
  {
    name: "fullnat: the target's snat lacks a VIP family, and the service has none",
    text: lbFile('        mode: fullnat\n        snat: { ipv6: "fd00::2" }\n')
      .replace("vips: [10.0.0.1]", 'vips: [10.0.0.1, "fd00::1"]')
      .replace("address: 192.168.1.1", 'address: [192.168.1.1, "fd00:1::1"]'),
    message:
      'hosts.yaml:9: services[0].targets[0].snat: expected an IPv4 source address with fullnat (snat.ipv4 on the target or its service; the service has IPv4 VIPs), got {"ipv6":"fd00::2"}',
  },
  {
    name: "snat of the wrong family",
    text: lbFile('        mode: fullnat\n        snat: { ipv4: "fd00::2" }\n'),
    message:
      'hosts.yaml:9: services[0].targets[0].snat.ipv4: expected a unicast IPv4 address (not 0.x, 127.x, multicast or broadcast), got "fd00::2"',
  },
  {
    name: "snat multicast",
    text: lbFile("        mode: fullnat\n    snat: { ipv4: 224.0.0.5 }\n"),
    message:
      'hosts.yaml:9: services[0].snat.ipv4: expected a unicast IPv4 address (not 0.x, 127.x, multicast or broadcast), got "224.0.0.5"',
  },
  {
    name: "snat unspecified IPv6 (reported once, not again as missing at the target)",
    text: lbFile('        mode: fullnat\n    snat: { ipv6: "::" }\n')
      .replace("vips: [10.0.0.1]", 'vips: ["fd00::1"]')
      .replace("address: 192.168.1.1", 'address: "fd00:1::1"'),
    message:
      'hosts.yaml:9: services[0].snat.ipv6: expected a unicast IPv6 address (not ::, ::1 or multicast), got "::"',
  },
  {
    name: "snat of a family the VIPs do not have",
    text: lbFile('        mode: fullnat\n        snat: { ipv4: 10.0.0.2, ipv6: "fd00::2" }\n'),
    message:
      'hosts.yaml:9: services[0].targets[0].snat.ipv6: expected no IPv6 address (the service has no IPv6 VIPs), got "fd00::2"',
  },
  {
    name: "empty snat",
    text: lbFile("        mode: fullnat\n        snat: {}\n"),
    message:
      "hosts.yaml:9: services[0].targets[0].snat: expected a mapping with ipv4 and/or ipv6 (the source addresses), got {}",
  },
  {
    name: "snat key typo",
    text: lbFile("        mode: fullnat\n        snat: { ip4: 10.0.0.2 }\n"),
    message: 'hosts.yaml:9: services[0].targets[0].snat.ip4: expected one of the keys ipv4, ipv6, got "ip4"',
  },
  {
    name: "snat on a nat target",
    text: lbFile("        mode: nat\n        snat: { ipv4: 10.0.0.2 }\n"),
    message:
      'hosts.yaml:9: services[0].targets[0].snat: expected no snat with mode nat (source translation needs mode: fullnat), got {"ipv4":"10.0.0.2"}',
  },
  {
    name: "snat on a service without a fullnat target",
    text: lbFile("    snat: { ipv4: 10.0.0.2 }\n"),
    message:
      'hosts.yaml:8: services[0].snat: expected a target with mode: fullnat in the service (snat is for fullnat targets), got {"ipv4":"10.0.0.2"}',
  },
  {
    name: "table with fullnat",
    text: lbFile("        mode: fullnat\n        snat: { ipv4: 10.0.0.2 }\n        table: 7\n"),
    message:
      "hosts.yaml:10: services[0].targets[0].table: expected no table with mode fullnat (NAT'ed packets are routed by the main table), got 7",
  },
  {
    name: "a reserved routing table",
    text: lbFile("        table: 254\n"),
    message:
      "hosts.yaml:8: services[0].targets[0].table: expected a routing table 1..4294967295 other than 253 (default), 254 (main), 255 (local), got 254",
  },
  {
    name: "duplicate fwmark across services",
    text: lbFile(
      "",
      "  - name: db\n    vips: [10.0.0.2]\n    targets: [{fwmark: 101, address: 192.168.1.9}]\nflows: []\n",
    ),
    message:
      "hosts.yaml:10: services[1].targets[0].fwmark: expected a fwmark unique across all services (services[0].targets[0] has it), got 101",
  },
  {
    name: "duplicate service name",
    text: lbFile(
      "",
      "  - name: web\n    vips: [10.0.0.2]\n    targets: [{fwmark: 102, address: 192.168.1.9}]\nflows: []\n",
    ),
    message: 'hosts.yaml:8: services[1].name: expected a name no other service has (services[0]), got "web"',
  },
  {
    name: "two services without flows",
    text: lbFile(
      "",
      "  - name: db\n    vips: [10.0.0.2]\n    targets: [{fwmark: 102, address: 192.168.1.9}]\n",
    ),
    message:
      "hosts.yaml:3: services: expected exactly one service without flows (lb serves one table; flows select among several), got 2 services",
  },
  {
    name: "flow of an unknown service",
    text: lbFile("", "flows:\n  - {name: http, service: wbe, protocols: [tcp], dports: [80]}\n"),
    message: 'hosts.yaml:9: flows[0].service: expected the name of a service (web), got "wbe"',
  },
  {
    name: "flow port refused by the flow validator, at the item",
    text: lbFile("", "flows:\n  - name: http\n    service: web\n    protocols: [tcp]\n    dports: [80, 0]\n"),
    message: "hosts.yaml:12: flows[0].dports[1]: expected what flow-set accepts (Invalid dports), got 0",
  },
  {
    name: "flow ports without protocols (the flow validator's text)",
    text: lbFile("", "flows:\n  - {name: http, service: web, dports: [80]}\n"),
    message:
      "hosts.yaml:9: flows[0].dports: expected what flow-set accepts (ports specified without protocols), got [80]",
  },
  {
    name: "flow match statement",
    text: lbFile("", 'flows:\n  - {name: m, service: web, match: ["tcp[19:2] = 1"]}\n'),
    message:
      'hosts.yaml:9: flows[0].match[0]: expected what flow-set accepts (Match [tcp[19:2] = 1] Out of bounds), got "tcp[19:2] = 1"',
  },
  {
    name: "flow name",
    text: lbFile("", "flows:\n  - {name: 'a b', service: web}\n"),
    message:
      'hosts.yaml:9: flows[0].name: expected what flow-set accepts (Invalid name [a b] (allowed: A-Z a-z 0-9 . _ + -)), got "a b"',
  },
  {
    name: "duplicate flow name",
    text: lbFile("", "flows:\n  - {name: a, service: web}\n  - {name: a, service: web}\n"),
    message: 'hosts.yaml:10: flows[1].name: expected a name no other flow has (flows[0]), got "a"',
  },
  {
    name: "flowlb option without flows",
    text: lbFile("", "dataplane:\n  options: {promiscuous: true}\n"),
    message:
      "hosts.yaml:9: dataplane.options.promiscuous: expected no flowlb option without flows (the dataplane is lb), got true",
  },
  {
    name: "lb option out of the lb range",
    text: lbFile("", "dataplane:\n  options: {mtu: 500}\n"),
    message: "hosts.yaml:9: dataplane.options.mtu: expected an integer 576..65535, got 500",
  },
  {
    name: "notargets fwmark of a target",
    text: lbFile("", "dataplane:\n  options: {notargetsFwmark: 101}\n"),
    message:
      "hosts.yaml:9: dataplane.options.notargetsFwmark: expected a fwmark no target has (it would be routed to that target), got 101",
  },
  {
    name: "bad queue",
    text: lbFile("", 'dataplane:\n  queue: "3:1"\n'),
    message: 'hosts.yaml:9: dataplane.queue: expected a queue 0..65535 or a range "first:last", got "3:1"',
  },
  {
    name: "bad admin address",
    text: lbFile("", "admin: {address: localhost:9110}\n"),
    message: 'hosts.yaml:8: admin.address: expected ADDR:PORT or [ADDR]:PORT, got "localhost:9110"',
  },
  {
    name: "admin address that is the lb's metrics address",
    text: lbFile("", 'dataplane: {options: {metrics: "0.0.0.0:9110"}}\nadmin: {address: "127.0.0.1:9110"}\n'),
    message:
      'hosts.yaml:9: admin.address: expected an address other than dataplane.options.metrics (0.0.0.0:9110: the lb serves there), got "127.0.0.1:9110"',
  },
  {
    name: "unknown admin key",
    text: lbFile("", "admin: {port: 9110}\n"),
    message: 'hosts.yaml:8: admin.port: expected one of the keys address, got "port"',
  },
  {
    name: "bad hook",
    text: lbFile("", "dataplane:\n  hooks: [input]\n"),
    message: 'hosts.yaml:9: dataplane.hooks[0]: expected one of prerouting, output, got "input"',
  },
  {
    name: "service named as the trace shm",
    text: lbFile(
      "",
      "  - name: nfqlb-trace\n    vips: [10.0.0.2]\n    targets: [{fwmark: 102, address: 192.168.1.9}]\nflows: []\n",
    ),
    message: 'hosts.yaml:8: services[1].name: expected a name that is not the trace shm, got "nfqlb-trace"',
  },
  {
    name: "service named as the fragment table",
    text: lbFile("", "dataplane:\n  options: {ftShm: web}\n"),
    message:
      'hosts.yaml:3: services[0].name: expected a name that is not the fragment table\'s (web), got "web"',
  },
  {
    name: "JSON file: line numbers too",
    text:
      '{\n  "version": 1,\n  "services": [\n    {"name": "web", "vips": ["10.0.0.1"],\n     "targets": [{"fwmark": -1, "address": "192.168.1.1"}]}\n  ]\n}\n',
    file: "hosts.json",
    message: "hosts.json:5: services[0].targets[0].fwmark: expected an integer 1..2147483647, got -1",
  },
];

Deno.test("host config: bad files, each with its exact one-line message", async (t) => {
  for (const c of BAD) {
    await t.step(c.name, () => assert.equal(errorOf(c.text, c.file), c.message));
  }
});

Deno.test("host config: errors are reported in file order, whatever the order of the checks", () => {
  // dataplane is checked last but written first here: its error is the one shown
  const text = 'version: 1\ndataplane: {queue: "3:1"}\n' +
    lbFile("        port: 80\n").slice("version: 1\n".length);
  assert.equal(
    errorOf(text),
    'hosts.yaml:2: dataplane.queue: expected a queue 0..65535 or a range "first:last", got "3:1" (and 1 more)',
  );
});

Deno.test("host config: loadHostConfig names an unreadable file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () => loadHostConfig(`${dir}/nope.yaml`),
      (e: unknown) =>
        e instanceof ConfigError && e.message === `${dir}/nope.yaml: cannot read: No such file or directory`,
    );
    await Deno.writeTextFile(`${dir}/h.yaml`, lbFile("        weight: -1\n"));
    await assert.rejects(
      () => loadHostConfig(`${dir}/h.yaml`),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.message === `${dir}/h.yaml:8: services[0].targets[0].weight: expected an integer 0..65535, got -1`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("host config: docs/nfqlb-config.schema.json is what scripts/gen_config_schema.ts writes", async () => {
  const committed = await Deno.readTextFile(`${ROOT}/${SCHEMA_FILE}`);
  assert.equal(committed, configJsonSchema(), "stale: run deno task config-schema");
  const schema = JSON.parse(committed);
  assert.deepEqual(schema.required, ["version", "services"]);
  assert.equal(schema.additionalProperties, false);
});

Deno.test("host config: name (apply's id) defaults to nfqlb, is checked, and is kept", () => {
  const text = (name: string) =>
    `version: 1\nname: ${name}\nservices:\n  - name: web\n    vips: [10.0.0.1]\n    targets:\n      - {fwmark: 101, address: 192.168.1.1}\n`;
  assert.equal(parseHostConfig(text("edge-1.a"), "h.yaml").name, "edge-1.a");
  assert.throws(
    () => parseHostConfig(text("a/b"), "h.yaml"),
    { message: 'h.yaml:2: name: expected a name of 1..32 of A-Z a-z 0-9 . _ + - (not . or ..), got "a/b"' },
  );
  assert.throws(
    () => parseHostConfig(text("x".repeat(33)), "h.yaml"),
    (e: Error) => e.message.startsWith("h.yaml:2: name: expected a name of 1..32"),
  );
});
