/**
 * The pure side of the kernel plumbing (host/plumbing): the objects a
 * spec plans to, for IPv4 and IPv6, DSR, NAT and full NAT, ports, both hooks, offload,
 * the nft script, validation, and reading iptables-save / ip JSON back.
 */
import assert from "node:assert/strict";
import { NfqlbError } from "../../core/errors.ts";
import { parseSave, splitSaveLine } from "../../host/plumbing/iptables.ts";
import { parseRoutes, parseRules } from "../../host/plumbing/iproute.ts";
import { chainName } from "../../host/plumbing/names.ts";
import { nftScript, parseNftTable } from "../../host/plumbing/nft.ts";
import { ourChains, planPlumbing, recordChains, snatChain } from "../../host/plumbing/plan.ts";
import type { PlumbingSpec } from "../../host/plumbing/spec.ts";
import { canonicalAddress, canonicalCidr, validateSpec } from "../../host/plumbing/validate.ts";
import { parseCidr } from "../../core/flow/parse.ts";
import { formatCidr } from "../../core/flow/render.ts";
import { formatIPv6, parseIPv6 } from "../../core/inet.ts";

const DSR4: PlumbingSpec = {
  id: "web",
  queue: "2",
  bypass: true,
  hooks: ["prerouting"],
  vips: [{ address: "10.0.0.1", ports: [{ protocol: "udp", port: 5000 }] }],
  targets: [
    { fwmark: 101, address: "192.168.1.1", mode: "dsr", table: 101 },
    { fwmark: 102, address: "192.168.1.2", mode: "dsr", table: 102 },
  ],
};

/** The lines of a plan with the comment hashes blanked (they are checked separately). */
function lines(spec: PlumbingSpec, nftQueue = false): string[] {
  return planPlumbing(spec, { nftQueue }).map((o) => o.line.replace(/ [0-9a-f]{8}( dsr|")/, " H$1"));
}

Deno.test("plumbing plan: IPv4 DSR with a port, prerouting: chains, queue rule, records, routes, rules, jump", () => {
  assert.deepEqual(lines(DSR4), [
    "iptables -w -t mangle -N NFQLB-web",
    "iptables -w -t mangle -N NFQLB-web-RT",
    'iptables -w -t mangle -A NFQLB-web-RT -m mark --mark 101 -m comment --comment "nfqlb:web H dsr,101,101,192.168.1.1" -j RETURN',
    'iptables -w -t mangle -A NFQLB-web-RT -m mark --mark 102 -m comment --comment "nfqlb:web H dsr,102,102,192.168.1.2" -j RETURN',
    'iptables -w -t mangle -A NFQLB-web -d 10.0.0.1/32 -p udp --dport 5000 -m comment --comment "nfqlb:web H" -j NFQUEUE --queue-num 2 --queue-bypass',
    "ip route add default via 192.168.1.1 table 101 proto 110",
    "ip route add default via 192.168.1.2 table 102 proto 110",
    "ip rule add fwmark 101 table 101 protocol 110",
    "ip rule add fwmark 102 table 102 protocol 110",
    'iptables -w -t mangle -A PREROUTING -d 10.0.0.1/32 -m comment --comment "nfqlb:web H" -j NFQLB-web',
  ]);
  const objs = planPlumbing(DSR4);
  assert.deepEqual(objs.find((o) => o.kind === "iprule")?.del, [
    ..."ip rule del fwmark 101 table 101 protocol 110".split(" "),
  ]);
  assert.equal(new Set(objs.map((o) => o.key)).size, objs.length, "keys are unique");
  // pure and stable: the same spec plans the same keys
  assert.deepEqual(planPlumbing(DSR4).map((o) => o.key), objs.map((o) => o.key));
});

Deno.test("plumbing plan: IPv6 NAT with port translation, both hooks, queue balance, no bypass", () => {
  const spec: PlumbingSpec = {
    id: "v6",
    queue: "0:3",
    bypass: false,
    hooks: ["prerouting", "output"],
    vips: [{ address: "FD00:0:0::1", ports: [{ protocol: "tcp", port: 80 }, { protocol: "sctp", port: 9 }] }],
    targets: [{ fwmark: 7, address: "fd01::0:5", port: 8080, mode: "nat", table: 7 }],
  };
  assert.deepEqual(lines(spec), [
    "ip6tables -w -t mangle -N NFQLB-v6",
    "ip6tables -w -t nat -N NFQLB-v6",
    'ip6tables -w -t mangle -A NFQLB-v6 -d fd00::1/128 -p tcp --dport 80 -m comment --comment "nfqlb:v6 H" -j NFQUEUE --queue-balance 0:3',
    'ip6tables -w -t mangle -A NFQLB-v6 -d fd00::1/128 -p sctp --dport 9 -m comment --comment "nfqlb:v6 H" -j NFQUEUE --queue-balance 0:3',
    'ip6tables -w -t nat -A NFQLB-v6 -p tcp -m mark --mark 7 -m comment --comment "nfqlb:v6 H" -j DNAT --to-destination [fd01::5]:8080',
    'ip6tables -w -t nat -A NFQLB-v6 -p sctp -m mark --mark 7 -m comment --comment "nfqlb:v6 H" -j DNAT --to-destination [fd01::5]:8080',
    'ip6tables -w -t mangle -A PREROUTING -d fd00::1/128 -m comment --comment "nfqlb:v6 H" -j NFQLB-v6',
    'ip6tables -w -t mangle -A OUTPUT -d fd00::1/128 -m mark --mark 0 -m comment --comment "nfqlb:v6 H" -j NFQLB-v6',
    'ip6tables -w -t nat -A PREROUTING -d fd00::1/128 -m comment --comment "nfqlb:v6 H" -j NFQLB-v6',
    'ip6tables -w -t nat -A OUTPUT -d fd00::1/128 -m comment --comment "nfqlb:v6 H" -j NFQLB-v6',
  ]);
});

Deno.test("plumbing plan: NAT without a VIP port filter DNATs tcp/udp/sctp with the port, the rest without", () => {
  const spec: PlumbingSpec = {
    id: "n",
    queue: "1",
    bypass: true,
    hooks: ["output"],
    vips: [{ address: "10.1.0.0/16" }],
    targets: [
      { fwmark: 1, address: "10.2.0.1", port: 99, mode: "nat", table: 1 },
      { fwmark: 2, address: "10.2.0.2", mode: "nat", table: 2 },
    ],
  };
  const nat = lines(spec).filter((l) => l.includes("-t nat -A NFQLB-n"));
  assert.deepEqual(nat, [
    'iptables -w -t nat -A NFQLB-n -p tcp -m mark --mark 1 -m comment --comment "nfqlb:n H" -j DNAT --to-destination 10.2.0.1:99',
    'iptables -w -t nat -A NFQLB-n -p udp -m mark --mark 1 -m comment --comment "nfqlb:n H" -j DNAT --to-destination 10.2.0.1:99',
    'iptables -w -t nat -A NFQLB-n -p sctp -m mark --mark 1 -m comment --comment "nfqlb:n H" -j DNAT --to-destination 10.2.0.1:99',
    'iptables -w -t nat -A NFQLB-n -m mark --mark 1 -m comment --comment "nfqlb:n H" -j DNAT --to-destination 10.2.0.1',
    'iptables -w -t nat -A NFQLB-n -m mark --mark 2 -m comment --comment "nfqlb:n H" -j DNAT --to-destination 10.2.0.2',
  ]);
  // no DSR target: no ip rule, no route, no record chain; NAT targets route by the main table
  assert.ok(!lines(spec).some((l) => l.startsWith("ip ") || l.includes("-RT")));
  // the VIP's host bits are cleared
  assert.ok(lines(spec).some((l) => l.includes("-A OUTPUT -d 10.1.0.0/16 ")));
});

Deno.test("plumbing plan: full NAT is NAT's DNAT plus, by fwmark, SNAT in POSTROUTING for connections DNATed from a VIP", () => {
  const spec: PlumbingSpec = {
    id: "fn",
    queue: "2",
    bypass: true,
    hooks: ["prerouting", "output"],
    vips: [{ address: "10.0.0.1", ports: [{ protocol: "udp", port: 53 }] }, { address: "FD00::1" }],
    targets: [
      { fwmark: 1, address: "10.2.0.1", port: 5353, mode: "fullnat", table: 1, snat: "10.2.0.254" },
      { fwmark: 2, address: "10.2.0.2", mode: "nat", table: 2 },
      { fwmark: 3, address: "10.3.0.1", mode: "fullnat", table: 3, snat: "10.3.0.254" },
      { fwmark: 1, address: "fd02::1", mode: "fullnat", table: 1, snat: "FD02:0::254" },
    ],
  };
  const l = lines(spec);
  const nat = l.filter((x) => x.includes(" -t nat "));
  assert.deepEqual(nat, [
    "iptables -w -t nat -N NFQLB-fn",
    "iptables -w -t nat -N NFQLB-fn-SN",
    "ip6tables -w -t nat -N NFQLB-fn",
    "ip6tables -w -t nat -N NFQLB-fn-SN",
    'iptables -w -t nat -A NFQLB-fn -p udp -m mark --mark 1 -m comment --comment "nfqlb:fn H" -j DNAT --to-destination 10.2.0.1:5353',
    'iptables -w -t nat -A NFQLB-fn -m mark --mark 2 -m comment --comment "nfqlb:fn H" -j DNAT --to-destination 10.2.0.2',
    'iptables -w -t nat -A NFQLB-fn -m mark --mark 3 -m comment --comment "nfqlb:fn H" -j DNAT --to-destination 10.3.0.1',
    'iptables -w -t nat -A NFQLB-fn-SN -m mark --mark 1 -m comment --comment "nfqlb:fn H" -j SNAT --to-source 10.2.0.254',
    'iptables -w -t nat -A NFQLB-fn-SN -m mark --mark 3 -m comment --comment "nfqlb:fn H" -j SNAT --to-source 10.3.0.254',
    'ip6tables -w -t nat -A NFQLB-fn -m mark --mark 1 -m comment --comment "nfqlb:fn H" -j DNAT --to-destination fd02::1',
    'ip6tables -w -t nat -A NFQLB-fn-SN -m mark --mark 1 -m comment --comment "nfqlb:fn H" -j SNAT --to-source fd02::254',
    'iptables -w -t nat -A PREROUTING -d 10.0.0.1/32 -m comment --comment "nfqlb:fn H" -j NFQLB-fn',
    'iptables -w -t nat -A OUTPUT -d 10.0.0.1/32 -m comment --comment "nfqlb:fn H" -j NFQLB-fn',
    'iptables -w -t nat -A POSTROUTING -m conntrack --ctstate DNAT --ctorigdst 10.0.0.1 -m comment --comment "nfqlb:fn H" -j NFQLB-fn-SN',
    'ip6tables -w -t nat -A PREROUTING -d fd00::1/128 -m comment --comment "nfqlb:fn H" -j NFQLB-fn',
    'ip6tables -w -t nat -A OUTPUT -d fd00::1/128 -m comment --comment "nfqlb:fn H" -j NFQLB-fn',
    'ip6tables -w -t nat -A POSTROUTING -m conntrack --ctstate DNAT --ctorigdst fd00::1 -m comment --comment "nfqlb:fn H" -j NFQLB-fn-SN',
  ]);
  // no ip rule or route: full NAT routes by the main table, as NAT does
  assert.ok(!l.some((x) => x.startsWith("ip ") || x.includes("-RT")));
  const objs = planPlumbing(spec);
  // the POSTROUTING jump is a jump (added last, removed first), the SNAT rules are rules of our chain
  const post = objs.filter((o) => o.chain === "POSTROUTING");
  assert.deepEqual(post.map((o) => o.kind), ["jump", "jump"]);
  assert.ok(
    objs.filter((o) => o.chain === "NFQLB-fn-SN").every((o) => o.kind === "rule" || o.kind === "chain"),
  );
  assert.ok(objs.indexOf(post[0]) > objs.findLastIndex((o) => o.kind !== "jump"));
  // a changed source address is a new rule (new hash), the rest stays
  const moved = planPlumbing({
    ...spec,
    targets: spec.targets.map((t) => t.fwmark === 3 ? { ...t, snat: "10.3.0.253" } : t),
  }).map((o) => o.key);
  assert.deepEqual(objs.map((o) => o.key).filter((k) => !moved.includes(k)).length, 1);
  // without a full NAT target there is no SNAT chain
  const natOnly = lines({ ...spec, targets: [spec.targets[1]] });
  assert.ok(!natOnly.some((x) => x.includes("-SN") || x.includes("SNAT")), natOnly.join("\n"));
  // nft queue: the NAT objects stay iptables
  assert.equal(planPlumbing(spec, { nftQueue: true }).filter((o) => o.add.includes("SNAT")).length, 3);
});

Deno.test("plumbing plan: offload puts connmark restore + accept per VIP before the queue rules", () => {
  const l = lines({ ...DSR4, offload: true }).filter((x) => x.includes("-A NFQLB-web "));
  assert.deepEqual(l, [
    'iptables -w -t mangle -A NFQLB-web -d 10.0.0.1/32 ! -p icmp -m connmark ! --mark 0 -m comment --comment "nfqlb:web H" -j CONNMARK --restore-mark',
    'iptables -w -t mangle -A NFQLB-web -d 10.0.0.1/32 ! -p icmp -m connmark ! --mark 0 -m comment --comment "nfqlb:web H" -j ACCEPT',
    'iptables -w -t mangle -A NFQLB-web -d 10.0.0.1/32 -p udp --dport 5000 -m comment --comment "nfqlb:web H" -j NFQUEUE --queue-num 2 --queue-bypass',
  ]);
});

Deno.test("plumbing plan: offload untracks the TCP SYNs to DSR VIPs in raw PREROUTING (per TCP port)", () => {
  const syn = (cidr: string, dport = "") =>
    `iptables -w -t raw -A PREROUTING -d ${cidr} -p tcp${dport ? ` --dport ${dport}` : ""} --syn ` +
    '-m comment --comment "nfqlb:web H" -j CT --notrack';
  const spec: PlumbingSpec = {
    ...DSR4,
    offload: true,
    vips: [
      { address: "10.0.0.1" },
      {
        address: "10.0.0.2",
        ports: [{ protocol: "udp", port: 53 }, { protocol: "tcp", port: 80 }, {
          protocol: "tcp",
          port: 8000,
          lastPort: 8010,
        }],
      },
      { address: "10.0.0.3", ports: [{ protocol: "udp", port: 5000 }] },
      { address: "10.0.0.4", ports: [{ protocol: "tcp", port: 443 }, { protocol: "tcp" }] },
    ],
  };
  const l = lines(spec);
  const raw = l.filter((x) => x.includes(" -t raw "));
  // a UDP-only VIP needs none; "every tcp port" covers the VIP's single TCP ports
  assert.deepEqual(raw, [
    syn("10.0.0.1/32"),
    syn("10.0.0.2/32", "80"),
    syn("10.0.0.2/32", "8000:8010"),
    syn("10.0.0.4/32"),
  ]);
  const objs = planPlumbing(spec);
  const rawObjs = objs.filter((o) => o.table === "raw");
  assert.ok(rawObjs.every((o) => o.kind === "rule" && o.chain === "PREROUTING"));
  // added before the jumps that send traffic to the queue
  const firstJump = objs.findIndex((o) => o.kind === "jump");
  assert.ok(rawObjs.every((o) => objs.indexOf(o) < firstJump));
  assert.deepEqual(rawObjs[0].del.slice(0, 6), ["iptables", "-w", "-t", "raw", "-D", "PREROUTING"]);
  assert.deepEqual(rawObjs[0].check?.slice(4, 6), ["-C", "PREROUTING"]);

  // none without offload, without the prerouting hook, or where the family has a (full) NAT target
  const none = (x: PlumbingSpec) => planPlumbing(x).filter((o) => o.table === "raw").map((o) => o.line);
  assert.deepEqual(none({ ...spec, offload: false }), []);
  assert.deepEqual(none({ ...spec, hooks: ["output"] }), []);
  const nat4: PlumbingSpec = {
    ...spec,
    vips: [{ address: "10.0.0.1" }, { address: "fd00::1" }],
    targets: [
      { fwmark: 101, address: "192.168.1.1", mode: "nat", table: 101 },
      { fwmark: 101, address: "fd01::1", mode: "dsr", table: 101 },
    ],
  };
  assert.deepEqual(none(nat4).map((x) => x.replace(/ [0-9a-f]{8}"/, ' H"')), [
    'ip6tables -w -t raw -A PREROUTING -d fd00::1/128 -p tcp --syn -m comment --comment "nfqlb:web H" -j CT --notrack',
  ]);
  const fullnat4: PlumbingSpec = {
    ...nat4,
    targets: [{ ...nat4.targets[0], mode: "fullnat", snat: "192.168.1.254" }, nat4.targets[1]],
  };
  assert.deepEqual(none(fullnat4), none(nat4));
  // nft queue: the raw rule stays iptables
  assert.equal(planPlumbing(spec, { nftQueue: true }).filter((o) => o.table === "raw").length, 4);
});

Deno.test("plumbing plan: mixed families go to iptables and ip6tables; the same fwmark may serve both", () => {
  const spec: PlumbingSpec = {
    ...DSR4,
    vips: [{ address: "10.0.0.1" }, { address: "fd00::1" }],
    targets: [
      { fwmark: 101, address: "192.168.1.1", mode: "dsr", table: 101 },
      { fwmark: 101, address: "fd01::1", mode: "dsr", table: 101 },
    ],
  };
  const l = lines(spec);
  assert.ok(l.includes("ip -6 route add default via fd01::1 table 101 proto 110"));
  assert.ok(l.includes("ip -6 rule add fwmark 101 table 101 protocol 110"));
  assert.ok(l.includes("ip rule add fwmark 101 table 101 protocol 110"));
  assert.equal(l.filter((x) => x.startsWith("ip6tables")).length, 5);
  assert.equal(l.filter((x) => x.startsWith("iptables")).length, 5);
});

Deno.test("plumbing plan: a changed rule gets a new key, unchanged ones keep theirs", () => {
  const a = planPlumbing(DSR4).map((o) => o.key);
  const b = planPlumbing({
    ...DSR4,
    vips: [{ address: "10.0.0.1", ports: [{ protocol: "udp", port: 5001 }] }],
  })
    .map((o) => o.key);
  const gone = a.filter((k) => !b.includes(k)), fresh = b.filter((k) => !a.includes(k));
  assert.equal(gone.length, 1);
  assert.equal(fresh.length, 1);
  assert.match(gone[0], /^ipt4 mangle NFQLB-web [0-9a-f]{8}$/);
});

Deno.test("plumbing plan: nft queue replaces the iptables queue chain by one inet table", () => {
  const spec: PlumbingSpec = {
    ...DSR4,
    hooks: ["prerouting", "output"],
    offload: true,
    vips: [...DSR4.vips, { address: "fd00::1" }],
    queue: "0:3",
  };
  const objs = planPlumbing(spec, { nftQueue: true });
  assert.ok(!objs.some((o) => o.add.includes("NFQUEUE")), "no iptables NFQUEUE rule");
  assert.ok(!objs.some((o) => o.kind === "jump"), "no iptables jump");
  const nft = objs.filter((o) => o.kind === "nft");
  assert.equal(nft.length, 1);
  const { text, hash } = nftScript(validateSpec(spec));
  assert.equal(nft[0].stdin, text);
  assert.deepEqual(nft[0].del, ["nft", "delete", "table", "inet", "nfqlb-web"]);
  assert.equal(
    text,
    [
      "table inet nfqlb-web {",
      `\tcomment "nfqlb:web ${hash}"`,
      "\tchain prerouting {",
      "\t\ttype filter hook prerouting priority mangle; policy accept;",
      "\t\tip daddr 10.0.0.1/32 jump vip",
      "\t\tip6 daddr fd00::1/128 jump vip",
      "\t}",
      "\tchain output {",
      "\t\ttype route hook output priority mangle; policy accept;",
      "\t\tmeta mark 0 ip daddr 10.0.0.1/32 jump vip",
      "\t\tmeta mark 0 ip6 daddr fd00::1/128 jump vip",
      "\t}",
      "\tchain vip {",
      "\t\tct mark != 0 meta mark set ct mark",
      "\t\tct mark != 0 accept",
      "\t\tip daddr 10.0.0.1/32 udp dport 5000 queue num 0-3 bypass",
      "\t\tip6 daddr fd00::1/128 queue num 0-3 bypass",
      "\t}",
      "}",
      "",
    ].join("\n"),
  );
  // what `nft list table` prints comes back with the same key
  const back = parseNftTable(text.replace("\tchain", "\tchain"), "web");
  assert.equal(back?.key, nft[0].key);
});

Deno.test("plumbing plan: bad specs are one-line errors naming the value", () => {
  const cases: [Partial<PlumbingSpec>, RegExp][] = [
    [{ id: "a b" }, /invalid id .*"a b"/],
    [{ id: "x".repeat(33) }, /invalid id/],
    [{ queue: "3:1" }, /invalid queue .*"3:1"/],
    [{ queue: "70000" }, /invalid queue/],
    [{ hooks: [] }, /invalid hooks/],
    [{ vips: [{ address: "10.0.0.300" }] }, /invalid VIP address: "10.0.0.300"/],
    [{ vips: [{ address: "10.0.0.1/33" }] }, /invalid VIP address/],
    [{ vips: [{ address: "10.0.0.1", ports: [{ protocol: "udp", port: 0 }] }] }, /port of VIP 10.0.0.1: 0/],
    [{ targets: [{ fwmark: 0, address: "1.2.3.4", mode: "dsr", table: 1 }] }, /target fwmark: 0/],
    [{ targets: [{ fwmark: 1, address: "1.2.3", mode: "dsr", table: 1 }] }, /address of target 1: "1.2.3"/],
    [{ targets: [{ fwmark: 1, address: "1.2.3.4", mode: "dsr", table: 254 }] }, /table of target 1 .*254/],
    [
      { targets: [{ fwmark: 1, address: "1.2.3.4", mode: "dsr", table: 1, port: 80 }] },
      /port of DSR target 1/,
    ],
    [{
      targets: [
        { fwmark: 1, address: "1.2.3.4", mode: "dsr", table: 1 },
        { fwmark: 1, address: "1.2.3.5", mode: "nat", table: 2 },
      ],
    }, /fwmark \(twice for IPv4\): 1/],
    [
      { targets: [{ fwmark: 1, address: "1.2.3.4", mode: "fullnat", table: 1 }] },
      /snat of full NAT target 1 .*IPv4/,
    ],
    [
      { targets: [{ fwmark: 1, address: "1.2.3.4", mode: "fullnat", table: 1, snat: "fd00::2" }] },
      /snat of full NAT target 1 \(want an IPv4 address\): "fd00::2"/,
    ],
    [
      { targets: [{ fwmark: 1, address: "1.2.3.4", mode: "nat", table: 1, snat: "1.2.3.254" }] },
      /snat of nat target 1 \(only full NAT translates the source\)/,
    ],
    [
      // deno-lint-ignore no-explicit-any
      { targets: [{ fwmark: 1, address: "1.2.3.4", mode: "snat" as any, table: 1 }] },
      /mode of target 1 \(want dsr, nat or fullnat\): "snat"/,
    ],
  ];
  for (const [patch, re] of cases) {
    assert.throws(() => planPlumbing({ ...DSR4, ...patch }), (e: unknown) => {
      assert.ok(e instanceof NfqlbError, String(e));
      assert.match(e.message, re);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  }
});

Deno.test("plumbing names: long ids get distinct chains within iptables' 28 characters", () => {
  const a = "a".repeat(32), b = "a".repeat(31) + "b";
  for (const id of [a, b]) {
    assert.ok(chainName(id, "-RT").length <= 28);
    assert.ok(snatChain(id).length <= 28);
    assert.ok(chainName(id).length <= 28);
  }
  assert.notEqual(chainName(a), chainName(b));
  assert.equal(chainName("web"), "NFQLB-web");
});

Deno.test("plumbing addresses: canonical IPv6 (RFC 5952) and CIDRs", () => {
  assert.equal(formatIPv6(parseIPv6("fd00:0:0:0:0:0:0:1")!), "fd00::1");
  assert.equal(formatIPv6(parseIPv6("1:0:0:2:0:0:0:3")!), "1:0:0:2::3");
  assert.equal(formatIPv6(parseIPv6("1:0:2:3:4:5:6:7")!), "1:0:2:3:4:5:6:7");
  assert.equal(formatIPv6(parseIPv6("::")!), "::");
  assert.equal(canonicalCidr("fd00::ff/64")?.cidr, "fd00::/64");
  assert.equal(canonicalCidr("10.1.2.3/8")?.cidr, "10.0.0.0/8");
  assert.equal(canonicalCidr("10.1.2.3")?.cidr, "10.1.2.3/32");
});

Deno.test("plumbing addresses: the same text as flows and `ip`/iptables-save print (inet_ntop)", () => {
  // plumbing, flow-list and ct-list share one formatter; the IPv4-embedded
  // forms come out as inet_ntop prints them, as ip and ip6tables-save show them
  const cases: [string, string][] = [
    ["FD00:0000::0001", "fd00::1"],
    ["1:0:0:2:0:0:3:4", "1::2:0:0:3:4"],
    ["2001:db8:0:1:0:0:0:0", "2001:db8:0:1::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"],
    ["::ffff:10.1.2.3", "::ffff:10.1.2.3"],
    ["0:0:0:0:0:ffff:a01:203", "::ffff:10.1.2.3"],
  ];
  for (const [input, text] of cases) {
    assert.deepEqual(canonicalAddress(input), { family: 6, text }, input);
    assert.equal(formatCidr(parseCidr(`${input}/128`)!), `${text}/128`, `flow-list: ${input}`);
  }
  assert.equal(canonicalCidr("::ffff:10.1.2.3/120")?.cidr, "::ffff:10.1.2.0/120");
  assert.equal(canonicalAddress("10.1.2.3")?.text, "10.1.2.3");
});

Deno.test("plumbing read: iptables-save lines of our id only, by comment; ip rule/route JSON by protocol", () => {
  const save = [
    "# Generated by iptables-save",
    "*mangle",
    ":PREROUTING ACCEPT [0:0]",
    ":NFQLB-web - [0:0]",
    ":NFQLB-web-RT - [0:0]",
    ":NFQLB-other - [0:0]",
    '-A PREROUTING -d 10.0.0.1/32 -m comment --comment "nfqlb:web 0123abcd" -j NFQLB-web',
    '-A PREROUTING -d 10.0.0.1/32 -m comment --comment "nfqlb:webx 0123abcd" -j NFQLB-webx',
    '-A PREROUTING -m comment --comment "someone \\"else\\"" -j ACCEPT',
    '-A NFQLB-web -d 10.0.0.1/32 -p udp -m udp --dport 5000 -m comment --comment "nfqlb:web 11112222" -j NFQUEUE --queue-num 2',
    '-A NFQLB-web-RT -m mark --mark 0x65 -m comment --comment "nfqlb:web 33334444 dsr,101,101,192.168.1.1" -j RETURN',
    "COMMIT",
    "*nat",
    ":POSTROUTING ACCEPT [0:0]",
    ":NFQLB-web - [0:0]",
    ":NFQLB-web-SN - [0:0]",
    '-A POSTROUTING -m conntrack --ctstate DNAT --ctorigdst 10.0.0.1 -m comment --comment "nfqlb:web 6666bbbb" -j NFQLB-web-SN',
    '-A NFQLB-web-SN -m mark --mark 0x65 -m comment --comment "nfqlb:web 7777cccc" -j SNAT --to-source 192.168.1.254',
    "COMMIT",
    "*raw",
    ":PREROUTING ACCEPT [0:0]",
    '-A PREROUTING -d 10.0.0.1/32 -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment "nfqlb:web 5555aaaa" -j CT --notrack',
    '-A PREROUTING -p tcp -m comment --comment "foreign" -j CT --notrack',
    "COMMIT",
  ].join("\n");
  const r = parseSave(save, 4, "web", ourChains("web"), recordChains("web"));
  assert.deepEqual(r.chains.map((c) => c.key), [
    "ipt4 mangle chain NFQLB-web",
    "ipt4 mangle chain NFQLB-web-RT",
    "ipt4 nat chain NFQLB-web",
    "ipt4 nat chain NFQLB-web-SN",
  ]);
  assert.deepEqual(r.rules.map((x) => [x.object.kind, x.object.key, x.record]), [
    ["jump", "ipt4 mangle PREROUTING 0123abcd", undefined],
    ["rule", "ipt4 mangle NFQLB-web 11112222", undefined],
    ["record", "ipt4 mangle NFQLB-web-RT 33334444", "dsr,101,101,192.168.1.1"],
    ["jump", "ipt4 nat POSTROUTING 6666bbbb", undefined],
    ["rule", "ipt4 nat NFQLB-web-SN 7777cccc", undefined],
    // raw holds no chain of ours: a rule of ours in its PREROUTING is a rule, not a jump
    ["rule", "ipt4 raw PREROUTING 5555aaaa", undefined],
  ]);
  // deleted by the saved form itself
  assert.deepEqual(r.rules[1].object.del.slice(0, 7), [
    "iptables",
    "-w",
    "-t",
    "mangle",
    "-D",
    "NFQLB-web",
    "-d",
  ]);
  assert.deepEqual(splitSaveLine('-A X -m comment --comment "a \\"q\\" \\\\b" -j ACCEPT'), [
    "-A",
    "X",
    "-m",
    "comment",
    "--comment",
    'a "q" \\b',
    "-j",
    "ACCEPT",
  ]);
  const rules = JSON.stringify([
    { priority: 0, src: "all", table: "255" },
    { priority: 32765, src: "all", fwmark: "0x65", table: "101", protocol: "110" },
    { priority: 32764, src: "all", fwmark: "0x66", table: "102" },
    { priority: 32763, src: "all", fwmark: "0x67", fwmask: "0xff", table: "103", protocol: "110" },
  ]);
  assert.deepEqual([...parseRules(rules, 4)], ["rule4 fwmark 101 table 101"]);
  const routes = JSON.stringify([
    { dst: "default", gateway: "fd01::1", dev: "t1", table: "101", flags: [] },
    { dst: "fd02::/64", dev: "t1", table: "101", flags: [] },
  ]);
  assert.deepEqual([...parseRoutes(routes, 6)], ["route6 table 101 default via fd01::1"]);
});
