/**
 * When each target is checked: the first round at once (the agent is ready
 * only after it), then every `intervalMs` per target, spread over the
 * interval: after the first round, target k of n is checked next at
 * `(k + 1) / n` of its interval, and from then on one interval after its
 * previous check started. One check at a time per target (timeout ≤
 * interval): a check that is still running when due starts when it ends.
 * The timer wakes at most every {@link QUANTUM_MS}, and not at all between
 * due times. One wakeup starts every check then due, and then calls
 * `afterTick` once (the monitor polls its sockets there), so at 1000
 * targets a second a wakeup serves about ten checks.
 */

/** Finest step of the schedule, ms: bounds the wakeups at 1000 targets to 100 per second. */
export const QUANTUM_MS = 10;

/** What the scheduler needs of a target. */
export interface Scheduled {
  /** Identity across {@link Scheduler.set} calls. */
  readonly key: string;
  /** Its interval, ms. */
  readonly intervalMs: number;
}

interface Entry<T> {
  target: T;
  due: number;
  running: boolean;
  checks: number;
  /** Fraction of the interval after the first check at which the second is due (the spread). */
  phase?: number;
}

/** Runs `check(target)` for every target on its schedule; see the module comment. */
export class Scheduler<T extends Scheduled> {
  readonly #check: (t: T, done: () => void) => void;
  readonly #now: () => number;
  readonly #afterTick: (() => void) | undefined;
  #entries = new Map<string, Entry<T>>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #running = false;
  #firstWaiters: (() => void)[] = [];

  /**
   * `check(t, done)` starts a check of `t` and calls `done` once when it is
   * over (maybe before it returns); it must not throw. `afterTick` runs
   * after a wakeup started its checks. `now` is performance.now() unless a
   * test gives another clock.
   */
  constructor(
    check: (t: T, done: () => void) => void,
    o: { afterTick?: () => void; now?: () => number } = {},
  ) {
    this.#check = check;
    this.#now = o.now ?? (() => performance.now());
    this.#afterTick = o.afterTick;
  }

  /**
   * The targets to check: targets of a known key keep their schedule (and
   * take the new definition); new ones are due at once; missing ones stop.
   */
  set(targets: readonly T[]): void {
    const next = new Map<string, Entry<T>>();
    const now = this.#now();
    for (const t of targets) {
      const e = this.#entries.get(t.key);
      if (e) {
        e.target = t;
        next.set(t.key, e);
      } else next.set(t.key, { target: t, due: now, running: false, checks: 0 });
    }
    this.#entries = next;
    // the phases of a first round are spread over its targets, in order
    const fresh = [...next.values()].filter((e) => e.checks === 0);
    fresh.forEach((e, k) => e.phase = (k + 1) / fresh.length);
    this.#settle();
    if (this.#running) this.#arm(now);
  }

  /** Starts checking. */
  start(): void {
    this.#running = true;
    this.#arm(this.#now());
  }

  /** Stops (checks under way finish; none starts). */
  stop(): void {
    this.#running = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
    this.#settle(true);
  }

  /** Resolves once every target (of the set at the time it resolves) has been checked at least once. */
  firstRound(): Promise<void> {
    return new Promise((resolve) => {
      this.#firstWaiters.push(resolve);
      this.#settle();
    });
  }

  /** Whether every target has been checked once. */
  get firstRoundDone(): boolean {
    for (const e of this.#entries.values()) if (e.checks === 0) return false;
    return true;
  }

  #settle(force = false): void {
    if (!force && !this.firstRoundDone) return;
    const w = this.#firstWaiters;
    this.#firstWaiters = [];
    for (const r of w) r();
  }

  /** Sets the timer for the earliest due entry (a scan), or for `due` alone when given (no scan). */
  #arm(now: number, due?: number): void {
    if (!this.#running) return;
    let next = due ?? Infinity;
    if (due === undefined) {
      for (const e of this.#entries.values()) if (!e.running && e.due < next) next = e.due;
    }
    if (next === Infinity) return;
    const at = Math.max(next, now + (next <= now ? 0 : QUANTUM_MS));
    if (this.#timer !== undefined && this.#timerAt <= at) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = setTimeout(() => this.#tick(), Math.max(0, at - now));
  }

  #tick(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    if (!this.#running) return;
    const now = this.#now();
    let next = Infinity, started = 0;
    for (const e of this.#entries.values()) {
      if (e.running) continue;
      if (e.due > now) {
        if (e.due < next) next = e.due;
        continue;
      }
      e.running = true;
      started++;
      this.#check(e.target, () => this.#done(e, now));
    }
    if (started > 0) this.#afterTick?.();
    this.#arm(now, next);
  }

  /** A check of `e` that started at `started` is over. */
  #done(e: Entry<T>, started: number): void {
    e.running = false;
    e.checks++;
    const iv = e.target.intervalMs;
    if (e.checks === 1 && e.phase !== undefined) e.due = started + iv * e.phase;
    else e.due = started + iv;
    if (e.checks === 1) this.#settle();
    // only this entry changed: no scan of all (1000 checks a second would make that 10^6 steps)
    this.#arm(this.#now(), e.due);
  }
}
