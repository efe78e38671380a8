/**
 * `nfqlb offload-rules` (host/plumbing/restore_text.ts, cli/commands/offload.ts): the iptables-restore
 * text of the rules apply installs for `dataplane.offload: auto`, and its one-line errors. That the text
 * equals what apply installs is checked in the kernel by tests/e2e/offload_auto_test.ts.
 */
import assert from "node:assert/strict";
import { offloadRestoreText } from "../../host/plumbing/restore_text.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { shmSandbox } from "../helpers/shm.ts";

const BASE = { id: "web", queue: "2", bypass: true, hooks: ["prerouting" as const], nat: false };

Deno.test("offload-rules text: raw SYN untrack, the chain, restore, accept, queue, jump, save; in that order", () => {
  const { family, text } = offloadRestoreText({ ...BASE, vips: ["10.0.0.1"] });
  assert.equal(family, 4);
  const lines = text.trimEnd().split("\n").map((l) => l.replace(/ [0-9a-f]{8}"/, ' H"'));
  assert.deepEqual(lines, [
    "*raw",
    '-I PREROUTING 1 -d 10.0.0.1/32 -p tcp --syn -m comment --comment "nfqlb:web H" -j CT --notrack',
    "COMMIT",
    "*mangle",
    ":NFQLB-web - [0:0]",
    '-A NFQLB-web -d 10.0.0.1/32 ! -p icmp -m connmark ! --mark 0 -m comment --comment "nfqlb:web H" -j CONNMARK --restore-mark',
    '-A NFQLB-web -d 10.0.0.1/32 ! -p icmp -m connmark ! --mark 0 -m comment --comment "nfqlb:web H" -j ACCEPT',
    '-A NFQLB-web -d 10.0.0.1/32 -m comment --comment "nfqlb:web H" -j NFQUEUE --queue-num 2 --queue-bypass',
    '-A PREROUTING -d 10.0.0.1/32 -m comment --comment "nfqlb:web H" -j NFQLB-web',
    '-A POSTROUTING ! -p icmp -m connmark --mark 0 -m mark ! --mark 0 -m conntrack --ctorigdst 10.0.0.1 -m comment --comment "nfqlb:web H" -j CONNMARK --save-mark',
    "COMMIT",
  ]);
});

Deno.test("offload-rules text: IPv6, NAT (no raw rule), output hook, queue range, no bypass", () => {
  const { family, text } = offloadRestoreText({
    ...BASE,
    vips: ["fd00::1", "10.0.0.1"],
    family: 6,
    nat: true,
    hooks: ["prerouting", "output"],
    queue: "0:3",
    bypass: false,
  });
  assert.equal(family, 6);
  assert.ok(!text.includes("*raw"), text);
  assert.ok(!text.includes("10.0.0.1"), "only the family asked for");
  assert.match(text, /-j NFQUEUE --queue-balance 0:3\n/);
  assert.match(text, /^-A OUTPUT -d fd00::1\/128 -m mark --mark 0 .*-j NFQLB-web$/m);
  assert.match(text, /^-A POSTROUTING ! -p ipv6-icmp .*--ctorigdst fd00::1 .*--save-mark$/m);
});

Deno.test("offload-rules CLI: bad values are one line, exit 1; mixed families need --family", async () => {
  // a private shm directory: upstream's error lines go through the log, which makes `nfqlb-trace` there
  using sb = shmSandbox();
  const cases: [string[], RegExp][] = [
    [["--vips=10.0.0.1,fd00::1", "--queue=2"], /^offload-rules: the VIPs are IPv4 and IPv6: give --family=4/],
    [["--vips=10.0.0.1", "--queue=2", "--family=5"], /^offload-rules: invalid --family value '5'/],
    [["--vips=10.0.0.x", "--queue=2"], /^offload-rules: invalid VIP address: "10\.0\.0\.x"/],
    [["--vips=10.0.0.1", "--queue=x"], /^queue invalid \[x\]/],
    [["--vips=10.0.0.1", "--queue=2", "--hooks=input"], /^offload-rules: invalid --hooks value 'input'/],
    [["--vips=10.0.0.1,", "--queue=2"], /^offload-rules: invalid --vips value '10\.0\.0\.1,'/],
    [["--vips=fd00::1", "--queue=2", "--family=4"], /^offload-rules: no IPv4 VIP/],
  ];
  for (const [args, want] of cases) {
    const r = await nfqlb(["offload-rules", ...args], sb.env);
    assert.equal(r.code, 1, args.join(" "));
    assert.equal(r.stdout, "");
    assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, want);
  }
  const ok = await nfqlb(["offload-rules", "--vips=10.0.0.1", "--queue=2"], sb.env);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^\*raw\n/);
});
