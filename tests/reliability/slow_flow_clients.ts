/**
 * A program for tests/reliability/flow_server_test.ts, run inside a lab's lb
 * namespace (abstract sockets belong to a network namespace):
 * `deno run -A slow_flow_clients.ts <unix:name> <n> <boundMs>` connects n
 * clients to a flow server, each sending one byte and holding; prints
 * `ready`, then, once every client is cut off by the server (or boundMs
 * passed), one JSON line `{"cut": k, "ms": [first, last]}` and exits.
 */
const [address, nText, boundText] = Deno.args;
const n = Number(nText), boundMs = Number(boundText);
const path = "\0" + address.slice("unix:".length);
const t0 = Date.now();
const conns = await Promise.all(Array.from({ length: n }, () => Deno.connect({ transport: "unix", path })));
await Promise.all(conns.map((c) => c.write(new Uint8Array([0x61]))));
console.log("ready");
const at = await Promise.all(conns.map(async (c) => {
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
const cut = at.filter((ms) => ms >= 0);
console.log(JSON.stringify({ cut: cut.length, ms: [Math.min(...cut), Math.max(...cut)] }));
