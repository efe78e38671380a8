/**
 * A reader process for tests/reliability/racing_writers_test.ts: maps a target table
 * with TargetShm.open and checks it continuously while another process
 * changes it.
 *
 * Usage: deno run -A tshm_reader.ts <shm> <ready-file> <stop-file> <max-iterations> <max-ms>
 * (NFQLB_SHM_DIR selects the directory). Creates <ready-file> once the table
 * is mapped, then loops until the table is replaced by `init`, <stop-file>
 * exists, or a bound is reached. Prints one JSON line with what it saw.
 */
import { TargetShm } from "../../core/target_shm.ts";
import { exists } from "./fs.ts";

const [name, readyFile, stopFile, maxIterText, maxMsText] = Deno.args;
const bound = (s: string, dflt: number) => {
  const n = Number(s);
  return Number.isFinite(n) && n > 0 ? n : dflt;
};
const maxIterations = bound(maxIterText, 1_000_000);
const deadline = Date.now() + bound(maxMsText, 60_000);

const t = TargetShm.open(name);
Deno.writeTextFileSync(readyFile, String(Deno.pid));
let iterations = 0, emptySeen = 0, emptySlotsMax = 0, badLookups = 0, lookups = 0;
let stoppedBy = "iterations";
const generations = new Set<number>();
let h = 12345;
while (iterations < maxIterations) {
  const empty = t.countEmpty();
  if (empty > 0) {
    emptySeen++;
    emptySlotsMax = Math.max(emptySlotsMax, empty);
  }
  for (let k = 0; k < 16; k++) {
    h = (Math.imul(h, 1103515245) + 12345) >>> 0;
    lookups++;
    if (t.lookup(h) < 0) badLookups++;
  }
  generations.add(t.snapshot(0).generation);
  iterations++;
  if (iterations % 64 === 0) {
    if (t.replaced) {
      stoppedBy = "replaced";
      break;
    }
    if (exists(stopFile)) {
      stoppedBy = "stop-file";
      break;
    }
    if (Date.now() > deadline) {
      stoppedBy = "time";
      break;
    }
  }
}
const replaced = t.replaced;
t.close();
console.log(JSON.stringify({
  iterations,
  emptySeen,
  emptySlotsMax,
  lookups,
  badLookups,
  generations: generations.size,
  replaced,
  stoppedBy,
}));
