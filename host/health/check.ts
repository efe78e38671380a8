/**
 * Where each target's check goes (from the config), and one check of a
 * target over all its families.
 *
 * Routing (docs/health.md): a DSR target gets its client traffic unchanged,
 * routed by its fwmark, so its check goes to the VIP and port with the
 * fwmark on the socket (SO_MARK): the host's `ip rule fwmark F` sends it to
 * that target, and only a target that answers on the VIP passes. NAT and
 * fullnat targets get their traffic DNATed to their own address, so they
 * are checked there (and on their `port`).
 */
import type { HealthConfig, HealthType, HostConfig } from "../config/types.ts";
import { checkExec } from "./exec.ts";
import { checkHttp } from "./http.ts";
import { checkIcmp } from "./icmp.ts";
import type { Poller } from "./sock.ts";
import { tcpProbe } from "./tcp.ts";
import { checkUdp } from "./udp.ts";
import { type Checker, type CheckResult, type CheckTarget, type Probe, probeText } from "./types.ts";

/** The promise-based checkers (tcp runs on callbacks: {@link startCheck}). */
const CHECKERS: Record<Exclude<HealthType, "tcp">, Checker> = {
  http: checkHttp,
  udp: checkUdp,
  icmp: checkIcmp,
  exec: checkExec,
};

/** The address of a VIP CIDR (`10.0.0.1/32` -> `10.0.0.1`). */
function vipAddress(cidr: string): string {
  const slash = cidr.indexOf("/");
  return slash < 0 ? cidr : cidr.slice(0, slash);
}

/** The checked targets of a config (those with a health check), in file order. */
export function checkTargets(cfg: HostConfig): CheckTarget[] {
  const out: CheckTarget[] = [];
  for (const s of cfg.services) {
    for (const t of s.targets) {
      if (!t.health) continue;
      const probes: Probe[] = [];
      for (const [fam, key] of [[4, "ipv4"], [6, "ipv6"]] as const) {
        const own = t[key];
        if (own === null) continue; // the rules give a target one address per VIP family
        const vips = s.vips.filter((v) => v.family === key);
        if (vips.length === 0) continue;
        // a host VIP (/32, /128) first: a network VIP's base address may be no address anyone answers on
        const host = vips.find((v) => v.cidr.endsWith(fam === 4 ? "/32" : "/128")) ?? vips[0];
        probes.push(
          t.mode === "dsr"
            ? { family: fam, address: vipAddress(host.cidr), port: t.health.port, mark: t.fwmark }
            : { family: fam, address: own, port: t.health.port, mark: 0 },
        );
      }
      out.push({
        key: `${s.name}/${t.fwmark}`,
        service: s.name,
        fwmark: t.fwmark,
        mode: t.mode,
        addresses: [t.ipv4, t.ipv6].filter((a): a is string => a !== null),
        health: t.health,
        probes,
      });
    }
  }
  return out;
}

/**
 * A text that is the same exactly when two targets are checked the same way
 * (a reload keeps their state then): mode, where each probe goes, the check,
 * and the target's own addresses (exec's environment).
 */
export function checkIdentity(t: CheckTarget): string {
  const h: HealthConfig = t.health;
  return JSON.stringify([t.mode, t.addresses, t.probes, h]);
}

const NO_PROBE = "no address to check (no VIP of the target's families)";

/**
 * One check of a target: every probe at once, with one deadline
 * (`timeoutMs` from now); it passes when all pass. `done` is called once,
 * maybe before this returns, never with an exception. A tcp check runs on
 * callbacks (no promise), the check the agent runs most at scale.
 */
export function startCheck(t: CheckTarget, poller: Poller, done: (r: CheckResult) => void): void {
  const t0 = performance.now();
  const probes = t.probes, h = t.health;
  if (probes.length === 0) return done({ ok: false, error: NO_PROBE, ms: 0 });
  let left = probes.length;
  let errors: (string | undefined)[] | undefined;
  const one = (i: number, err: string | null) => {
    if (err !== null) (errors ??= [])[i] = `${h.type} ${probeText(probes[i])}: ${err}`;
    if (--left > 0) return;
    const ms = performance.now() - t0;
    done(
      errors ? { ok: false, error: errors.filter((e) => e !== undefined).join("; "), ms } : {
        ok: true,
        error: null,
        ms,
      },
    );
  };
  const deadline = t0 + h.timeoutMs;
  if (h.type === "tcp") {
    for (let i = 0; i < probes.length; i++) tcpProbe(probes[i], deadline, poller, (err) => one(i, err));
    return;
  }
  const ctx = { poller, deadline, target: t };
  const check = CHECKERS[h.type];
  for (let i = 0; i < probes.length; i++) {
    let p: Promise<string | null>;
    try {
      p = check(probes[i], h, ctx);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then((e) => one(i, e), (e) => one(i, e instanceof Error ? e.message : String(e)));
  }
}

/** {@link startCheck} as a promise (never rejects). */
export function runCheck(t: CheckTarget, poller: Poller): Promise<CheckResult> {
  return new Promise((resolve) => startCheck(t, poller, resolve));
}
