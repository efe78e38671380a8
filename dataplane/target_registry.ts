/**
 * The target tables a flowlb has mapped, shared by flows by name and
 * reference counted (upstream §6.3). A table no flow uses any more is
 * unmapped only once no published flow set can still point at it (the
 * caller says when: {@link TargetRegistry.sweep} after a complete reclaim).
 */
import { TargetShm } from "../control/target_shm.ts";

interface Entry {
  shm: TargetShm;
  refs: number;
}

/** Mapped target tables by shm name. */
export class TargetRegistry {
  #entries = new Map<string, Entry>();
  #dead: TargetShm[] = [];

  /** Maps `name` (or shares the mapping); false when it does not exist or is not a table. */
  acquire(name: string): boolean {
    const e = this.#entries.get(name);
    if (e) {
      e.refs++;
      return true;
    }
    try {
      this.#entries.set(name, { shm: TargetShm.open(name), refs: 1 });
      return true;
    } catch {
      return false;
    }
  }

  /** Drops one reference; the mapping is kept until the next sweep. */
  release(name: string): void {
    const e = this.#entries.get(name);
    if (!e) return;
    if (--e.refs <= 0) {
      this.#entries.delete(name);
      this.#dead.push(e.shm);
    }
  }

  /** The mapped base address of `name`, as a bigint for the C flow set (0n: none). */
  address(name: string | null): bigint {
    const e = name === null ? undefined : this.#entries.get(name);
    return e ? Deno.UnsafePointer.value(e.shm.pointer) as bigint : 0n;
  }

  /**
   * Re-maps the tables that `init` replaced; returns whether any changed (the
   * caller then publishes a flow set with the new addresses). The old
   * mappings go to the dead list.
   */
  refresh(): boolean {
    let changed = false;
    for (const [name, e] of this.#entries) {
      if (!e.shm.replaced) continue;
      try {
        const fresh = TargetShm.open(name);
        this.#dead.push(e.shm);
        e.shm = fresh;
        changed = true;
      } catch { /* not there (yet): keep the old one */ }
    }
    return changed;
  }

  /** Unmaps what no flow set can reference any more. Call only when the flow set has nothing retired. */
  sweep(): void {
    for (const shm of this.#dead.splice(0)) shm.close();
  }

  /** Whether mappings wait for a sweep. */
  get pending(): boolean {
    return this.#dead.length > 0;
  }

  /** Unmaps everything (the workers have stopped). */
  closeAll(): void {
    this.sweep();
    for (const e of this.#entries.values()) e.shm.close();
    this.#entries.clear();
  }
}
