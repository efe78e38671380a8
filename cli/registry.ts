/**
 * All 21 upstream commands, in upstream's listing order (link order of its
 * cmd*.c files). Upstream's table holds 20, so its build silently drops
 * trace-flow-list-names; we register it (docs/compatibility.md). Our own
 * commands (the connection table, docs/conntrack.md; the host config,
 * docs/apply.md), and help and completion, come after them.
 */
import type { Command } from "./command.ts";
import { activate, deactivate, version } from "./commands/activate.ts";
import {
  flowDelete,
  flowList,
  flowListNames,
  flowSet,
  traceFlowDelete,
  traceFlowList,
  traceFlowListNames,
  traceFlowSet,
} from "./commands/flow.ts";
import { ctDelete, ctList, ctSet, ctStats } from "./commands/conntrack.ts";
import { fwmark } from "./commands/fwmark.ts";
import { apply, health, status, teardown } from "./commands/host.ts";
import { flowlb, lb } from "./commands/lb.ts";
import { offloadRules } from "./commands/offload.ts";
import { run } from "./commands/run.ts";
import { del, init, primebelow, show, stats } from "./commands/shm.ts";
import { loglevel, trace } from "./commands/trace.ts";
import { completion, help } from "./commands/meta.ts";

/** Commands in listing order: upstream's 21, then ours. */
export const COMMANDS: readonly Command[] = [
  activate,
  deactivate,
  version,
  flowSet,
  flowDelete,
  flowList,
  flowListNames,
  flowlb,
  fwmark,
  lb,
  init,
  del,
  show,
  stats,
  primebelow,
  trace,
  loglevel,
  traceFlowSet,
  traceFlowDelete,
  traceFlowList,
  traceFlowListNames,
  // ours
  ctList,
  ctSet,
  ctDelete,
  ctStats,
  apply,
  teardown,
  status,
  run,
  health,
  offloadRules,
  help,
  completion,
];
