/**
 * Targets by diff (nfqlb apply): the rows of a target table made to hold
 * exactly the active targets of a config, in one commit. Rows of fwmarks that
 * stay keep their index (so Maglev moves only what the change demands); new
 * fwmarks take their home row when it is free, else the lowest free row, as
 * `activate` does.
 *
 * The home row of a target is its place among the active targets of its
 * service in the file ({@link homeRows}): on an empty table that is where
 * `activate` in file order puts them anyway, and a target that leaves and
 * comes back (health checks, a reload) returns to it whatever happened
 * meanwhile. So LB hosts that serve the same file build the same table
 * (docs/tier.md), which `lowest free row` alone does not promise: with
 * rows 0 and 2 free, the target that comes back first would take row 0.
 */
import { NfqlbError } from "../core/errors.ts";
import { TargetShm } from "../core/target_shm.ts";
import type { ServiceConfig } from "./config/types.ts";

/** A wanted target: fwmark and weight (0 = drain). */
export interface WantedTarget {
  /** fwmark (the row's value). */
  readonly fwmark: number;
  /** Maglev weight 0..65535. */
  readonly weight: number;
}

/** Per fwmark, its home row: its index among the active targets of service `s`, in file order. */
export function homeRows(s: ServiceConfig): Map<number, number> {
  return new Map(s.targets.filter((t) => t.active).map((t, i) => [t.fwmark, i]));
}

/** One change to a target table. */
export type TargetChange =
  | { readonly kind: "activate"; readonly fwmark: number; readonly weight: number }
  | { readonly kind: "deactivate"; readonly fwmark: number }
  | { readonly kind: "weight"; readonly fwmark: number; readonly from: number; readonly to: number };

/** The text of a change, as apply prints it (the equivalent command). */
export function describeTargetChange(shm: string, c: TargetChange): string {
  switch (c.kind) {
    case "activate":
      return `activate --shm=${shm} --weight=${c.weight} ${c.fwmark}`;
    case "deactivate":
      return `deactivate --shm=${shm} ${c.fwmark}`;
    case "weight":
      return `activate --shm=${shm} --weight=${c.to} ${c.fwmark}   (weight ${c.from} -> ${c.to})`;
  }
}

/**
 * The changes that turn rows (active[i] = fwmark or -1, weights[i]) into
 * `wanted`, and the new rows. Pure. Throws when the wanted targets do not fit
 * in the table's N rows.
 *
 * @example
 * ```ts
 * const r = planTargets(Int32Array.of(101, -1), Uint32Array.of(1, 1), [{ fwmark: 102, weight: 2 }]);
 * // r.changes: deactivate 101, then activate 102 (weight 2) in the freed row 0
 * ```
 */
export function planTargets(
  active: Int32Array,
  weights: Uint32Array,
  wanted: readonly WantedTarget[],
  home: ReadonlyMap<number, number> = new Map(),
): { changes: TargetChange[]; active: Int32Array; weights: Uint32Array } {
  const want = new Map(wanted.map((t) => [t.fwmark, t.weight]));
  const nextActive = Int32Array.from(active);
  const nextWeights = Uint32Array.from(weights);
  const changes: TargetChange[] = [];
  const present = new Set<number>();
  for (let i = 0; i < nextActive.length; i++) {
    const fw = nextActive[i];
    if (fw < 0) continue;
    const w = want.get(fw);
    if (w === undefined || present.has(fw)) {
      // not wanted (or a duplicate row left by hand): free the row
      nextActive[i] = -1;
      nextWeights[i] = 1;
      if (!present.has(fw)) changes.push({ kind: "deactivate", fwmark: fw });
      continue;
    }
    present.add(fw);
    if (nextWeights[i] !== w) {
      changes.push({ kind: "weight", fwmark: fw, from: nextWeights[i], to: w });
      nextWeights[i] = w;
    }
  }
  const place = (t: WantedTarget, row: number) => {
    nextActive[row] = t.fwmark;
    nextWeights[row] = t.weight;
    present.add(t.fwmark);
    changes.push({ kind: "activate", fwmark: t.fwmark, weight: t.weight });
  };
  // home rows first, so that no target takes another's home row as its lowest free row
  for (const t of wanted) {
    const row = home.get(t.fwmark);
    if (present.has(t.fwmark) || row === undefined || row >= nextActive.length || nextActive[row] >= 0) {
      continue;
    }
    place(t, row);
  }
  let free = 0;
  for (const t of wanted) {
    if (present.has(t.fwmark)) continue;
    while (free < nextActive.length && nextActive[free] >= 0) free++;
    if (free >= nextActive.length) {
      throw new NfqlbError(
        `${wanted.length} active targets do not fit in a table of N=${nextActive.length} rows`,
      );
    }
    place(t, free);
  }
  return { changes, active: nextActive, weights: nextWeights };
}

/** The changes that applying `wanted` to table `shm` would make (reads the table). */
export function diffTargets(
  shm: string,
  wanted: readonly WantedTarget[],
  home?: ReadonlyMap<number, number>,
): TargetChange[] {
  const t = TargetShm.open(shm);
  try {
    const s = t.snapshot(0);
    return planTargets(s.active, s.weights, wanted, home).changes;
  } finally {
    t.close();
  }
}

/**
 * Makes table `shm` hold exactly `wanted` in one commit (none when nothing
 * changes), new targets in their `home` rows where free; returns the changes.
 */
export function applyTargets(
  shm: string,
  wanted: readonly WantedTarget[],
  home?: ReadonlyMap<number, number>,
): TargetChange[] {
  let changes: TargetChange[] = [];
  TargetShm.update(shm, (active, _t, weights) => {
    const p = planTargets(active, weights, wanted, home);
    changes = p.changes;
    if (changes.length === 0) return false;
    active.set(p.active);
    weights.set(p.weights);
    return true;
  });
  return changes;
}

/** The targets table `shm` holds now (active rows and their weights), as {@link applyTargets} takes them. */
export function currentTargets(shm: string): WantedTarget[] {
  const t = TargetShm.open(shm);
  try {
    const s = t.snapshot(0);
    const out: WantedTarget[] = [];
    s.active.forEach((fw, i) => {
      if (fw >= 0) out.push({ fwmark: fw, weight: s.weights[i] });
    });
    return out;
  } finally {
    t.close();
  }
}
