/**
 * The exec check (keepalived's MISC_CHECK): a command, run with the target
 * in its environment; exit status 0 within the timeout passes. It is killed
 * (SIGKILL, by its pid) at the timeout. Environment: NFQLB_SERVICE,
 * NFQLB_TARGET_FWMARK, NFQLB_TARGET_MODE, NFQLB_TARGET_ADDRESSES (the
 * target's own, space-separated), NFQLB_CHECK_ADDRESS / NFQLB_CHECK_PORT /
 * NFQLB_CHECK_MARK (where the built-in checks would go: the VIP with the
 * fwmark for DSR), NFQLB_CHECK_FAMILY (4 or 6). A command that must be
 * routed as the target's traffic sets the mark itself.
 */
import type { HealthConfig } from "../config/types.ts";
import type { CheckContext, Probe } from "./types.ts";

/** The environment of an exec check. */
export function execEnv(p: Probe, ctx: CheckContext): Record<string, string> {
  const t = ctx.target;
  return {
    NFQLB_SERVICE: t.service,
    NFQLB_TARGET_FWMARK: String(t.fwmark),
    NFQLB_TARGET_MODE: t.mode,
    NFQLB_TARGET_ADDRESSES: t.addresses.join(" "),
    NFQLB_CHECK_ADDRESS: p.address,
    NFQLB_CHECK_PORT: p.port === null ? "" : String(p.port),
    NFQLB_CHECK_MARK: String(p.mark),
    NFQLB_CHECK_FAMILY: String(p.family),
  };
}

/** The exec checker. */
export async function checkExec(p: Probe, h: HealthConfig, ctx: CheckContext): Promise<string | null> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(h.command[0], {
      args: h.command.slice(1),
      env: execEnv(p, ctx),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    return `exec ${h.command[0]}: ${e instanceof Error ? e.message : String(e)}`;
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, Math.max(0, ctx.deadline - performance.now()));
  try {
    const [st, err] = await Promise.all([child.status, new Response(child.stderr).text()]);
    if (timedOut) return "exec: timeout (killed)";
    if (st.success) return null;
    const last = err.trim().split("\n").pop()?.slice(0, 200) ?? "";
    return `exec: ${st.signal ? `signal ${st.signal}` : `exit ${st.code}`}${last ? `: ${last}` : ""}`;
  } finally {
    clearTimeout(timer);
  }
}
