/**
 * A NOTIFY_SOCKET for tests: an AF_UNIX datagram socket bound to a path,
 * which receives what a program sends to systemd (`READY=1`, `STATUS=…`) as
 * systemd's own socket would. Reads never block; like systemd, it reads what
 * arrives every 20 ms (`drainEveryMs`), so a sender never finds it full
 * unless a test wants that ({@link NotifySocket.bind} with 0);
 * {@link NotifySocket.waitFor} polls, bounded in time. The socket is a path, not an abstract name, so a
 * process in another network namespace reaches it too (abstract names are
 * per network namespace).
 */

const AF_UNIX = 1, SOCK_DGRAM = 2, SOCK_NONBLOCK = 0o4000, SOCK_CLOEXEC = 0o2000000, MSG_DONTWAIT = 0x40;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
const c = () => (lib ??= Deno.dlopen("libc.so.6", SYMBOLS)).symbols;

/** A bound notify socket and the messages it got. */
export class NotifySocket {
  /** Its path (the NOTIFY_SOCKET value). */
  readonly path: string;
  readonly #fd: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Every message received so far, in order. */
  readonly messages: string[] = [];

  private constructor(path: string, fd: number, drainEveryMs: number) {
    this.path = path;
    this.#fd = fd;
    if (drainEveryMs > 0) this.#timer = setInterval(() => this.drain(), drainEveryMs);
  }

  /** Binds a new socket at `path` (which must not exist; at most 107 bytes); 0: no reads but the test's. */
  static bind(path: string, drainEveryMs = 20): NotifySocket {
    const name = new TextEncoder().encode(path);
    if (name.length > 107) throw new Error(`${path}: too long for a unix socket`);
    const sa = new Uint8Array(110);
    new DataView(sa.buffer).setUint16(0, AF_UNIX, true);
    sa.set(name, 2);
    const fd = c().socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error("socket(AF_UNIX) failed");
    if (c().bind(fd, sa, 2 + name.length + 1) !== 0) {
      c().close(fd);
      throw new Error(`bind ${path} failed`);
    }
    return new NotifySocket(path, fd, drainEveryMs);
  }

  /** Reads every datagram waiting (bounded); returns the new ones. */
  drain(): string[] {
    const buf = new Uint8Array(4096);
    const got: string[] = [];
    for (let i = 0; i < 1000; i++) {
      const n = Number(c().recv(this.#fd, buf, BigInt(buf.length), MSG_DONTWAIT));
      if (n < 0) break;
      got.push(new TextDecoder().decode(buf.subarray(0, n)));
    }
    this.messages.push(...got);
    return got;
  }

  /** The first message (already received or arriving within `timeoutMs`) for which `pred` holds. */
  async waitFor(pred: (m: string) => boolean, timeoutMs: number): Promise<string | undefined> {
    const end = Date.now() + timeoutMs;
    for (let i = 0; i < Math.ceil(timeoutMs / 20) + 1; i++) {
      this.drain();
      const hit = this.messages.find(pred);
      if (hit !== undefined) return hit;
      if (Date.now() >= end) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    return undefined;
  }

  /** Closes the socket and removes its file. */
  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    c().close(this.#fd);
    try {
      Deno.removeSync(this.path);
    } catch { /* gone */ }
  }
}
