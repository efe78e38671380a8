/** The lab's packet crafting (packets.ts) against known vectors (no root needed). */
import assert from "node:assert/strict";
import {
  crc32c,
  hex,
  icmp6PacketTooBig,
  icmpFragNeeded,
  inetChecksum,
  ipv6Bytes,
  sctpInit,
} from "./packets.ts";

Deno.test("harness packets: ICMP frag-needed reproduces the synthetic vector of packet_test.ts", () => {
  const pkt = icmpFragNeeded(
    { vip: "10.0.0.0", vipPort: 80, client: "20.0.0.1", clientPort: 40000, proto: "tcp" },
    { from: "192.168.2.1", mtu: 1400, checksums: false, quotedTotalLength: 0x29 },
  );
  assert.equal(
    hex(pkt),
    "450000380001400040010000c0a802010a00000003040000000005784500002900014000400600000a0000001400000100509c4000000001",
  );
});

Deno.test("harness packets: checksums verify", () => {
  const pkt = icmpFragNeeded(
    { vip: "10.213.100.1", vipPort: 5000, client: "10.213.0.11", clientPort: 20001, proto: "udp" },
    { from: "10.213.0.1" },
  );
  assert.equal(inetChecksum(pkt.subarray(0, 20)), 0, "outer IPv4 header");
  assert.equal(inetChecksum(pkt.subarray(20)), 0, "ICMP message");
  assert.equal(inetChecksum(pkt.subarray(28, 48)), 0, "quoted IPv4 header");
});

Deno.test("harness packets: CRC32c and SCTP", () => {
  assert.equal(crc32c(new TextEncoder().encode("123456789")), 0xe3069283);
  const p = sctpInit(30000, 7777);
  const v = new DataView(p.buffer);
  assert.equal(v.getUint16(0), 30000);
  assert.equal(v.getUint16(2), 7777);
  const z = p.slice();
  z.fill(0, 8, 12);
  assert.equal(v.getUint32(8, true), crc32c(z));
});

Deno.test("harness packets: ICMPv6 packet-too-big quotes VIP -> client", () => {
  const m = icmp6PacketTooBig({
    vip: "fd13:100::1",
    vipPort: 5000,
    client: "fd13::11",
    clientPort: 20001,
    proto: "udp",
  });
  assert.equal(m[0], 2);
  assert.equal(new DataView(m.buffer).getUint32(4), 1280);
  assert.deepEqual(m.subarray(16, 32), ipv6Bytes("fd13:100::1"));
  assert.deepEqual(m.subarray(32, 48), ipv6Bytes("fd13::11"));
  assert.equal(m[8 + 6], 17);
  assert.equal(new DataView(m.buffer).getUint16(48), 5000);
  assert.equal(new DataView(m.buffer).getUint16(50), 20001);
  assert.deepEqual(ipv6Bytes("::"), new Uint8Array(16));
  assert.throws(() => ipv6Bytes("1::2::3"));
});
