/**
 * An HTTP GET from inside a namespace (the lab's namespaces have no route to
 * the test's own): a program run with `ip netns exec`, see {@link httpGet}
 * and {@link HttpWatch}.
 *
 * `deno run -A http_probe.ts URL` prints one line `{"t":…,"status":…,"body":…}`
 * (status 0 with the error as body when nothing answers). With
 * `URL INTERVAL_MS MAX_MS STOP_FILE` it asks every INTERVAL_MS and prints a
 * line each time the status or the first line of the body changes, until
 * STOP_FILE exists or MAX_MS passed.
 */
import { inNetns } from "./netns.ts";
import type { Proc, RunResult } from "./process.ts";
import { exists } from "../helpers/fs.ts";

/** One answer: when (Unix ms, at the request), the status (0: no answer), the body. */
export interface HttpAnswer {
  t: number;
  status: number;
  body: string;
}

const SELF = new URL(import.meta.url).pathname;

/** argv of this program for `url` (and a watch). */
export function httpProbeArgs(
  url: string,
  watch?: { intervalMs: number; maxMs: number; stopFile: string },
): string[] {
  const extra = watch ? [String(watch.intervalMs), String(watch.maxMs), watch.stopFile] : [];
  return [Deno.execPath(), "run", "-A", "--quiet", "--no-prompt", "--no-config", SELF, url, ...extra];
}

/** GET `url` from namespace `ns` with `runner` (bounded). */
export async function httpGet(
  runner: (args: string[], o?: { timeoutMs?: number; allowFail?: boolean }) => Promise<RunResult>,
  ns: string,
  url: string,
): Promise<HttpAnswer> {
  const r = await runner(inNetns(ns, httpProbeArgs(url)), { timeoutMs: 30_000, allowFail: true });
  if (r.code !== 0) throw new Error(`http probe in ${ns} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as HttpAnswer;
}

/** A running watch (see the module comment): its answers so far, and stop. */
export class HttpWatch {
  readonly #proc: Proc;
  readonly #stopFile: string;

  /** Wraps a started watch process. */
  constructor(proc: Proc, stopFile: string) {
    this.#proc = proc;
    this.#stopFile = stopFile;
  }

  /** The changes seen so far. */
  answers(): HttpAnswer[] {
    return this.#proc.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  }

  /** Ends the watch (bounded) and returns every change it saw. */
  async stop(): Promise<HttpAnswer[]> {
    Deno.writeTextFileSync(this.#stopFile, "stop\n");
    await this.#proc.stop(10_000);
    return this.answers();
  }
}

async function ask(url: string): Promise<HttpAnswer> {
  const t = Date.now();
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return { t, status: r.status, body: await r.text() };
  } catch (e) {
    return { t, status: 0, body: e instanceof Error ? e.message : String(e) };
  }
}

if (import.meta.main) {
  const [url, interval, max, stopFile] = Deno.args;
  if (interval === undefined) {
    console.log(JSON.stringify(await ask(url)));
  } else {
    const end = Date.now() + Number(max);
    let last = "";
    for (let i = 0; i < 1_000_000 && Date.now() < end && !exists(stopFile); i++) {
      const a = await ask(url);
      const key = `${a.status} ${a.body.split("\n")[0]}`;
      if (key !== last) console.log(JSON.stringify(a));
      last = key;
      await new Promise((r) => setTimeout(r, Number(interval)));
    }
  }
}
