/** The kernel plumbing a host config asks for: its {@link PlumbingSpec} (host/plumbing). */
import type { HostConfig } from "./config/types.ts";
import type { PlumbingSpec, PlumbingTarget, PlumbingVip } from "./plumbing/spec.ts";

/**
 * Maps a validated config to the plumbing spec: every service's VIPs (with
 * its port filters, merged when services share a VIP) go to the one queue; every target of the file (active
 * or not, so a re-activated target finds its route) gets its route, DNAT or
 * DNAT and SNAT, one per address family it has.
 */
export function plumbingSpecOf(cfg: HostConfig): PlumbingSpec {
  // services may share a VIP (flows tell them apart by port): one queue rule set per address, queueing
  // the union of their ports, or everything when one of them takes all of the VIP's traffic
  const vips = new Map<string, PlumbingVip>();
  const targets: PlumbingTarget[] = [];
  for (const s of cfg.services) {
    for (const v of s.vips) {
      const ports = s.ports?.map((p) =>
        p.ports === null
          ? { protocol: p.protocol }
          : { protocol: p.protocol, port: p.ports.first, lastPort: p.ports.last }
      );
      const seen = vips.get(v.cidr);
      if (!seen) {
        vips.set(v.cidr, ports ? { address: v.cidr, ports } : { address: v.cidr });
      } else if (!ports || !seen.ports) delete seen.ports;
      else {
        for (const p of ports) {
          const dup = seen.ports.some((q) =>
            q.protocol === p.protocol && q.port === p.port && q.lastPort === p.lastPort
          );
          if (!dup) seen.ports.push(p);
        }
      }
    }
    for (const t of s.targets) {
      for (const family of ["ipv4", "ipv6"] as const) {
        const address = t[family];
        if (address === null) continue;
        const pt: PlumbingTarget = { fwmark: t.fwmark, address, mode: t.mode, table: t.table ?? t.fwmark };
        if (t.port !== null) pt.port = t.port;
        const snat = t.snat?.[family];
        if (snat) pt.snat = snat;
        targets.push(pt);
      }
    }
  }
  return {
    id: cfg.name,
    queue: cfg.dataplane.queue,
    bypass: cfg.dataplane.bypass,
    hooks: [...cfg.dataplane.hooks],
    vips: [...vips.values()],
    targets,
    offload: cfg.dataplane.offload,
  };
}
