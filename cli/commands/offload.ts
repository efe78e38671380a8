/** `offload-rules` (ours, docs/offload.md): the kernel rules of `--offload=auto` for setups by hand. */
import type { Command } from "../command.ts";
import { out } from "../io.ts";
import { NfqlbError } from "../../core/errors.ts";
import { parseQueues } from "./lb.ts";

/** `offload-rules --vips=CIDR[,CIDR] --queue=SPEC [--family=4|6]`. */
export const offloadRules: Command = {
  name: "offload-rules",
  header: "offload-rules --vips=CIDR[,CIDR] --queue=SPEC [--family=4|6]\n" +
    "  Print the rules apply installs for lb --offload=auto (iptables-restore --noflush input)",
  options: [
    { name: "vips", help: "VIP addresses or CIDRs, comma separated", required: true },
    { name: "queue", help: "NF-queue(s) as lb --queue: N or first:last", required: true },
    { name: "family", help: "4 or 6: that family's VIPs (required when both are given)" },
    { name: "id", help: "Name in chains and comments (apply: the config's name; default nfqlb)" },
    { name: "hooks", help: "prerouting,output (default prerouting)" },
    { name: "no_bypass", help: "NFQUEUE without --queue-bypass", flag: true },
    { name: "nat", help: "The targets are NAT targets: keep TCP SYNs tracked", flag: true },
  ],
  async run({ opts }) {
    const vips = opts.get("vips")!.split(",").map((v) => v.trim());
    if (vips.some((v) => v === "")) {
      throw new NfqlbError(`offload-rules: invalid --vips value '${opts.get("vips")}'`);
    }
    const queue = opts.get("queue")!;
    const q = parseQueues(queue); // one line naming a bad value, as lb
    const f = opts.get("family");
    if (f !== undefined && f !== "4" && f !== "6") {
      throw new NfqlbError(`offload-rules: invalid --family value '${f}' (expected 4 or 6)`);
    }
    const hooks = (opts.get("hooks") ?? "prerouting").split(",");
    for (const h of hooks) {
      if (h !== "prerouting" && h !== "output") {
        throw new NfqlbError(`offload-rules: invalid --hooks value '${h}' (expected prerouting, output)`);
      }
    }
    const { offloadRestoreText } = await import("../../host/plumbing/restore_text.ts");
    let text: string;
    try {
      ({ text } = offloadRestoreText({
        vips,
        queue: q.first === q.last ? String(q.first) : `${q.first}:${q.last}`,
        family: f === undefined ? undefined : (Number(f) as 4 | 6),
        id: opts.get("id") ?? "nfqlb",
        bypass: !opts.has("no_bypass"),
        hooks: hooks as ("prerouting" | "output")[],
        nat: opts.has("nat"),
      }));
    } catch (e) {
      // the plan's checks name the value; the line names this command
      if (e instanceof NfqlbError) throw new NfqlbError(e.message.replace(/^plumbing: /, "offload-rules: "));
      throw e;
    }
    out(text);
    return 0;
  },
};
