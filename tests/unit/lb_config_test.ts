/**
 * `lb` and `flowlb` take their config from the CLI without validating it
 * again (dataplane/lb.ts startLb: zod is not loaded before the queues are
 * bound). So the CLI (cli/commands/lb.ts) must accept exactly what the zod
 * schemas (core/lb_options.ts) accept: for every bounded option, the values
 * at and just past each bound of the schema, and empty names.
 */
import assert from "node:assert/strict";
import type { z } from "zod";
import { flowLbConfig, lbConfig } from "../../cli/commands/lb.ts";
import { COMMANDS } from "../../cli/registry.ts";
import { NfqlbError } from "../../core/errors.ts";
import { FlowLbConfigSchema, LbConfigSchema } from "../../core/lb_options.ts";

/** Builds with the CLI; undefined when it refuses (always with an NfqlbError). */
function cli<T>(build: (o: Map<string, string>) => T, opts: [string, string][]): T | undefined {
  try {
    return build(new Map(opts));
  } catch (e) {
    assert.ok(e instanceof NfqlbError, `not an NfqlbError: ${e}`);
    assert.ok(!e.message.includes("\n"), `not one line: ${e.message}`);
    return undefined;
  }
}

/** Option name → config field, for the bounded numbers of lb and flowlb. */
const NUMBERS: [string, string][] = [
  ["mtu", "mtu"],
  ["reassembler", "reassembler"],
  ["notargets_fwmark", "notargetsFwmark"],
  ["hash_mode", "hashMode"],
  ["qlength", "qlength"],
  ["ft_size", "ftSize"],
  ["ft_buckets", "ftBuckets"],
  ["ft_frag", "ftFrag"],
  ["ft_ttl", "ftTtl"],
  ["batch", "batch"],
];
/** Name options: the schema refuses "" for these (and accepts it for trace_address). */
const NAMES: [string, string][] = [
  ["lbshm", "lbshm"],
  ["tun", "tun"],
  ["ft_shm", "ftShm"],
  ["trace_address", "traceAddress"],
  ["metrics", "metrics"],
];

function agree<T extends object>(
  what: string,
  schema: z.ZodObject,
  build: (o: Map<string, string>) => T,
  cases: [string, string, unknown][],
): void {
  const base = build(new Map());
  assert.ok(schema.safeParse(base).success, `${what}: the defaults`);
  for (const [option, field, value] of cases) {
    const built = cli(build, [[option, String(value)]]);
    const ok = schema.safeParse({ ...base, [field]: value }).success;
    assert.equal(
      built !== undefined,
      ok,
      `${what} --${option}=${value}: the CLI ${ok ? "refuses" : "accepts"}`,
    );
    if (built) assert.ok(schema.safeParse(built).success, `${what} --${option}=${value}: the built config`);
  }
}

function numberCases(schema: z.ZodObject, list: [string, string][]): [string, string, unknown][] {
  return list.flatMap(([option, field]) => {
    const n = schema.shape[field] as z.ZodNumber;
    const min = n.minValue!, max = n.maxValue!;
    return [min - 1, min, max, max + 1].map((v): [string, string, unknown] => [option, field, v]);
  });
}

Deno.test("lb config: the CLI accepts exactly what LbConfigSchema accepts", () => {
  agree("lb", LbConfigSchema, lbConfig, [
    ...numberCases(LbConfigSchema, [...NUMBERS, ["sctp_encap", "sctpEncap"]]),
    ...[...NAMES, ["tshm", "tshm"]].flatMap((
      [o, f],
    ): [string, string, unknown][] => [[o, f, ""], [o, f, "x"]]),
  ]);
  for (
    const [q, first, last] of [["0", 0, 0], ["65535", 65535, 65535], ["0:65535", 0, 65535], ["3:2", 3, 2]]
  ) {
    const built = cli(lbConfig, [["queue", String(q)]]);
    const ok = LbConfigSchema.safeParse({ ...lbConfig(new Map()), queues: { first, last } }).success;
    assert.equal(built !== undefined, ok, `--queue=${q}`);
  }
  assert.equal(cli(lbConfig, [["queue", "65536"]]), undefined);
});

Deno.test("lb config: the CLI accepts exactly what FlowLbConfigSchema accepts", () => {
  agree("flowlb", FlowLbConfigSchema, flowLbConfig, [
    ...numberCases(FlowLbConfigSchema, [...NUMBERS, ["nolb_fwmark", "nolbFwmark"]]),
    ...NAMES.flatMap(([o, f]): [string, string, unknown][] => [[o, f, ""], [o, f, "x"]]),
  ]);
});

Deno.test("lb config: main.ts's fast path runs the registry's lb and flowlb", async () => {
  const mod = await import("../../cli/commands/lb.ts");
  assert.equal(COMMANDS.find((c) => c.name === "lb"), mod.lb);
  assert.equal(COMMANDS.find((c) => c.name === "flowlb"), mod.flowlb);
});
