/**
 * Blocking BSD sockets through libc (Deno FFI), for the traffic agent's
 * client side: Deno's own APIs cannot bind a TCP client to a source port,
 * close with RST, connect a UDP socket or open raw sockets. Every blocking
 * call is bounded by SO_RCVTIMEO/SO_SNDTIMEO (connect honours SO_SNDTIMEO).
 * libc is opened on first use, so importing this module costs nothing.
 */
import { familyOf, ipv4Bytes, ipv6Bytes } from "./packets.ts";

/** Address families, socket types and protocols (Linux values). */
export const AF_INET = 2, AF_INET6 = 10;
/** Socket types. */
export const SOCK_STREAM = 1, SOCK_DGRAM = 2, SOCK_RAW = 3;
/** Protocol numbers, from the one table. */
export { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP } from "../../core/ip_protocols.ts";
/** A raw socket that sends whole IP packets (header included). */
export const IPPROTO_RAW = 255;
/** recv(2) flag: do not block. */
export const MSG_DONTWAIT = 0x40;
/** errno values the agent tells apart. */
export const EAGAIN = 11, EINTR = 4;
const POLLIN = 1;
const SOL_SOCKET = 1,
  SO_RCVBUF = 8,
  SO_RCVBUFFORCE = 33,
  SO_REUSEADDR = 2,
  SO_LINGER = 13,
  SO_RCVTIMEO = 20,
  SO_SNDTIMEO = 21,
  SO_MARK = 36;

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  recvfrom: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"], result: "isize" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;

function c(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

/** The calling thread's errno. */
export function errno(): number {
  const p = c().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32();
}

/** A socket error with the errno of the failed call. */
export class SocketError extends Error {
  /** errno of the failed call. */
  readonly errno: number;
  constructor(what: string, err: number) {
    super(`${what}: errno ${err}`);
    this.errno = err;
  }
}

/** sockaddr_in / sockaddr_in6 bytes for `addr` and `port`. */
export function sockaddr(addr: string, port: number): Uint8Array<ArrayBuffer> {
  if (familyOf(addr) === 4) {
    const sa = new Uint8Array(16);
    const v = new DataView(sa.buffer);
    v.setUint16(0, AF_INET, true);
    v.setUint16(2, port);
    sa.set(ipv4Bytes(addr), 4);
    return sa;
  }
  const sa = new Uint8Array(28);
  const v = new DataView(sa.buffer);
  v.setUint16(0, AF_INET6, true);
  v.setUint16(2, port);
  sa.set(ipv6Bytes(addr), 8);
  return sa;
}

/** A socket file descriptor with the few operations the agent needs. */
export class Socket {
  readonly fd: number;
  #closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /** socket(2); `family` is taken from an address of the wanted family. */
  static open(likeAddr: string, type: number, proto = 0): Socket {
    const fd = c().socket(familyOf(likeAddr) === 4 ? AF_INET : AF_INET6, type, proto);
    if (fd < 0) throw new SocketError("socket", errno());
    return new Socket(fd);
  }

  #opt(level: number, name: number, val: Uint8Array<ArrayBuffer>): void {
    if (c().setsockopt(this.fd, level, name, val, val.length) < 0) {
      throw new SocketError(`setsockopt ${level}/${name}`, errno());
    }
  }

  /** SO_REUSEADDR on. */
  reuseAddr(): this {
    this.#opt(SOL_SOCKET, SO_REUSEADDR, new Uint8Array(new Int32Array([1]).buffer));
    return this;
  }

  /** SO_LINGER {on, 0}: close() sends RST, so no end keeps the 4-tuple. */
  lingerZero(): this {
    this.#opt(SOL_SOCKET, SO_LINGER, new Uint8Array(new Int32Array([1, 0]).buffer));
    return this;
  }

  /** A receive buffer of `bytes` (SO_RCVBUFFORCE as root, else SO_RCVBUF, capped by net.core.rmem_max). */
  rcvbuf(bytes: number): this {
    const v = new Uint8Array(new Int32Array([bytes]).buffer);
    if (c().setsockopt(this.fd, SOL_SOCKET, SO_RCVBUFFORCE, v, 4) < 0) this.#opt(SOL_SOCKET, SO_RCVBUF, v);
    return this;
  }

  /** SO_MARK: the fwmark of what this socket sends (policy routing on the sender). */
  mark(fwmark: number): this {
    this.#opt(SOL_SOCKET, SO_MARK, new Uint8Array(new Uint32Array([fwmark]).buffer));
    return this;
  }

  /** Receive and send (and connect) timeouts. */
  timeouts(ms: number): this {
    const tv = new Uint8Array(
      new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt((ms % 1000) * 1000)]).buffer,
    );
    this.#opt(SOL_SOCKET, SO_RCVTIMEO, tv);
    this.#opt(SOL_SOCKET, SO_SNDTIMEO, tv);
    return this;
  }

  /** bind(2) to addr:port. */
  bind(addr: string, port: number): this {
    const sa = sockaddr(addr, port);
    if (c().bind(this.fd, sa, sa.length) < 0) throw new SocketError(`bind ${addr}:${port}`, errno());
    return this;
  }

  /** connect(2); false (with `lastErrno`) on failure or timeout. */
  connect(addr: string, port: number): boolean {
    const sa = sockaddr(addr, port);
    const ok = c().connect(this.fd, sa, sa.length) === 0;
    if (!ok) this.lastErrno = errno();
    return ok;
  }

  /** errno of the last failed connect/send/recv. */
  lastErrno = 0;

  /** send(2) on a connected socket; false on failure. */
  send(data: Uint8Array<ArrayBuffer>): boolean {
    const n = Number(c().send(this.fd, data, BigInt(data.length), 0));
    if (n !== data.length) this.lastErrno = errno();
    return n === data.length;
  }

  /** sendto(2); false on failure. */
  sendTo(data: Uint8Array<ArrayBuffer>, addr: string, port = 0): boolean {
    const sa = sockaddr(addr, port);
    const n = Number(c().sendto(this.fd, data, BigInt(data.length), 0, sa, sa.length));
    if (n !== data.length) this.lastErrno = errno();
    return n === data.length;
  }

  /** recv(2): the bytes, or null on timeout/error (0 bytes = EOF). */
  recv(max = 2048): Uint8Array | null {
    const buf = new Uint8Array(max);
    const n = Number(c().recv(this.fd, buf, BigInt(max), 0));
    if (n < 0) {
      this.lastErrno = errno();
      return null;
    }
    return buf.subarray(0, n);
  }

  /**
   * recv(2) into `buf` with `flags` (e.g. {@link MSG_DONTWAIT}): the byte
   * count, or -1 with `lastErrno` set.
   */
  recvInto(buf: Uint8Array<ArrayBuffer>, flags = 0): number {
    const n = Number(c().recv(this.fd, buf, BigInt(buf.length), flags));
    if (n < 0) this.lastErrno = errno();
    return n;
  }

  /**
   * recvfrom(2) into `buf`, the sender's address into `from` (128 bytes:
   * sockaddr_storage) and its length into fromLen[0]: the byte count, or -1
   * with `lastErrno` set.
   */
  recvFrom(
    buf: Uint8Array<ArrayBuffer>,
    from: Uint8Array<ArrayBuffer>,
    fromLen: Uint32Array,
    flags = 0,
  ): number {
    fromLen[0] = from.length;
    const n = Number(
      c().recvfrom(this.fd, buf, BigInt(buf.length), flags, from, new Uint8Array(fromLen.buffer)),
    );
    if (n < 0) this.lastErrno = errno();
    return n;
  }

  /** sendto(2) to a raw sockaddr (`to`, its first `toLen` bytes); false on failure. */
  sendToAddr(data: Uint8Array<ArrayBuffer>, to: Uint8Array<ArrayBuffer>, toLen: number, flags = 0): boolean {
    const n = Number(c().sendto(this.fd, data, BigInt(data.length), flags, to, toLen));
    if (n !== data.length) this.lastErrno = errno();
    return n === data.length;
  }

  /** close(2), once. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    c().close(this.fd);
  }
}

/**
 * poll(2) for input on `fds`, at most `timeoutMs`: per fd whether it is
 * readable (or has an error to report). A failed or interrupted poll reads
 * as nothing ready.
 */
export function pollIn(
  fds: readonly number[],
  timeoutMs: number,
  ready: Uint8Array = new Uint8Array(fds.length),
): Uint8Array {
  const pfd = new Int32Array(fds.length * 2); // struct pollfd { int fd; short events; short revents; }
  const view = new Int16Array(pfd.buffer);
  fds.forEach((fd, i) => {
    pfd[2 * i] = fd;
    view[4 * i + 2] = POLLIN;
  });
  const n = c().poll(new Uint8Array(pfd.buffer), BigInt(fds.length), Math.max(0, Math.floor(timeoutMs)));
  for (let i = 0; i < fds.length; i++) ready[i] = n > 0 && view[4 * i + 3] !== 0 ? 1 : 0;
  return ready;
}
