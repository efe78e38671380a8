/**
 * Builds the packet parser, classifier and fragment table with
 * AddressSanitizer + UBSan and feeds them 200 000 mutated / truncated packets
 * made from the real captures. Any out-of-bounds read aborts the run.
 */
import assert from "node:assert/strict";
import { readPcap } from "../helpers/pcap.ts";
import { ROOT, SHARED } from "../helpers/run.ts";

Deno.test("C packet code is clean under ASan/UBSan on 200k mutated packets", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-fuzz-" });
  try {
    const srcs = [
      "packet.c",
      "lb.c",
      "trace.c",
      "fragtable.c",
      "tshm.c",
      "tun.c",
      "flowlb.c",
      "flow.c",
      "maglev.c",
      "rand.c",
      "hash.c",
      "prime.c",
    ]
      .map((f) => `${ROOT}/c/${f}`);
    const bin = `${dir}/packet_fuzz`;
    const cc = await new Deno.Command("gcc", {
      args: [
        "-std=c11",
        "-O1",
        "-g",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-D_DEFAULT_SOURCE",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-o",
        bin,
        `${ROOT}/c/test/packet_fuzz.c`,
        ...srcs,
      ],
      stderr: "piped",
    }).output();
    assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
    const seeds: string[] = [];
    for (const f of ["telnet-ipv4", "telnet-ipv6", "sctp-encap-ipv4", "udp-ipv4", "udp-ipv6"]) {
      const pkts = readPcap(`${SHARED}/testdata/pcap/${f}.pcap`);
      for (const i of [0, 1, Math.min(2, pkts.length - 1)]) {
        const file = `${dir}/${f}-${i}.bin`;
        const b = new Uint8Array(pkts[i].data.length + 2);
        b[0] = pkts[i].hwProto >> 8;
        b[1] = pkts[i].hwProto & 0xff;
        b.set(pkts[i].data, 2);
        Deno.writeFileSync(file, b);
        seeds.push(file);
      }
    }
    const run = await new Deno.Command(bin, { args: ["200000", ...seeds], stdout: "piped", stderr: "piped" })
      .output();
    const out = new TextDecoder().decode(run.stdout), err = new TextDecoder().decode(run.stderr);
    assert.equal(run.code, 0, err.slice(0, 4000));
    const m = /iterations=(\d+) parsed=(\d+)/.exec(out);
    assert.ok(m, out);
    assert.equal(Number(m[1]), 200000);
    assert.ok(Number(m[2]) > 1000, "the mutations must leave many packets parseable");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
