/**
 * One apply or teardown at a time on a host (a shm directory). Two of them at once, even for different
 * configs, could both pass the clash checks against each other's recorded state (queues, tables, the admin
 * address) before either recorded its own, or interleave kernel rule changes: `nfqlb run`'s reload, a
 * `nfqlb apply` typed by an operator and a CI job are exactly that. An flock(2) on the shm directory itself
 * (it exists before us and is never removed: no unlink race, and nothing of ours is left behind on a host
 * that a refused apply or a teardown returned to what it was) serialises them; the kernel drops it when its holder dies, so a
 * killed apply never leaves the host locked. One that waits too long names the holder, found in /proc/locks.
 * docs/apply.md "One at a time".
 */
import { NfqlbError } from "../core/errors.ts";
import { shmDir } from "../core/shm_dir.ts";

/** How long an apply or teardown waits for another to finish before it gives up (one line, exit 1). */
export const HOST_LOCK_TIMEOUT_MS = 60_000;

/**
 * Runs `fn` holding the host lock; waits for another holder at most `timeoutMs`, then throws one line naming
 * the holder. `what` (e.g. `apply web`) is what a waiting process is told.
 *
 * @example
 * ```ts
 * const n = await withHostLock("apply web", async () => await applyChanges());
 * ```
 */
export async function withHostLock<T>(
  what: string,
  fn: () => Promise<T>,
  timeoutMs: number = HOST_LOCK_TIMEOUT_MS,
): Promise<T> {
  const path = shmDir();
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch {
    // no shm directory: nothing to serialise; apply's checks say what is wrong with it in their own words
    return await fn();
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  const locked = file.lock(true).then(() => {
    // acquired after we gave up: let go at once, or the file would stay locked for the life of the process
    if (timedOut) file.close();
  });
  try {
    const gotIt = await Promise.race([
      locked.then(() => true),
      new Promise<boolean>((res) => timer = setTimeout(() => res(false), timeoutMs)),
    ]);
    if (!gotIt) {
      timedOut = true;
      throw new NfqlbError(
        `${what}: another apply or teardown (${holder(path)}) has held ${path} for ${
          timeoutMs / 1000
        } s; try again when it has finished`,
      );
    }
  } finally {
    clearTimeout(timer);
  }
  try {
    return await fn();
  } finally {
    file.close(); // closing the descriptor releases the flock
  }
}

/** `pid N: nfqlb apply -f web.yaml`: who holds the flock on `dir` (from /proc/locks), or `pid unknown`. */
function holder(dir: string): string {
  try {
    const ino = Deno.statSync(dir).ino;
    for (const line of Deno.readTextFileSync("/proc/locks").split("\n")) {
      // 5: FLOCK  ADVISORY  WRITE 3255 fe:00:260072 0 EOF
      const f = line.trim().split(/\s+/);
      if (f[1] !== "FLOCK" || f[3] !== "WRITE" || Number(f[5]?.split(":")[2]) !== ino) continue;
      const argv = Deno.readTextFileSync(`/proc/${f[4]}/cmdline`).split("\0").filter((a) => a !== "");
      const cli = argv.findIndex((a) => a.endsWith("cli/main.ts") || a.endsWith("/nfqlb"));
      const cmd = cli >= 0 ? ["nfqlb", ...argv.slice(cli + 1)] : argv;
      return `pid ${f[4]}: ${cmd.join(" ").replace(/\s+/g, " ").slice(0, 120)}`;
    }
  } catch { /* gone meanwhile, or no /proc */ }
  return "pid unknown";
}
