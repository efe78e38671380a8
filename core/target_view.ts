/**
 * A target table as the dataplane reads it: a private copy taken with pread
 * and refreshed between batches (c/tshm_view.c), never a mapping of the file,
 * so that a truncated, zeroed or rewritten file cannot fault a load. The copy
 * has the file's layout: the C classifier reads it as it would read the file.
 * While the file is bad the copy stays the last good table. See
 * docs/dataplane.md "Damaged shm files".
 */
import { cstring, lib } from "../ffi/lib.ts";
import {
  NFQLB_EVERSION,
  NFQLB_TSHM_OFF_M,
  NFQLB_TSHM_OFF_N,
  NFQLB_TSHM_OFF_VERSION,
  NFQLB_TVIEW_INFO_COPIES,
  NFQLB_TVIEW_INFO_COUNT,
  NFQLB_TVIEW_INFO_DEV,
  NFQLB_TVIEW_INFO_GENERATION,
  NFQLB_TVIEW_INFO_INCIDENTS,
  NFQLB_TVIEW_INFO_INO,
  NFQLB_TVIEW_INFO_LAST_ERROR,
  NFQLB_TVIEW_INFO_STATE,
  NFQLB_TVIEW_OK,
  NFQLB_TVIEW_REPLACED,
} from "../ffi/consts.ts";
import { NfqlbError, strerror } from "./errors.ts";
import { shmPath } from "./shm_dir.ts";
import { checkText, type TargetSnapshot } from "./target_shm.ts";

/** View states besides the NFQLB_E* errors (< 0: the file is bad, the copy is the last good table). */
export const VIEW_OK = NFQLB_TVIEW_OK, VIEW_REPLACED = NFQLB_TVIEW_REPLACED;

/** What a view says about itself (c/nfqlb.h enum nfqlb_tview_info). */
export interface ViewInfo {
  /** VIEW_OK, VIEW_REPLACED, or an NFQLB_E* error (< 0). */
  state: number;
  /** Times the file went bad (good -> bad). */
  incidents: number;
  /** The error of the latest incident (0: none yet). */
  lastError: number;
  /** Good copies taken. */
  copies: number;
  /** The file's device and inode. */
  dev: bigint;
  ino: bigint;
  /** Commits since init, as of the copy. */
  generation: number;
}

/** The version field of file `name` (0 when unreadable): only to name an unsupported version. */
function fileVersion(name: string): number {
  try {
    const f = Deno.openSync(shmPath(name));
    try {
      const b = new Uint8Array(NFQLB_TSHM_OFF_VERSION + 2);
      return f.readSync(b) === b.length ? new DataView(b.buffer).getUint16(NFQLB_TSHM_OFF_VERSION, true) : 0;
    } finally {
      f.close();
    }
  } catch {
    return 0;
  }
}

/** The text for a view's error state (an NFQLB_E*), as `FAILED mapSharedData` gives it. */
export function viewErrorText(state: number, name: string): string {
  return checkText(state, name, state === NFQLB_EVERSION ? fileVersion(name) : 0);
}

/**
 * A private copy of target table `name`.
 *
 * @example
 * ```ts
 * const v = TargetView.open("nfqlb");      // FAILED mapSharedData: nfqlb[: reason]
 * lib().nfqlb_lb_set_view(lb, v.pointer);  // the classifier reads v.table, refreshed per batch
 * v.info().state;                          // 0 while the file is good
 * v.close();                               // once no thread uses it
 * ```
 */
export class TargetView {
  /** shm name. */
  readonly name: string;
  #ptr: Deno.PointerObject | null;
  #info = new BigInt64Array(NFQLB_TVIEW_INFO_COUNT);

  private constructor(name: string, ptr: Deno.PointerObject) {
    this.name = name;
    this.#ptr = ptr;
  }

  /**
   * Opens `name` and copies its table. Errors as TargetShm.open: missing →
   * `FAILED mapSharedData: <name>`, else the reason after a colon.
   */
  static open(name: string): TargetView {
    const err = new Int32Array(1);
    const p = lib().nfqlb_tshm_view_open(cstring(shmPath(name)), err);
    if (p === null) {
      const e = err[0];
      if (e === 2) throw new NfqlbError(`FAILED mapSharedData: ${name}`);
      const why = e === 0 ? "empty file" : e > 0 ? strerror(e) : viewErrorText(e, name);
      throw new NfqlbError(`FAILED mapSharedData: ${name}: ${why}`);
    }
    return new TargetView(name, p);
  }

  /** The view's address (nfqlb_lb_set_view, nfqlb_flows_publish_views). */
  get pointer(): Deno.PointerObject {
    if (this.#ptr === null) throw new Error(`target view ${this.name} is closed`);
    return this.#ptr;
  }

  /** The copy's address: a table every nfqlb_tshm_* reader takes. */
  get table(): Deno.PointerObject {
    return lib().nfqlb_tshm_view_table(this.pointer)!;
  }

  /** The view's state and counts. */
  info(): ViewInfo {
    lib().nfqlb_tshm_view_info(this.pointer, this.#info, NFQLB_TVIEW_INFO_COUNT);
    const i = this.#info;
    return {
      state: Number(i[NFQLB_TVIEW_INFO_STATE]),
      incidents: Number(i[NFQLB_TVIEW_INFO_INCIDENTS]),
      lastError: Number(i[NFQLB_TVIEW_INFO_LAST_ERROR]),
      copies: Number(i[NFQLB_TVIEW_INFO_COPIES]),
      dev: i[NFQLB_TVIEW_INFO_DEV],
      ino: i[NFQLB_TVIEW_INFO_INO],
      generation: Number(i[NFQLB_TVIEW_INFO_GENERATION]),
    };
  }

  /** Looks at the file again (the dataplane does this per batch); returns the state. */
  refresh(): number {
    return lib().nfqlb_tshm_view_refresh(this.pointer, null);
  }

  /** A consistent copy of the first `nlookup` lookup entries and all rows, from the copy. */
  snapshot(nlookup = 25): TargetSnapshot {
    const t = this.table;
    const view = new Deno.UnsafePointerView(t);
    const M = view.getUint32(NFQLB_TSHM_OFF_M), N = view.getUint32(NFQLB_TSHM_OFF_N);
    const n = Math.min(nlookup, M);
    const lookup = new Int32Array(n), active = new Int32Array(N), weights = new Uint32Array(N);
    const generation = lib().nfqlb_tshm_read(t, lookup, n, active, weights);
    return { lookup, active, weights, generation };
  }

  /** Frees the view (no thread may use it any more). */
  close(): void {
    if (this.#ptr !== null) lib().nfqlb_tshm_view_close(this.#ptr);
    this.#ptr = null;
  }
}

/**
 * Number of active targets in table `name` (0 when it cannot be read): for metrics, read through a private
 * copy, never mapped, so a damaged file cannot hurt the reader.
 *
 * @example
 * ```ts
 * import { activeTargets } from "./target_view.ts";
 * console.log(activeTargets("nfqlb")); // 3, or 0 without a readable table
 * ```
 */
export function activeTargets(name: string): number {
  try {
    const t = TargetView.open(name);
    try {
      return t.snapshot(0).active.filter((fw) => fw >= 0).length;
    } finally {
      t.close();
    }
  } catch {
    return 0;
  }
}

/** The active targets of a table and their weights, as {@link readTargets} returns them. */
export interface ActiveTarget {
  fwmark: number;
  weight: number;
}

/**
 * The active targets of table `name` with their weights, read through a private copy (never mapped), or
 * undefined when the table cannot be read: for metrics (`nfqlb_targets_active`, `nfqlb_target_weight`).
 */
export function readTargets(name: string): ActiveTarget[] | undefined {
  try {
    const t = TargetView.open(name);
    try {
      const s = t.snapshot(0);
      const out: ActiveTarget[] = [];
      s.active.forEach((fw, i) => {
        if (fw >= 0) out.push({ fwmark: fw, weight: s.weights[i] });
      });
      return out;
    } finally {
      t.close();
    }
  } catch {
    return undefined;
  }
}
