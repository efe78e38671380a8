/**
 * The 40-byte hash key (c/nfqlb.h): src, dst (IPv6 or IPv4-mapped),
 * u16 user-defined, u16 proto (little-endian), sport, dport (network order).
 */
import { lib } from "../ffi/lib.ts";
import { NFQLB_KEY_LEN } from "../ffi/consts.ts";

/** Key length in bytes. */
export const KEY_LEN = NFQLB_KEY_LEN;

/** Builds a key from parts. */
export function buildKey(
  src: Uint8Array,
  dst: Uint8Array,
  proto: number,
  sport: number,
  dport: number,
): Uint8Array {
  const key = new Uint8Array(KEY_LEN);
  key.set(src, 0);
  key.set(dst, 16);
  const v = new DataView(key.buffer);
  v.setUint16(34, proto, true);
  v.setUint16(36, sport, false);
  v.setUint16(38, dport, false);
  return key;
}

/** Upstream's hashKey: ports only for SCTP with hash_mode 1, else all 40 bytes. */
export function hashKey(key: Uint8Array, hashMode: number): number {
  return lib().nfqlb_hash_key(key as Uint8Array<ArrayBuffer>, key.length, hashMode >>> 0);
}

/** Upstream's hashKeyAddresses: djb2 of the 32 address bytes. */
export function hashAddresses(key: Uint8Array): number {
  return lib().nfqlb_hash_addresses(key as Uint8Array<ArrayBuffer>, key.length);
}
