/**
 * The client side of the flow-command protocol (upstream's, ./wire.ts): one
 * request to a running flowlb, everything it answers until it closes. Used by the
 * flow-* commands and by `nfqlb apply` (flows by diff).
 */
import { connectTo, parseSocketAddress } from "../address.ts";
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

/**
 * Sends one request to the flowlb at `address` (default: NFQLB_FLOW_ADDRESS,
 * else `unix:nfqlb`) and returns everything it answers until it closes.
 * Throws {@link BadFlowAddress}, or NfqlbError `Connect failed. <reason>`.
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
): Promise<Uint8Array> {
  const addr = parseSocketAddress(address);
  if (!addr) throw new BadFlowAddress(address);
  const request = encodeRequest(fields);
  let conn: Deno.Conn;
  try {
    conn = await connectTo(addr);
  } catch (e) {
    throw new NfqlbError(`Connect failed. ${connectError(e)}`);
  }
  const chunks: Uint8Array[] = [];
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
    /* reset: keep what arrived */
  } finally {
    conn.close();
  }
  return concat(chunks);
}
