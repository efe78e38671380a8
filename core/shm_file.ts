/** mmap of shm files through the C library (MAP_SHARED, so every process sees every write). */
import { cstring, lib } from "../ffi/lib.ts";
import { errorText, NfqlbError, strerror } from "./errors.ts";
import { ensureOwnDir, shmPath } from "./shm_dir.ts";

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

/**
 * Creates shm file `name` at `path` by building it in our own directory
 * (`<shm dir>/.nfqlb-deno/tmp.<name>.<tag>-<pid>`, mode 0600, `size` bytes,
 * filled by `format` through a writable mapping) and renaming it over: a
 * process that maps `path` sees the old file or the complete new one, never a
 * half-formatted one. The temporary file is never in the shm directory itself,
 * where a tool listing it could take it for a table (docs/shm.md "Our own
 * files"); both directories are on the same file system, so the rename is
 * atomic. Every failure is one NfqlbError line `<what>: <reason>`; the
 * temporary file never stays behind.
 *
 * @example
 * ```ts
 * createByRename(shmPath("x"), "x", "init", 4096n, "createSharedData: x", (m) => format(m));
 * ```
 */
export function createByRename(
  path: string,
  name: string,
  tag: string,
  size: bigint,
  what: string,
  format: (m: Mapping) => void,
): void {
  let dir: string;
  try {
    dir = ensureOwnDir();
  } catch (e) {
    // the system's reason alone (`Read-only file system`), as for the file itself
    throw new NfqlbError(`${what}: ${errorText(e)}`);
  }
  // bounded: a 255-byte name plus a suffix would exceed NAME_MAX
  const tmp = `${dir}/tmp.${name.slice(0, 48)}.${tag}-${Deno.pid}`;
  try {
    try {
      Deno.openSync(tmp, { read: true, write: true, createNew: true, mode: 0o600 }).close();
    } catch (e) {
      throw new NfqlbError(`${what}: ${errorText(e)}`);
    }
    // real storage before the first write: on a full /dev/shm this is ENOSPC here, not SIGBUS in format()
    const rc = lib().nfqlb_file_reserve(cstring(tmp), size);
    if (rc === -28) { // ENOSPC: say how much, so the operator can size /dev/shm
      throw new NfqlbError(`${what}: ${strerror(28)} (needs ${(Number(size) / 1e6).toFixed(1)} MB)`);
    }
    if (rc < 0) throw new NfqlbError(`${what}: ${strerror(-rc)}`);
    const m = mapFile(tmp, true);
    if (typeof m === "number") throw new NfqlbError(`${what}: ${strerror(m)}`);
    try {
      format(m);
    } finally {
      unmap(m);
    }
    try {
      Deno.renameSync(tmp, path);
    } catch (e) {
      throw new NfqlbError(`${what}: ${errorText(e)}`);
    }
  } finally {
    try {
      Deno.removeSync(tmp);
    } catch { /* renamed or never created */ }
  }
}

/**
 * A copy of shm file `name`'s bytes (at `path`: by default the shm's, {@link shmPath}); errors as
 * upstream's `FAILED mapSharedData: <name>` (with the reason unless the file is missing).
 */
export function readShmBytes(name: string, path: string = shmPath(name)): Uint8Array {
  try {
    return Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new NfqlbError(`FAILED mapSharedData: ${name}`);
    throw new NfqlbError(`FAILED mapSharedData: ${name}: ${errorText(e)}`);
  }
}

/**
 * SIGBUS faults the guard (c/file.c, installed by lb/flowlb) turned into
 * zero pages in mapping `m` since it was mapped or remapped. Once > 0 the
 * mapping is private memory, no longer the file.
 */
export function mappingFaults(m: Mapping): number {
  return lib().nfqlb_file_faults(m.ptr);
}

/**
 * Maps `path` again over the whole of `m`, at the same address (pointers
 * into it stay valid). Returns 0 or an errno (ERANGE: the file is shorter
 * than the mapping).
 */
export function remapFile(m: Mapping, path: string, writable: boolean): number {
  const rc = lib().nfqlb_file_remap(m.ptr, m.size, cstring(path), writable ? 1 : 0);
  return rc === 0 ? 0 : -rc;
}

/** Inode and size of the file at `path`, or undefined when there is none. */
export function fileIdentity(path: string): { ino: number; size: number } | undefined {
  try {
    const st = Deno.statSync(path);
    return st.isFile ? { ino: st.ino ?? 0, size: st.size } : undefined;
  } catch {
    return undefined;
  }
}
