/**
 * The target tables a flowlb has mapped, shared by flows by name and
 * reference counted as upstream's flow targets. A table no flow uses any
 * more is unmapped only once no published flow set can still point at it (the
 * caller says when: {@link TargetRegistry.sweep} after a complete reclaim).
 *
 * A target table `X` whose connection table `X-ct` exists when X is first
 * acquired gets it mapped too (docs/conntrack.md "In flowlb"); it lives and
 * dies with X's mapping, as lb's lives with lb.
 */
import { TargetShm } from "../core/target_shm.ts";
import { conntrackName, ConntrackShm } from "../core/conntrack_shm.ts";
import { ownExists } from "../core/shm_dir.ts";
import { log } from "../core/log.ts";

interface Entry {
  shm: TargetShm;
  ct: ConntrackShm | undefined;
  refs: number;
}

/** The connection table of target table `name` if its file exists and is valid, else undefined. */
function openConntrack(name: string): ConntrackShm | undefined {
  const ctName = conntrackName(name);
  if (!ownExists(ctName)) return undefined;
  try {
    const ct = ConntrackShm.open(ctName);
    log.notice(`flowlb: target ${name} uses connection table ${ctName}`);
    return ct;
  } catch (e) {
    // flows still work without it (Maglev alone), so a bad file is reported, not fatal
    log.warning(`flowlb: target ${name}: connection table not used: ${e instanceof Error ? e.message : e}`);
    return undefined;
  }
}

/** Mapped target tables (and their connection tables) by shm name. */
export class TargetRegistry {
  #entries = new Map<string, Entry>();
  #dead: { close(): void }[] = [];

  /** Maps `name` (or shares the mapping); false when it does not exist or is not a table. */
  acquire(name: string): boolean {
    const e = this.#entries.get(name);
    if (e) {
      e.refs++;
      return true;
    }
    let shm: TargetShm;
    try {
      shm = TargetShm.open(name);
    } catch {
      return false;
    }
    this.#entries.set(name, { shm, ct: openConntrack(name), refs: 1 });
    return true;
  }

  /** Drops one reference; the mappings are kept until the next sweep. */
  release(name: string): void {
    const e = this.#entries.get(name);
    if (!e) return;
    if (--e.refs <= 0) {
      this.#entries.delete(name);
      this.#dead.push(e.shm);
      if (e.ct) this.#dead.push(e.ct);
    }
  }

  /** The mapped base address of `name`, as a bigint for the C flow set (0n: none). */
  address(name: string | null): bigint {
    const e = name === null ? undefined : this.#entries.get(name);
    return e ? Deno.UnsafePointer.value(e.shm.pointer) as bigint : 0n;
  }

  /** The mapped base address of `name`'s connection table, as a bigint for the C flow set (0n: none). */
  conntrackAddress(name: string | null): bigint {
    const e = name === null ? undefined : this.#entries.get(name);
    return e?.ct ? Deno.UnsafePointer.value(e.ct.pointer) as bigint : 0n;
  }

  /** The connection tables mapped now, by target name. */
  conntracks(): Map<string, ConntrackShm> {
    const out = new Map<string, ConntrackShm>();
    for (const [name, e] of this.#entries) if (e.ct) out.set(name, e.ct);
    return out;
  }

  /**
   * Re-maps the tables that `init` replaced; returns whether any changed (the
   * caller then publishes a flow set with the new addresses). The old
   * mappings go to the dead list. A connection table stays as mapped: `init`
   * without `--conntrack` keeps its file, and its entries name rows, which
   * are checked against the new table per packet.
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
    for (const m of this.#dead.splice(0)) m.close();
  }

  /** Whether mappings wait for a sweep. */
  get pending(): boolean {
    return this.#dead.length > 0;
  }

  /** Unmaps everything (the workers have stopped). */
  closeAll(): void {
    this.sweep();
    for (const e of this.#entries.values()) {
      e.shm.close();
      e.ct?.close();
    }
    this.#entries.clear();
  }
}
