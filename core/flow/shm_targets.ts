/**
 * Target references checked against the shm directory, for a FlowTable
 * (./table.ts) outside flowlb: tests and tools.
 */
import { TargetShm } from "../target_shm.ts";
import type { FlowTableHooks } from "./table.ts";

/**
 * Target references checked against the shm directory: a target is
 * acquirable when TargetShm.open() succeeds. Reference counted by name; the
 * table is opened only to check it, and closed at once. For tests and tools;
 * flowlb uses its own registry that keeps the mappings.
 */
export class ShmTargets implements FlowTableHooks {
  #refs = new Map<string, number>();

  /** Checks that `target` is an nfqlb table and counts a reference. */
  acquire(target: string): boolean {
    const n = this.#refs.get(target) ?? 0;
    if (n === 0) {
      try {
        TargetShm.open(target).close();
      } catch {
        return false;
      }
    }
    this.#refs.set(target, n + 1);
    return true;
  }

  /** Drops a reference. */
  release(target: string): void {
    const n = (this.#refs.get(target) ?? 0) - 1;
    if (n > 0) this.#refs.set(target, n);
    else this.#refs.delete(target);
  }

  /** References held on `target`. */
  refs(target: string): number {
    return this.#refs.get(target) ?? 0;
  }
}
