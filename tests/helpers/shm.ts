/** Test helpers for shm files: private shm directories for the CLI and the library, and file snapshots. */
import { OWN_DIR_NAME } from "../../core/shm_dir.ts";

/**
 * A fresh directory under /dev/shm (real tmpfs) used as NFQLB_SHM_DIR, so
 * tests never touch the host's shm names. Remove it with `using`.
 */
export function shmSandbox(): { dir: string; env: Record<string, string> } & Disposable {
  const dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "nfqlb-test-" });
  return {
    dir,
    env: { NFQLB_SHM_DIR: dir },
    [Symbol.dispose]() {
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** A shmSandbox() that this process's library calls use too, plus file helpers. */
export interface LibSandbox extends Disposable {
  /** The private shm directory. */
  dir: string;
  /** Environment for CLI runs (NFQLB_SHM_DIR). */
  env: Record<string, string>;
  /** The file of shm `name`. */
  path(name: string): string;
  /** The bytes of shm `name`, or undefined if it does not exist. */
  bytes(name: string): Uint8Array | undefined;
}

/**
 * Creates a fresh directory under /dev/shm and points NFQLB_SHM_DIR of this
 * process at it until disposed (then the old value is restored and the
 * directory removed). Tests run sequentially within a process, so this is safe
 * as long as no two sandboxes are alive at once.
 */
export function libSandbox(): LibSandbox {
  const sb = shmSandbox();
  const previous = Deno.env.get("NFQLB_SHM_DIR");
  Deno.env.set("NFQLB_SHM_DIR", sb.dir);
  const path = (name: string) => `${sb.dir}/${name}`;
  return {
    dir: sb.dir,
    env: sb.env,
    path,
    bytes(name: string) {
      try {
        return Deno.readFileSync(path(name));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return undefined;
        throw e;
      }
    },
    [Symbol.dispose]() {
      if (previous === undefined) Deno.env.delete("NFQLB_SHM_DIR");
      else Deno.env.set("NFQLB_SHM_DIR", previous);
      sb[Symbol.dispose]();
    },
  };
}

/** Names of the files in a directory, sorted. */
export function listDir(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

/** The name of our own file `name` relative to the shm directory (`.nfqlb-deno/<name>`), for sb.path/sb.bytes. */
export function own(name: string): string {
  return `${OWN_DIR_NAME}/${name}`;
}

/**
 * Every file in shm directory `dir`: the names at the top (our own directory left out) and our own files as
 * `.nfqlb-deno/<name>`, sorted. An empty (or missing) own directory adds nothing.
 */
export function shmFiles(dir: string): string[] {
  const top = listDir(dir).filter((n) => n !== OWN_DIR_NAME);
  let mine: string[] = [];
  try {
    mine = listDir(`${dir}/${OWN_DIR_NAME}`).map(own);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return [...top, ...mine].sort();
}
