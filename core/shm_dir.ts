/**
 * POSIX shared memory objects are files in /dev/shm. NFQLB_SHM_DIR points
 * elsewhere (tests use it to get a read-only or private directory).
 *
 * Two kinds of files live there. Upstream's (target tables, `ftshm`,
 * `nfqlb-trace`) are at the top, with upstream's names: tools that list the
 * shm directory (Meridio's log collector: `ls /dev/shm | grep tshm-`, then
 * `nfqlb show --shm=` on each) find exactly what upstream leaves there. Ours
 * (counters, connection tables, apply's state and logs, temporary files of
 * create-by-rename) are in the hidden subdirectory {@link OWN_DIR_NAME}: we
 * open them by path, never with shm_open(3), so a subdirectory is fine, and
 * neither `ls` nor a shell glob lists it. docs/shm.md "Our own files".
 */
import { errorText, NfqlbError, strerror } from "./errors.ts";

/** The subdirectory of the shm directory that holds nfqlb-deno's own files. */
export const OWN_DIR_NAME = ".nfqlb-deno";

/** The directory that holds the shm files. */
export function shmDir(): string {
  return Deno.env.get("NFQLB_SHM_DIR") ?? "/dev/shm";
}

/** Whether `name` is one shm_open(3) name: one path component, not `.` or `..`, 1..255 bytes. */
function validName(name: string): boolean {
  return !(name === "" || name.includes("/") || name === "." || name === ".." || name.length > 255 ||
    name.includes("\0"));
}

/**
 * The file path of shm `name`. Names follow shm_open(3): one path component,
 * not `.` or `..`, at most 255 bytes.
 */
export function shmPath(name: string): string {
  if (!validName(name)) throw new NfqlbError(`Invalid shm name [${name}]`);
  return `${shmDir()}/${name}`;
}

/** The directory of our own files: `<shm dir>/.nfqlb-deno` (it may not exist yet; see {@link ensureOwnDir}). */
export function ownDir(): string {
  return `${shmDir()}/${OWN_DIR_NAME}`;
}

/**
 * The path of our own file `name` (a counters file, a connection table, a
 * state file) in {@link ownDir}. Names follow the rules of shm names.
 */
export function ownPath(name: string): string {
  if (!validName(name)) throw new NfqlbError(`Invalid shm name [${name}]`);
  return `${ownDir()}/${name}`;
}

/**
 * Creates {@link ownDir} when it is missing, with the shm directory's
 * permissions (on /dev/shm: 1777, so every user who may create shm files may
 * create ours, and only remove their own). Returns its path. Something else
 * at that name (a file, a symlink) is an error, never followed.
 * @throws NfqlbError `<dir>: <reason>`, with the system's error as its `cause`
 */
export function ensureOwnDir(): string {
  const dir = ownDir();
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const st = Deno.lstatSync(dir);
      if (st.isDirectory) return dir;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw dirError(dir, e);
      mkdirOwn(dir);
      continue;
    }
    throw dirError(dir, new Error(strerror(20))); // Not a directory
  }
  throw dirError(dir, new Error("could not be created"));
}

/** mkdir with the shm directory's mode; a directory another process made meanwhile is fine. */
function mkdirOwn(dir: string): void {
  try {
    const parentMode = Deno.statSync(shmDir()).mode ?? 0o755;
    Deno.mkdirSync(dir, { mode: 0o700 });
    // mkdir's mode is masked by the umask and has no sticky bit: set the parent's exactly
    Deno.chmodSync(dir, parentMode & 0o7777);
  } catch (e) {
    if (!(e instanceof Deno.errors.AlreadyExists)) throw dirError(dir, e);
  }
}

function dirError(dir: string, e: unknown): NfqlbError {
  const err = new NfqlbError(`${dir}: ${errorText(e)}`);
  err.cause = e;
  return err;
}

function exists(path: string, name: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw new NfqlbError(`${name}: ${errorText(e)}`);
  }
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
  return exists(shmPath(name), name);
}

/**
 * Whether our own file `name` exists (in {@link ownDir}; a missing directory is a missing file). Errors as
 * {@link shmExists}.
 *
 * @example
 * ```ts
 * import { ownExists } from "./shm_dir.ts";
 * if (ownExists("web-ct")) console.log("web has a connection table");
 * ```
 */
export function ownExists(name: string): boolean {
  return exists(ownPath(name), name);
}
