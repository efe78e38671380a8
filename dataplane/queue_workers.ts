/**
 * The queue workers' start, apart from the rest of the dataplane: `nfqlb lb`
 * and `flowlb` start them before they load anything else, so each worker's
 * isolate boots, loads its modules and opens the C library (on another core)
 * while the main thread loads and sets up the rest. A worker then waits for
 * its start message (dataplane/worker_protocol.ts) before it binds its queue.
 * This module imports nothing, so it costs the CLI nothing to load.
 */

/** Starts `n` queue workers (dataplane/queue_worker.ts), idle until their start message. */
export function startQueueWorkers(n: number): Worker[] {
  return Array.from(
    { length: n },
    () => new Worker(new URL("./queue_worker.ts", import.meta.url), { type: "module" }),
  );
}
