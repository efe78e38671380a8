/**
 * Upstream's 40-byte key and djb2 hash, the fwmark vectors recorded from
 * upstream (`nfqlb fwmark` for address pairs), and the address parser of
 * `fwmark --src/--dst`.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { buildKey, hashAddresses, hashKey, KEY_LEN } from "../../core/key.ts";
import { PROTOCOLS } from "../../core/ip_protocols.ts";
import { mapIPv4, parseAddrPort, parseIPv4, parseIPv6 } from "../../core/inet.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { djb2, mulberry32 } from "../helpers/models.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { libSandbox } from "../helpers/shm.ts";

/** hash as `nfqlb fwmark` computes it: address-only without --proto. */
function fwmarkHash(src: string, dst: string, proto?: string, hashMode = 1): number {
  const s = parseAddrPort(src), d = parseAddrPort(dst);
  const key = buildKey(s.addr, d.addr, proto === undefined ? 0 : PROTOCOLS[proto], s.port, d.port);
  return proto === undefined ? hashAddresses(key) : hashKey(key, hashMode);
}

const V4 = ["10.0.0.1:1234", "10.0.0.2:80"] as const;
const V6 = ["[1000::1]:5000", "[2000::2]:80"] as const;

// recorded from upstream's `nfqlb fwmark`: [src, dst, proto, hash_mode, hash, lookupindex, activeindex, fwmark] for M=997, N=32, active 101 102 103
const VECTORS: [string, string, string | undefined, number, number, number, number, number][] = [
  [...V4, undefined, 1, 3489125464, 336, 2, 103],
  [...V4, "tcp", 1, 4250357572, 13, 1, 102],
  [...V4, "udp", 1, 385879599, 719, 1, 102],
  [...V4, "sctp", 1, 2086846123, 498, 2, 103],
  [...V4, "sctp", 0, 591482498, 284, 1, 102],
  [...V6, "udp", 1, 2679643636, 754, 1, 102],
  [...V6, undefined, 1, 1486226744, 838, 2, 103],
];

const MORE: [string, string, string, number][] = [
  ["192.168.1.201:34815", "192.168.1.1:6001", "udp", 1026849180],
  ["[1000::1:192.168.1.201]:33818", "[1000::1:192.168.1.1]:6001", "udp", 6110650],
  ["20.0.0.1:40000", "10.0.0.0:80", "tcp", 784814994],
];

Deno.test("fwmark hashes recorded from upstream through buildKey/hashKey/hashAddresses", () => {
  for (const [src, dst, proto, mode, hash] of VECTORS) {
    assert.equal(fwmarkHash(src, dst, proto, mode), hash, `${src} ${dst} ${proto} mode ${mode}`);
  }
  for (const [src, dst, proto, hash] of MORE) {
    assert.equal(fwmarkHash(src, dst, proto), hash, `${src} ${dst}`);
  }
});

Deno.test("fwmark lookups recorded from upstream (M=997, N=32, active 101 102 103) through TargetShm.lookupRow", () => {
  using _sb = libSandbox();
  TargetShm.create("nfqlb", { M: 997, N: 32, ownFwmark: 0 });
  const t = TargetShm.open("nfqlb");
  try {
    for (const [, , , , hash] of VECTORS) assert.deepEqual(t.lookupRow(hash), { row: -1, fwmark: -1 });
    TargetShm.update("nfqlb", (a) => {
      a.set([101, 102, 103]);
      return true;
    });
    for (const [src, dst, proto, , hash, index, row, fw] of VECTORS) {
      assert.equal(hash % 997, index, `${src} ${proto}: lookupindex`);
      assert.deepEqual(t.lookupRow(hash), { row, fwmark: fw }, `${src} ${dst} ${proto}`);
    }
  } finally {
    t.close();
  }
});

Deno.test("nfqlb fwmark prints upstream's lines, with and without --shm", async () => {
  using sb = libSandbox();
  const plain = await nfqlb(["fwmark", `--src=${V4[0]}`, `--dst=${V4[1]}`], sb.env);
  assert.deepEqual([plain.code, plain.stdout, plain.stderr], [0, '{ "hash": 3489125464 }\n', ""]);
  const v6 = await nfqlb(["fwmark", "--proto=UDP", `--src=${V6[0]}`, `--dst=${V6[1]}`], sb.env);
  assert.deepEqual(
    [v6.code, v6.stdout],
    [0, '{ "hash": 2679643636 }\n'],
    "protocol names are case-insensitive",
  );
  await nfqlb(["init"], sb.env);
  const empty = await nfqlb(
    ["fwmark", "--shm=nfqlb", "--proto=tcp", `--src=${V4[0]}`, `--dst=${V4[1]}`],
    sb.env,
  );
  assert.equal(empty.stdout, '{ "hash": 4250357572, "lookupindex": 13, "activeindex": -1, "fwmark": -1 }\n');
  await nfqlb(["activate", "101", "102", "103"], sb.env);
  const r = await nfqlb([
    "fwmark",
    "--shm=nfqlb",
    "--proto=sctp",
    "--hash_mode=0",
    `--src=${V4[0]}`,
    `--dst=${V4[1]}`,
  ], sb.env);
  assert.deepEqual(
    [r.code, r.stdout, r.stderr],
    [0, '{ "hash": 591482498, "lookupindex": 284, "activeindex": 1, "fwmark": 102 }\n', ""],
  );
});

Deno.test("the key layout: addresses, proto little-endian, ports in network order", () => {
  const s = parseAddrPort("10.0.0.1:1234"), d = parseAddrPort("[2000::2]:80");
  const key = buildKey(s.addr, d.addr, 132, s.port, d.port);
  assert.equal(key.length, KEY_LEN);
  assert.equal(KEY_LEN, 40);
  assert.deepEqual(Array.from(key.subarray(0, 16)), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]);
  assert.deepEqual(Array.from(key.subarray(16, 18)), [0x20, 0x00]);
  assert.deepEqual(Array.from(key.subarray(30, 32)), [0, 2]);
  assert.deepEqual(Array.from(key.subarray(32, 40)), [0, 0, 132, 0, 0x04, 0xd2, 0, 80]);
  // SCTP with hash_mode 1 hashes the 4 port bytes only; other modes and protocols all 40
  assert.equal(hashKey(key, 1), djb2(key.subarray(36, 40)));
  assert.equal(hashKey(key, 0), djb2(key));
  assert.equal(hashKey(key, 2), djb2(key));
  const tcp = buildKey(s.addr, d.addr, 6, s.port, d.port);
  assert.equal(hashKey(tcp, 1), djb2(tcp));
  assert.equal(hashAddresses(tcp), djb2(tcp.subarray(0, 32)));
  // a short buffer hashes to 0 (C refuses to read past it)
  assert.equal(hashKey(key.subarray(0, 39), 0), 0);
});

Deno.test('djb2: "" is 5381; C equals the model for random inputs; 1000 ids give 234 buckets', () => {
  const l = lib();
  assert.equal(djb2([]), 5381);
  assert.equal(l.nfqlb_hash_djb2(new Uint8Array(1), 0), 5381);
  assert.equal(djb2([0x61]), (5381 * 33 + 0x61) >>> 0);
  const rnd = mulberry32(5);
  for (let t = 0; t < 500; t++) {
    const b = new Uint8Array(Math.floor(rnd() * 100));
    for (let i = 0; i < b.length; i++) b[i] = Math.floor(rnd() * 256);
    assert.equal(l.nfqlb_hash_djb2(b, b.length), djb2(b));
  }
  // upstream's vector: keys with only the LE id 0..999 (bytes 32..39), into 1000 buckets
  const buckets = new Set<number>();
  for (let id = 0; id < 1000; id++) {
    const key = new Uint8Array(40);
    new DataView(key.buffer).setBigUint64(32, BigInt(id), true);
    const h = l.nfqlb_hash_djb2(key, 40);
    assert.equal(h, djb2(key));
    buckets.add(h % 1000);
  }
  assert.equal(buckets.size, 234);
});

Deno.test("parseAddrPort: IPv4 is mapped, [IPv6] with scope and embedded IPv4, port range", () => {
  assert.deepEqual(parseAddrPort("10.0.0.1:0"), { addr: mapIPv4(new Uint8Array([10, 0, 0, 1])), port: 0 });
  assert.equal(parseAddrPort("1.2.3.4:65535").port, 65535);
  assert.deepEqual(parseAddrPort("[::ffff:10.0.0.1]:1234"), parseAddrPort("10.0.0.1:1234"));
  assert.deepEqual(parseAddrPort("[fe80::1%eth0]:80").addr, parseIPv6("fe80::1"));
  assert.deepEqual(parseAddrPort("[::]:1").addr, new Uint8Array(16));
  // same hash for the two spellings (upstream's fwmark vectors with embedded IPv4)
  assert.equal(
    fwmarkHash("[1000::1:c0a8:1c9]:33818", "[1000::1:c0a8:101]:6001", "udp"),
    6110650,
  );
});

Deno.test("parseAddrPort errors carry upstream's texts", () => {
  const cases: [string, string][] = [
    ["10.0.0.1", "No port in [10.0.0.1]"],
    ["", "No port in []"],
    ["1000::1:80", "Parse address failed [1000::1:80]"],
    ["10.0.0.1:65536", "Parse address failed [10.0.0.1:65536]"],
    ["10.0.0.1:-1", "Parse address failed [10.0.0.1:-1]"],
    ["10.0.0.1:", "Parse address failed [10.0.0.1:]"],
    ["10.0.0.1:8x", "Parse address failed [10.0.0.1:8x]"],
    ["10.0.0.256:80", "Parse address failed [10.0.0.256:80]"],
    ["[1000::1:80", "Parse address failed [[1000::1:80]"],
    ["[2000::1::1]:80", "Parse address failed [[2000::1::1]:80]"],
    ["host.example:80", "Parse address failed [host.example:80]"],
    [`[${"1000:".repeat(12)}:1]:80`, `Address too long [[${"1000:".repeat(12)}:1]:80]`],
  ];
  for (const [input, message] of cases) {
    assert.throws(() => parseAddrPort(input), (e: unknown) => {
      assert.ok(e instanceof Error);
      assert.equal(e.message, message, input);
      return true;
    });
  }
  // exactly 60 characters is not too long, 61 is
  const sixty = `[fe80::1%${"e".repeat(47)}]:80`;
  assert.equal(sixty.length, 60);
  assert.deepEqual(parseAddrPort(sixty), { addr: parseIPv6("fe80::1"), port: 80 });
  assert.throws(() => parseAddrPort(`[fe80::1%${"e".repeat(48)}]:80`), /^Error: Address too long/);
});

Deno.test("nfqlb fwmark reports address and protocol errors on one line, exit 1", async () => {
  const cases: [string[], string][] = [
    [["--src=1000::1:80", "--dst=[2000::2]:80"], "Parse address failed [1000::1:80]"],
    [["--src=10.0.0.1", "--dst=10.0.0.2:80"], "No port in [10.0.0.1]"],
    [["--proto=icmp", "--src=10.0.0.1:1", "--dst=10.0.0.2:80"], "Failed to parse protocol [icmp]"],
    [["--src=10.0.0.1:1"], "Missing option [--dst]"],
  ];
  for (const [args, line] of cases) {
    const r = await nfqlb(["fwmark", ...args]);
    assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", line + "\n"], args.join(" "));
  }
});

Deno.test("parseIPv4 / parseIPv6 accept the RFC 4291 text forms and reject the rest", () => {
  assert.deepEqual(parseIPv4("192.168.1.201"), new Uint8Array([192, 168, 1, 201]));
  for (const bad of ["1.2.3", "1.2.3.4.5", "256.1.1.1", "1..2.3", "a.b.c.d", "1.2.3.4 ", ""]) {
    assert.equal(parseIPv4(bad), undefined, bad);
  }
  const hex = (b: Uint8Array | undefined) =>
    b && Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  assert.equal(hex(parseIPv6("::")), "0".repeat(32));
  assert.equal(hex(parseIPv6("::1")), "0".repeat(31) + "1");
  assert.equal(hex(parseIPv6("1000::1")), "1000" + "0".repeat(27) + "1");
  assert.equal(hex(parseIPv6("1:2:3:4:5:6:7:8")), "00010002000300040005000600070008");
  assert.equal(hex(parseIPv6("1:2:3:4:5:6:7::")), "00010002000300040005000600070000");
  assert.equal(hex(parseIPv6("::ffff:10.0.0.1")), "00000000000000000000ffff0a000001");
  assert.equal(hex(parseIPv6("1000::1:192.168.1.201")), "100000000000000000000001c0a801c9");
  assert.equal(hex(parseIPv6("ABCD::EF")), "abcd" + "0".repeat(26) + "ef");
  for (
    const bad of [
      "",
      ":",
      "1::2::3",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7",
      "12345::",
      "g::",
      "1:2:3:4:5:6:7:8::",
      "::1.2.3",
      "1.2.3.4::",
      "::1.2.3.4:5",
    ]
  ) {
    assert.equal(parseIPv6(bad), undefined, JSON.stringify(bad));
  }
});
