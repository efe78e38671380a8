/**
 * The traffic agent, a program the lab runs inside a namespace (through
 * `agentArgs` of traffic.ts):
 *
 *   ip netns exec NS deno run -A tests/harness/agent/main.ts '<json command>'
 *
 * It prints one JSON line with the result and exits 0 (or prints a message
 * and exits 2). The commands and results are in types.ts; each protocol's
 * side is in its own file: serve.ts and echo.ts (the targets' servers), udp.ts, blast.ts, tcp.ts,
 * fragments.ts, icmp.ts, sctp.ts.
 *
 * Every blocking call has a timeout and every loop a count or time bound.
 */
import { blast } from "./blast.ts";
import { echo } from "./echo.ts";
import { sendFrags, sizes } from "./fragments.ts";
import { ping, sendIcmp } from "./icmp.ts";
import { sendSctp } from "./sctp.ts";
import { serve } from "./serve.ts";
import { conns, tcpProbe } from "./tcp.ts";
import type { AgentCommand } from "./types.ts";
import { stream, udpProbe } from "./udp.ts";

async function main(): Promise<void> {
  const c = JSON.parse(Deno.args[0] ?? "{}") as AgentCommand;
  let result: unknown;
  switch (c.cmd) {
    case "serve":
      return await serve(c);
    case "echo":
      return echo(c);
    case "udp":
      result = udpProbe(c);
      break;
    case "tcp":
      result = tcpProbe(c);
      break;
    case "stream":
      result = stream(c);
      break;
    case "blast":
      result = blast(c);
      break;
    case "conns":
      result = conns(c);
      break;
    case "ping":
      result = ping(c);
      break;
    case "icmp":
      result = sendIcmp(c);
      break;
    case "sctp":
      result = sendSctp(c);
      break;
    case "sizes":
      result = sizes(c);
      break;
    case "frags":
      result = sendFrags(c);
      break;
    default:
      throw new Error(`unknown command ${JSON.stringify(c)}`);
  }
  console.log(JSON.stringify(result));
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`agent: ${e instanceof Error ? e.message : e}`);
    Deno.exit(2);
  }
}
