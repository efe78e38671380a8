/**
 * The flow-command server of `flowlb` (upstream's flow request protocol,
 * core/flow/wire.ts): listens on the flow address (`unix:<name>`, a Linux
 * abstract socket, or `tcp:<addr>:<port>`), reads one request per connection, applies it to the flow table or the
 * trace-flow table, replies and closes. Bad input never takes it down: every
 * connection is handled on its own, lines are bounded, idle clients are cut
 * off, and errors end only that connection.
 */
import { listenAt } from "../core/address.ts";
import { errorText } from "../core/errors.ts";
import type { FlowTable } from "../core/flow/table.ts";
import { encodeReply, type FlowCommand, type ReadOutcome, RequestReader } from "../core/flow/wire.ts";
import type { FlowStore } from "../core/flow/store.ts";

/** Options of {@link startFlowServer}. */
export interface FlowServerOptions {
  /** Saved after every change of the flow table (not the trace table). */
  store?: FlowStore;
  /** Where warnings go, one line each (default: stderr). */
  log?: (line: string) => void;
  /** A client that has not sent its whole request within this time is disconnected (default 30000 ms). */
  idleTimeoutMs?: number;
  /** Connections handled at once; more are closed at once (default 64). */
  maxConnections?: number;
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

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  while (data.length > 0) data = data.subarray(await conn.write(data));
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
  const idle = opts.idleTimeoutMs ?? 30000;
  const max = opts.maxConnections ?? 64;
  const listener = listenAt(address, "Flow server");
  const conns = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
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

  const serve = async (conn: Deno.Conn): Promise<void> => {
    const timer = setTimeout(() => {
      log("flow server: client idle, disconnected");
      try {
        conn.close();
      } catch { /* already closed */ }
    }, idle);
    try {
      const reader = new RequestReader();
      const buf = new Uint8Array(4096);
      let outcome: ReadOutcome = { kind: "more" };
      while (outcome.kind === "more") {
        const n = await conn.read(buf);
        outcome = n === null ? reader.end() : reader.push(buf.subarray(0, n));
      }
      clearTimeout(timer);
      if (outcome.kind === "error") {
        log(outcome.warning);
        if (outcome.reply !== undefined) await writeAll(conn, encodeReply(outcome.reply));
        return;
      }
      for (const key of outcome.command.unknown) log(`readCmd; Unrecognized command [${key}]`);
      const reply = apply(outcome.command);
      const bytes = reply.kind === "text" ? encodeReply(reply.text) : new TextEncoder().encode(reply.text);
      if (bytes.length > 0) await writeAll(conn, bytes);
    } catch (e) {
      // the peer went away, or the idle timer closed the connection
      if (!closing && !(e instanceof Deno.errors.BadResource) && !(e instanceof Deno.errors.Interrupted)) {
        log(`flow server: ${errorText(e)}`);
      }
    } finally {
      clearTimeout(timer);
      conns.delete(conn);
      try {
        conn.close();
      } catch { /* closed by the timer or close() */ }
    }
  };

  const loop = (async () => {
    try {
      for await (const conn of listener) {
        if (conns.size >= max) {
          log("flow server: too many connections, one refused");
          conn.close();
          continue;
        }
        conns.add(conn);
        const task = serve(conn);
        tasks.add(task);
        task.finally(() => tasks.delete(task));
      }
    } catch (e) {
      if (!closing) log(`flow server: accept: ${errorText(e)}`);
    }
  })();

  return {
    address,
    async close() {
      if (closing) return;
      closing = true;
      try {
        listener.close();
      } catch { /* already closed */ }
      for (const c of conns) {
        try {
          c.close();
        } catch { /* already closed */ }
      }
      await loop;
      await Promise.all([...tasks]);
    },
  };
}
