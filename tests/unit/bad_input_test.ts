/**
 * Bad numbers on the command line: upstream's atoi() turns garbage into 0
 * (and e.g. activates fwmark 0); we reject it. Each case must exit 1 with
 * exactly one stderr line naming the value, and leave the shm files alone.
 */
import assert from "node:assert/strict";
import { nfqlb } from "../harness/nfqlb.ts";
import { libSandbox } from "../helpers/shm.ts";

const CASES: { args: string[]; value: string }[] = [
  { args: ["activate", "--shm=t", "abc"], value: "abc" },
  { args: ["activate", "--shm=t", "1", "abc"], value: "abc" },
  { args: ["activate", "--shm=t", "1x"], value: "1x" },
  { args: ["activate", "--shm=t", "2147483648"], value: "2147483648" },
  { args: ["activate", "--shm=t", ""], value: "''" },
  { args: ["deactivate", "--shm=t", "0x10"], value: "0x10" },
  { args: ["init", "--shm=t", "--M=1e9x"], value: "1e9x" },
  { args: ["init", "--shm=t", "--M=1e3"], value: "1e3" },
  { args: ["init", "--shm=t", "--N=-1"], value: "-1" },
  { args: ["init", "--shm=t", "--N=0"], value: "0" },
  { args: ["init", "--shm=t", "--N="], value: "''" },
  { args: ["init", "--shm=t", "--ownfw=x"], value: "x" },
  { args: ["activate", "--shm=t", "--index=-3", "5"], value: "-3" },
  { args: ["activate", "--shm=t", "--index=1.5", "5"], value: "1.5" },
  { args: ["deactivate", "--shm=t", "--index=x"], value: "x" },
  { args: ["loglevel", "x"], value: "x" },
  { args: ["primebelow", "abc"], value: "abc" },
  { args: ["primebelow", "-5"], value: "-5" },
  { args: ["fwmark", "--src=10.0.0.1:1", "--dst=10.0.0.2:2", "--proto=tcp", "--hash_mode=y"], value: "y" },
];

Deno.test("bad numbers: exit 1, one stderr line naming the value, shm files unchanged", async () => {
  using sb = libSandbox();
  assert.equal((await nfqlb(["init", "--shm=t", "--M=97", "--N=4"], sb.env)).code, 0);
  assert.equal((await nfqlb(["activate", "--shm=t", "7", "8"], sb.env)).code, 0);
  assert.equal((await nfqlb(["loglevel", "6"], sb.env)).code, 0);
  const files = ["t", "nfqlb-trace"];
  const snapshot = () => files.map((f) => sb.bytes(f));
  const before = snapshot();
  assert.ok(before.every((b) => b !== undefined && b.length > 0));
  const failures: string[] = [];
  for (const c of CASES) {
    const r = await nfqlb(c.args, sb.env);
    const lines = r.stderr.split("\n");
    const shown = c.value === "''" ? "''" : `'${c.value}'`;
    const ok = r.code === 1 && r.stdout === "" && lines.length === 2 && lines[1] === "" &&
      lines[0].includes(shown);
    if (!ok) {
      failures.push(
        `${c.args.join(" ")}: rc=${r.code} out=${JSON.stringify(r.stdout)} err=${JSON.stringify(r.stderr)}`,
      );
    }
    const after = snapshot();
    for (let i = 0; i < files.length; i++) {
      if (
        !after[i] || after[i]!.length !== before[i]!.length || after[i]!.some((v, k) => v !== before[i]![k])
      ) {
        failures.push(`${c.args.join(" ")}: ${files[i]} changed`);
      }
    }
  }
  assert.deepEqual(failures, []);
  // the table still has exactly the two targets
  const show = await nfqlb(["show", "--shm=t"], sb.env);
  assert.match(show.stdout, /^ {3}Active: 7\(0\) 8\(1\)$/m);
});

Deno.test("the messages name the command, what was wrong, and the accepted range", async () => {
  using sb = libSandbox();
  await nfqlb(["init", "--shm=t", "--M=97", "--N=4"], sb.env);
  const expect: [string[], string][] = [
    [
      ["activate", "--shm=t", "abc"],
      "activate: invalid fwmark 'abc' (expected an integer -2147483648..2147483647)",
    ],
    [["init", "--shm=t", "--M=1e9x"], "init: invalid --M value '1e9x' (expected an integer 0..4294967295)"],
    [["init", "--shm=t", "--N=-1"], "init: invalid --N value '-1' (expected an integer 1..4294967295)"],
    [
      ["activate", "--shm=t", "--index=-3", "5"],
      "activate: invalid --index value '-3' (expected an integer >= 0)",
    ],
    [
      ["deactivate", "--shm=t", "--index=x"],
      "deactivate: invalid --index value 'x' (expected an integer >= 0)",
    ],
    [["loglevel", "x"], "loglevel: invalid level 'x' (expected an integer -2147483648..2147483647)"],
    [["primebelow", "abc"], "primebelow: invalid number 'abc' (expected an integer >= 0)"],
  ];
  for (const [args, line] of expect) {
    const r = await nfqlb(args, sb.env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", line + "\n"], args.join(" "));
  }
});

Deno.test("activate --index=4 on N=4: `Lookup index too large`, table unchanged", async () => {
  using sb = libSandbox();
  await nfqlb(["init", "--shm=t", "--M=13", "--N=4"], sb.env);
  await nfqlb(["activate", "--shm=t", "--index=2", "7"], sb.env);
  const before = sb.bytes("t")!;
  for (
    const args of [
      ["activate", "--shm=t", "--index=4", "9"],
      ["activate", "--shm=t", "--index=99999999999", "9"],
      ["deactivate", "--shm=t", "--index=4"],
    ]
  ) {
    const r = await nfqlb(args, sb.env);
    assert.deepEqual([r.code, r.stdout, r.stderr], [1, "", "Lookup index too large\n"], args.join(" "));
  }
  assert.deepEqual(sb.bytes("t"), before);
  // --index without a fwmark does nothing, silently (upstream)
  const none = await nfqlb(["activate", "--shm=t", "--index=4"], sb.env);
  assert.deepEqual([none.code, none.stdout, none.stderr], [0, "", ""]);
  // the last valid index works
  const ok = await nfqlb(["activate", "--shm=t", "--index=3", "9"], sb.env);
  assert.deepEqual([ok.code, ok.stderr], [0, ""]);
  const show = await nfqlb(["show", "--shm=t"], sb.env);
  assert.match(show.stdout, /^ {3}Active: 7\(2\) 9\(3\)$/m);
});

Deno.test("values upstream accepts still work: signs, leading zeros, negative fwmark at an index", async () => {
  using sb = libSandbox();
  const init = await nfqlb(["init", "--shm=t", "--M=+013", "--N=04"], sb.env);
  assert.deepEqual([init.code, init.stdout, init.stderr], [0, "", ""]);
  assert.equal((await nfqlb(["activate", "--shm=t", "+5", "006"], sb.env)).code, 0);
  let show = await nfqlb(["show", "--shm=t"], sb.env);
  assert.match(show.stdout, /^ {2}Maglev: M=13, N=4$/m);
  assert.match(show.stdout, /^ {3}Active: 5\(0\) 6\(1\)$/m);
  // `activate --index=0 -- -1` deactivates row 0 (upstream)
  assert.equal((await nfqlb(["activate", "--shm=t", "--index=0", "--", "-1"], sb.env)).code, 0);
  show = await nfqlb(["show", "--shm=t"], sb.env);
  assert.match(show.stdout, /^ {3}Active: 6\(1\)$/m);
});
