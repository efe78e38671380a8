/**
 * The trace server of `lb` and `flowlb` (upstream's trace lines), in the main thread.
 *
 * - Listens on `--trace_address` (`unix:<name>`: a Linux abstract socket;
 *   default `unix:nfqlb-trace`; or `tcp:<addr>:<port>`). A bind failure ends
 *   the LB (`Trace server bind: <reason>`), as upstream.
 * - Any number of clients at once (upstream: one). Each client's mask is the
 *   shm mask when it connects (`nfqlb trace` stores its mask, then connects),
 *   so two clients with different selections each get their own lines.
 * - On connect the client gets `Trace active, mask=0x%08x\n`; any input from
 *   it, or EOF, ends its session. When the last client leaves, the shm mask
 *   is reset to 0 (upstream resets it at the end of every session).
 * - The dataplane records packets only while a client is attached: the C
 *   classifiers read a process-local mask word, the union of the connected
 *   clients' masks (0 with no client, whatever the shm says). Before the
 *   first client nothing is traced (upstream writes trace to stderr then).
 * - A client that reads too slowly loses lines (counted and reported to it);
 *   it never slows the dataplane (upstream blocks the packet thread).
 * - Bounds: at most 8 clients at once (one more gets `Trace refused: ...`
 *   and is closed), 8 MiB of queued output each, and a client can send at
 *   most one read of 256 bytes (any input ends its session). Refused clients
 *   and accept errors are logged as one line, then one summary per 10 s.
 */
import { lib } from "../ffi/lib.ts";
import { listenAt } from "../core/address.ts";
import { errorText, NfqlbError } from "../core/errors.ts";
import { DEFAULT_LOG_TARGET, log, TraceShmView } from "../core/log.ts";
import { TRACE_REFUSED_PREFIX } from "../core/trace_shm.ts";
import { formatRecords, TRACE, type TraceLine, type TraceNames } from "./trace_format.ts";
import { ProblemLog } from "./bounded_server.ts";

/** Default trace address (upstream's DEFAULT_TRACE_ADDRESS). */
export const DEFAULT_TRACE_ADDRESS = "unix:nfqlb-trace";

/** Output bytes a client may have queued; beyond that its lines are dropped (and counted). */
const MAX_QUEUED = 8 << 20;

/**
 * Trace clients at once (upstream: 1). One more is told so in one line and
 * closed, so the output queues hold at most 8 × 8 MiB.
 */
export const MAX_TRACE_CLIENTS = 8;

/** The line a client beyond {@link MAX_TRACE_CLIENTS} gets before the server closes it. */
export const TRACE_REFUSED = `${TRACE_REFUSED_PREFIX}${MAX_TRACE_CLIENTS} clients already, the most at once`;

/** Input read from a client: any byte ends its session, so one read of this size is all it can send. */
const INPUT_BYTES = 256;

/** Every per-packet trace bit: a note about lost records goes to clients with any of them. */
const PACKET_BITS = TRACE.packet | TRACE.frag | TRACE.sctp | TRACE.flows;

const hex8 = (m: number) => `0x${(m >>> 0).toString(16).padStart(8, "0")}`;

interface Client {
  conn: Deno.Conn;
  mask: number;
  queue: string[];
  queued: number;
  dropped: number;
  writing: boolean;
  closed: boolean;
}

/** Options of {@link startTraceService}. */
export interface TraceServiceOptions {
  /** The mapped `nfqlb-trace` shm (level and mask). */
  shm: TraceShmView;
  /** Names of targets and trace flows in records (flowlb; lb has none). */
  names?: TraceNames;
  /** A line every client gets after the greeting (offload auto: what it will not see). */
  note?: string;
}

/** A running trace server and the dataplane's view of it. */
export interface TraceService {
  /** The address it listens on, as given. */
  readonly address: string;
  /** Address of the C mask word the classifiers read (nfqlb_lb_set_trace). */
  readonly maskWord: Deno.PointerObject;
  /** Union of the connected clients' masks (0: nobody traces). */
  readonly mask: number;
  /** Connected clients. */
  readonly clients: number;
  /** Names used in the `flows` and flowlb `packet` lines. */
  names: TraceNames;
  /** Sends lines to the clients whose mask has one of each line's bits. */
  emit(lines: readonly TraceLine[]): void;
  /** Sends one line under `bits` (flow-conf, target and log lines from the control plane). */
  line(bits: number, text: string): void;
  /** Formats `count` records (`dropped` more were lost) of a queue's ring and sends them. */
  records(bytes: Uint8Array, count: number, dropped: number): void;
  /**
   * Closes the clients and the listener and sets the mask word to 0 (it
   * stays allocated: a worker that is still stopping may read it).
   */
  close(): Promise<void>;
}

const NO_NAMES: TraceNames = { target: (a) => `0x${a.toString(16)}`, traceFlow: (id) => `#${id}` };

/**
 * Binds the trace server and makes the mask word.
 * @throws NfqlbError `Failed to parse address [<a>]`, `Trace server bind: <reason>`
 */
export function startTraceService(address: string, opts: TraceServiceOptions): TraceService {
  const listener = listenAt(address, "Trace server");
  const c = lib();
  const word = c.nfqlb_trace_mask_create();
  if (word === null) {
    listener.close();
    throw new NfqlbError("trace: out of memory");
  }
  const shm = opts.shm;
  const clients = new Set<Client>();
  const tasks = new Set<Promise<void>>();
  const enc = new TextEncoder();
  let union = 0;
  let closing = false;

  const setGate = () => {
    let m = 0;
    for (const cl of clients) m |= cl.mask;
    union = m >>> 0;
    c.nfqlb_trace_mask_set(word, union);
  };

  const pump = async (cl: Client) => {
    if (cl.writing || cl.closed) return;
    cl.writing = true;
    try {
      while (cl.queue.length > 0 && !cl.closed) {
        if (cl.dropped > 0 && cl.queued < MAX_QUEUED / 2) {
          cl.queue.push(`(trace: ${cl.dropped} lines dropped, the client reads too slowly)\n`);
          cl.dropped = 0;
        }
        let data = enc.encode(cl.queue.join(""));
        cl.queue = [];
        cl.queued = 0;
        while (data.length > 0) data = data.subarray(await cl.conn.write(data));
      }
    } catch {
      end(cl);
    } finally {
      cl.writing = false;
    }
  };

  const send = (cl: Client, text: string) => {
    if (cl.closed) return;
    if (cl.queued + text.length > MAX_QUEUED) {
      cl.dropped++;
      return;
    }
    cl.queue.push(text);
    cl.queued += text.length;
    pump(cl);
  };

  const end = (cl: Client) => {
    if (cl.closed) return;
    cl.closed = true;
    clients.delete(cl);
    try {
      cl.conn.close();
    } catch { /* already closed */ }
    // the last client gone: nobody traces (upstream resets the mask after every session)
    if (clients.size === 0) shm.mask = 0;
    setGate();
    if (!closing) log.warning("Trace: closed");
  };

  const problems = new ProblemLog((line) => log.warning(line), "Trace");

  const session = async (conn: Deno.Conn) => {
    if (clients.size >= MAX_TRACE_CLIENTS) {
      problems.report("refused", `Trace: ${MAX_TRACE_CLIENTS} clients already, one refused`);
      try {
        await conn.write(enc.encode(TRACE_REFUSED + "\n"));
      } catch { /* gone already */ }
      conn.close();
      return;
    }
    const cl: Client = {
      conn,
      mask: shm.mask,
      queue: [],
      queued: 0,
      dropped: 0,
      writing: false,
      closed: false,
    };
    log.info(`Trace; Accepted incoming connection. clients=${clients.size + 1}`);
    // the greeting is always a client's first line (upstream: after the log line when `log` is on)
    send(cl, `Trace active, mask=${hex8(cl.mask)}\n`);
    if (opts.note) send(cl, `${opts.note}\n`);
    clients.add(cl);
    setGate();
    log.warning(`Trace; active mask=${hex8(cl.mask)}`);
    try {
      // any input, or EOF, ends the session
      await conn.read(new Uint8Array(INPUT_BYTES));
    } catch { /* reset or closed: the same */ }
    end(cl);
  };

  const loop = (async () => {
    log.info("Started Trace");
    while (!closing) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (e) {
        if (closing || e instanceof Deno.errors.BadResource || e instanceof Deno.errors.Interrupted) break;
        // EMFILE and the like pass: pause, do not end the trace server
        problems.report("accept failed", `Trace: accept: ${errorText(e)}`);
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      log.debug("Trace: accept");
      const t = session(conn);
      tasks.add(t);
      t.finally(() => tasks.delete(t));
    }
  })();

  const service: TraceService = {
    address,
    maskWord: word,
    get mask() {
      return union;
    },
    get clients() {
      return clients.size;
    },
    names: opts.names ?? NO_NAMES,
    emit(lines) {
      if (clients.size === 0 || lines.length === 0) return;
      for (const cl of clients) {
        let text = "";
        for (const l of lines) if (l.bits & cl.mask) text += l.text + "\n";
        if (text) send(cl, text);
      }
    },
    line(bits, text) {
      service.emit([{ bits, text }]);
    },
    records(bytes, count, dropped) {
      if (clients.size === 0) return;
      const lines = formatRecords(bytes, count, service.names);
      if (dropped > 0) lines.push({ bits: PACKET_BITS, text: `(trace: ${dropped} packets not traced)` });
      service.emit(lines);
    },
    async close() {
      if (closing) return;
      closing = true;
      const had = clients.size > 0;
      try {
        listener.close();
      } catch { /* closed */ }
      for (const cl of [...clients]) end(cl);
      if (had) shm.mask = 0;
      await loop;
      problems.close();
      await Promise.allSettled([...tasks]);
      c.nfqlb_trace_mask_set(word, 0);
      // the word stays allocated: a worker that is still stopping may read it
    },
  };
  return service;
}

/**
 * What lb and flowlb start first: the `nfqlb-trace` shm (created with level
 * 5 when missing) and the trace server; the process's log then reads its
 * level from the mapped shm and copies its lines to `log` clients. close()
 * also restores the default log target and unmaps the shm.
 * @throws NfqlbError as {@link startTraceService}, or when the shm cannot be made
 */
export function startTracing(address: string, names?: TraceNames, note?: string): TraceService {
  const shm = TraceShmView.open();
  let svc: TraceService;
  try {
    svc = startTraceService(address, { shm, names, note });
  } catch (e) {
    shm.close();
    throw e;
  }
  log.configure({ level: () => shm.level, trace: (line) => svc.line(TRACE.log, line) });
  const close = svc.close.bind(svc);
  let closed: Promise<void> | undefined;
  svc.close = () =>
    closed ??= close().then(() => {
      log.configure(DEFAULT_LOG_TARGET);
      shm.close();
    });
  return svc;
}
