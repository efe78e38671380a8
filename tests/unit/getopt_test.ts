/**
 * cli/getopt.ts: glibc getopt_long_only semantics and messages, as upstream
 * parses options (docs/cli.md, "Option parsing"), tested on small tables and
 * on the real command tables.
 */
import assert from "node:assert/strict";
import { GetoptError, getoptLongOnly, missingRequired, type OptionSpec } from "../../cli/getopt.ts";
import { helpText } from "../../cli/help.ts";
import { COMMANDS } from "../../cli/registry.ts";
import type { Command } from "../../cli/command.ts";
import { nfqlb } from "../harness/nfqlb.ts";

function cmd(name: string): Command {
  const c = COMMANDS.find((c) => c.name === name);
  assert.ok(c, `command ${name}`);
  return c;
}

/** Parses args for a real command; returns the values as a plain object. */
function parse(name: string, args: string[]) {
  const p = getoptLongOnly(name, args, cmd(name).options);
  return { values: Object.fromEntries(p.values), positionals: p.positionals, help: p.help };
}

function assertError(fn: () => unknown, message: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof GetoptError, `GetoptError, got ${e}`);
    assert.equal(e.message, message);
    return true;
  });
}

const T: OptionSpec[] = [
  { name: "shm", help: "Shared memory" },
  { name: "shmx", help: "prefix collision with shm" },
  { name: "flag", help: "a flag", flag: true },
  { name: "N", help: "upper" },
  { name: "n", help: "lower" },
  { name: "req", help: "required", required: true },
];

Deno.test("values: --opt=v, --opt v, -opt, -opt=v, -opt v", () => {
  for (
    const args of [["--shm=x"], ["--shm", "x"], ["-shm=x"], ["-shm", "x"]]
  ) {
    const p = getoptLongOnly("t", args, T);
    assert.deepEqual([p.values.get("shm"), p.positionals, p.help], ["x", [], false], args.join(" "));
  }
  // a flag without a value: -flag and --flag
  assert.equal(getoptLongOnly("t", ["-flag"], T).values.get("flag"), "");
  assert.equal(getoptLongOnly("t", ["--flag"], T).values.get("flag"), "");
  // the value after a separate word is taken as is, even when it starts with '-'
  assert.equal(getoptLongOnly("t", ["--shm", "-x"], T).values.get("shm"), "-x");
  assert.equal(getoptLongOnly("t", ["--shm", "--"], T).values.get("shm"), "--");
  // empty values and values with '=' in them
  assert.equal(getoptLongOnly("t", ["--shm="], T).values.get("shm"), "");
  assert.equal(getoptLongOnly("t", ["--shm=a=b"], T).values.get("shm"), "a=b");
  // the last occurrence wins
  assert.equal(getoptLongOnly("t", ["--shm=a", "-shm", "b"], T).values.get("shm"), "b");
  // options are case-sensitive
  assert.deepEqual(Object.fromEntries(getoptLongOnly("t", ["--N=1", "-n=2"], T).values), { N: "1", n: "2" });
});

Deno.test("unique prefixes select the option; an exact match beats a longer option", () => {
  assert.deepEqual(parse("flow-set", ["--proto=tcp"]).values, { protocols: "tcp" });
  assert.deepEqual(parse("flow-set", ["--dport=80", "--dst=1.2.3.4/32", "--src=::/0", "--sport=1"]).values, {
    dports: "80",
    dsts: "1.2.3.4/32",
    srcs: "::/0",
    sports: "1",
  });
  assert.deepEqual(parse("init", ["--sh=x", "-ow=3"]).values, { shm: "x", ownfw: "3" });
  assert.deepEqual(parse("flowlb", ["-p"]).values, { promiscuous_ping: "" });
  // `shm` is both a prefix of `shmx` and an exact name: exact wins
  assert.equal(getoptLongOnly("t", ["--shm=1"], T).values.get("shm"), "1");
  assert.equal(getoptLongOnly("t", ["--shmx=1"], T).values.get("shmx"), "1");
  // `-he` is a unique prefix of help in init
  assert.equal(parse("init", ["-he"]).help, true);
});

Deno.test("ambiguous prefixes: glibc's message, possibilities in table order with help first", () => {
  assertError(
    () => parse("lb", ["--q=1"]),
    "lb: option '--q=1' is ambiguous; possibilities: '--queue' '--qlength'",
  );
  assertError(
    () => parse("flow-set", ["--p=1", "--name=a", "--target=b"]),
    "flow-set: option '--p=1' is ambiguous; possibilities: '--prio' '--protocols'",
  );
  assertError(
    () => parse("lb", ["--ft_s=3"]),
    "lb: option '--ft_s=3' is ambiguous; possibilities: '--ft_shm' '--ft_size'",
  );
  assertError(
    () => parse("lb", ["--h"]),
    "lb: option '--h' is ambiguous; possibilities: '--help' '--hash_mode'",
  );
  assertError(
    () => parse("fwmark", ["-h=1"]),
    "fwmark: option '-h=1' is ambiguous; possibilities: '-help' '-hash_mode'",
  );
  assertError(
    () => getoptLongOnly("t", ["-sh"], T),
    "t: option '-sh' is ambiguous; possibilities: '-shm' '-shmx'",
  );
});

Deno.test("unrecognized options: the word as typed, with its dash form and value", () => {
  assertError(() => parse("init", ["--bogus=1"]), "init: unrecognized option '--bogus=1'");
  assertError(() => parse("init", ["-foo"]), "init: unrecognized option '-foo'");
  assertError(() => parse("show", ["--foo"]), "show: unrecognized option '--foo'");
  // a positional that starts with '-' is an option
  assertError(() => parse("activate", ["-1"]), "activate: unrecognized option '-1'");
  // case matters: there is no --m in init
  assertError(() => parse("init", ["--m=5"]), "init: unrecognized option '--m=5'");
  // the first error wins
  assertError(() => parse("init", ["--bogus", "--other"]), "init: unrecognized option '--bogus'");
});

Deno.test("missing values use the full option name; flags refuse values", () => {
  assertError(() => parse("show", ["--shm"]), "show: option '--shm' requires an argument");
  assertError(() => parse("show", ["--sh"]), "show: option '--shm' requires an argument");
  assertError(() => parse("init", ["-M"]), "init: option '-M' requires an argument");
  assertError(
    () => parse("flowlb", ["--promiscuous_ping=1"]),
    "flowlb: option '--promiscuous_ping' doesn't allow an argument",
  );
  assertError(
    () => parse("flowlb", ["-prom=1"]),
    "flowlb: option '-promiscuous_ping' doesn't allow an argument",
  );
  assertError(() => parse("init", ["--help=1"]), "init: option '--help' doesn't allow an argument");
});

Deno.test("positionals are permuted; `--` ends the options", () => {
  assert.deepEqual(parse("activate", ["101", "--shm=x", "102"]), {
    values: { shm: "x" },
    positionals: ["101", "102"],
    help: false,
  });
  assert.deepEqual(parse("activate", ["--shm", "x", "101"]).positionals, ["101"]);
  assert.deepEqual(parse("activate", ["--shm=x", "--", "-1", "--index=3"]), {
    values: { shm: "x" },
    positionals: ["-1", "--index=3"],
    help: false,
  });
  assert.deepEqual(parse("activate", ["--"]).positionals, []);
  // a lone '-' is a positional
  assert.deepEqual(parse("activate", ["-", "5"]).positionals, ["-", "5"]);
});

Deno.test("help: --help, -help, -h; -h is help even where hash_mode makes it ambiguous for glibc", () => {
  for (const c of COMMANDS) {
    assert.equal(getoptLongOnly(c.name, ["--help"], c.options).help, true, `${c.name} --help`);
    assert.equal(getoptLongOnly(c.name, ["-help"], c.options).help, true, `${c.name} -help`);
    assert.equal(getoptLongOnly(c.name, ["-h"], c.options).help, true, `${c.name} -h`);
  }
  for (const name of ["lb", "flowlb", "fwmark"]) {
    assert.ok(cmd(name).options.some((o) => o.name === "hash_mode"), `${name} has hash_mode`);
  }
  // help wins over what follows it, and over missing required options
  const p = parse("delete", ["--help", "--bogus"]);
  assert.equal(p.help, true);
  assert.deepEqual(
    missingRequired(getoptLongOnly("delete", ["--help"], cmd("delete").options), cmd("delete").options),
    [
      "shm",
    ],
  );
  // an error before --help is still an error
  assertError(() => parse("init", ["--bogus", "--help"]), "init: unrecognized option '--bogus'");
});

Deno.test("helpText: header, then `  --name= help ` lines with a trailing space or (required)", () => {
  const upstreamInit = "init [options]\n  Initiate shared mem structures\n" +
    "  --ownfw= Own FW mark. Only used in the LB-tier! \n" +
    "  --shm= Target shared memory \n" +
    "  --N= Maglev max targets \n" +
    "  --M= Maglev lookup table size \n";
  // upstream's text, then our block
  assert.ok(helpText(cmd("init")).startsWith(upstreamInit + "\nnfqlb-deno options (not in nfqlb 1.2.0):\n"));
  assert.equal(
    helpText(cmd("delete")),
    "delete [options]\n  Delete shared mem structures\n  --shm= Target shared memory (required)\n",
  );
  // upstream's flag is printed with '=' too, as upstream; ours without
  assert.match(
    helpText(cmd("flowlb")),
    /^ {2}--promiscuous_ping= Accept ping on any flow with an address match $/m,
  );
  assert.match(helpText(cmd("flowlb")), /^ {2}--fail_open {2,}Accept, unbalanced/m);
  assert.match(helpText(cmd("apply")), /^ {2}--dry-run {2,}Print what would change/m);
  assert.doesNotMatch(helpText(cmd("apply")), /--dry-run=/);
  assert.equal(helpText({ ...cmd("show"), header: "x\n  y", options: [] }), "x\n  y\n");
  assert.equal(
    helpText({
      ...cmd("show"),
      header: "h",
      options: [{ name: "a", help: "A", required: true }, { name: "b", help: "B" }],
    }),
    "h\n  --a= A (required)\n  --b= B \n",
  );
  // an our-own command: aligned, flags without '='
  assert.equal(
    helpText({
      name: "mine",
      header: "h",
      options: [{ name: "file", help: "F", required: true }, { name: "x", help: "X", flag: true }],
      run: () => 0,
    }),
    "h\n  --file=FILE  F (required)\n  --x          X\n",
  );
});

Deno.test("missingRequired: names in table order", () => {
  const fs = cmd("flow-set").options;
  assert.deepEqual(missingRequired(getoptLongOnly("flow-set", [], fs), fs), ["name", "target"]);
  assert.deepEqual(missingRequired(getoptLongOnly("flow-set", ["--target=x"], fs), fs), ["name"]);
  assert.deepEqual(missingRequired(getoptLongOnly("flow-set", ["--target=x", "--name=y"], fs), fs), []);
  assert.deepEqual(missingRequired(getoptLongOnly("t", [], T), T), ["req"]);
  // an empty value counts as given
  assert.deepEqual(missingRequired(getoptLongOnly("t", ["--req="], T), T), []);
});

Deno.test("every command table is valid for getopt: unique names, no `help`, at most 31 options", () => {
  // upstream's 21, then our 4 connection-table commands (docs/conntrack.md), 5 host commands (docs/apply.md,
  // docs/run.md, docs/health.md), offload-rules (docs/offload.md), help and completion (docs/cli.md)
  assert.equal(COMMANDS.length, 33);
  assert.equal(new Set(COMMANDS.map((c) => c.name)).size, 33);
  assert.deepEqual(COMMANDS.slice(21).map((c) => c.name), [
    "ct-list",
    "ct-set",
    "ct-delete",
    "ct-stats",
    "apply",
    "teardown",
    "status",
    "run",
    "health",
    "offload-rules",
    "help",
    "completion",
  ]);
  for (const c of COMMANDS) {
    const names = c.options.map((o) => o.name);
    assert.equal(new Set(names).size, names.length, c.name);
    assert.ok(!names.includes("help"), c.name);
    assert.ok(names.length <= 31, c.name);
    // every option can be written in full, single- and double-dash
    for (const o of c.options) {
      const args = o.flag ? [`-${o.name}`] : [`--${o.name}=v`];
      assert.equal(
        getoptLongOnly(c.name, args, c.options).values.get(o.name),
        o.flag ? "" : "v",
        `${c.name} ${o.name}`,
      );
    }
  }
});

Deno.test("through the CLI: errors on stderr exit 1, help on stdout exit 0, Missing option lines", async () => {
  const lbHelp = await nfqlb(["lb", "-h"]);
  assert.equal(lbHelp.code, 0);
  assert.match(lbHelp.stdout, /^lb \[options\]\n {2}Load-balance\n/);
  assert.equal(lbHelp.stderr, "");
  const amb = await nfqlb(["lb", "--q=1"]);
  assert.deepEqual([amb.code, amb.stdout, amb.stderr], [
    1,
    "",
    "lb: option '--q=1' is ambiguous; possibilities: '--queue' '--qlength'\n",
  ]);
  const miss = await nfqlb(["flow-set"]);
  assert.deepEqual([miss.code, miss.stdout, miss.stderr], [
    1,
    "",
    "Missing option [--name]\nMissing option [--target]\n",
  ]);
  const unk = await nfqlb(["init", "-foo"]);
  assert.deepEqual([unk.code, unk.stdout, unk.stderr], [1, "", "init: unrecognized option '-foo'\n"]);
  const help = await nfqlb(["delete", "-h"]);
  assert.deepEqual([help.code, help.stdout, help.stderr], [
    0,
    "delete [options]\n  Delete shared mem structures\n  --shm= Target shared memory (required)\n",
    "",
  ]);
});
