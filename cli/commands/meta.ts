/**
 * help and completion (ours): about nfqlb itself. Both read the command
 * registry, loaded when they run (it imports this file).
 */
import type { Command } from "../command.ts";
import { out } from "../io.ts";
import { NfqlbError } from "../../core/errors.ts";

/** `help [command]`: the command list, or a command's `--help`. */
export const help: Command = {
  name: "help",
  header: "help [command]\n  Print the commands, or the help of one command (as <command> --help)",
  options: [],
  async run({ args }) {
    const { COMMANDS } = await import("../registry.ts");
    const { closestCommand, helpText, usageText } = await import("../help.ts");
    if (args.length === 0) {
      out(usageText(Deno.env.get("NFQLB_ARGV0") ?? "nfqlb", COMMANDS));
      return 0;
    }
    const cmd = COMMANDS.find((c) => c.name === args[0]);
    if (!cmd) {
      const near = closestCommand(args[0], COMMANDS.map((c) => c.name));
      throw new NfqlbError(`help: unknown command '${args[0]}'${near ? `; did you mean '${near}'?` : ""}`);
    }
    out(helpText(cmd));
    return 0;
  },
};

/** `completion bash|zsh|fish`: a completion script, from the registry. */
export const completion: Command = {
  name: "completion",
  header: "completion bash|zsh|fish\n  Print a shell completion script (source <(nfqlb completion bash))",
  options: [],
  async run({ args }) {
    const { COMMANDS } = await import("../registry.ts");
    const { completionScript, SHELLS } = await import("../completion.ts");
    const shell = SHELLS.find((s) => s === args[0]);
    if (args.length !== 1 || !shell) {
      const given = args.length === 0 ? "none" : `'${args.join(" ")}'`;
      throw new NfqlbError(`completion: invalid shell ${given} (expected one of ${SHELLS.join(", ")})`);
    }
    out(completionScript(shell, COMMANDS));
    return 0;
  },
};
