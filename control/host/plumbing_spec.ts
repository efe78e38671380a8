/** The kernel plumbing a host config asks for: its {@link PlumbingSpec} (control/plumbing). */
import type { HostConfig } from "../config/types.ts";
import type { PlumbingSpec, PlumbingTarget, PlumbingVip } from "../plumbing/spec.ts";

/**
 * Maps a validated config to the plumbing spec: every service's VIPs (with
 * its port filters) go to the one queue; every target of the file (active
 * or not, so a re-activated target finds its route) gets its route or DNAT,
 * one per address family it has.
 */
export function plumbingSpecOf(cfg: HostConfig): PlumbingSpec {
  const vips: PlumbingVip[] = [];
  const targets: PlumbingTarget[] = [];
  for (const s of cfg.services) {
    for (const v of s.vips) {
      const vip: PlumbingVip = { address: v.cidr };
      if (s.ports) {
        vip.ports = s.ports.map((p) =>
          p.ports === null
            ? { protocol: p.protocol }
            : { protocol: p.protocol, port: p.ports.first, lastPort: p.ports.last }
        );
      }
      vips.push(vip);
    }
    for (const t of s.targets) {
      for (const address of [t.ipv4, t.ipv6]) {
        if (address === null) continue;
        const pt: PlumbingTarget = { fwmark: t.fwmark, address, mode: t.mode, table: t.table ?? t.fwmark };
        if (t.port !== null) pt.port = t.port;
        targets.push(pt);
      }
    }
  }
  return {
    id: cfg.name,
    queue: cfg.dataplane.queue,
    bypass: cfg.dataplane.bypass,
    hooks: [...cfg.dataplane.hooks],
    vips,
    targets,
    offload: cfg.dataplane.offload,
  };
}
