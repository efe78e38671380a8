/**
 * POSIX shared memory objects are files in /dev/shm. NFQLB_SHM_DIR points
 * elsewhere (tests use it to get a read-only or private directory).
 */
import { NfqlbError } from "./errors.ts";

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
