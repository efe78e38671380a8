/**
 * Slow flow-server clients for tests/reliability/flow_server_test.ts: each connects, sends one byte and holds
 * the connection until the server cuts it off. {@link holdSlowClients} serves the in-process tests; run as a
 * program inside a lab's lb namespace (abstract sockets belong to a network namespace),
 * `deno run -A slow_flow_clients.ts <unix:name> <n> <boundMs>` prints `ready` once the n clients have sent
 * their byte, then, once every client is cut off by the server (or boundMs passed), one JSON line
 * `{"cut": k, "ms": [first, last]}` and exits.
 */

/**
 * Connects `n` clients to flow server `address` (`unix:<name>`), each sending one byte. `done` resolves, per
 * client, with the ms from `t0` to the server's cut (read EOF or reset), or -1 when `boundMs` passed first;
 * every connection is closed by then.
 */
export async function holdSlowClients(
  address: string,
  n: number,
  boundMs: number,
  t0 = Date.now(),
): Promise<{ done: Promise<number[]> }> {
  const path = "\0" + address.slice("unix:".length);
  const conns = await Promise.all(Array.from({ length: n }, () => Deno.connect({ transport: "unix", path })));
  await Promise.all(conns.map((c) => c.write(new Uint8Array([0x61]))));
  const done = Promise.all(conns.map(async (c) => {
    const timer = setTimeout(() => c.close(), boundMs);
    let cut = false;
    try {
      cut = (await c.read(new Uint8Array(16))) === null;
    } catch (e) {
      cut = e instanceof Deno.errors.ConnectionReset;
    } finally {
      clearTimeout(timer);
      try {
        c.close();
      } catch { /* closed by the bound */ }
    }
    return cut ? Date.now() - t0 : -1;
  }));
  return { done };
}

if (import.meta.main) {
  const [address, nText, boundText] = Deno.args;
  const t0 = Date.now();
  const { done } = await holdSlowClients(address, Number(nText), Number(boundText), t0);
  console.log("ready");
  const cut = (await done).filter((ms) => ms >= 0);
  console.log(JSON.stringify({ cut: cut.length, ms: [Math.min(...cut), Math.max(...cut)] }));
}
