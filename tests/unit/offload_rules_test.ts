/** offloadRules(): the iptables/ip6tables argv of the offload rules (docs/conntrack.md, "Offload"). */
import assert from "node:assert/strict";
import { OFFLOAD_COMMENT, offloadRules } from "../../host/plumbing/offload_rules.ts";
import { NfqlbError } from "../../core/errors.ts";

const MATCH = (cidr: string) => [
  "-d",
  cidr,
  "!",
  "-p",
  cidr.includes(":") ? "ipv6-icmp" : "icmp",
  "-m",
  "connmark",
  "!",
  "--mark",
  "0",
  "-m",
  "comment",
  "--comment",
  OFFLOAD_COMMENT,
];
const RESTORE = ["-j", "CONNMARK", "--restore-mark"];
const ACCEPT = ["-j", "ACCEPT"];
/** The raw rule untracking a VIP's TCP SYNs (TCP offload under DSR). */
const SYN = (cidr: string) => [
  ..."-d X -p tcp --syn -m comment --comment".split(" ").map((x) => x === "X" ? cidr : x),
  OFFLOAD_COMMENT,
  ..."-j CT --notrack".split(" "),
];

Deno.test("offloadRules: IPv4 VIP: restore then accept at the top of mangle PREROUTING, SYN untrack in raw", () => {
  const r = offloadRules({ vips: ["10.0.0.1"] });
  const head = ["iptables", "-w", "-t", "mangle"];
  const raw = ["iptables", "-w", "-t", "raw"];
  assert.deepEqual(r.add, [
    [...head, "-I", "PREROUTING", "1", ...MATCH("10.0.0.1/32"), ...RESTORE],
    [...head, "-I", "PREROUTING", "2", ...MATCH("10.0.0.1/32"), ...ACCEPT],
    [...raw, "-I", "PREROUTING", "1", ...SYN("10.0.0.1/32")],
  ]);
  assert.deepEqual(r.delete, [
    [...head, "-D", "PREROUTING", ...MATCH("10.0.0.1/32"), ...RESTORE],
    [...head, "-D", "PREROUTING", ...MATCH("10.0.0.1/32"), ...ACCEPT],
    [...raw, "-D", "PREROUTING", ...SYN("10.0.0.1/32")],
  ]);
});

Deno.test("offloadRules: tcpSynNotrack false (NAT on this host) leaves out the raw rules", () => {
  const r = offloadRules({ vips: ["10.0.0.1", "fd00::1"], tcpSynNotrack: false });
  assert.equal(r.add.length, 4);
  assert.ok(r.add.every((a) => a[3] === "mangle"));
  assert.ok(r.delete.every((a) => a[3] === "mangle"));
});

Deno.test("offloadRules: IPv6 and IPv4 VIPs with prefixes, own chain and position, counted per family", () => {
  const r = offloadRules({ vips: ["fd00::1", "10.0.0.0/24", "fd00:1::/64"] });
  assert.deepEqual(r.add.map((a) => [a[0], a[3], a[5], a[6], a[8]]), [
    ["ip6tables", "mangle", "PREROUTING", "1", "fd00::1/128"],
    ["ip6tables", "mangle", "PREROUTING", "2", "fd00::1/128"],
    ["iptables", "mangle", "PREROUTING", "1", "10.0.0.0/24"],
    ["iptables", "mangle", "PREROUTING", "2", "10.0.0.0/24"],
    ["ip6tables", "mangle", "PREROUTING", "3", "fd00:1::/64"],
    ["ip6tables", "mangle", "PREROUTING", "4", "fd00:1::/64"],
    // raw: positions of their own, per family
    ["ip6tables", "raw", "PREROUTING", "1", "fd00::1/128"],
    ["iptables", "raw", "PREROUTING", "1", "10.0.0.0/24"],
    ["ip6tables", "raw", "PREROUTING", "2", "fd00:1::/64"],
  ]);
  assert.deepEqual(r.add.map((a) => a.slice(-3).includes("--restore-mark")), [
    true,
    false,
    true,
    false,
    true,
    false,
    false,
    false,
    false,
  ]);
  assert.deepEqual(r.add.slice(6).map((a) => a.slice(7)), [
    SYN("fd00::1/128"),
    SYN("10.0.0.0/24"),
    SYN("fd00:1::/64"),
  ]);
  const own = offloadRules({ vips: ["fd00::1"], chain: "VIP", insertAt: 3 });
  assert.deepEqual(own.add[0].slice(0, 7), ["ip6tables", "-w", "-t", "mangle", "-I", "VIP", "3"]);
  assert.deepEqual(own.add[1].slice(4, 7), ["-I", "VIP", "4"]);
  assert.deepEqual(own.delete[1].slice(4, 6), ["-D", "VIP"]);
  // the raw rule is in PREROUTING whatever the mangle chain and position
  assert.deepEqual(own.add[2].slice(0, 7), ["ip6tables", "-w", "-t", "raw", "-I", "PREROUTING", "1"]);
  // each delete argv is its add argv without the position, -I -> -D
  for (const x of [r, own]) {
    x.add.forEach((a, i) => {
      const d = [...a];
      d.splice(4, 3, "-D", a[5]);
      assert.deepEqual(x.delete[i], d);
    });
  }
});

Deno.test("offloadRules: bad VIPs and options are one-line errors naming the value", () => {
  for (
    const [vips, want] of [
      [["10.0.0.256"], "'10.0.0.256'"],
      [["10.0.0.1/33"], "'10.0.0.1/33'"],
      [["fd00::1/129"], "'fd00::1/129'"],
      [["vip"], "'vip'"],
      [["10.0.0.1/"], "'10.0.0.1/'"],
      [[], "no VIP"],
    ] as [string[], string][]
  ) {
    assert.throws(() => offloadRules({ vips }), (e: unknown) => {
      assert.ok(e instanceof NfqlbError);
      assert.ok(e.message.includes(want), e.message);
      assert.ok(!e.message.includes("\n"));
      return true;
    });
  }
  assert.throws(() => offloadRules({ vips: ["10.0.0.1"], chain: "A B" }), /invalid chain name/);
  assert.throws(() => offloadRules({ vips: ["10.0.0.1"], insertAt: 0 }), /insertAt/);
});
