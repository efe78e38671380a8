/** mmap of shm files through the C library (MAP_SHARED, so every process sees every write). */
import { cstring, lib } from "../ffi/lib.ts";

/** A mapped file. */
export interface Mapping {
  /** Base address. */
  ptr: Deno.PointerObject;
  /** Mapped length in bytes. */
  size: bigint;
}

/** Maps a file; returns the mapping, or an errno (0 for an empty file). */
export function mapFile(path: string, writable: boolean): Mapping | number {
  const size = new BigUint64Array(1);
  const err = new Int32Array(1);
  const ptr = lib().nfqlb_file_map(cstring(path), writable ? 1 : 0, size, err);
  if (ptr === null) return err[0];
  return { ptr, size: size[0] };
}

/** Unmaps a mapping. */
export function unmap(m: Mapping): void {
  lib().nfqlb_file_unmap(m.ptr, m.size);
}
