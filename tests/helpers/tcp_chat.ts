/**
 * A client of long-lived TCP connections, run as a program in a lab
 * namespace (tests/e2e/bgp_tier_test.ts): `conns` connections to dst:port,
 * each sending a numbered line every `intervalMs` and waiting for the echo
 * (`<target> <line>`, the harness agent's echo port), plus one new short
 * connection every `newEveryMs` (connect, one line, close). A connection is
 * broken when it fails (RST, EOF), when the answer to a line does not come
 * within `replyTimeoutMs`, or when another target answers it. Every 200 ms
 * it writes `status.json` in `dir` (atomically); it stops when `dir/stop`
 * appears or after `maxMs`, and prints the last status.
 *
 *   deno run -A tests/helpers/tcp_chat.ts '{"dst":"10.0.0.1","port":80,...}'
 */

/** The options (one JSON argument). */
export interface ChatOptions {
  dst: string;
  port: number;
  conns: number;
  intervalMs: number;
  replyTimeoutMs: number;
  newEveryMs: number;
  dir: string;
  maxMs: number;
}

/** A connection that broke. */
export interface Broken {
  /** Its index. */
  i: number;
  /** Why. */
  why: string;
  /** When (Unix ms). */
  t: number;
}

/** What status.json holds. */
export interface ChatStatus {
  t: number;
  /** Connections established so far. */
  established: number;
  /** Connections that answered at least once and are not broken. */
  alive: number;
  /** Broken connections, in order. */
  broken: Broken[];
  /** Alive connections per target (the last answer's). */
  targets: Record<string, number>;
  /** Answers that took longer than 1 s (a stall: retransmissions). */
  stalls: number;
  /** The longest wait for an answer so far, ms. */
  maxWaitMs: number;
  /**
   * Connects that failed and were tried again (a connection that never got established is not one that broke:
   * a router without a route for a moment, e.g. every BFD session of a starved router flapping, refuses it).
   */
  connectRetries: number;
  /** New short connections: how many worked, and the failures (Unix ms, why). */
  fresh: { ok: number; failed: { t: number; why: string }[] };
  /** Whether it has stopped. */
  done: boolean;
}

const enc = new TextEncoder(), dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Reads one line (the echo) within `ms`; throws on EOF, error or timeout. */
async function readLine(conn: Deno.Conn, ms: number): Promise<string> {
  const buf = new Uint8Array(512);
  let text = "";
  const deadline = Date.now() + ms;
  for (let k = 0; k < 64 && !text.includes("\n"); k++) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error("timeout");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      conn.read(buf),
      new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), left)),
    ]).finally(() => clearTimeout(timer));
    if (n === "timeout") throw new Error("timeout");
    if (n === null) throw new Error("EOF");
    text += dec.decode(buf.subarray(0, n));
  }
  return text.split("\n")[0];
}

async function main(o: ChatOptions): Promise<void> {
  const t0 = Date.now();
  const st: ChatStatus = {
    t: t0,
    established: 0,
    alive: 0,
    broken: [],
    targets: {},
    stalls: 0,
    maxWaitMs: 0,
    connectRetries: 0,
    fresh: { ok: 0, failed: [] },
    done: false,
  };
  const target: string[] = new Array(o.conns).fill("");
  const dead: boolean[] = new Array(o.conns).fill(false);
  let stop = false;
  const stopped = () => stop || Date.now() - t0 > o.maxMs;
  const breakConn = (i: number, why: string) => {
    if (dead[i]) return;
    dead[i] = true;
    st.broken.push({ i, why, t: Date.now() });
  };

  const chat = async (i: number) => {
    await sleep((i * o.intervalMs) / o.conns); // spread the connections over one interval
    let conn: Deno.TcpConn | undefined;
    for (let attempt = 1; !conn; attempt++) {
      try {
        conn = await Deno.connect({ hostname: o.dst, port: o.port });
        conn.setNoDelay(true);
      } catch (e) {
        // bounded: 5 attempts over about a second, then it counts as broken
        if (attempt >= 5 || stopped()) {
          breakConn(i, `connect: ${(e as Error).message} (${attempt} attempts)`);
          return;
        }
        st.connectRetries++;
        await sleep(250);
      }
    }
    st.established++;
    try {
      for (let seq = 0; !stopped() && seq < 1_000_000; seq++) {
        const sent = Date.now();
        const line = `${i}.${seq}`;
        await conn.write(enc.encode(line + "\n"));
        const reply = await readLine(conn, o.replyTimeoutMs);
        const took = Date.now() - sent;
        st.maxWaitMs = Math.max(st.maxWaitMs, took);
        if (took > 1000) st.stalls++;
        const sp = reply.indexOf(" ");
        if (sp <= 0 || reply.slice(sp + 1) !== line) throw new Error(`wrong answer ${JSON.stringify(reply)}`);
        const name = reply.slice(0, sp);
        if (target[i] !== "" && target[i] !== name) throw new Error(`answered by ${name}, was ${target[i]}`);
        target[i] = name;
        await sleep(Math.max(0, o.intervalMs - took));
      }
    } catch (e) {
      if (!stopped()) breakConn(i, (e as Error).message);
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  };

  const fresh = async () => {
    for (let k = 0; !stopped() && k < 1_000_000; k++) {
      const started = Date.now();
      let conn: Deno.TcpConn | undefined;
      try {
        conn = await Deno.connect({ hostname: o.dst, port: o.port });
        await conn.write(enc.encode(`fresh.${k}\n`));
        const reply = await readLine(conn, 3000);
        if (!reply.endsWith(` fresh.${k}`)) throw new Error(`wrong answer ${JSON.stringify(reply)}`);
        st.fresh.ok++;
      } catch (e) {
        if (!stopped()) st.fresh.failed.push({ t: started, why: (e as Error).message });
      } finally {
        try {
          conn?.close();
        } catch { /* closed */ }
      }
      await sleep(Math.max(0, o.newEveryMs - (Date.now() - started)));
    }
  };

  const write = () => {
    st.t = Date.now();
    st.alive = target.filter((t, i) => t !== "" && !dead[i]).length;
    st.targets = {};
    target.forEach((t, i) => {
      if (t !== "" && !dead[i]) st.targets[t] = (st.targets[t] ?? 0) + 1;
    });
    const f = `${o.dir}/status.json`;
    Deno.writeTextFileSync(`${f}.tmp`, JSON.stringify(st));
    Deno.renameSync(`${f}.tmp`, f);
  };

  const all = Promise.all([...Array.from({ length: o.conns }, (_, i) => chat(i)), fresh()]);
  const ticker = setInterval(() => {
    try {
      Deno.statSync(`${o.dir}/stop`);
      stop = true;
    } catch { /* not yet */ }
    write();
  }, 200);
  await all;
  clearInterval(ticker);
  st.done = true;
  write();
  console.log(JSON.stringify(st));
  Deno.exit(0);
}

if (import.meta.main) await main(JSON.parse(Deno.args[0]) as ChatOptions);
