/**
 * The log/trace control shm `nfqlb-trace`: {int32 level; uint32 mask},
 * upstream's 8-byte layout, shared by every nfqlb process on the host.
 */
import { errorText, NfqlbError } from "./errors.ts";
import { shmPath } from "./shm_dir.ts";

/** shm name, fixed as upstream. */
export const TRACE_SHM = "nfqlb-trace";
/** Log level of a fresh shm (notice). */
export const DEFAULT_LOG_LEVEL = 5;

/**
 * How the trace server's refusal line starts (ours: it serves a bounded
 * number of clients); `nfqlb trace` prints that line on stderr and exits 1.
 */
export const TRACE_REFUSED_PREFIX = "Trace refused: ";

function openOrCreate(): Deno.FsFile {
  const path = shmPath(TRACE_SHM);
  try {
    const f = Deno.openSync(path, { read: true, write: true, create: true, mode: 0o600 });
    if (f.statSync().size < 8) {
      const init = new Uint8Array(8);
      new DataView(init.buffer).setInt32(0, DEFAULT_LOG_LEVEL, true);
      f.seekSync(0, Deno.SeekMode.Start);
      f.writeSync(init);
    }
    return f;
  } catch (e) {
    throw new NfqlbError(`createSharedData: ${TRACE_SHM}: ${errorText(e)}`);
  }
}

function access(offset: number, set?: number): number {
  const f = openOrCreate();
  try {
    const b = new Uint8Array(4);
    const v = new DataView(b.buffer);
    if (set !== undefined) {
      v.setUint32(0, set >>> 0, true);
      f.seekSync(offset, Deno.SeekMode.Start);
      f.writeSync(b);
    }
    f.seekSync(offset, Deno.SeekMode.Start);
    f.readSync(b);
    return offset === 0 ? v.getInt32(0, true) : v.getUint32(0, true);
  } finally {
    f.close();
  }
}

/** The log level (creating the shm with level 5 when missing); sets it first when `set` is given. */
export function logLevel(set?: number): number {
  return access(0, set);
}

/** The trace mask; sets it first when `set` is given. */
export function traceMask(set?: number): number {
  return access(4, set);
}
