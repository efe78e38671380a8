/**
 * The target tables a flowlb uses, shared by flows by name and reference
 * counted as upstream's flow targets. Each is a private copy the workers
 * refresh per batch (core/target_view.ts), followed by a TableWatch
 * (./table_watch.ts). A table no flow uses any more, or one replaced by a
 * re-opened copy, is freed only once no published flow set can still point at
 * it (the caller says when: {@link TargetRegistry.sweep} after a complete
 * reclaim).
 *
 * A target table `X` whose connection table `X-ct` exists when X is first
 * acquired gets it mapped too (docs/conntrack.md "In flowlb"); it lives and
 * dies with X's entry, as lb's lives with lb, and is watched for damage.
 */
import { TargetView } from "../core/target_view.ts";
import { conntrackName, ConntrackShm } from "../core/conntrack_shm.ts";
import { ownExists } from "../core/shm_dir.ts";
import { log } from "../core/log.ts";
import { ShmWatch, TableWatch, type WatchContext } from "./table_watch.ts";

interface Entry {
  watch: TableWatch;
  ct: ConntrackShm | undefined;
  ctWatch: ShmWatch | undefined;
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

/** Target tables (and their connection tables) in use, by shm name. */
export class TargetRegistry {
  #entries = new Map<string, Entry>();
  #dead: { close(): void }[] = [];
  /** Where damage is logged and counted (flowlb sets the counting once its queues run). */
  context: WatchContext = { who: "flowlb", countError: () => {} };

  /** The fwmarks of every table in use (offload auto: which targets left; dataplane/offload.ts). */
  fwmarks(): number[] {
    const out: number[] = [];
    for (const e of this.#entries.values()) out.push(...e.watch.view.snapshot(0).active);
    return out;
  }

  /** Copies `name` (or shares the copy); false when it does not exist or is not a valid table. */
  acquire(name: string): boolean {
    const e = this.#entries.get(name);
    if (e) {
      e.refs++;
      return true;
    }
    let view: TargetView;
    try {
      view = TargetView.open(name);
    } catch {
      return false;
    }
    const ctx: WatchContext = { who: "flowlb", countError: () => this.context.countError() };
    const ct = openConntrack(name);
    const ctWatch = ct
      ? new ShmWatch(
        `connection table ${ct.name}`,
        ctx,
        () => ct.damage(),
        () => ct.reattach(),
        "deciding by Maglev alone until it is valid again",
      )
      : undefined;
    this.#entries.set(name, { watch: new TableWatch(view, "target table", ctx), ct, ctWatch, refs: 1 });
    return true;
  }

  /** Drops one reference; the mappings are kept until the next sweep. */
  release(name: string): void {
    const e = this.#entries.get(name);
    if (!e) return;
    if (--e.refs <= 0) {
      this.#entries.delete(name);
      this.#dead.push(e.watch.view);
      if (e.ct) this.#dead.push(e.ct);
    }
  }

  /** The address of `name`'s copy (what the classifier reads, and trace records name), as a bigint (0n: none). */
  address(name: string | null): bigint {
    const e = name === null ? undefined : this.#entries.get(name);
    return e ? Deno.UnsafePointer.value(e.watch.view.table) as bigint : 0n;
  }

  /** The address of `name`'s view, for nfqlb_flows_publish_views (0n: none). */
  viewAddress(name: string | null): bigint {
    const e = name === null ? undefined : this.#entries.get(name);
    return e ? Deno.UnsafePointer.value(e.watch.view.pointer) as bigint : 0n;
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
   * Follows the files (TableWatch.poll: logs damage once, re-opens a table
   * that `init` replaced or re-created); returns whether any copy changed
   * (the caller then publishes a flow set with the new addresses). The old
   * copies go to the dead list. A connection table stays as mapped: `init`
   * without `--conntrack` keeps its file, and its entries name rows, which
   * are checked against the new table per packet. A damaged one is logged
   * and used again once its name holds a valid one (ShmWatch).
   */
  refresh(): boolean {
    let changed = false;
    for (const e of this.#entries.values()) {
      const old = e.watch.view;
      if (e.watch.poll()) {
        this.#dead.push(old);
        changed = true;
      }
      e.ctWatch?.poll();
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
      e.watch.view.close();
      e.ct?.close();
    }
    this.#entries.clear();
  }
}
