/**
 * The tcp check (keepalived's TCP_CHECK): a connect that completes within
 * the timeout passes. The connection is then reset (SO_LINGER 0), so
 * neither end keeps a TIME_WAIT per check: at 1000 targets a second that
 * would be 60 000 sockets on the host.
 */
import type { HealthConfig } from "../config/types.ts";
import { POLLOUT, Sock, SOCK_STREAM, SockError } from "./sock.ts";
import type { CheckContext, Probe } from "./types.ts";

/**
 * Connects to the probe's address and port (with its mark); resolves with a
 * connected socket the caller owns, or throws the failure as one line.
 */
export async function connectTcp(p: Probe, ctx: CheckContext): Promise<Sock> {
  const s = Sock.open(p.address, SOCK_STREAM, 0, p.mark);
  try {
    s.lingerZero();
    if (s.connect(p.address, p.port!) !== 0) {
      const rev = await ctx.poller.wait(s.fd, POLLOUT, ctx.deadline);
      if (rev === 0) throw new Error("connect: timeout");
      const err = s.pendingError();
      if (err !== 0) throw new SockError("connect", err);
    }
    return s;
  } catch (e) {
    s.close();
    throw e;
  }
}

/** The tcp checker. */
export async function checkTcp(p: Probe, _h: HealthConfig, ctx: CheckContext): Promise<string | null> {
  try {
    (await connectTcp(p, ctx)).close();
    return null;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}
