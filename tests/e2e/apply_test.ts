/**
 * End-to-end tests of `nfqlb apply / teardown / status -f FILE` as an
 * operator runs them: in the lb netns of a topology whose own steering and
 * fwmark routing are removed, so that apply installs everything — target
 * tables, the detached lb/flowlb, the kernel rules, flows. Each test checks
 * what apply printed, what the kernel holds (iptables-save, ip rule, routes,
 * both families), the tables, the dataplane's pid, and where real UDP/TCP
 * traffic lands (sets and counts, never timing). Every test stops what apply
 * started, also when an assertion fails ({@link HostUnderTest}). Needs root.
 */
import assert from "node:assert/strict";
import { type Family, targetAddr, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import { HostUnderTest } from "../harness/host.ts";
import { own } from "../helpers/shm.ts";
import { snakeJson } from "../helpers/json_keys.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { pidRunning } from "../harness/process.ts";
import { tally } from "../harness/traffic.ts";
import { assertAllAnswered } from "./checks.ts";

const ignore = skipUnlessRoot();

/** One target entry of a config: fwmark 100+i, target i's address of each family in `fams`. */
function targetYaml(i: number, fams: Family[], extra = ""): string {
  const addrs = fams.map((f) => (f === 4 ? targetAddr(4, i) : `"${targetAddr(6, i)}"`));
  const address = addrs.length === 1 ? addrs[0] : `[${addrs.join(", ")}]`;
  return `      - { fwmark: ${100 + i}, address: ${address}${extra ? `, ${extra}` : ""} }`;
}

/** The VIP list of the families. */
function vipsYaml(fams: Family[]): string {
  return `[${fams.map((f) => (f === 4 ? VIP[4] : `"${VIP[6]}"`)).join(", ")}]`;
}

/** A one-service lb config (service `web`, targets t1..t3) with a per-target extra and service lines. */
function lbConfig(
  name: string,
  fams: Family[],
  o: { extra?: string[]; service?: string[] } = {},
): string {
  return [
    "version: 1",
    `name: ${name}`,
    "services:",
    "  - name: web",
    `    vips: ${vipsYaml(fams)}`,
    ...(o.service ?? []).map((l) => `    ${l}`),
    "    targets:",
    ...[1, 2, 3].map((i) => targetYaml(i, fams, o.extra?.[i - 1])),
    "",
  ].join("\n");
}

/** The change lines of apply's output (without its last, summary line). */
function changeLines(lines: string[]): string[] {
  return lines.slice(0, -1);
}

Deno.test({
  name: "e2e apply: DSR IPv4+IPv6 lb from a file: traffic to every target, status, idempotent, dry run",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "e2e-dsr" });
    const { topo } = h;
    h.write(lbConfig("e2e-dsr", [4, 6]));

    const lines = await h.applyOk();
    const changes = changeLines(lines);
    await t.step("apply creates the table, activates 3 targets, starts lb, installs the rules", () => {
      assert.equal(lines.at(-1), `applied ${h.file}: ${changes.length} changes`);
      assert.equal(changes[0], "+ init --shm=web --M=997 --N=32");
      for (const fw of topo.fwmarks) assert.ok(changes.includes(`+ activate --shm=web --weight=1 ${fw}`));
      assert.equal(
        changes.filter((l) =>
          /^\+ start lb --queue=2 --tshm=web --ft_shm=ftshm\.e2e-dsr --trace_address=unix:nfqlb-trace\.e2e-dsr {3}\(pid \d+, log /
            .test(l)
        ).length,
        1,
      );
      for (const [ipt, vip] of [["iptables", `${VIP[4]}/32`], ["ip6tables", `${VIP[6]}/128`]]) {
        assert.equal(
          changes.filter((l) =>
            l.startsWith(`+ ${ipt} `) && l.includes(`-d ${vip} `) && l.includes("NFQUEUE --queue-num 2")
          ).length,
          1,
          `${ipt} queue rule`,
        );
      }
      for (const ip of ["ip", "ip -6"]) {
        for (const fw of topo.fwmarks) {
          assert.ok(
            changes.includes(`+ ${ip} rule add fwmark ${fw} table ${fw} protocol 110`),
            `${ip} rule ${fw}`,
          );
        }
      }
      assert.ok(changes.every((l) => /^\+ /.test(l)), "a first apply only adds");
      assert.ok(h.pid() !== undefined && pidRunning(h.pid()!), "lb runs");
    });

    for (const fam of [4, 6] as Family[]) {
      await t.step(`ipv${fam}: UDP and TCP flows reach all 3 targets`, async () => {
        assertAllAnswered(
          (await topo.client.udp(fam, topo.flows(fam, 60, 20000))).targets,
          topo.targetNames,
          "udp",
        );
        assertAllAnswered(
          (await topo.client.tcp(fam, topo.flows(fam, 60, 21000))).targets,
          topo.targetNames,
          "tcp",
        );
      });
    }

    await t.step("status -f: the host matches", async () => {
      const r = await h.nfqlb(["status", "-f", h.file]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const out = r.stdout.trimEnd().split("\n");
      assert.equal(out.at(-1), `the host matches ${h.file}`);
      assert.ok(!out.some((l) => l.trimStart().startsWith("!")), r.stdout);
      assert.ok(
        out.includes(
          `  dataplane: lb --queue=2 --tshm=web --ft_shm=ftshm.e2e-dsr --trace_address=unix:nfqlb-trace.e2e-dsr, pid ${h.pid()}, log ${
            h.shmFile(own("host-e2e-dsr.log"))
          }`,
        ),
        r.stdout,
      );
      // the same as JSON, snake_case at every depth
      const j = await h.nfqlb(["status", "-f", h.file, "--json"]);
      assert.equal(j.code, 0, j.stdout + j.stderr);
      const doc = snakeJson<{
        matches: boolean;
        configs: {
          config: string;
          differences: string[];
          services: { name: string; targets: { fwmark: number; weight: number | null }[] }[];
          dataplane: { program: string; pid: number } | null;
        }[];
      }>(j.stdout, "status --json");
      assert.equal(doc.matches, true);
      assert.equal(doc.configs[0].config, "e2e-dsr");
      assert.deepEqual(doc.configs[0].differences, []);
      assert.deepEqual(doc.configs[0].services[0].targets.map((x) => [x.fwmark, x.weight]), [
        [101, 1],
        [102, 1],
        [103, 1],
      ]);
      assert.deepEqual(
        doc.configs[0].dataplane && [doc.configs[0].dataplane.program, doc.configs[0].dataplane.pid],
        [
          "lb",
          h.pid(),
        ],
      );
    });

    const snap = await h.snapshot();
    const pid = h.pid();
    const rows = await h.rows("web");
    await t.step("a second apply changes nothing and says so", async () => {
      assert.deepEqual(await h.applyOk(), [`nothing to change: the host matches ${h.file}`]);
      assert.deepEqual(await h.snapshot(), snap);
      assert.equal(h.pid(), pid);
      assert.deepEqual(await h.rows("web"), rows);
      // a dry run without changes exits 0, as JSON too
      assert.deepEqual(await h.applyOk("--dry-run"), [`nothing to change: the host matches ${h.file}`]);
      const j = await h.apply("--dry-run", "--json");
      assert.equal(j.code, 0, j.stderr);
      const doc = snakeJson<{ change_count: number; changes: unknown[]; dry_run: boolean }>(
        j.stdout,
        "apply",
      );
      assert.deepEqual([doc.change_count, doc.changes, doc.dry_run], [0, [], true]);
    });

    await t.step("--dry-run of a changed file prints the change and changes nothing", async () => {
      h.write(
        lbConfig("e2e-dsr", [4, 6], {
          extra: ["", "", "weight: 2"],
          service: [`ports: [{ protocol: udp, port: ${UDP_PORT} }, { protocol: tcp, port: ${TCP_PORT} }]`],
        }),
      );
      // exit 2: there are changes (applyOk checks it)
      const out = await h.applyOk("--dry-run");
      const dry = changeLines(out);
      assert.equal(out.at(-1), `dry run: ${dry.length} changes, none made`);
      const j = await h.apply("--dry-run", "--json");
      assert.equal(j.code, 2, j.stderr);
      const plan = snakeJson<
        { change_count: number; applied: boolean; changes: { op: string; what: string }[] }
      >(
        j.stdout,
        "apply --dry-run --json",
      );
      assert.equal(plan.applied, false);
      assert.equal(plan.change_count, dry.length);
      assert.deepEqual(
        plan.changes.map((c) => `${{ add: "+", remove: "-", change: "~" }[c.op]} ${c.what}`),
        dry,
        "the JSON plan is the text plan",
      );
      assert.ok(dry.includes("~ activate --shm=web --weight=2 103   (weight 1 -> 2)"), out.join("\n"));
      // the port-less queue rule of each family goes, one per port comes
      for (const ipt of ["iptables", "ip6tables"]) {
        assert.equal(
          dry.filter((l) => l.startsWith(`- ${ipt} `) && l.includes("NFQUEUE")).length,
          1,
          out.join("\n"),
        );
        assert.equal(
          dry.filter((l) => l.startsWith(`+ ${ipt} `) && l.includes("NFQUEUE")).length,
          2,
          out.join("\n"),
        );
      }
      assert.ok(!dry.some((l) => /(start|stop) lb/.test(l)), "the lb's command line is the same");
      assert.deepEqual(await h.snapshot(), snap);
      assert.equal(h.pid(), pid);
      assert.deepEqual(await h.rows("web"), rows);
      const st = await h.nfqlb(["status", "-f", h.file]);
      assert.equal(st.code, 1, "status of the changed file: it differs");
      assert.match(st.stdout, /! target 103 {2}weight 1, the file says 2/);
      const sj = await h.nfqlb(["status", "-f", h.file, "--json"]);
      assert.equal(sj.code, 1);
      const sdoc = snakeJson<{ matches: boolean; configs: { differences: string[] }[] }>(sj.stdout, "status");
      assert.equal(sdoc.matches, false);
      assert.ok(sdoc.configs[0].differences.includes("target 103  weight 1, the file says 2"), sj.stdout);
    });
  },
});

Deno.test({
  name: "e2e apply: a weight change is one activate; kernel, lb and other rows stay; drain takes no new flow",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "e2e-weight" });
    const { topo } = h;
    h.write(lbConfig("e2e-weight", [4]));
    await h.applyOk();
    const snap = await h.snapshot();
    const pid = h.pid();
    const rows = await h.rows("web");
    assert.deepEqual([...rows.keys()].sort(), topo.fwmarks);

    const applyWeight = async (w: number, from: number) => {
      h.write(lbConfig("e2e-weight", [4], { extra: ["", `weight: ${w}`, ""] }));
      assert.deepEqual(await h.applyOk(), [
        `~ activate --shm=web --weight=${w} 102   (weight ${from} -> ${w})`,
        `applied ${h.file}: 1 change`,
      ]);
      assert.deepEqual(await h.snapshot(), snap, "the kernel is unchanged");
      assert.equal(h.pid(), pid, "the lb is the same process");
      const now = await h.rows("web");
      assert.deepEqual(now.get(102), { row: rows.get(102)!.row, weight: w });
      for (const fw of [101, 103]) assert.deepEqual(now.get(fw), rows.get(fw), `row of ${fw}`);
    };

    await t.step("drain (weight 1 -> 0): new flows go to t1 and t3 only", async () => {
      await applyWeight(0, 1);
      assertAllAnswered((await topo.client.udp(4, topo.flows(4, 90, 24000))).targets, ["t1", "t3"], "udp");
      assertAllAnswered((await topo.client.tcp(4, topo.flows(4, 60, 25000))).targets, ["t1", "t3"], "tcp");
    });

    await t.step("weight 0 -> 3: t2 takes the largest share of new flows", async () => {
      await applyWeight(3, 0);
      const r = await topo.client.udp(4, topo.flows(4, 90, 26000));
      assertAllAnswered(r.targets, topo.targetNames, "udp");
      const n = tally(r.targets.flat());
      assert.ok(n.t2 > n.t1 && n.t2 > n.t3, JSON.stringify(n));
    });
  },
});

Deno.test({
  name: "e2e apply: NAT with port translation: every target's real port answers, replies come from the VIP",
  ignore,
  async fn(t) {
    const NAT_PORT = 6000;
    await using h = await HostUnderTest.create({ name: "e2e-nat" });
    const { topo } = h;
    const names = await topo.startNatServers(NAT_PORT);
    h.write(lbConfig("e2e-nat", [4, 6], {
      extra: [1, 2, 3].map(() => `port: ${NAT_PORT}, mode: nat`),
      service: [`ports: [{ protocol: udp, port: ${UDP_PORT} }, { protocol: tcp, port: ${TCP_PORT} }]`],
    }));
    const lines = changeLines(await h.applyOk());
    await t.step("apply adds DNAT to each target's address and port, no ip rule", () => {
      assert.ok(!lines.some((l) => /^\+ ip (-6 )?(rule|route) /.test(l)), lines.join("\n"));
      for (const [k] of topo.fwmarks.entries()) {
        for (const to of [`${targetAddr(4, k + 1)}:${NAT_PORT}`, `[${targetAddr(6, k + 1)}]:${NAT_PORT}`]) {
          // one DNAT rule per queued protocol
          assert.equal(lines.filter((l) => l.includes(`--to-destination ${to}`)).length, 2, `DNAT to ${to}`);
        }
      }
    });
    for (const fam of [4, 6] as Family[]) {
      // the client's sockets are connected to VIP:port, so only replies from the VIP count
      await t.step(`ipv${fam}: UDP and TCP to the VIP reach every target's port ${NAT_PORT}`, async () => {
        assertAllAnswered((await topo.client.udp(fam, topo.flows(fam, 60, 22000))).targets, names, "udp");
        assertAllAnswered((await topo.client.tcp(fam, topo.flows(fam, 60, 23000))).targets, names, "tcp");
      });
    }
    await t.step("status -f: the host matches", async () => {
      const r = await h.nfqlb(["status", "-f", h.file]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /target 101 {2}weight 1 {2}nat port 6000 10\.213\.1\.1 fd13:1::1/);
    });
  },
});

Deno.test({
  name:
    "e2e apply: teardown leaves nothing: process, kernel rules, tables, state; status 1; twice is a no-op",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "e2e-down" });
    const FT = "ftshm.e2e-down"; // its fragment stats: derived from the config's name
    const { topo } = h;
    h.write(lbConfig("e2e-down", [4, 6], { service: ["conntrack: { capacity: 1000 }"] }));
    const before = await h.snapshot();
    const filesBefore = h.shmFiles();
    await h.applyOk();
    const pid = h.pid();
    assert.ok(pid !== undefined && pidRunning(pid), "lb runs");
    for (const f of ["web", own("web-ct"), FT, own(`${FT}-counters`), own("host-e2e-down.json")]) {
      assert.ok(h.shmFiles().includes(f), `${f} after apply: ${h.shmFiles()}`);
    }
    assertAllAnswered((await topo.client.udp(4, topo.flows(4, 30, 27000))).targets, topo.targetNames, "udp");
    assert.notDeepEqual(await h.snapshot(), before);

    const r = await h.nfqlb(["teardown", "-f", h.file]);
    await t.step("teardown stops lb and removes rules, routes, tables and state", async () => {
      assert.equal(r.code, 0, r.stderr);
      const out = r.stdout.trimEnd().split("\n");
      assert.equal(out.at(-1), `removed ${out.length - 1} things of e2e-down`);
      assert.ok(
        out.includes(
          `- stop lb --queue=2 --tshm=web --ft_shm=${FT} --trace_address=unix:nfqlb-trace.e2e-down   (pid ${pid})`,
        ),
        r.stdout,
      );
      for (const f of ["web", FT]) assert.ok(out.includes(`- delete --shm=${f}`), f);
      for (const f of [own("web-ct"), own(`${FT}-counters`)]) assert.ok(out.includes(`- delete ${f}`), f);
      assert.ok(!pidRunning(pid), `lb pid ${pid} is gone`);
      assert.deepEqual(await h.snapshot(), before, "the kernel is as before apply");
      // nfqlb-trace is the host's log-level shm that every lb and `loglevel` share: it stays
      const left = h.shmFiles().filter((f) => !filesBefore.includes(f) && f !== "nfqlb-trace");
      assert.deepEqual(left, [], "shm files left");
    });
    await t.step("status -f exits 1; a second teardown has nothing to remove", async () => {
      const st = await h.nfqlb(["status", "-f", h.file]);
      assert.equal(st.code, 1, st.stdout);
      assert.match(st.stdout, /! service web: no target table/);
      const again = await h.nfqlb(["teardown", "-f", h.file]);
      assert.equal(again.code, 0, again.stderr);
      assert.equal(again.stdout, "nothing to remove for e2e-down\n");
      const j = await h.nfqlb(["teardown", "-f", h.file, "--json"]);
      assert.equal(j.code, 0, j.stderr);
      const doc = snakeJson<{ config: string; removed_count: number; changes: unknown[] }>(
        j.stdout,
        "teardown",
      );
      assert.deepEqual([doc.config, doc.removed_count, doc.changes], ["e2e-down", 0, []]);
    });
  },
});

Deno.test({
  name: "e2e apply: flowlb: two services on one VIP, flows by port; removing a flow deletes exactly it",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "e2e-flows" });
    const { topo } = h;
    const serviceB = [
      "  - name: b",
      `    vips: [${VIP[4]}]`,
      `    ports: [{ protocol: tcp, port: ${TCP_PORT} }]`,
      "    targets:",
      targetYaml(3, [4]),
    ];
    const config = (flows: string[], withB = true) =>
      [
        "version: 1",
        "name: e2e-flows",
        "services:",
        "  - name: a",
        `    vips: [${VIP[4]}]`,
        `    ports: [{ protocol: udp, port: ${UDP_PORT} }]`,
        "    targets:",
        targetYaml(1, [4]),
        targetYaml(2, [4]),
        ...(withB ? serviceB : []),
        "flows:",
        ...flows,
        "",
      ].join("\n");
    const flowA = `  - { name: udp-a, service: a, protocols: [udp], dsts: [${
      VIP[4]
    }/32], dports: [${UDP_PORT}] }`;
    const flowB = `  - { name: tcp-b, service: b, protocols: [tcp], dsts: [${
      VIP[4]
    }/32], dports: [${TCP_PORT}] }`;
    const filesBefore = h.shmFiles();
    h.write(config([flowA, flowB]));
    const lines = changeLines(await h.applyOk());
    const listNames = async () => {
      const r = await h.nfqlb(["flow-list"]);
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as { name: string; user_ref?: string }[]).map((f) =>
        `${f.name}->${f.user_ref}`
      )
        .sort();
    };

    await t.step("apply starts flowlb and sets both flows", async () => {
      assert.equal(lines.filter((l) => /^\+ start flowlb --queue=2 /.test(l)).length, 1, lines.join("\n"));
      assert.ok(
        // flow-set's canonical form, IPv4 CIDRs shown as IPv4
        lines.includes(
          `+ flow-set --name=udp-a --target=a --protocols=udp --dsts=${VIP[4]}/32 --dports=${UDP_PORT}`,
        ),
        lines.join("\n"),
      );
      assert.equal(lines.filter((l) => l.startsWith("+ flow-set ")).length, 2);
      assert.deepEqual(await listNames(), ["tcp-b->b", "udp-a->a"]);
    });
    await t.step("UDP reaches only service a's targets, TCP only service b's", async () => {
      assertAllAnswered((await topo.client.udp(4, topo.flows(4, 60, 28000))).targets, ["t1", "t2"], "udp");
      assertAllAnswered((await topo.client.tcp(4, topo.flows(4, 30, 29000))).targets, ["t3"], "tcp");
    });
    await t.step("removing flow tcp-b from the file deletes exactly it", async () => {
      const pid = h.pid();
      h.write(config([flowA]));
      assert.deepEqual(await h.applyOk(), ["- flow-delete --name=tcp-b", `applied ${h.file}: 1 change`]);
      assert.deepEqual(await listNames(), ["udp-a->a"]);
      assert.equal(h.pid(), pid);
      assertAllAnswered((await topo.client.udp(4, topo.flows(4, 30, 30000))).targets, ["t1", "t2"], "udp");
      const st = await h.nfqlb(["status", "-f", h.file]);
      assert.equal(st.code, 0, st.stdout);
    });
    await t.step(
      "removing service b deletes its table, its port's queue rule and its target's routing",
      async () => {
        const pid = h.pid();
        h.write(config([flowA], false));
        const out = changeLines(await h.applyOk());
        assert.ok(out.includes("- delete --shm=b   (service b is no longer in the file)"), out.join("\n"));
        assert.equal(out.filter((l) => l.startsWith("- delete")).length, 1, out.join("\n"));
        assert.ok(
          out.some((l) => l.includes(`--dport ${TCP_PORT} `) && l.includes("NFQUEUE")),
          out.join("\n"),
        );
        assert.ok(out.includes("- ip rule del fwmark 103 table 103 protocol 110"), out.join("\n"));
        assert.ok(out.every((l) => l.startsWith("- ")), out.join("\n"));
        assert.ok(!h.shmFiles().includes("b"));
        assert.equal(h.pid(), pid);
        assertAllAnswered((await topo.client.udp(4, topo.flows(4, 30, 32000))).targets, ["t1", "t2"], "udp");
        const st = await h.nfqlb(["status", "-f", h.file]);
        assert.equal(st.code, 0, st.stdout);
        assert.deepEqual(await h.applyOk(), [`nothing to change: the host matches ${h.file}`]);
      },
    );
    await t.step("apply's flowlb saves no flows (the file holds them); teardown leaves nothing", async () => {
      // as JSON: what was removed, one change per line the text would say
      const r = await h.nfqlb(["teardown", "-f", h.file, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const doc = snakeJson<
        { removed_count: number; changes: { op: string; what: string }[]; notes: string[] }
      >(
        r.stdout,
        "teardown --json",
      );
      assert.ok(doc.changes.length > 0 && doc.changes.every((c) => c.op === "remove"), r.stdout);
      assert.ok(doc.changes.some((c) => c.what.startsWith("stop flowlb ")), r.stdout);
      assert.doesNotMatch(JSON.stringify(doc), /flow_store|saved flows/);
      const left = h.shmFiles().filter((f) => !filesBefore.includes(f) && f !== "nfqlb-trace");
      assert.deepEqual(left, [], "shm files left");
    });
  },
});

Deno.test({
  name: "e2e apply: an invalid file is one line naming file:line: path, exit 1, and changes nothing",
  ignore,
  async fn() {
    await using h = await HostUnderTest.create({ name: "e2e-bad" });
    h.write(lbConfig("e2e-bad", [4]));
    await h.applyOk();
    const snap = await h.snapshot();
    const pid = h.pid();
    const rows = await h.rows("web");
    const files = h.shmFiles();
    // a valid change (target 101 removed) together with an error: nothing of it may happen
    h.write(lbConfig("e2e-bad", [4], { extra: ["active: false", "weight: 70000", ""] }));
    const r = await h.apply();
    assert.equal(r.code, 1, r.stdout);
    assert.equal(r.stdout, "");
    const err = r.stderr.trimEnd().split("\n");
    assert.equal(err.length, 1, r.stderr);
    assert.match(
      err[0],
      new RegExp(
        `^${h.file.replace(/[.]/g, "\\.")}:\\d+: services\\[0\\]\\.targets\\[1\\]\\.weight: .*70000`,
      ),
    );
    assert.deepEqual(await h.snapshot(), snap);
    assert.equal(h.pid(), pid);
    assert.ok(pidRunning(pid!));
    assert.deepEqual(await h.rows("web"), rows);
    assert.deepEqual(h.shmFiles(), files);
  },
});

Deno.test({
  name: "e2e apply: conntrack and scheduler rr from the file: new flows spread in rr order; ct-stats says rr",
  ignore,
  async fn() {
    await using h = await HostUnderTest.create({ name: "e2e-rr" });
    const { topo } = h;
    h.write(lbConfig("e2e-rr", [4], { service: ["scheduler: rr", "conntrack: { capacity: 1000 }"] }));
    const lines = changeLines(await h.applyOk());
    assert.ok(
      lines.includes("+ init --shm=web --conntrack=1000 --ct_ttl=300000,30000,30000 --scheduler=rr"),
      lines.join("\n"),
    );
    const n = 60;
    const r = await topo.client.udp(4, topo.flows(4, n, 31000));
    assertAllAnswered(r.targets, topo.targetNames, "udp");
    const got = tally(r.targets.flat());
    for (const name of topo.targetNames) {
      assert.ok(
        Math.abs(got[name] - n / 3) <= 1,
        `rr: ${name} got ${got[name]} of ${n}: ${JSON.stringify(got)}`,
      );
    }
    const st = await h.nfqlb(["ct-stats", "--shm=web"]);
    assert.equal(st.code, 0, st.stderr);
    const stats = JSON.parse(st.stdout) as { scheduler: string; entries: number };
    assert.equal(stats.scheduler, "rr");
    assert.equal(stats.entries, n);
  },
});
