/**
 * Long-lived TCP connections from the client netns (the agent's `conns`
 * command): opened at once, then one exchange round per {@link Conns.round}
 * call, each telling per connection which target answered ("" = broken: in
 * DSR a segment that reaches another target is answered with a reset).
 */
import type { ConnsCommand, ConnsRound, Flow } from "./agent/types.ts";
import { waitUntil } from "./process.ts";
import type { Topology } from "./topology.ts";
import { exists } from "../helpers/fs.ts";

/** Connections held by a `conns` agent; stop it (also on failure). */
export interface Conns {
  /** Round 0, right after connecting. */
  first: ConnsRound;
  /** Runs round n (1, 2, ...) and returns it. */
  round(n: number): Promise<ConnsRound>;
  /** Ends the agent (its connections close with RST). */
  stop(): Promise<void>;
}

/** Opens one connection per flow to `dst`:`port` (a flow's own dst/dport wins) and runs round 0. */
export async function openConns(topo: Topology, dst: string, port: number, flows: Flow[]): Promise<Conns> {
  const dir = Deno.makeTempDirSync({ dir: topo.workDir, prefix: "conns-" });
  const c: ConnsCommand = { cmd: "conns", dst, port, flows, waitMs: 5000, dir, maxMs: 180_000, maxRounds: 8 };
  const p = topo.spawnAgent(topo.ns.cli, "conns", c);
  const read = async (n: number): Promise<ConnsRound> => {
    const file = `${dir}/round-${n}.json`;
    await waitUntil(() => !!p.status || exists(file), 90_000, 50);
    if (!exists(file)) throw new Error(`conns: no round ${n}:\n${p.describe()}`);
    return JSON.parse(Deno.readTextFileSync(file)) as ConnsRound;
  };
  const stop = async () => {
    Deno.writeTextFileSync(`${dir}/stop`, "stop\n");
    await waitUntil(() => !!p.status, 10_000, 50);
    await p.stop();
  };
  try {
    return {
      first: await read(0),
      round: async (n) => {
        Deno.writeTextFileSync(`${dir}/go-${n}`, "go\n");
        return await read(n);
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
