/** `fwmark`: print the hash (and with --shm the lookup) for an address pair. */
import type { Command } from "../command.ts";
import { out } from "../io.ts";
import { parseInteger } from "../numbers.ts";
import { NfqlbError } from "../../core/errors.ts";
import { parseAddrPort } from "../../core/inet.ts";
import { buildKey, hashAddresses, hashKey } from "../../core/key.ts";
import { portProtocolNumber } from "../../core/ip_protocols.ts";
import { TargetShm } from "../../core/target_shm.ts";

/** Shared with lb/flowlb: the hash_mode option. */
export const HASH_MODE_HELP =
  "Load balance with a different hash mode. 0: Tuple-5, 1: SCTP Ports only. default=1";

/** `fwmark`. */
export const fwmark: Command = {
  name: "fwmark",
  header: "fwmark [--shm=] [--proto=tcp|udp|sctp] --src=addr:port --dst=addr:port\n" +
    "  Print hash and fwmark for the specified addresses for debug",
  options: [
    { name: "shm", help: "Shared memory. Required for fwmark printout" },
    {
      name: "proto",
      help: "Protocol, tcp|udp|sctp. NOT specified -> address-only hash",
      choices: ["tcp", "udp", "sctp"],
    },
    { name: "src", help: 'Source addr:port, e.g "[1000::80]:80"', required: true },
    { name: "dst", help: "Destination addr:port", required: true },
    { name: "hash_mode", help: HASH_MODE_HELP },
  ],
  run({ opts }) {
    const parse = (s: string) => {
      try {
        return parseAddrPort(s);
      } catch (e) {
        throw new NfqlbError((e as Error).message);
      }
    };
    const src = parse(opts.get("src")!);
    const dst = parse(opts.get("dst")!);
    const protoText = opts.get("proto");
    let proto = 0;
    if (protoText !== undefined) {
      proto = portProtocolNumber(protoText) ?? 0;
      if (proto === 0) throw new NfqlbError(`Failed to parse protocol [${protoText}]`);
    }
    const hashMode = parseInteger("fwmark", "--hash_mode value", opts.get("hash_mode") ?? "1", 0, 65535);
    const key = buildKey(src.addr, dst.addr, proto, src.port, dst.port);
    const hash = protoText === undefined ? hashAddresses(key) : hashKey(key, hashMode);
    const shm = opts.get("shm");
    if (shm === undefined) {
      out(`{ "hash": ${hash} }\n`);
      return 0;
    }
    const t = TargetShm.open(shm);
    try {
      const { row, fwmark } = t.lookupRow(hash);
      out(`{ "hash": ${hash}, "lookupindex": ${hash % t.M}, "activeindex": ${row}, "fwmark": ${fwmark} }\n`);
    } finally {
      t.close();
    }
    return 0;
  },
};
