/**
 * `lb/flowlb --offload=auto` in user space (docs/offload.md). The kernel does
 * the per-connection work: a mangle POSTROUTING rule saves each verdict's
 * mark in its connection and two rules ahead of the NFQUEUE rule restore it
 * and skip the queue (host/plumbing/offload_rules.ts). What is left here is
 * keeping `deactivate` as it is without offload: when a fwmark leaves the
 * target tables, the kernel connections marked with it are deleted (one
 * ctnetlink flush per family and fwmark), so their next packet is queued and
 * decided again. A weight of 0 (drain) keeps the fwmark in the table, so
 * its connections stay. The verdicts that name no target (`--notargets_fwmark`,
 * flowlb's `--nolb_fwmark`, when > 0) are saved like any other; their
 * connections are deleted whenever the targets or the flows change, so they
 * get a target as soon as there is one, as without offload. Called from the 100 ms housekeeping of the main
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
  "Offload auto: only the first packet(s) of each connection reach user space and this trace; the kernel steers the rest " +
  "(counted per target as offloaded_packets in stats --all, nfqlb_target_offloaded_packets_total in /metrics)";

/** Deletes the kernel connections of fwmarks that left the tables. */
export class OffloadWatch {
  #who: string;
  #special: number[];
  #known: Set<number> | undefined;
  #epoch = 0;
  #warned = false;
  #flushFn: (family: number, fwmark: number) => number;
  /** Flushes done (one per fwmark that left), for tests. */
  flushes = 0;

  /**
   * `who`: how the log names the program ("lb", "flowlb"); `special`: the
   * fwmarks of verdicts without a target (≤ 0: none); `flush`: deletes the
   * kernel connections of a family and fwmark, 0 or -errno (tests pass
   * their own; the default is c/ctnl.c's, in this network namespace).
   */
  constructor(
    who: string,
    special: number[] = [],
    flush: (family: number, fwmark: number) => number = (family, fwmark) =>
      lib().nfqlb_ctnl_flush_mark(family, fwmark),
  ) {
    this.#who = who;
    this.#special = [...new Set(special.filter((f) => f > 0))];
    this.#flushFn = flush;
  }

  /**
   * `fwmarks`: every target fwmark in use now (negative values: empty
   * slots, ignored); `epoch`: changes when the flows change. The first call
   * only records them.
   */
  poll(fwmarks: Iterable<number>, epoch = 0): void {
    const now = new Set<number>();
    for (const f of fwmarks) if (f > 0) now.add(f);
    const before = this.#known;
    const flowsChanged = epoch !== this.#epoch;
    this.#known = now;
    this.#epoch = epoch;
    if (!before) return;
    let changed = flowsChanged || now.size !== before.size;
    for (const f of before) {
      if (!now.has(f)) {
        changed = true;
        if (!this.#special.includes(f)) this.#flush(f, "left the table");
      }
    }
    if (changed) { for (const f of this.#special) if (!now.has(f)) this.#flush(f, "no-target verdict"); }
  }

  #flush(fwmark: number, why: string): void {
    this.flushes++;
    const errs: string[] = [];
    for (const family of [4, 6]) {
      const rc = this.#flushFn(family, fwmark);
      if (rc < 0) errs.push(`IPv${family}: ${strerror(-rc)}`);
    }
    if (errs.length === 0) {
      log.notice(
        `${this.#who}: offload: fwmark ${fwmark} (${why}): its kernel connections are deleted`,
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
