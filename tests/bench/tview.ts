/**
 * Bench `tview` (not in `deno task bench`; run with
 * `deno run -A tests/bench/tview.ts`): what the dataplane pays for reading
 * target tables through private copies (c/tshm_view.c) instead of mapping
 * them. Per batch: nfqlb_tshm_view_refresh when nothing changed (a few loads
 * from the guarded header page), against an empty FFI call; per commit: the
 * refresh that copies a new table (pread); per packet: a lookup in the copy
 * against the same lookup in the mapped file.
 */
import { lib } from "../../ffi/lib.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { TargetView } from "../../core/target_view.ts";
import { libSandbox } from "../helpers/shm.ts";

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** ns per call of fn, median of `reps` runs of `n` calls. */
function per(fn: () => void, n: number, reps = 9): number {
  const out: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    out.push(((performance.now() - t0) * 1e6) / n);
  }
  return median(out);
}

using _sb = libSandbox();
const c = lib();
for (const [M, N] of [[997, 32], [9973, 100], [65537, 1000]]) {
  TargetShm.create("b", { M, N, ownFwmark: 0 });
  TargetShm.update("b", (a) => {
    for (let i = 0; i < Math.min(N, 10); i++) a[i] = 101 + i;
    return true;
  });
  const v = TargetView.open("b");
  const t = TargetShm.open("b");
  const vp = v.pointer, vt = v.table, tp = t.pointer;
  const empty = per(() => c.nfqlb_prime_below(0), 200_000);
  const unchanged = per(() => c.nfqlb_tshm_view_refresh(vp, null), 50_000);
  // a changed table: a commit (not timed), then the refresh that copies it
  let flip = 0;
  const copies: number[] = [];
  for (let i = 0; i < 41; i++) {
    TargetShm.update("b", (a) => ((a[0] = 101 + (flip++ & 1) * 1000), true));
    const t0 = performance.now();
    c.nfqlb_tshm_view_refresh(vp, null);
    copies.push((performance.now() - t0) * 1000);
  }
  let h = 1;
  const lookCopy = per(() => c.nfqlb_tshm_lookup(vt, h = (h * 1103515245 + 12345) >>> 0), 200_000);
  const lookMap = per(() => c.nfqlb_tshm_lookup(tp, h = (h * 1103515245 + 12345) >>> 0), 200_000);
  console.log(JSON.stringify({
    M,
    N,
    emptyFfiNs: +empty.toFixed(1),
    refreshUnchangedNs: +unchanged.toFixed(1),
    refreshCopyUs: +median(copies).toFixed(1),
    lookupCopyNs: +lookCopy.toFixed(1),
    lookupMappedNs: +lookMap.toFixed(1),
  }));
  v.close();
  t.close();
}
