/** Test helpers: run the real CLI (scripts/nfqlb) and private shm directories. */
import { NFQLB } from "../harness/paths.ts";
import type { RunResult } from "../harness/process.ts";

/** Runs `scripts/nfqlb args...` with extra environment. */
export async function nfqlb(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const p = await new Deno.Command(NFQLB, { args, env, stdout: "piped", stderr: "piped", stdin: "null" })
    .output();
  const dec = new TextDecoder();
  return { code: p.code, stdout: dec.decode(p.stdout), stderr: dec.decode(p.stderr) };
}

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

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T, R>(items: T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  });
  await Promise.all(workers);
  return results;
}
