/**
 * The client side of the flow-command protocol (upstream's, ./wire.ts): one
 * request to a running flowlb, everything it answers until it closes. Used by the
 * flow-* commands and by `nfqlb apply` (flows by diff). Ours: the exchange is
 * bounded in time, and no reply is an error (upstream's client waits forever,
 * and prints nothing for a missing reply).
 */
import { connectTo, parseSocketAddress, type SocketAddress } from "../address.ts";
import { errorText, NfqlbError } from "../errors.ts";
import { concat, encodeRequest, flowAddress } from "./wire.ts";
import type { FlowRequest } from "./types.ts";

/** The flow server address does not parse (the CLI prints upstream's text for it). */
export class BadFlowAddress extends NfqlbError {
  /** The address as given. */
  readonly address: string;
  constructor(address: string) {
    super(`Failed to parse address [${address}]`);
    this.address = address;
  }
}

/** Upstream's strerror() texts for the connect failures a client meets. */
function connectError(e: unknown): string {
  if (e instanceof Deno.errors.ConnectionRefused) return "Connection refused";
  if (e instanceof Deno.errors.NotFound) return "No such file or directory";
  if (e instanceof Deno.errors.TimedOut) return "Connection timed out";
  if (e instanceof Deno.errors.ConnectionReset) return "Connection reset by peer";
  return errorText(e);
}

/** Default time a client waits for flowlb's whole reply, connect included (NFQLB_FLOW_TIMEOUT overrides). */
export const DEFAULT_FLOW_TIMEOUT_S = 10;

/**
 * How long a flow client waits for flowlb: NFQLB_FLOW_TIMEOUT seconds (an
 * integer 1..3600), else {@link DEFAULT_FLOW_TIMEOUT_S}; in ms.
 * @throws NfqlbError `Invalid NFQLB_FLOW_TIMEOUT [<v>] (expected seconds 1..3600)`
 */
export function flowTimeoutMs(): number {
  const v = Deno.env.get("NFQLB_FLOW_TIMEOUT");
  if (v === undefined) return DEFAULT_FLOW_TIMEOUT_S * 1000;
  if (!/^[0-9]{1,4}$/.test(v) || Number(v) < 1 || Number(v) > 3600) {
    throw new NfqlbError(`Invalid NFQLB_FLOW_TIMEOUT [${v}] (expected seconds 1..3600)`);
  }
  return Number(v) * 1000;
}

/**
 * flowlb did not answer: the connection closed or was reset before any
 * reply, or the reply did not end within the timeout. The message is one
 * line: `No reply from flowlb at <address>: <reason>`.
 */
export class FlowNoReply extends NfqlbError {
  /**
   * @param address the flow address
   * @param reason `connection closed`, `Connection reset by peer`, `timed out after 10 s`
   */
  constructor(address: string, reason: string) {
    super(`No reply from flowlb at ${address}: ${reason}`);
  }
}

/**
 * Whether an empty reply is an answer: only to a list of one flow by name,
 * which an unknown name answers with nothing (upstream). Every other request
 * is answered with at least a NUL or `[]`, so nothing means no answer.
 */
export function emptyReplyAllowed(fields: FlowRequest & { action: string }): boolean {
  return (fields.action === "list" || fields.action === "trace-list") && fields.name !== undefined;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Connects, retrying while the server's listen backlog is full (a unix
 * socket then fails with EAGAIN at once, where upstream's blocking client
 * waits), until `deadline` (ms since the epoch).
 */
async function connectBounded(addr: SocketAddress, deadline: number): Promise<Deno.Conn | "timeout"> {
  for (let pause = 10;; pause = Math.min(pause * 2, 200)) {
    const left = deadline - Date.now();
    if (left <= 0) return "timeout";
    const attempt = connectTo(addr);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), left));
    try {
      const won = await Promise.race([attempt, timeout]);
      if (won === "timeout") {
        // a TCP connect may still succeed later: close it then
        attempt.then((c) => c.close(), () => {});
        return "timeout";
      }
      return won;
    } catch (e) {
      if (!(e instanceof Deno.errors.WouldBlock)) throw new NfqlbError(`Connect failed. ${connectError(e)}`);
    } finally {
      clearTimeout(timer);
    }
    await sleep(Math.min(pause, Math.max(0, deadline - Date.now())));
  }
}

/**
 * Sends one request to the flowlb at `address` (default: NFQLB_FLOW_ADDRESS,
 * else `unix:nfqlb`) and returns everything it answers until it closes.
 * The whole exchange, connect included, is bounded by `timeoutMs` (default
 * {@link flowTimeoutMs}).
 *
 * @throws {@link BadFlowAddress}; NfqlbError `Connect failed. <reason>`;
 *   {@link FlowNoReply} when flowlb closes or resets the connection before
 *   any reply (an empty reply is an answer only when
 *   {@link emptyReplyAllowed}), or the reply has not ended within the timeout
 *
 * @example
 * ```ts
 * const reply = await flowExchange({ action: "list-names" });
 * console.log(new TextDecoder().decode(reply));
 * ```
 */
export async function flowExchange(
  fields: FlowRequest & { action: string },
  address: string = flowAddress(),
  timeoutMs: number = flowTimeoutMs(),
): Promise<Uint8Array> {
  const addr = parseSocketAddress(address);
  if (!addr) throw new BadFlowAddress(address);
  const request = encodeRequest(fields);
  const deadline = Date.now() + timeoutMs;
  const timedOut = () => new FlowNoReply(address, `timed out after ${timeoutMs / 1000} s`);
  const conn = await connectBounded(addr, deadline);
  if (conn === "timeout") throw timedOut();
  let expired = false;
  const timer = setTimeout(() => {
    expired = true;
    try {
      conn.close();
    } catch { /* closed */ }
  }, Math.max(0, deadline - Date.now()));
  const chunks: Uint8Array[] = [];
  let reset = false;
  try {
    try {
      let data = request;
      while (data.length > 0) data = data.subarray(await conn.write(data));
    } catch { /* the server closed early; read what it said */ }
    try {
      const buf = new Uint8Array(65536);
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        chunks.push(buf.slice(0, n));
      }
    } catch {
      // reset after a reply (the server closed without reading all): keep what arrived
      reset = true;
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
  // a partial reply cut by the timeout is no answer either: half a JSON list is worse than none
  if (expired) throw timedOut();
  if (chunks.length === 0) {
    if (reset) throw new FlowNoReply(address, "Connection reset by peer");
    if (!emptyReplyAllowed(fields)) throw new FlowNoReply(address, "connection closed");
  }
  return concat(chunks);
}
