/**
 * Socket addresses as upstream writes them: `unix:<name>` (a Linux abstract
 * socket), `tcp:<ipv4>:<port>`, `tcp:[<ipv6>]:<port>`.
 */
import { errorText, NfqlbError } from "./errors.ts";
import { parseIPv4, parseIPv6 } from "./inet.ts";

/** A parsed address, ready for Deno.connect / Deno.listen. */
export type SocketAddress =
  | { transport: "unix"; path: string }
  | { transport: "tcp"; hostname: string; port: number };

/** Parses an upstream address string; undefined when invalid. */
export function parseSocketAddress(s: string): SocketAddress | undefined {
  if (s.startsWith("unix:")) {
    const name = s.slice(5);
    if (name.length === 0 || name.length > 107) return undefined;
    return { transport: "unix", path: "\0" + name };
  }
  if (!s.startsWith("tcp:")) return undefined;
  const rest = s.slice(4);
  const colon = rest.lastIndexOf(":");
  if (colon < 0) return undefined;
  const host = rest.slice(0, colon), port = rest.slice(colon + 1);
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) > 65535) return undefined;
  if (host.startsWith("[") && host.endsWith("]")) {
    const inner = host.slice(1, -1);
    if (!parseIPv6(inner.replace(/%[A-Za-z0-9_.-]+$/, ""))) return undefined;
    return { transport: "tcp", hostname: inner, port: Number(port) };
  }
  if (!parseIPv4(host)) return undefined;
  return { transport: "tcp", hostname: host, port: Number(port) };
}

/** Connects to a parsed address (the caller words the failure: clients print different texts). */
export function connectTo(addr: SocketAddress): Promise<Deno.Conn> {
  return addr.transport === "unix"
    ? Deno.connect({ transport: "unix", path: addr.path })
    : Deno.connect({ transport: "tcp", hostname: addr.hostname, port: addr.port });
}

/**
 * Listens on an upstream address string for `what` ("Flow server", "Trace
 * server"), with upstream's error texts.
 * @throws NfqlbError `Failed to parse address [<a>]` or `<what> bind: <reason>`
 */
export function listenAt(address: string, what: string): Deno.Listener {
  const addr = parseSocketAddress(address);
  if (!addr) throw new NfqlbError(`Failed to parse address [${address}]`);
  try {
    return addr.transport === "unix"
      ? Deno.listen({ transport: "unix", path: addr.path })
      : Deno.listen({ transport: "tcp", hostname: addr.hostname, port: addr.port });
  } catch (e) {
    const reason = e instanceof Deno.errors.AddrInUse ? "Address already in use" : errorText(e);
    throw new NfqlbError(`${what} bind: ${reason}`);
  }
}

/**
 * Parses a listen address of ours (`lb --metrics`, the host file's `metrics`): `ADDR:PORT` (IPv4) or
 * `[ADDR]:PORT` (IPv6), unlike upstream's `tcp:`/`unix:` socket addresses above.
 *
 * @example
 * ```ts
 * import { parseMetricsAddress } from "./address.ts";
 * parseMetricsAddress("127.0.0.1:9100"); // { hostname: "127.0.0.1", port: 9100 }
 * ```
 */
export function parseMetricsAddress(s: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]{1,5})$/.exec(s);
  const host = m ? (m[1] ?? m[2]) : "";
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535 || !(m[1] ? parseIPv6(host) : parseIPv4(host))) {
    throw new NfqlbError(`Invalid metrics address [${s}] (expected ADDR:PORT or [ADDR]:PORT)`);
  }
  return { hostname: host, port };
}
