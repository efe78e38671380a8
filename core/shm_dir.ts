/**
 * POSIX shared memory objects are files in /dev/shm. NFQLB_SHM_DIR points
 * elsewhere (tests use it to get a read-only or private directory).
 */
import { errorText, NfqlbError } from "./errors.ts";

/** The directory that holds the shm files. */
export function shmDir(): string {
  return Deno.env.get("NFQLB_SHM_DIR") ?? "/dev/shm";
}

/**
 * The file path of shm `name`. Names follow shm_open(3): one path component,
 * not `.` or `..`, at most 255 bytes.
 */
export function shmPath(name: string): string {
  if (
    name === "" || name.includes("/") || name === "." || name === ".." || name.length > 255 ||
    name.includes("\0")
  ) {
    throw new NfqlbError(`Invalid shm name [${name}]`);
  }
  return `${shmDir()}/${name}`;
}

/**
 * Whether shm `name` exists. A missing file is `false`; any other failure (an invalid name, a directory we
 * may not search) is an {@link NfqlbError} naming the shm, never a silent `false`.
 *
 * @example
 * ```ts
 * import { shmExists } from "./shm_dir.ts";
 * if (!shmExists("nfqlb")) console.log("run: nfqlb init");
 * ```
 */
export function shmExists(name: string): boolean {
  try {
    Deno.statSync(shmPath(name));
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    if (e instanceof NfqlbError) throw e;
    throw new NfqlbError(`${name}: ${errorText(e)}`);
  }
}
