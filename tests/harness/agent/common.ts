/** What the agent's protocol files share: text coding, a blocking sleep, the request-per-flow loop. */
import type { Flow, ProbeCommand, ProbeResult } from "./types.ts";

/** UTF-8 text to bytes. */
export const enc = new TextEncoder();
/** Bytes to UTF-8 text. */
export const dec = new TextDecoder();
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Blocks the (agent's) thread for `ms`. */
export function sleepSync(ms: number): void {
  if (ms > 0) Atomics.wait(sleeper, 0, 0, ms);
}

/** One request of a probe: the name of the target that answered flow `f` ("" = none); failures add an errno. */
export type Ask = (
  f: Flow,
  dst: string,
  port: number,
  waitMs: number,
  nonce: string,
  errors: number[],
) => string;

/** `udp` / `tcp`: `ask` once per flow and repetition, repetition by repetition. */
export function probe(c: ProbeCommand, ask: Ask): ProbeResult {
  const waitMs = c.waitMs ?? 1000;
  const errors: number[] = [];
  const targets = c.flows.map(() => [] as string[]);
  for (let k = 0; k < (c.repeat ?? 1); k++) {
    c.flows.forEach((f, i) => {
      targets[i].push(ask(f, f.dst ?? c.dst, f.dport ?? c.port, waitMs, `q${k}.${i}`, errors));
    });
  }
  return { targets, errors: errors.slice(0, 10) };
}
