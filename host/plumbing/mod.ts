/**
 * The kernel plumbing of `nfqlb apply` / `teardown` / `status` as a library:
 * NFQUEUE rules, DSR routes, NAT rules, planned from a {@link PlumbingSpec},
 * diffed against what the kernel holds, applied, torn down. See
 * docs/plumbing.md.
 */
export type {
  PlumbingHook,
  PlumbingKind,
  PlumbingObject,
  PlumbingOptions,
  PlumbingProtocol,
  PlumbingSpec,
  PlumbingTarget,
  PlumbingVip,
} from "./spec.ts";
export { RT_PROTO, tagOf } from "./spec.ts";
export { planPlumbing } from "./plan.ts";
export { validateSpec } from "./validate.ts";
export { detectNftQueue, nftScript, probeNftQueue } from "./nft.ts";
export {
  applyPlumbing,
  type ApplyResult,
  readPlumbing,
  statusPlumbing,
  type StatusResult,
  teardownPlumbing,
} from "./kernel_sync.ts";
