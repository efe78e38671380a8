/**
 * systemd's readiness protocol (sd_notify(3)) for `nfqlb run` under
 * `Type=notify`: `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=…` and
 * `WATCHDOG=1`, each one datagram to the AF_UNIX socket named by
 * `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
 *
 * Deno has no way to send a unix datagram without binding a socket of its
 * own (and that is behind --unstable-net), so the datagram is sent with the
 * C library through FFI: socket, sendto, close. Why not `systemd-notify`:
 * it sends from its own pid, and systemd takes notifications only from the
 * service's main pid (NotifyAccess=main, the default), or with `all` only
 * while the sender still exists to be attributed: a short-lived helper races
 * that. Sent from this process, every message is ours, with no process per
 * watchdog tick. libc is opened on first use; without NOTIFY_SOCKET nothing
 * is opened or sent.
 *
 * A send never blocks (MSG_DONTWAIT): a unix datagram socket whose reader
 * lags holds only `net.unix.max_dgram_qlen` (10) messages, and a blocking
 * sendto would then stop the agent, and with it the supervision of the
 * dataplane, until systemd reads. A message that does not fit is dropped and
 * reported (EAGAIN); the next one says the state again.
 */

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const MSG_DONTWAIT = 0x40;
const CLOCK_MONOTONIC = 1;
/** sizeof(sockaddr_un.sun_path). */
const SUN_PATH = 108;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

let libc: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] | undefined;

function c(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  libc ??= Deno.dlopen("libc.so.6", SYMBOLS).symbols;
  return libc;
}

function errno(): number {
  const p = c().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/**
 * The `sockaddr_un` of a NOTIFY_SOCKET value and its length: a path (with
 * its NUL), or `@name` as an abstract address (a leading NUL, no trailing
 * one). Undefined when it is neither or too long.
 */
export function notifyAddress(socket: string): { addr: Uint8Array<ArrayBuffer>; len: number } | undefined {
  const abstract = socket.startsWith("@");
  if (!abstract && !socket.startsWith("/")) return undefined;
  const name = new TextEncoder().encode(abstract ? socket.slice(1) : socket);
  if (name.length === 0 || name.length + 1 > SUN_PATH) return undefined;
  const addr = new Uint8Array(2 + SUN_PATH);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(name, abstract ? 3 : 2);
  // abstract: the leading NUL and the name, nothing after; path: the name and its NUL
  return { addr, len: 2 + 1 + name.length };
}

/** CLOCK_MONOTONIC in µs (what `RELOADING=1` carries as MONOTONIC_USEC). */
export function monotonicUsec(): bigint {
  const ts = new BigInt64Array(2);
  if (c().clock_gettime(CLOCK_MONOTONIC, ts) !== 0) return 0n;
  return ts[0] * 1_000_000n + ts[1] / 1000n;
}

/**
 * A connection to systemd's notify socket.
 *
 * @example
 * ```ts
 * const sd = SdNotify.fromEnv();   // undefined when not run by systemd (Type=notify)
 * sd?.send("READY=1\nSTATUS=serving host.yaml");
 * ```
 */
export class SdNotify {
  /** The NOTIFY_SOCKET value. */
  readonly socket: string;
  readonly #addr: Uint8Array<ArrayBuffer>;
  readonly #len: number;
  #watchdog: ReturnType<typeof setInterval> | undefined;
  /** The errno of the last failed send (0: none). */
  lastErrno = 0;

  private constructor(socket: string, a: { addr: Uint8Array<ArrayBuffer>; len: number }) {
    this.socket = socket;
    this.#addr = a.addr;
    this.#len = a.len;
  }

  /**
   * From `$NOTIFY_SOCKET`; undefined when it is not set.
   * @throws Error naming the value when it is set but not a usable address
   */
  static fromEnv(value: string | undefined = Deno.env.get("NOTIFY_SOCKET")): SdNotify | undefined {
    if (value === undefined || value === "") return undefined;
    const a = notifyAddress(value);
    if (!a) {
      throw new Error(`NOTIFY_SOCKET=${value}: expected an absolute path or @name of at most 107 bytes`);
    }
    return new SdNotify(value, a);
  }

  /** Sends one message (`KEY=value` lines); false when it could not be sent ({@link lastErrno}). */
  send(message: string): boolean {
    const msg = new TextEncoder().encode(message);
    const fd = c().socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      this.lastErrno = errno();
      return false;
    }
    try {
      const n = c().sendto(fd, msg, BigInt(msg.length), MSG_NOSIGNAL | MSG_DONTWAIT, this.#addr, this.#len);
      if (Number(n) !== msg.length) {
        this.lastErrno = errno();
        return false;
      }
      this.lastErrno = 0;
      return true;
    } finally {
      c().close(fd);
    }
  }

  /**
   * Starts `WATCHDOG=1` every half of `$WATCHDOG_USEC` when systemd asked for
   * it (and WATCHDOG_PID, when set, is this process). Returns the interval in
   * ms, or 0 when there is no watchdog. The timer runs on the event loop, so
   * a stuck agent stops petting it and systemd restarts the service.
   */
  startWatchdog(env: { usec?: string; pid?: string } = {
    usec: Deno.env.get("WATCHDOG_USEC"),
    pid: Deno.env.get("WATCHDOG_PID"),
  }): number {
    const usec = Number(env.usec ?? "");
    if (!Number.isSafeInteger(usec) || usec <= 0) return 0;
    if (env.pid !== undefined && env.pid !== "" && Number(env.pid) !== Deno.pid) return 0;
    const ms = Math.max(1, Math.floor(usec / 2000));
    this.stopWatchdog();
    this.send("WATCHDOG=1");
    this.#watchdog = setInterval(() => this.send("WATCHDOG=1"), ms);
    return ms;
  }

  /** Stops the watchdog timer. */
  stopWatchdog(): void {
    if (this.#watchdog !== undefined) clearInterval(this.#watchdog);
    this.#watchdog = undefined;
  }
}
