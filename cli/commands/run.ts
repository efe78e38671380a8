/**
 * run (ours, docs/run.md): `apply` that stays — supervises the dataplane,
 * reloads on SIGHUP and on a change of the file, serves /metrics /healthz
 * /ready, speaks systemd's notify protocol, tears down on SIGTERM. Its code
 * loads only when it runs.
 */
import type { Command } from "../command.ts";
import { NfqlbError } from "../../core/errors.ts";
import { parseMetricsAddress } from "../../core/address.ts";

/** `run -f FILE [--admin=ADDR] [--keep] [--log-format=text|json]`. */
export const run: Command = {
  name: "run",
  header: "run --file=FILE [--admin=ADDR] [--keep] [--log-format=text|json]\n" +
    "  Apply a config file and keep the host matching it, in the foreground: restart the lb when it dies,\n" +
    "  reload on SIGHUP or a change of the file, serve /metrics /healthz /ready, teardown on SIGTERM",
  options: [
    { name: "file", help: "The config file (YAML or JSON; docs/config.md)", required: true },
    {
      name: "admin",
      arg: "ADDR:PORT",
      help: "ADDR:PORT of /metrics /healthz /ready (default: the file's admin.address, 127.0.0.1:9110)",
    },
    {
      name: "keep",
      help: "On SIGTERM/SIGINT leave the host serving (as apply does), for a later run to adopt",
      flag: true,
    },
    {
      name: "log-format",
      help: "text (default) or json, one event per line on stderr",
      arg: "FORMAT",
      choices: ["text", "json"],
    },
  ],
  async run({ opts }) {
    const file = opts.get("file")!;
    const format = opts.get("log-format") ?? "text";
    if (format !== "text" && format !== "json") {
      throw new NfqlbError(`run: --log-format: expected text or json, got "${format}"`);
    }
    const admin = opts.get("admin");
    if (admin !== undefined) {
      try {
        parseMetricsAddress(admin);
      } catch {
        throw new NfqlbError(`run: --admin: expected ADDR:PORT or [ADDR]:PORT, got "${admin}"`);
      }
    }
    const { AgentLog } = await import("../../host/run/agent_log.ts");
    const { runHost } = await import("../../host/run/agent.ts");
    return await runHost({ file, admin, keep: opts.has("keep"), log: new AgentLog({ format }) });
  },
};
