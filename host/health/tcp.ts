/**
 * The tcp check (keepalived's TCP_CHECK): a connect that completes within
 * the timeout passes. The connection is then reset (SO_LINGER 0), so
 * neither end keeps a TIME_WAIT per check: at 1000 targets a second that
 * would be 60 000 sockets on the host.
 *
 * The check runs on callbacks, not promises: at 1000 targets a second its
 * own cost is its syscalls. Its socket is reused: after the check it is
 * dissolved (connect to AF_UNSPEC, which resets an established connection
 * as close with SO_LINGER 0 does) and kept for the next check of its family
 * (SO_MARK set again when the next target's differs). So a check is a
 * connect, its share of one poll, the dissolving connect and SO_ERROR,
 * where a fresh socket took socket, SO_LINGER, connect, poll and close and
 * the kernel's socket setup and teardown.
 */
import { errnoName, type Poller, POLLERR, POLLHUP, POLLOUT, Sock, SOCK_STREAM } from "./sock.ts";
import type { Probe } from "./types.ts";

/** Idle sockets kept for reuse, per family: at most {@link IDLE_MAX} each (about the checks in flight at once). */
const idle: Record<4 | 6, Sock[]> = { 4: [], 6: [] };
const IDLE_MAX = 64;

/** A new socket for the probe (its mark, SO_LINGER 0). */
function freshSock(p: Probe): Sock {
  const s = Sock.open(p.address, SOCK_STREAM, 0, p.mark);
  try {
    return s.lingerZero();
  } catch (e) {
    s.close();
    throw e;
  }
}

/** An idle socket of the probe's family with its mark, or a fresh one. */
function takeSock(p: Probe): Sock {
  const s = idle[p.family].pop();
  if (!s) return freshSock(p);
  if (s.mark !== p.mark) {
    try {
      s.setMark(p.mark);
    } catch (e) {
      s.close();
      throw e;
    }
  }
  return s;
}

/** Puts a socket used by a tcp check back (dissolved), or closes it when it cannot be reused or enough are kept. */
function giveSock(s: Sock, fam: 4 | 6): void {
  const pool = idle[fam];
  if (pool.length < IDLE_MAX && s.disconnect()) pool.push(s);
  else s.close();
}

/** Closes the idle sockets (the monitor's stop, the end of `nfqlb health`). */
export function closeIdleSockets(): void {
  for (const fam of [4, 6] as const) {
    for (const s of idle[fam]) s.close();
    idle[fam] = [];
  }
}

/** Called once: a connected socket the callee owns (err null), or why the connect failed (sock null). */
export type Connected = (sock: Sock | null, err: string | null) => void;

/**
 * Connects to the probe's address and port (with its mark, SO_LINGER 0);
 * `done` is called once, maybe before this returns.
 */
export function startConnect(
  p: Probe,
  deadline: number,
  poller: Poller,
  done: Connected,
  reuse = false,
): void {
  let s: Sock | undefined, connected = false;
  try {
    s = reuse ? takeSock(p) : freshSock(p);
    connected = s.connect(p.address, p.port!) === 0;
  } catch (e) {
    s?.close(); // a socket whose connect failed at once is not reused: its state is unknown
    done(null, e instanceof Error ? e.message : String(e));
    return;
  }
  // done is called outside the try: an exception of the caller's is not a failed connect
  if (connected) return done(s, null);
  const sock = s;
  poller.watch(sock.fd, POLLOUT, deadline, (rev) => {
    if (rev !== 0 && (rev & (POLLERR | POLLHUP)) === 0) return done(sock, null);
    let err = "connect: timeout";
    if (rev !== 0) {
      const e = sock.pendingError();
      err = e !== 0 ? `connect: ${errnoName(e)}` : "connect: hangup";
    }
    if (reuse) giveSock(sock, p.family);
    else sock.close();
    done(null, err);
  });
}

/** Connects as {@link startConnect} (a fresh socket); resolves with it connected (the caller closes it) or throws why not. */
export function connectTcp(p: Probe, deadline: number, poller: Poller): Promise<Sock> {
  return new Promise((resolve, reject) =>
    startConnect(p, deadline, poller, (s, err) => (s ? resolve(s) : reject(new Error(err!))))
  );
}

/** The tcp check of one probe: `done(null)` when the connect completed in time, else `done(why)`. */
export function tcpProbe(
  p: Probe,
  deadline: number,
  poller: Poller,
  done: (err: string | null) => void,
): void {
  startConnect(p, deadline, poller, (s, err) => {
    if (s) giveSock(s, p.family);
    done(err);
  }, true);
}
