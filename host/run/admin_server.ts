/**
 * The admin HTTP server of `nfqlb run` (default 127.0.0.1:9110; `admin:
 * { address }` in the file, `--admin` on the command line):
 *
 * - `GET /metrics`: Prometheus text format (host/run/metrics.ts);
 * - `GET /healthz`: 200 `ok` while the agent lives (a liveness probe: it is
 *   answered by the agent's event loop, so a stuck agent fails it);
 * - `GET /ready`: 200 when the host matches the config and the dataplane is
 *   bound to its queues, else 503 with the reason as text (a readiness
 *   probe, a load-balancer health check).
 *
 * Bound to the one address given, like the lb's metrics server.
 */
import { NfqlbError } from "../../core/errors.ts";
import { parseMetricsAddress } from "../../core/address.ts";

/** What the server asks the agent. */
export interface AdminHandlers {
  /** The /metrics text. */
  metrics(): Promise<string>;
  /** Whether the agent is ready, and why (one or more lines). */
  ready(): Promise<{ ok: boolean; text: string }>;
}

/** A running admin server. */
export interface AdminServer {
  /** The address it serves on, as given. */
  readonly address: string;
  /** Stops it (bounded: open connections are cut after a second). */
  close(): Promise<void>;
}

const TEXT = { "content-type": "text/plain; charset=utf-8" };

/**
 * Starts the server on `address` (`ADDR:PORT` or `[ADDR]:PORT`).
 * @throws NfqlbError `admin server on <address>: <reason>` (a bad address, or in use)
 */
export function startAdmin(address: string, h: AdminHandlers): AdminServer {
  let hostname: string, port: number;
  try {
    ({ hostname, port } = parseMetricsAddress(address));
  } catch {
    throw new NfqlbError(`admin server on ${address}: expected ADDR:PORT or [ADDR]:PORT`);
  }
  const abort = new AbortController();
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({ hostname, port, signal: abort.signal, onListen: () => {} }, async (req) => {
      const path = new URL(req.url).pathname;
      if (req.method !== "GET" && req.method !== "HEAD") {
        return new Response("only GET\n", { status: 405, headers: { ...TEXT, allow: "GET, HEAD" } });
      }
      try {
        if (path === "/healthz") return new Response("ok\n", { headers: TEXT });
        if (path === "/ready") {
          const r = await h.ready();
          return new Response(r.text.endsWith("\n") ? r.text : r.text + "\n", {
            status: r.ok ? 200 : 503,
            headers: TEXT,
          });
        }
        if (path === "/metrics") {
          return new Response(await h.metrics(), {
            headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
          });
        }
      } catch (e) {
        return new Response(`${e instanceof Error ? e.message : String(e)}\n`, {
          status: 500,
          headers: TEXT,
        });
      }
      return new Response("not found: /metrics, /healthz, /ready\n", { status: 404, headers: TEXT });
    });
  } catch (e) {
    const why = e instanceof Deno.errors.AddrInUse
      ? "Address already in use"
      : e instanceof Error
      ? e.message
      : String(e);
    throw new NfqlbError(`admin server on ${address}: ${why}`);
  }
  return {
    address,
    async close() {
      const timer = setTimeout(() => abort.abort(), 1000);
      try {
        await server.shutdown();
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
