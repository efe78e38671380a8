/**
 * Builds C test drivers (c/test/*.c) with sanitizers against the library's
 * sources, and writes seed packets for them, for the *_sanitize tests.
 */
import assert from "node:assert/strict";
import { readPcap } from "./pcap.ts";
import { ROOT, TESTDATA } from "../harness/paths.ts";

/** The library sources a classifier needs (everything but the netlink I/O). */
export const CLASSIFIER_SOURCES = [
  "packet.c",
  "lb.c",
  "trace.c",
  "ft.c",
  "tshm.c",
  "tshm_view.c",
  "file.c",
  "ct.c",
  "ct_admin.c",
  "ct_sched.c",
  "tun.c",
  "flows.c",
  "flowset.c",
  "flow.c",
  "maglev.c",
  "rand.c",
  "hash.c",
  "prime.c",
];

/**
 * Compiles c/test/<driver>.c with `sources` (names in c/) into dir, with
 * `-fsanitize=<sanitize>` and warnings as errors; asserts it compiled.
 * @returns the binary's path
 */
export async function buildSanitized(
  dir: string,
  driver: string,
  sources: readonly string[],
  sanitize = "address,undefined",
): Promise<string> {
  const bin = `${dir}/${driver}-${sanitize.replace(/[^a-z]/g, "_")}`;
  const cc = await new Deno.Command("gcc", {
    args: [
      "-std=c11",
      "-O1",
      "-g",
      "-Wall",
      "-Wextra",
      "-Werror",
      "-D_DEFAULT_SOURCE",
      "-pthread",
      `-fsanitize=${sanitize}`,
      "-fno-sanitize-recover=all",
      "-o",
      bin,
      `${ROOT}/c/test/${driver}.c`,
      ...sources.map((f) => `${ROOT}/c/${f}`),
    ],
    stderr: "piped",
  }).output();
  assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
  return bin;
}

/** A seed: NFQUEUE hw protocol and the IP packet. */
export interface Seed {
  hw: number;
  data: Uint8Array;
}

/** Packets `which` (indexes, clamped) of each of the real captures. */
export function captureSeeds(which: readonly number[] = [0, 1, 2]): Seed[] {
  const out: Seed[] = [];
  for (const f of ["telnet-ipv4", "telnet-ipv6", "sctp-encap-ipv4", "udp-ipv4", "udp-ipv6"]) {
    const pkts = readPcap(`${TESTDATA}/pcap/${f}.pcap`);
    for (const i of which) {
      const p = pkts[Math.min(i, pkts.length - 1)];
      out.push({ hw: p.hwProto, data: p.data });
    }
  }
  return out;
}

/** Writes seeds as the drivers read them (2 bytes hw protocol, then the packet); returns the files. */
export function writeSeeds(dir: string, seeds: readonly Seed[]): string[] {
  return seeds.map((s, i) => {
    const b = new Uint8Array(s.data.length + 2);
    b[0] = s.hw >> 8;
    b[1] = s.hw & 0xff;
    b.set(s.data, 2);
    const file = `${dir}/seed-${i}.bin`;
    Deno.writeFileSync(file, b);
    return file;
  });
}
