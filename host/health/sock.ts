/**
 * Non-blocking BSD sockets through libc (Deno FFI) for the health checks,
 * and one poller that waits for all of them.
 *
 * Why libc: a DSR target's check must leave with the target's fwmark on the
 * socket (SO_MARK), so that the host's policy routing sends it where the
 * target's client traffic goes (docs/health.md). Deno's sockets cannot carry
 * a mark, nor open a raw ICMP socket. The sockets are non-blocking, so no
 * call ever holds the event loop; readiness is asked with one poll(2) of
 * every socket in flight every {@link TICK_MS} while any is (a sync call with
 * a zero timeout: no thread per check, no wakeup when nothing is in flight),
 * and by {@link Poller.flush} right after the scheduler started its checks.
 * What every check would build again (the sockaddr of a probe, the option
 * values) is built once: at 1000 checks a second the per-check work is the
 * syscalls. libc is opened on first use.
 */
import { parseIPv4, parseIPv6 } from "../../core/inet.ts";

const AF_INET = 2, AF_INET6 = 10;
/** Socket types, with SOCK_NONBLOCK | SOCK_CLOEXEC added. */
export const SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_RAW = 3;
const SOCK_NONBLOCK = 0o4000, SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1, SO_ERROR = 4, SO_LINGER = 13, SO_MARK = 36;
/** poll(2) events. */
export const POLLIN = 0x1, POLLOUT = 0x4;
/** poll(2) revents of a failed or closed socket. */
export const POLLERR = 0x8, POLLHUP = 0x10;
const MSG_DONTWAIT = 0x40, MSG_NOSIGNAL = 0x4000;
/** errno values the checks meet. */
export const EAGAIN = 11, EINPROGRESS = 115;

/** How often the sockets in flight are polled, ms: the granularity of a check's measured latency. */
export const TICK_MS = 10;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

let lib: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | undefined;

function c(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  return lib;
}

function errno(): number {
  const p = c().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  13: "EACCES",
  22: "EINVAL",
  24: "EMFILE",
  32: "EPIPE",
  90: "EMSGSIZE",
  97: "EAFNOSUPPORT",
  99: "EADDRNOTAVAIL",
  100: "ENETDOWN",
  101: "ENETUNREACH",
  104: "ECONNRESET",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  112: "EHOSTDOWN",
  113: "EHOSTUNREACH",
};

/** The symbolic name of an errno (`ECONNREFUSED`), or `errno N`. */
export function errnoName(n: number): string {
  return ERRNO_NAMES[n] ?? `errno ${n}`;
}

/** A failed socket call, with its errno. */
export class SockError extends Error {
  /** errno of the failed call. */
  readonly errno: number;
  constructor(what: string, err: number) {
    super(`${what}: ${errnoName(err)}`);
    this.errno = err;
  }
}

/** The address family of an IP address text: 4 or 6. */
export function familyOf(addr: string): 4 | 6 {
  return addr.includes(":") ? 6 : 4;
}

/** Cached sockaddrs, by address and port; cleared when it grows past {@link SOCKADDR_CACHE} (reloads add). */
const sockaddrs = new Map<string, Map<number, Uint8Array<ArrayBuffer>>>();
let cachedSockaddrs = 0;
const SOCKADDR_CACHE = 65536;

/** {@link sockaddr}, built once per address and port (do not modify the result). */
export function cachedSockaddr(addr: string, port: number): Uint8Array<ArrayBuffer> {
  let byPort = sockaddrs.get(addr);
  let sa = byPort?.get(port);
  if (sa) return sa;
  if (cachedSockaddrs >= SOCKADDR_CACHE) {
    sockaddrs.clear();
    cachedSockaddrs = 0;
    byPort = undefined;
  }
  sa = sockaddr(addr, port);
  if (!byPort) sockaddrs.set(addr, byPort = new Map());
  byPort.set(port, sa);
  cachedSockaddrs++;
  return sa;
}

/** A sockaddr of family AF_UNSPEC (0): connect(2) to it dissolves a TCP connection. */
const UNSPEC = new Uint8Array(16);

/** The option values the checks set, built once. */
const LINGER_ZERO = new Uint8Array(new Int32Array([1, 0]).buffer);
const intOpt = new Uint32Array(1), intOptBytes = new Uint8Array(intOpt.buffer);
const lenOpt = new Uint32Array(1), lenOptBytes = new Uint8Array(lenOpt.buffer);

/** sockaddr_in / sockaddr_in6 of `addr`:`port`. */
export function sockaddr(addr: string, port: number): Uint8Array<ArrayBuffer> {
  if (familyOf(addr) === 4) {
    const b = parseIPv4(addr);
    if (!b) throw new Error(`not an IPv4 address: ${addr}`);
    const sa = new Uint8Array(16);
    const v = new DataView(sa.buffer);
    v.setUint16(0, AF_INET, true);
    v.setUint16(2, port);
    sa.set(b, 4);
    return sa;
  }
  const b = parseIPv6(addr);
  if (!b) throw new Error(`not an IPv6 address: ${addr}`);
  const sa = new Uint8Array(28);
  const v = new DataView(sa.buffer);
  v.setUint16(0, AF_INET6, true);
  v.setUint16(2, port);
  sa.set(b, 8);
  return sa;
}

/** A non-blocking socket; close it (once) in a finally. */
export class Sock {
  /** The descriptor. */
  readonly fd: number;
  /** Its SO_MARK (0: none set). */
  mark = 0;
  #closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** socket(2) of the family of `addr`, non-blocking and close-on-exec; `mark` > 0 sets SO_MARK. */
  static open(addr: string, type: number, proto = 0, mark = 0): Sock {
    const fd = c().socket(
      familyOf(addr) === 4 ? AF_INET : AF_INET6,
      type | SOCK_NONBLOCK | SOCK_CLOEXEC,
      proto,
    );
    if (fd < 0) throw new SockError("socket", errno());
    const s = new Sock(fd);
    try {
      if (mark > 0) s.setMark(mark);
    } catch (e) {
      s.close();
      throw e;
    }
    return s;
  }

  #opt(name: number, val: Uint8Array<ArrayBuffer>, what: string): void {
    if (c().setsockopt(this.fd, SOL_SOCKET, name, val, val.length) < 0) {
      throw new SockError(`setsockopt ${what}`, errno());
    }
  }

  /** Sets SO_MARK (0 clears it). */
  setMark(mark: number): void {
    intOpt[0] = mark;
    this.#opt(SO_MARK, intOptBytes, "SO_MARK");
    this.mark = mark;
  }

  /**
   * Dissolves the connection (connect(2) to AF_UNSPEC: the kernel's
   * tcp_disconnect, a reset when it was established) and clears the error
   * that leaves, so the socket can connect again: a tcp check reuses its
   * socket instead of a socket(2) and a close(2) per check. False when the
   * kernel refused (then close it).
   */
  disconnect(): boolean {
    if (c().connect(this.fd, UNSPEC, UNSPEC.length) !== 0) return false;
    this.pendingError();
    return true;
  }

  /** SO_LINGER {on, 0}: close() resets the connection, so the host keeps no TIME_WAIT per check. */
  lingerZero(): this {
    this.#opt(SO_LINGER, LINGER_ZERO, "SO_LINGER");
    return this;
  }

  /** connect(2): 0 when done, EINPROGRESS when under way; throws on any other failure. */
  connect(addr: string, port: number): number {
    const sa = cachedSockaddr(addr, port);
    if (c().connect(this.fd, sa, sa.length) === 0) return 0;
    const e = errno();
    if (e === EINPROGRESS) return e;
    throw new SockError("connect", e);
  }

  /** SO_ERROR: the pending error of the socket (0: none), which also clears it. */
  pendingError(): number {
    intOpt[0] = 0;
    lenOpt[0] = 4;
    if (c().getsockopt(this.fd, SOL_SOCKET, SO_ERROR, intOptBytes, lenOptBytes) < 0) return errno();
    return intOpt[0];
  }

  /** send(2) without blocking: the bytes sent; throws on failure (EAGAIN included: a check sends little). */
  send(data: Uint8Array<ArrayBuffer>): number {
    const n = Number(c().send(this.fd, data, BigInt(data.length), MSG_DONTWAIT | MSG_NOSIGNAL));
    if (n < 0) throw new SockError("send", errno());
    return n;
  }

  /** recv(2) without blocking into `buf`: the byte count (0 = EOF), or -1 when nothing is there yet. */
  recv(buf: Uint8Array<ArrayBuffer>): number {
    const n = Number(c().recv(this.fd, buf, BigInt(buf.length), MSG_DONTWAIT));
    if (n >= 0) return n;
    const e = errno();
    if (e === EAGAIN) return -1;
    throw new SockError("recv", e);
  }

  /** close(2), once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    c().close(this.fd);
  }
}

/** Called with a socket's revents, or 0 when its deadline passed first. */
export type Ready = (revents: number) => void;

interface Wait {
  fd: number;
  events: number;
  deadline: number;
  ready: Ready;
}

/**
 * Waits for readiness of many sockets with one poll(2) per tick. A wait
 * ends with the socket's revents (POLLERR/POLLHUP included), or 0 when its
 * deadline (performance.now() ms) passed first.
 */
export class Poller {
  #waits: Wait[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #buf = new Uint8Array(0);
  #view = new DataView(this.#buf.buffer);

  /** Calls `ready` once, when `fd` is ready for `events` or `deadline` has passed (no promise: the tcp check's path). */
  watch(fd: number, events: number, deadline: number, ready: Ready): void {
    this.#waits.push({ fd, events, deadline, ready });
    this.#timer ??= setTimeout(() => this.#tick(), TICK_MS);
  }

  /** Waits until `fd` is ready for `events` or `deadline` passes: its revents, 0 at the deadline. */
  wait(fd: number, events: number, deadline: number): Promise<number> {
    return new Promise((resolve) => this.watch(fd, events, deadline, resolve));
  }

  /** Sockets waited for now. */
  get inFlight(): number {
    return this.#waits.length;
  }

  /**
   * Polls now (the scheduler calls it after starting its checks: a check
   * that is done already, as on a near target, ends in this wakeup, not in
   * one more 10 ms later); the timer stops when nothing is left.
   */
  flush(): void {
    if (this.#waits.length === 0) return;
    this.#poll();
    if (this.#waits.length === 0 && this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  #tick(): void {
    this.#timer = undefined;
    this.#poll();
    if (this.#waits.length > 0) this.#timer ??= setTimeout(() => this.#tick(), TICK_MS);
  }

  #poll(): void {
    const waits = this.#waits;
    const n = waits.length;
    if (n === 0) return;
    if (this.#buf.length < n * 8) {
      this.#buf = new Uint8Array(Math.max(n, 64) * 8 * 2);
      this.#view = new DataView(this.#buf.buffer);
    }
    const v = this.#view;
    for (let i = 0; i < n; i++) {
      v.setInt32(i * 8, waits[i].fd, true);
      v.setInt16(i * 8 + 4, waits[i].events, true);
      v.setInt16(i * 8 + 6, 0, true);
    }
    const r = c().poll(this.#buf, BigInt(n), 0);
    const now = performance.now();
    // waits added by the calls below (a next step of the same check) go to a fresh list
    this.#waits = [];
    const keep: Wait[] = [];
    for (let i = 0; i < n; i++) {
      const w = waits[i];
      const revents = r > 0 ? v.getInt16(i * 8 + 6, true) & (w.events | POLLERR | POLLHUP) : 0;
      if (revents !== 0) call(w.ready, revents);
      else if (now >= w.deadline) call(w.ready, 0);
      else keep.push(w);
    }
    this.#waits = keep.length === 0 ? this.#waits : keep.concat(this.#waits);
  }

  /** Ends every wait as timed out and stops ticking. */
  close(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const waits = this.#waits;
    this.#waits = [];
    for (const w of waits) call(w.ready, 0);
  }
}

/** A wait's callback; one that throws must not stop the others (the checks catch their own). */
function call(ready: Ready, revents: number): void {
  try {
    ready(revents);
  } catch { /* a check's own bug (the checks catch their errors): the other sockets' waits go on */ }
}
