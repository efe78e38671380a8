/**
 * Builds the traced classifier (c/lb.c + c/trace.c with the packet parser,
 * fragment table and flow matcher) and the driver c/test/trace_fuzz.c with
 * AddressSanitizer + UBSan, and runs 200 000 mutated / truncated packets
 * (the real captures plus crafted ICMP errors and echoes, IPv4 and IPv6)
 * through untraced and fully traced lb and flowlb classifiers side by side:
 * no out-of-bounds read, no undefined behaviour, identical verdicts, and
 * consistent records (trace flows, ICMP fields).
 */
import assert from "node:assert/strict";
import { buildSanitized, captureSeeds, CLASSIFIER_SOURCES, writeSeeds } from "../helpers/sanitize.ts";
import { icmp6PacketTooBig, icmpFragNeeded, ipv4Header, ipv6Packet } from "../harness/packets.ts";

/** Crafted ICMP seeds: frag-needed and packet-too-big quoting TCP/UDP, echo requests (one after a hop-by-hop header). */
function icmpSeeds(): { hw: number; data: Uint8Array }[] {
  const q = (vip: string, client: string, proto: "tcp" | "udp") => ({
    vip,
    vipPort: 80,
    client,
    clientPort: 40000,
    proto,
  });
  const echo4 = new Uint8Array(20 + 16);
  echo4.set(ipv4Header({ src: "20.0.0.1", dst: "10.0.0.1", proto: 1, totalLength: 36 }), 0);
  echo4[20] = 8;
  echo4[25] = 7;
  const echo6 = new Uint8Array(16);
  echo6[0] = 128;
  const hbh = new Uint8Array(8 + 16);
  hbh[0] = 58; // next header ICMPv6, length 0 (8 bytes)
  hbh.set(echo6, 8);
  return [
    { hw: 0x0800, data: icmpFragNeeded(q("10.0.0.1", "20.0.0.1", "tcp"), { from: "9.9.9.9" }) },
    { hw: 0x0800, data: icmpFragNeeded(q("10.0.0.1", "20.0.0.1", "udp"), { from: "9.9.9.9", mtu: 1280 }) },
    { hw: 0x0800, data: echo4 },
    {
      hw: 0x86dd,
      data: ipv6Packet("3000::1", "1000::1", 58, icmp6PacketTooBig(q("1000::1", "2000::1", "tcp"))),
    },
    { hw: 0x86dd, data: ipv6Packet("2000::1", "1000::1", 58, echo6) },
    { hw: 0x86dd, data: ipv6Packet("2000::1", "1000::1", 0, hbh) },
  ];
}

Deno.test("C trace path is clean under ASan/UBSan and never changes a verdict (200k mutated packets)", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-trace-fuzz-" });
  try {
    const bin = await buildSanitized(dir, "trace_fuzz", CLASSIFIER_SOURCES);
    const seeds = writeSeeds(dir, [...captureSeeds(), ...icmpSeeds()]);
    const run = await new Deno.Command(bin, { args: ["200000", ...seeds], stdout: "piped", stderr: "piped" })
      .output();
    const out = new TextDecoder().decode(run.stdout), err = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, `${out}\n${err.slice(0, 4000)}`);
    const m = /iterations=(\d+) records=(\d+) tflow=(\d+) icmp=(\d+) differ=(\d+) bad=(\d+)/.exec(out);
    assert.ok(m, out);
    const [iterations, records, tflow, icmp, differ, bad] = m.slice(1).map(Number);
    assert.equal(iterations, 200000);
    assert.equal(differ, 0, "tracing changed a verdict");
    assert.equal(bad, 0, "inconsistent records");
    assert.ok(records > 100000, `records=${records}`);
    assert.ok(tflow > 10000, `tflow=${tflow}`);
    assert.ok(icmp > 1000, `icmp=${icmp}`);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
