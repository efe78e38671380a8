/**
 * core/ip_protocols.ts: the one protocol table, both ways, and the lookup of
 * `--proto` text (any case, nothing but the three port protocols).
 */
import assert from "node:assert/strict";
import {
  IP_PROTOCOL_NAMES,
  IP_PROTOCOLS,
  PORT_PROTOCOLS,
  portProtocolNumber,
  protocolName,
  PROTOCOLS,
} from "../../core/ip_protocols.ts";

Deno.test("ip_protocols: IANA numbers, names both ways, upstream's listing order", () => {
  assert.deepEqual({ ...IP_PROTOCOLS }, { tcp: 6, udp: 17, sctp: 132, icmp: 1, icmpv6: 58 });
  assert.deepEqual(IP_PROTOCOL_NAMES, ["tcp", "udp", "sctp", "icmp", "icmpv6"]);
  assert.deepEqual([...PORT_PROTOCOLS], ["tcp", "udp", "sctp"]);
  assert.deepEqual({ ...PROTOCOLS }, { tcp: 6, udp: 17, sctp: 132 });
  for (const name of IP_PROTOCOL_NAMES) assert.equal(protocolName(IP_PROTOCOLS[name]), name);
  assert.equal(protocolName(47), undefined);
});

Deno.test("ip_protocols: --proto text in any case; icmp and object members are not port protocols", () => {
  assert.equal(portProtocolNumber("TCP"), 6);
  assert.equal(portProtocolNumber("Udp"), 17);
  assert.equal(portProtocolNumber("sctp"), 132);
  for (const t of ["icmp", "constructor", "__proto__", "toString", "", "tcp "]) {
    assert.equal(portProtocolNumber(t), undefined, t);
  }
});
