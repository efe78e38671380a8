/**
 * How a running lb/flowlb follows the shm files it uses while someone
 * damages them (docs/dataplane.md "Damaged shm files"). The classifiers never
 * fault on a bad file: target tables are private copies (TargetView), and
 * the files the workers write are guarded mappings (c/file.c). What remains
 * is done here, from the control thread, every 100 ms:
 *
 * - {@link TableWatch}: a target (or LB-tier) table. The workers refresh its
 *   copy per batch and count each incident (good -> bad) in the
 *   `table_errors` counter; here each incident is logged once, and the name
 *   is opened again when `init` replaced the file, or when the file is bad
 *   and the name now holds another one (our `init` after a truncation or
 *   after upstream's `init` rewrote it; `delete` + `init`). The caller swaps
 *   to the fresh view and frees the old one once no worker uses it.
 * - {@link ShmWatch}: a file the workers write (counters, fragment stats)
 *   or share (a connection table): damage is logged once and counted, and
 *   the file is repaired (ours: written again and mapped at the same
 *   address) or, for a connection table, used again once the name holds a
 *   valid one of the same size.
 */
import { log } from "../core/log.ts";
import { shmPath } from "../core/shm_dir.ts";
import { TargetView, VIEW_OK, VIEW_REPLACED, viewErrorText } from "../core/target_view.ts";

/** Where a watch writes: the program ("lb", "flowlb") and how it counts an incident. */
export interface WatchContext {
  who: string;
  /** Adds 1 to table_errors (the workers count their own table incidents; this is for the rest). */
  countError(): void;
}

/** One target table's view, followed (see the module comment). */
export class TableWatch {
  readonly name: string;
  #view: TargetView;
  #role: string;
  #ctx: WatchContext;
  /** Incidents of the current view already logged. */
  #seen: number;
  /** A warning is out and no recovery was logged since. */
  #bad = false;
  /** The name holds a file that does not open (logged once per file). */
  #badFile: string | undefined;

  /** `role`: how the log names the table ("target table", "LB-tier table"). */
  constructor(view: TargetView, role: string, ctx: WatchContext) {
    this.name = view.name;
    this.#view = view;
    this.#role = role;
    this.#ctx = ctx;
    this.#seen = view.info().incidents;
  }

  /** The view in use. */
  get view(): TargetView {
    return this.#view;
  }

  /**
   * Logs what happened since the last call and opens the name again when
   * that is due. Returns the fresh view when it replaced the current one
   * (the caller hands it to the workers and closes the old one once none
   * uses it), else undefined.
   */
  poll(): TargetView | undefined {
    const i = this.#view.info();
    const what = `${this.#ctx.who}: ${this.#role} ${this.name}`;
    if (i.incidents > this.#seen) {
      this.#seen = i.incidents;
      const why = viewErrorText(i.state < 0 ? i.state : i.lastError, this.name);
      log.warning(`${what}: ${why}; forwarding with the last good table`);
      this.#bad = true;
    }
    if (i.state === VIEW_OK) {
      if (this.#bad) log.notice(`${what}: valid again`);
      this.#bad = false;
      return undefined;
    }
    // bad: worth opening again only when the name holds another file now (ours was re-created)
    if (i.state !== VIEW_REPLACED && !this.#otherFile(i.dev, i.ino)) return undefined;
    let fresh: TargetView;
    try {
      fresh = TargetView.open(this.name);
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      if (this.#badFile !== why) {
        this.#badFile = why;
        log.warning(
          `${what}: cannot use the file that has its name now (${why}); forwarding with the last good table`,
        );
        this.#ctx.countError();
      }
      return undefined;
    }
    this.#badFile = undefined;
    this.#view = fresh;
    this.#seen = fresh.info().incidents;
    log.notice(this.#bad ? `${what}: valid again (re-opened)` : `${what}: re-opened (init replaced it)`);
    this.#bad = false;
    return fresh;
  }

  #otherFile(dev: bigint, ino: bigint): boolean {
    try {
      const st = Deno.statSync(shmPath(this.name));
      return BigInt(st.ino ?? 0) !== ino || BigInt(st.dev) !== dev;
    } catch {
      return false; /* nothing there (yet) */
    }
  }
}

/** A shm file that is not a target table, followed (see the module comment). */
export class ShmWatch {
  #what: string;
  #ctx: WatchContext;
  #damage: () => string | undefined;
  #recover: () => string | undefined;
  #meanwhile: string;
  #bad = false;
  #left: string | undefined;

  /**
   * `what`: the file as the log names it ("counters shm x-counters");
   * `damage`: what is wrong now (undefined: fine); `recover`: repairs or
   * re-attaches, and returns what is still wrong (undefined: fixed);
   * `meanwhile`: what the dataplane does until then (for the log line).
   */
  constructor(
    what: string,
    ctx: WatchContext,
    damage: () => string | undefined,
    recover: () => string | undefined,
    meanwhile: string,
  ) {
    this.#what = what;
    this.#ctx = ctx;
    this.#damage = damage;
    this.#recover = recover;
    this.#meanwhile = meanwhile;
  }

  /** Looks at the file; logs and counts a new incident once; tries to recover. */
  poll(): void {
    const why = this.#damage();
    const what = `${this.#ctx.who}: ${this.#what}`;
    if (why === undefined) {
      if (this.#bad) log.notice(`${what}: valid again`);
      this.#bad = false;
      this.#left = undefined;
      return;
    }
    if (!this.#bad) {
      this.#bad = true;
      log.warning(`${what}: ${why}; ${this.#meanwhile}`);
      this.#ctx.countError();
    }
    let left: string | undefined;
    try {
      left = this.#recover();
    } catch (e) {
      left = e instanceof Error ? e.message : String(e);
    }
    if (left === undefined) {
      log.notice(`${what}: valid again`);
      this.#bad = false;
      this.#left = undefined;
    } else if (left !== this.#left) {
      this.#left = left;
      log.info(`${what}: not usable yet: ${left}`);
    }
  }
}
