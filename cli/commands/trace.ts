/** trace (client) and loglevel. */
import type { Command } from "../command.ts";
import { err, out } from "../io.ts";
import { INT32_MAX, INT32_MIN, parseInteger, parseStrtol0 } from "../numbers.ts";
import { errorText, NfqlbError } from "../../core/errors.ts";
import { connectTo, parseSocketAddress } from "../../core/address.ts";
import { logLevel, TRACE_REFUSED_PREFIX, traceMask } from "../../core/trace_shm.ts";
import {
  NFQLB_TRACE_FLOW_CONF,
  NFQLB_TRACE_FLOWS,
  NFQLB_TRACE_FRAG,
  NFQLB_TRACE_LOG,
  NFQLB_TRACE_PACKET,
  NFQLB_TRACE_SCTP,
  NFQLB_TRACE_TARGET,
} from "../../ffi/consts.ts";

/** Trace selection names → mask bits, as upstream. */
export const TRACE_BITS: Record<string, number> = {
  log: NFQLB_TRACE_LOG,
  packet: NFQLB_TRACE_PACKET,
  frag: NFQLB_TRACE_FRAG,
  "flow-conf": NFQLB_TRACE_FLOW_CONF,
  sctp: NFQLB_TRACE_SCTP,
  target: NFQLB_TRACE_TARGET,
  flows: NFQLB_TRACE_FLOWS,
};

const REFUSED = new TextEncoder().encode(TRACE_REFUSED_PREFIX);

const startsWith = (data: Uint8Array, prefix: Uint8Array) =>
  data.length >= prefix.length && prefix.every((b, i) => data[i] === b);

/** Default trace server address. */
export const DEFAULT_TRACE_ADDRESS = "unix:nfqlb-trace";

/** `trace`: set the mask, connect to the LB's trace server, copy to stdout. */
export const trace: Command = {
  name: "trace",
  header: "trace [options]\n  Initiate trace and direct output to stdout",
  options: [
    { name: "mask", help: "Trace mask (32-bit). Most for debug" },
    {
      name: "selection",
      help: "Trace selection. A comma separated list of;\n     log,packet,frag,flow-conf,sctp,target,flows",
    },
    { name: "trace_address", help: "Trace server address" },
  ],
  async run({ opts }) {
    const maskOpt = opts.get("mask"), sel = opts.get("selection");
    // upstream's texts for these two end without a newline
    if (maskOpt === undefined && sel === undefined) {
      err("Specify any of --mask or --selection");
      return 1;
    }
    if (maskOpt !== undefined && sel !== undefined) {
      err("Specify any ONE of --mask or --selection");
      return 1;
    }
    let mask = 0;
    if (sel !== undefined) {
      for (const s of sel.split(",")) {
        if (s === "") continue;
        const bit = TRACE_BITS[s];
        if (bit === undefined) {
          throw new NfqlbError(
            `trace: unknown selection '${s}' (expected ${Object.keys(TRACE_BITS).join(",")})`,
          );
        }
        mask |= bit;
      }
    } else {
      const m = parseStrtol0(maskOpt!);
      if (m === undefined || m < -2147483648 || m > 4294967295) {
        throw new NfqlbError(`trace: invalid --mask value '${maskOpt}' (expected a 32-bit number)`);
      }
      mask = m >>> 0;
    }
    out(`Mask=0x${mask.toString(16).padStart(8, "0")}\n`);
    traceMask(mask);
    const address = opts.get("trace_address") ?? DEFAULT_TRACE_ADDRESS;
    const addr = parseSocketAddress(address);
    if (!addr) {
      err(`Failed to parse address [${address}]`);
      return 1;
    }
    let conn: Deno.Conn;
    try {
      conn = await connectTo(addr);
    } catch (e) {
      const text = e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.NotFound
        ? "Connection refused"
        : errorText(e);
      throw new NfqlbError(`Trace client connect to ${address}: ${text}`);
    }
    const buf = new Uint8Array(4096);
    let first = true;
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      let data = buf.subarray(0, n);
      // ours: a server with all its trace slots taken says so in its first line, then closes
      if (first && startsWith(data, REFUSED)) {
        conn.close();
        err(new TextDecoder().decode(data).split("\n")[0] + "\n");
        return 1;
      }
      first = false;
      while (data.length) data = data.subarray(Deno.stdout.writeSync(data));
    }
    conn.close();
    return 0;
  },
};

/** `loglevel [level]`. */
export const loglevel: Command = {
  name: "loglevel",
  header: "loglevel [level]\n  Set log level in shared mem",
  options: [],
  run({ args }) {
    const set = args.length > 0
      ? parseInteger("loglevel", "level", args[0], INT32_MIN, INT32_MAX)
      : undefined;
    out(`loglevel=${logLevel(set)}\n`);
    return 0;
  },
};
