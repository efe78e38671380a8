/**
 * A target's health over time (rise/fall hysteresis, as HAProxy's), and
 * what a service's health does to its target table (the panic guard). Pure:
 * no I/O, no clock of its own.
 */
import type { ServiceConfig } from "../config/types.ts";
import type { WantedTarget } from "../target_sync.ts";

/** A change of a target's health. */
export type Transition = "down" | "up";

/** One target's health: starts up (targets start as configured, in the table). */
export class TargetHealth {
  /** Whether the target counts as healthy. */
  up = true;
  /** Since when (Unix ms) it is up or down. */
  since: number;
  /** Passes in a row (while down: towards `rise`). */
  passes = 0;
  /** Failures in a row (while up: towards `fall`). */
  failures = 0;
  /** Why the last failed check failed; null before any failure. */
  lastError: string | null = null;
  /** When the last check ended (Unix ms); null before the first. */
  lastCheck: number | null = null;
  /** Latency of the last check, ms. */
  lastMs = 0;
  /** Checks by result. */
  readonly totals = { pass: 0, fail: 0 };
  /** How many passes bring it back, failures take it out. */
  rise: number;
  fall: number;

  constructor(rise: number, fall: number, now: number) {
    this.rise = rise;
    this.fall = fall;
    this.since = now;
  }

  /** Records one check's result; returns the transition it caused, if any. */
  record(ok: boolean, error: string | null, ms: number, now: number): Transition | null {
    this.lastCheck = now;
    this.lastMs = ms;
    if (ok) {
      this.totals.pass++;
      this.failures = 0;
      this.passes++;
      if (!this.up && this.passes >= this.rise) {
        this.up = true;
        this.since = now;
        return "up";
      }
    } else {
      this.totals.fail++;
      this.lastError = error;
      this.passes = 0;
      this.failures++;
      if (this.up && this.failures >= this.fall) {
        this.up = false;
        this.since = now;
        return "down";
      }
    }
    return null;
  }
}

/** What health makes of one target in its table. */
export type Effect = "in" | "removed" | "drained" | "panic" | "operator";

/** A service's table as health wants it. */
export interface ServiceHealthView {
  /** The rows to apply (as applyTargets takes them). */
  wanted: WantedTarget[];
  /** Every target that carries traffic by the file is down: all are kept in (panic guard). */
  panic: boolean;
  /** Per fwmark: in (as the file says), removed / drained by health, kept in by panic, or left as the operator set it (inactive or weight 0). */
  effects: Map<number, Effect>;
}

/**
 * The target rows of a service given its targets' health (`health(fwmark)`:
 * undefined for a target without a check, which counts as up).
 *
 * - a target the file makes inactive or weight 0 stays as the file says;
 * - a down target is removed (onFail remove) or gets weight 0 (drain);
 * - panic guard: when every target that carries traffic by the file is
 *   down, none is taken out (traffic to a possibly alive target beats a
 *   certain black hole).
 */
export function serviceView(
  s: ServiceConfig,
  health: (fwmark: number) => TargetHealth | undefined,
): ServiceHealthView {
  const carrying = s.targets.filter((t) => t.active && t.weight > 0);
  const down = carrying.filter((t) => health(t.fwmark)?.up === false);
  const panic = carrying.length > 0 && down.length === carrying.length;
  const effects = new Map<number, Effect>();
  const wanted: WantedTarget[] = [];
  for (const t of s.targets) {
    if (!t.active) {
      effects.set(t.fwmark, "operator");
      continue;
    }
    const isDown = t.weight > 0 && health(t.fwmark)?.up === false;
    if (!isDown) {
      effects.set(t.fwmark, t.weight === 0 ? "operator" : "in");
      wanted.push({ fwmark: t.fwmark, weight: t.weight });
    } else if (panic) {
      effects.set(t.fwmark, "panic");
      wanted.push({ fwmark: t.fwmark, weight: t.weight });
    } else if (t.health?.onFail === "drain") {
      effects.set(t.fwmark, "drained");
      wanted.push({ fwmark: t.fwmark, weight: 0 });
    } else effects.set(t.fwmark, "removed");
  }
  return { wanted, panic, effects };
}
