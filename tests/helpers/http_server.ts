/**
 * A small HTTP server for the health-check tests, run in a target's netns:
 * `deno run -A http_server.ts NAME PORT READY_FILE MAX_LIFE_S ADDR...`.
 * On every address: `/healthz` answers 200 `all good from NAME`, `/sick`
 * 503, anything else 404. Writes READY_FILE once it listens; ends on
 * SIGTERM or after MAX_LIFE_S.
 */
const [name, port, ready, life, ...addrs] = Deno.args;
const ac = new AbortController();
const servers = addrs.map((hostname) =>
  Deno.serve({ hostname, port: Number(port), signal: ac.signal, onListen: () => {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/healthz") return new Response(`all good from ${name}\n`);
    if (path === "/sick") return new Response(`sick ${name}\n`, { status: 503 });
    return new Response("not found\n", { status: 404 });
  })
);
Deno.writeTextFileSync(ready, "ready\n");
await new Promise<void>((resolve) => {
  const timer = setTimeout(resolve, Number(life) * 1000);
  Deno.addSignalListener("SIGTERM", () => {
    clearTimeout(timer);
    resolve();
  });
});
ac.abort();
await Promise.all(servers.map((s) => s.finished));
Deno.exit(0);
