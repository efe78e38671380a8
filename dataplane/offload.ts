/**
 * `lb/flowlb --offload=auto` in user space (docs/offload.md). The kernel does
 * the per-connection work: a mangle POSTROUTING rule saves each verdict's
 * mark in its connection and two rules ahead of the NFQUEUE rule restore it
 * and skip the queue (host/plumbing/offload_rules.ts). What is left here is
 * keeping `deactivate` as it is without offload: when a fwmark leaves the
 * target tables, the kernel connections marked with it are deleted (one
 * ctnetlink flush per family and fwmark), so their next packet is queued and
 * decided again. A weight of 0 (drain) keeps the fwmark in the table, so
 * its connections stay. Called from the 100 ms housekeeping of the main
 * thread; nothing here runs per packet or per connection.
 */
import { lib } from "../ffi/lib.ts";
import { log } from "../core/log.ts";
import { strerror } from "../core/errors.ts";

/** `--offload` values. */
export const OFFLOAD_MODES = ["off", "auto"] as const;

/** How connections are offloaded: `off` (every packet queued) or `auto`. */
export type OffloadMode = (typeof OFFLOAD_MODES)[number];

/** The line trace clients get after the greeting when offload is auto. */
export const OFFLOAD_TRACE_NOTE =
  "Offload auto: only the first packet(s) of each connection reach user space and this trace; the kernel steers the rest";

/** Deletes the kernel connections of fwmarks that left the tables. */
export class OffloadWatch {
  #who: string;
  #known: Set<number> | undefined;
  #warned = false;
  /** Flushes done (one per fwmark that left), for tests. */
  flushes = 0;

  /** `who`: how the log names the program ("lb", "flowlb"). */
  constructor(who: string) {
    this.#who = who;
  }

  /**
   * `fwmarks`: every target fwmark in use now (negative values: empty
   * slots, ignored). The first call only records them.
   */
  poll(fwmarks: Iterable<number>): void {
    const now = new Set<number>();
    for (const f of fwmarks) if (f > 0) now.add(f);
    const before = this.#known;
    this.#known = now;
    if (!before) return;
    for (const f of before) if (!now.has(f)) this.#flush(f);
  }

  #flush(fwmark: number): void {
    this.flushes++;
    const c = lib();
    const errs: string[] = [];
    for (const family of [4, 6]) {
      const rc = c.nfqlb_ctnl_flush_mark(family, fwmark);
      if (rc < 0) errs.push(`IPv${family}: ${strerror(-rc)}`);
    }
    if (errs.length === 0) {
      log.notice(
        `${this.#who}: offload: target ${fwmark} left the table; its kernel connections are deleted`,
      );
    } else if (!this.#warned) {
      // one line per process: a missing capability would otherwise repeat at every table change
      this.#warned = true;
      log.warning(
        `${this.#who}: offload: cannot delete the kernel connections of target ${fwmark} (${
          errs.join(", ")
        }); ` +
          "they stay on it until they expire",
      );
    }
  }
}
