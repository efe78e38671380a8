/**
 * The lb classifier driven directly over FFI (nfqlb_lb_create +
 * nfqlb_lb_classify) on captured packets, for the unit tests of the
 * connection table and its schedulers. Time is virtual: the caller passes it.
 */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import type { ConntrackShm } from "../../core/conntrack_shm.ts";
import type { TargetShm } from "../../core/target_shm.ts";
import { COUNTER_NAMES } from "../../dataplane/lb.ts";
import type { PcapPacket } from "./pcap.ts";
import { NFQLB_KEY_LEN } from "../../ffi/consts.ts";

/** One millisecond in the classifier's nanosecond clock. */
export const MS = 1_000_000n;
/** A virtual start time well past 0 (entries' ages are differences from it). */
export const T0 = 10_000n * MS;

/** The 40-byte key of a packet (nfqlb_packet_key). */
export function keyOf(p: PcapPacket): Uint8Array<ArrayBuffer> {
  const key = new Uint8Array(NFQLB_KEY_LEN), fkey = new Uint8Array(NFQLB_KEY_LEN);
  assert.ok(lib().nfqlb_packet_key(p.hwProto, p.data, p.data.length, 0, key, fkey) >= 0);
  return key;
}

/** The IPv4 TCP/UDP packet p with another source port (a new flow). */
export function withSport(p: PcapPacket, sport: number): PcapPacket {
  const data = p.data.slice();
  const l4 = (data[0] & 0x0f) * 4;
  data[l4] = sport >> 8;
  data[l4 + 1] = sport & 0xff;
  return { hwProto: p.hwProto, data };
}

/** One lb classifier (as one queue worker) over a target table, with or without its connection table. */
export class Classifier implements Disposable {
  /** The lb counters it adds to (COUNTER_NAMES order). */
  readonly counters = new BigUint64Array(COUNTER_NAMES.length);
  /** The C classifier. */
  readonly lb: Deno.PointerObject;
  constructor(table: TargetShm, ct?: ConntrackShm, ft: Deno.PointerObject | null = null) {
    this.lb = lib().nfqlb_lb_create(table.pointer, ft, 1, 0, -1)!;
    if (ct) lib().nfqlb_lb_set_conntrack(this.lb, ct.pointer);
  }
  /** The fwmark for packet `p` at virtual time `now` (ns). */
  classify(p: PcapPacket, now = T0): number {
    return lib().nfqlb_lb_classify(this.lb, p.hwProto, p.data, p.data.length, now, this.counters);
  }
  [Symbol.dispose](): void {
    lib().nfqlb_lb_destroy(this.lb);
  }
}
