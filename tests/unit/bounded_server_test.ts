/**
 * dataplane/bounded_server.ts on real abstract sockets: at most
 * maxConnections handlers at once with the rest queued (accepted later, in
 * order, none refused), the request deadline, and ProblemLog's one full line
 * then one summary line per window.
 */
import assert from "node:assert/strict";
import { ProblemLog, serveBounded } from "../../dataplane/bounded_server.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const path = () => `\0nfqlb-bounded-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;

Deno.test("serveBounded: 2 slots, 10 clients: all answered in order, never more than 2 at once", async () => {
  const p = path();
  const listener = Deno.listen({ transport: "unix", path: p });
  let active = 0, most = 0;
  const order: number[] = [];
  const server = serveBounded(
    listener,
    { maxConnections: 2, requestMs: 5000, replyMs: 5000 },
    async (conn) => {
      active++;
      most = Math.max(most, active);
      const buf = new Uint8Array(8);
      const n = (await conn.read(buf)) ?? 0;
      order.push(buf[0]);
      await sleep(30);
      await conn.write(buf.subarray(0, n));
      active--;
    },
    () => {},
  );
  try {
    const replies = [];
    for (let i = 0; i < 10; i++) {
      const c = await Deno.connect({ transport: "unix", path: p });
      await c.write(new Uint8Array([i]));
      replies.push((async () => {
        const b = new Uint8Array(8);
        const n = await c.read(b);
        c.close();
        return n === 1 ? b[0] : -1;
      })());
    }
    assert.deepEqual(await Promise.all(replies), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(most, 2);
    // accepted in arrival order: each client is served at most one place away from it (2 slots)
    assert.deepEqual([...order].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.ok(order.every((c, i) => Math.abs(c - i) <= 1), order.join(","));
  } finally {
    await server.close();
  }
});

Deno.test("serveBounded: the deadline closes a silent client and frees its slot", async () => {
  const p = path();
  const listener = Deno.listen({ transport: "unix", path: p });
  const expired: boolean[] = [];
  const server = serveBounded(
    listener,
    { maxConnections: 1, requestMs: 100, replyMs: 100 },
    async (conn, d) => {
      try {
        await conn.read(new Uint8Array(8));
      } catch { /* closed by the deadline */ }
      expired.push(d.expired);
    },
    () => {},
  );
  try {
    const silent = await Deno.connect({ transport: "unix", path: p });
    const next = await Deno.connect({ transport: "unix", path: p });
    const t0 = Date.now();
    assert.equal(await silent.read(new Uint8Array(8)).catch(() => null), null);
    assert.equal(await next.read(new Uint8Array(8)).catch(() => null), null);
    assert.ok(Date.now() - t0 < 5000);
    assert.deepEqual(expired, [true, true]);
    silent.close();
    next.close();
  } finally {
    await server.close();
  }
});

Deno.test("ProblemLog: one full line, then one summary per window; a quiet window ends it", async () => {
  const lines: string[] = [];
  const pl = new ProblemLog((l) => lines.push(l), "srv", 100);
  pl.report("timed out", "first in full");
  for (let i = 0; i < 5; i++) pl.report("timed out", "not logged");
  pl.report("invalid", "not logged either");
  assert.deepEqual(lines, ["first in full"]);
  await sleep(150);
  assert.deepEqual(lines, [
    "first in full",
    "srv: 6 more bad or slow clients in 0.1 s: timed out 5, invalid 1",
  ]);
  // the flood goes on: the next window counts too
  pl.report("reset", "counted");
  await sleep(150);
  assert.equal(lines.at(-1), "srv: 1 more bad or slow clients in 0.1 s: reset 1");
  // a window with nothing ends quietly; the next problem is logged in full again
  await sleep(150);
  pl.report("invalid", "again in full");
  assert.equal(lines.at(-1), "again in full");
  pl.report("invalid", "counted");
  pl.close();
  assert.equal(lines.at(-1), "srv: 1 more bad or slow clients in 0.1 s: invalid 1");
  assert.equal(pl.total, 10);
  assert.equal(lines.length, 5);
});
