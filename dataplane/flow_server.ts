/**
 * The flow-command server of `flowlb` (upstream's flow request protocol,
 * core/flow/wire.ts): listens on the flow address (`unix:<name>`, a Linux
 * abstract socket, or `tcp:<addr>:<port>`), reads one request per connection,
 * applies it to the flow table or the trace-flow table, replies and closes.
 *
 * Bad or slow clients never take it down nor starve the others
 * (./bounded_server.ts): up to 256 connections are served at once and later
 * ones wait in the listen backlog, never refused; a client has 2 s from
 * accept to send its whole request (lines of at most 1023 bytes, at most
 * 16 KiB) and 10 s to read the reply; an error ends only its connection; and
 * the log gets one line for the first bad client and then one summary line
 * per 10 s.
 */
import { listenAt } from "../core/address.ts";
import { errorText } from "../core/errors.ts";
import type { FlowTable } from "../core/flow/table.ts";
import { encodeReply, type FlowCommand, type ReadOutcome, RequestReader } from "../core/flow/wire.ts";
import type { FlowStore } from "../core/flow/store.ts";
import { type Deadline, failureKind, ProblemLog, serveBounded } from "./bounded_server.ts";

/** Default {@link FlowServerOptions.maxConnections}. */
export const FLOW_MAX_CONNECTIONS = 256;
/** Default {@link FlowServerOptions.requestTimeoutMs}: a client sends its whole request at once. */
export const FLOW_REQUEST_TIMEOUT_MS = 2000;
/** Default {@link FlowServerOptions.replyTimeoutMs}: a flow-list of thousands of flows to a slow reader. */
export const FLOW_REPLY_TIMEOUT_MS = 10_000;

/** Options of {@link startFlowServer}. */
export interface FlowServerOptions {
  /** Saved after every change of the flow table (not the trace table). */
  store?: FlowStore;
  /** Where warnings go, one line each (default: stderr). */
  log?: (line: string) => void;
  /** A client that has not sent its whole request this long after it was accepted is disconnected. */
  requestTimeoutMs?: number;
  /** A client that has not read its whole reply within this time is disconnected. */
  replyTimeoutMs?: number;
  /** Connections served at once; later clients wait in the listen backlog until a slot frees. */
  maxConnections?: number;
  /** Bad and slow clients: one line in full, then one summary line per this many ms (default 10 s; 0: every line). */
  problemWindowMs?: number;
}

/** A running flow server. */
export interface FlowServer {
  /** The address it listens on, as given. */
  readonly address: string;
  /** Stops listening, closes open connections, and resolves when all is done. */
  close(): Promise<void>;
}

/** What a request is answered with. */
export type FlowReply =
  /** A C string: sent with its terminating NUL. */
  | { kind: "text"; text: string }
  /** JSON: sent as is (possibly empty). */
  | { kind: "json"; text: string };

/**
 * Applies one request to the tables and returns the reply (upstream's
 * dispatch: `FAIL: no action`, `trace-` actions on the trace table,
 * `FAIL: action unknown`). Ours: `trace-set` answers `OK` on success
 * (upstream sends nothing).
 */
export function handleFlowCommand(cmd: FlowCommand, table: FlowTable, traceTable: FlowTable): FlowReply {
  const text = (t: string): FlowReply => ({ kind: "text", text: t });
  const json = (t: string): FlowReply => ({ kind: "json", text: t });
  const action = cmd.action;
  if (action === undefined) return text("FAIL: no action");
  const trace = action.startsWith("trace-");
  const t = trace ? traceTable : table;
  switch (trace ? action.slice(6) : action) {
    case "set":
      return text(t.set(cmd));
    case "delete":
      return text(t.delete(cmd.name));
    case "list":
      return json(t.list(cmd.name));
    case "list-names":
      return json(t.listNames());
    default:
      return text("FAIL: action unknown");
  }
}

/**
 * Starts the server. Before each request the table retries the targets of
 * inactive (restored) flows; after each change of the flow table the store
 * (if any) is saved, and a failed save is logged, not answered.
 *
 * @param address `unix:<name>` or `tcp:<addr>:<port>` (see flowAddress())
 * @throws NfqlbError `Failed to parse address [<a>]`, `Flow server bind: <reason>`
 *
 * @example
 * ```ts
 * const flows = new FlowTable("flow", new ShmTargets()), trace = new FlowTable("trace");
 * const server = startFlowServer(flowAddress(), flows, trace);
 * // ... nfqlb flow-set --name=a --target=nfqlb ...
 * await server.close();
 * ```
 */
export function startFlowServer(
  address: string,
  table: FlowTable,
  traceTable: FlowTable,
  opts: FlowServerOptions = {},
): FlowServer {
  const log = opts.log ?? ((line: string) => console.error(line));
  const requestMs = opts.requestTimeoutMs ?? FLOW_REQUEST_TIMEOUT_MS;
  const replyMs = opts.replyTimeoutMs ?? FLOW_REPLY_TIMEOUT_MS;
  const listener = listenAt(address, "Flow server");
  const problems = new ProblemLog(log, "flow server", opts.problemWindowMs);
  let closing = false;

  const apply = (cmd: FlowCommand): FlowReply => {
    for (const name of table.retryInactive()) log(`flow ${name}: target found, flow active`);
    const before = table.generation;
    const reply = handleFlowCommand(cmd, table, traceTable);
    if (opts.store && table.generation !== before) {
      try {
        opts.store.save(table.definitions());
      } catch (e) {
        log(e instanceof Error ? e.message : String(e));
      }
    }
    return reply;
  };

  /** A read or write failed: the deadline closed it, the peer went away, or close() did. */
  const failed = (e: unknown, deadline: Deadline, what: string) => {
    if (closing) return;
    if (deadline.expired) {
      const ms = what === "request" ? requestMs : replyMs;
      problems.report(
        `${what} timed out`,
        `flow server: client ${
          what === "request" ? "sent no complete request" : "did not read its reply"
        } within ${ms / 1000} s, disconnected`,
      );
    } else problems.report(failureKind(e), `flow server: ${what}: ${errorText(e)}`);
  };

  const serve = async (conn: Deno.Conn, deadline: Deadline): Promise<void> => {
    const reader = new RequestReader();
    const buf = new Uint8Array(4096);
    let outcome: ReadOutcome = { kind: "more" };
    try {
      while (outcome.kind === "more") {
        const n = await conn.read(buf);
        outcome = n === null ? reader.end() : reader.push(buf.subarray(0, n));
      }
    } catch (e) {
      return failed(e, deadline, "request");
    }
    deadline.restart(replyMs);
    let bytes: Uint8Array | undefined;
    if (outcome.kind === "error") {
      problems.report(outcome.problem, outcome.warning);
      if (outcome.reply !== undefined) bytes = encodeReply(outcome.reply);
    } else {
      // a client of a newer protocol may send these with every request: counted, not logged each time
      for (const key of outcome.command.unknown) {
        problems.report("unknown key", `readCmd; Unrecognized command [${key}]`);
      }
      const reply = apply(outcome.command);
      bytes = reply.kind === "text" ? encodeReply(reply.text) : new TextEncoder().encode(reply.text);
    }
    try {
      while (bytes !== undefined && bytes.length > 0) bytes = bytes.subarray(await conn.write(bytes));
    } catch (e) {
      failed(e, deadline, "reply");
    }
  };

  const server = serveBounded(
    listener,
    { maxConnections: opts.maxConnections ?? FLOW_MAX_CONNECTIONS, requestMs, replyMs },
    serve,
    (e) => problems.report("accept failed", `flow server: accept: ${errorText(e)}`),
  );

  return {
    address,
    async close() {
      if (closing) return;
      closing = true;
      await server.close();
      problems.close();
    },
  };
}
