/**
 * End-to-end tests of configs that share a host, and of apply's all or
 * nothing (issue 16, items 2, 3 and 4): in the lb netns of a topology whose
 * own steering and fwmark routing are removed, as tests/e2e/apply_test.ts.
 *
 * - two configs side by side (an lb on UDP, a flowlb on TCP, one VIP), each
 *   with its own fragment stats, counters, trace and flow addresses derived
 *   from its name; traffic to both; torn down one by one, the other serving
 *   and matching its file all along;
 * - a config that clashes with a recorded one (queue, fwmark, table name,
 *   trace address, admin address) is refused in one line naming both, with
 *   nothing changed;
 * - an apply that fails half-way (a route the kernel refuses) takes back
 *   everything it added; a queue bound by another process, no
 *   CAP_NET_ADMIN, a 2 MB tmpfs as the shm directory: refused before any
 *   change, in one line;
 * - an apply killed half-way: status reports what it left, teardown removes it.
 *
 * Needs root. Every test stops what it started, also on failure.
 */
import assert from "node:assert/strict";
import { targetAddr, TCP_PORT, UDP_PORT, VIP } from "../harness/addresses.ts";
import { HostUnderTest, SHM_LINE } from "../harness/host.ts";
import { own } from "../helpers/shm.ts";
import { skipUnlessRoot } from "../harness/netns.ts";
import { NFQLB } from "../harness/paths.ts";
import { pidRunning, waitUntil } from "../harness/process.ts";
import { derivedAdminAddress } from "../../host/names.ts";
import { assertAllAnswered } from "./checks.ts";

const ignore = skipUnlessRoot();

/** Config `a`: lb on queue 2, service `web-a` (UDP to the VIP), targets t1, t2. */
function configA(extra: string[] = []): string {
  return [
    "version: 1",
    "name: a",
    "services:",
    "  - name: web-a",
    `    vips: [${VIP[4]}]`,
    `    ports: [{ protocol: udp, port: ${UDP_PORT} }]`,
    "    targets:",
    `      - { fwmark: 101, address: ${targetAddr(4, 1)} }`,
    `      - { fwmark: 102, address: ${targetAddr(4, 2)} }`,
    'dataplane: { queue: "2" }',
    ...extra,
    "",
  ].join("\n");
}

/** Config `b`: flowlb on queue 3, service `web-b` (TCP to the VIP) with one flow, target t3. */
function configB(): string {
  return [
    "version: 1",
    "name: b",
    "services:",
    "  - name: web-b",
    `    vips: [${VIP[4]}]`,
    `    ports: [{ protocol: tcp, port: ${TCP_PORT} }]`,
    "    conntrack: { capacity: 1000 }",
    "    targets:",
    `      - { fwmark: 103, address: ${targetAddr(4, 3)} }`,
    "flows:",
    `  - { name: tcp-b, service: web-b, protocols: [tcp], dsts: [${VIP[4]}/32], dports: [${TCP_PORT}] }`,
    'dataplane: { queue: "3" }',
    "",
  ].join("\n");
}

/** Options of {@link small}. */
interface SmallOptions {
  svc?: string;
  queue?: number;
  fw?: number;
  address?: string;
  m?: number;
  n?: number;
  /** The dataplane's options, as a YAML flow mapping. */
  options?: string;
  extra?: string[];
}

/**
 * A config `name` with one DSR service (`web-<name>`, UDP to port 5010 of the VIP, which no traffic here
 * uses) whose one target is fwmark 110 at target 1's address, on queue 7; `o` changes any of them.
 */
function small(name: string, o: SmallOptions = {}): string {
  return [
    "version: 1",
    `name: ${name}`,
    "services:",
    `  - name: ${o.svc ?? `web-${name}`}`,
    ...(o.m ? [`    m: ${o.m}`, `    n: ${o.n ?? 32}`] : []),
    `    vips: [${VIP[4]}]`,
    `    ports: [{ protocol: udp, port: ${UDP_PORT + 10} }]`,
    "    targets:",
    `      - { fwmark: ${o.fw ?? 110}, address: ${o.address ?? targetAddr(4, 1)} }`,
    `dataplane: { queue: "${o.queue ?? 7}"${o.options ? `, options: ${o.options}` : ""} }`,
    ...(o.extra ?? []),
    "",
  ].join("\n");
}

/** The lines of a command's stdout. */
const lines = (s: string) => s.trimEnd().split("\n");

/** The one line of stderr (asserts there is exactly one). */
function oneLine(stderr: string): string {
  const l = lines(stderr);
  assert.equal(l.length, 1, `one line expected: ${stderr}`);
  return l[0];
}

/** Everything apply may change, to compare before and after. */
async function hostState(h: HostUnderTest) {
  return { kernel: await h.snapshot(), files: h.shmFiles() };
}

Deno.test({
  name: "e2e host apart: two configs side by side, own names, traffic to both, torn down one by one",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "a" });
    const { topo } = h;
    const before = await hostState(h);
    h.write(configA());
    const fileB = h.writeOther("b", configB());
    const envB = { NFQLB_FLOW_ADDRESS: "unix:nfqlb.b" };

    await t.step(
      "both apply; each dataplane has its own fragment stats, counters, trace and flow address",
      async () => {
        await h.applyOk();
        const rb = await h.nfqlb(["apply", "-f", fileB]);
        assert.equal(rb.code, 0, rb.stderr + rb.stdout);
        assert.match(lines(rb.stdout)[0], SHM_LINE);
        const startB = lines(rb.stdout).find((l) => l.startsWith("+ start flowlb"));
        assert.match(startB ?? "", /--ft_shm=ftshm\.b --trace_address=unix:nfqlb-trace\.b /);
        for (
          const f of [
            "web-a",
            "ftshm.a",
            own("ftshm.a-counters"),
            "web-b",
            "ftshm.b",
            own("ftshm.b-counters"),
          ]
        ) {
          assert.ok(h.shmFiles().includes(f), `${f}: ${h.shmFiles()}`);
        }
        const [pa, pb] = [h.pid("a"), h.pid("b")];
        assert.ok(pa && pb && pa !== pb && pidRunning(pa) && pidRunning(pb), `pids ${pa} ${pb}`);
        const flows = await h.nfqlb(["flow-list"], 30_000, envB);
        assert.equal(flows.code, 0, flows.stderr);
        assert.deepEqual(JSON.parse(flows.stdout).map((f: { name: string }) => f.name), ["tcp-b"]);
      },
    );

    await t.step(
      "UDP reaches a's targets, TCP b's; status (both configs) matches, with names and shm",
      async () => {
        assertAllAnswered((await topo.client.udp(4, topo.flows(4, 60, 20000))).targets, ["t1", "t2"], "udp");
        assertAllAnswered((await topo.client.tcp(4, topo.flows(4, 30, 21000))).targets, ["t3"], "tcp");
        const st = await h.nfqlb(["status"]);
        assert.equal(st.code, 0, st.stdout);
        const out = lines(st.stdout);
        assert.equal(out.filter((l) => SHM_LINE.test(l)).length, 2, st.stdout);
        assert.ok(
          out.includes("  names: ft_shm ftshm.a, trace unix:nfqlb-trace.a, admin " + adminOf("a")),
          st.stdout,
        );
        assert.ok(
          out.includes(
            "  names: ft_shm ftshm.b, trace unix:nfqlb-trace.b, flows unix:nfqlb.b, admin " + adminOf("b"),
          ),
          st.stdout,
        );
      },
    );

    await t.step("teardown of a removes only a's; b keeps serving and still matches its file", async () => {
      const pb = h.pid("b")!;
      const r = await h.nfqlb(["teardown", "-f", h.file]);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stdout, /web-b|ftshm\.b|nfqlb:b|NFQLB-b/, r.stdout);
      for (const f of ["web-a", "ftshm.a", own("ftshm.a-counters"), own("host-a.json")]) {
        assert.ok(!h.shmFiles().includes(f), `${f} is gone`);
      }
      for (const f of ["web-b", own("web-b-ct"), "ftshm.b", own("ftshm.b-counters"), own("host-b.json")]) {
        assert.ok(h.shmFiles().includes(f), `${f} stays`);
      }
      assert.equal(h.pid("b"), pb);
      assert.ok(pidRunning(pb));
      assertAllAnswered((await topo.client.tcp(4, topo.flows(4, 30, 22000))).targets, ["t3"], "tcp");
      const st = await h.nfqlb(["status", "-f", fileB]);
      assert.equal(st.code, 0, st.stdout);
      assert.equal(lines(st.stdout).at(-1), `the host matches ${fileB}`);
    });

    await t.step("teardown of b: the host is as before both", async () => {
      const r = await h.nfqlb(["teardown", "-f", fileB]);
      assert.equal(r.code, 0, r.stderr);
      const now = await hostState(h);
      assert.deepEqual(now.kernel, before.kernel);
      // nfqlb-trace is the host's log-level shm that every lb and `loglevel` share: it stays
      assert.deepEqual(now.files.filter((f) => f !== "nfqlb-trace"), before.files);
    });
  },
});

/** The admin address `nfqlb run` of a config of that name takes by default (host/names.ts). */
function adminOf(name: string): string {
  return derivedAdminAddress(name);
}

Deno.test({
  name:
    "e2e host apart: a config that clashes with a recorded one is refused in one line naming both, nothing changed",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "a" });
    h.write(configA());
    await h.applyOk();
    const snap = await hostState(h);
    const pid = h.pid();
    const cases: [string, string, string][] = [
      ["queue", small("c", { queue: 2 }), "queue 2"],
      ["fwmark", small("c", { fw: 102 }), "fwmark 102, routing table 102"],
      ["table", small("c", { svc: "web-a" }), "shm web-a"],
      [
        "trace address",
        small("c", { options: '{ traceAddress: "unix:nfqlb-trace.a" }' }),
        "trace address unix:nfqlb-trace.a",
      ],
      [
        "admin address",
        small("c", { extra: [`admin: { address: "${adminOf("a")}" }`] }),
        `admin address ${adminOf("a")}`,
      ],
    ];
    for (const [what, text, clash] of cases) {
      await t.step(`same ${what}`, async () => {
        const file = h.writeOther("c", text);
        const r = await h.nfqlb(["apply", "-f", file]);
        assert.equal(r.code, 1, r.stdout + r.stderr);
        assert.equal(r.stdout, "");
        assert.equal(
          oneLine(r.stderr),
          `${file}: config c clashes with config a (${h.file}) on this host: both use ${clash}; nothing was changed`,
        );
        assert.deepEqual(await hostState(h), snap);
        assert.equal(h.pid(), pid);
        // the dry run says the same
        const dry = await h.nfqlb(["apply", "-f", file, "--dry-run"]);
        assert.equal(dry.code, 1);
        assert.match(dry.stderr, /clashes with config a/);
      });
    }
  },
});

/** The host's files without the host-wide trace shm (every lb creates it if missing; it stays, as upstream's). */
async function hostStateNoTrace(h: HostUnderTest) {
  const s = await hostState(h);
  return { ...s, files: s.files.filter((f) => f !== "nfqlb-trace") };
}

Deno.test({
  name: "e2e host apart: an apply that fails half-way takes back all it added, in one line",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "a" });
    h.write(configA());
    await h.applyOk();
    const before = await hostStateNoTrace(h);
    const pidA = h.pid();

    await t.step(
      "a route the kernel refuses: tables, lb, its files, kernel objects, state all gone",
      async () => {
        // valid for the loader, but 10.213.99.1 is on no link: `ip route add ... via` fails while applying
        const file = h.writeOther("r", small("r", { address: "10.213.99.1" }));
        const r = await h.nfqlb(["apply", "-f", file]);
        assert.equal(r.code, 1, r.stdout + r.stderr);
        const line = oneLine(r.stderr);
        assert.match(
          line,
          /^plumbing: ip route add default via 10\.213\.99\.1 table 110 proto 110 failed \(exit 2\): .*; rolled back what this apply added: removed \d+ kernel objects, stopped lb pid \d+, deleted ftshm\.r, deleted \.nfqlb-deno\/ftshm\.r-counters, deleted web-r$/,
        );
        assert.ok(!pidRunning(Number(/stopped lb pid (\d+)/.exec(line)![1])), "its lb is gone");
        assert.deepEqual(await hostStateNoTrace(h), before);
        // status of it: nothing there, as before
        const st = await h.nfqlb(["status", "-f", file]);
        assert.equal(st.code, 1);
        assert.doesNotMatch(st.stdout, /interrupted/);
      },
    );

    await t.step("config a is untouched and still matches", async () => {
      assert.equal(h.pid(), pidA);
      const st = await h.nfqlb(["status", "-f", h.file]);
      assert.equal(st.code, 0, st.stdout);
      assertAllAnswered(
        (await h.topo.client.udp(4, h.topo.flows(4, 30, 23000))).targets,
        ["t1", "t2"],
        "udp",
      );
    });
  },
});

Deno.test({
  name:
    "e2e host apart: refused before any change: a queue another process holds, no CAP_NET_ADMIN, a 2 MB shm",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "q" });
    const { topo } = h;

    await t.step("queue 7 bound by an lb run by hand", async () => {
      const init = await h.nfqlb(["init", "--shm=hand", "--M=997", "--N=4"]);
      assert.equal(init.code, 0, init.stderr);
      const hand = topo.spawn(topo.ns.lb, "hand lb", [
        NFQLB,
        "lb",
        "--queue=7",
        "--tshm=hand",
        "--ft_shm=ftshm.hand",
        "--trace_address=unix:hand-trace",
      ], h.env);
      try {
        const bound = await waitUntil(async () => {
          const q = await topo.exec(topo.ns.lb, ["cat", "/proc/net/netfilter/nfnetlink_queue"], {
            allowFail: true,
          });
          return q.stdout.split("\n").some((l) => l.trim().split(/\s+/)[0] === "7");
        }, 30_000);
        assert.ok(bound, `the hand lb did not bind queue 7: ${hand.stderr}`);
        const before = await hostState(h);
        h.write(small("q", { queue: 7 }));
        const r = await h.apply();
        assert.equal(r.code, 1, r.stdout + r.stderr);
        assert.equal(r.stdout, "");
        assert.match(
          oneLine(r.stderr),
          new RegExp(
            `^${
              esc(h.file)
            }: queue 7 is bound by another process \\(portid \\d+ in /proc/net/netfilter/nfnetlink_queue\\); nothing was changed$`,
          ),
        );
        assert.deepEqual(await hostState(h), before);
      } finally {
        hand.signal("SIGTERM");
        await hand.done;
        topo.forget(hand);
        for (const f of ["hand", "ftshm.hand"]) await h.nfqlb(["delete", `--shm=${f}`]);
      }
    });

    await t.step("without CAP_NET_ADMIN (capsh --drop=cap_net_admin): one line, nothing made", async () => {
      h.write(small("q"));
      const before = await hostState(h);
      const r = await topo.exec(
        topo.ns.lb,
        ["capsh", "--drop=cap_net_admin", "--", "-c", `exec ${NFQLB} apply -f ${h.file}`],
        { env: h.env, allowFail: true, timeoutMs: 60_000 },
      );
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.equal(r.stdout, "");
      assert.equal(
        oneLine(r.stderr),
        `${h.file}: apply needs CAP_NET_ADMIN (iptables rules, ip rules and routes, NFQUEUE), which this process lacks: run it as root or give it the capability; nothing was changed`,
      );
      assert.deepEqual(await hostState(h), before);
    });

    await t.step("a 2 MB tmpfs as the shm directory and an 8 MB table: one line, nothing made", async () => {
      h.write(small("q", { m: 993997, n: 1000 }));
      const dir = topo.shmDir;
      const before = await hostState(h);
      // a mount namespace of its own: the small tmpfs hides the shm directory for this command only
      const script = `mount -t tmpfs -o size=2m tmpfs ${dir} || exit 99; ${NFQLB} apply -f ${h.file}; ` +
        `echo "rc=$?"; ls -A ${dir} | sed 's/^/file: /'`;
      const r = await topo.exec(topo.ns.lb, ["unshare", "-m", "sh", "-c", script], {
        env: h.env,
        allowFail: true,
        timeoutMs: 60_000,
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.deepEqual(lines(r.stdout), ["rc=1"], "apply exits 1 and leaves no file in the small tmpfs");
      assert.equal(
        oneLine(r.stderr),
        `${h.file}: ${dir}: No space left on device (needs 8.0 MB, 2.1 MB free; docs/apply.md "Sizing the shm directory"); nothing was changed`,
      );
      assert.deepEqual(await hostState(h), before);
      // where there is room it goes, and says what it takes
      const ok = await h.applyOk();
      assert.ok(ok.at(-1)!.startsWith("applied "), ok.join("\n"));
      const st = await h.nfqlb(["status", "-f", h.file]);
      assert.match(st.stdout, /^ {2}shm: 8\.\d MB needed in /m);
    });
  },
});

/** A string as a literal in a RegExp. */
function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

Deno.test({
  name: "e2e host apart: an apply killed half-way: status names what it left, teardown removes it",
  ignore,
  async fn(t) {
    await using h = await HostUnderTest.create({ name: "k" });
    const { topo } = h;
    const before = await hostStateNoTrace(h);
    h.write(small("k"));
    const state = h.shmFile(own("host-k.json"));
    const apply = topo.spawn(topo.ns.lb, "apply k", [NFQLB, "apply", "-f", h.file], h.env);
    let lbPid: number | undefined;
    try {
      // the state records the lb as soon as it exists, before apply waits for its queues: kill apply then
      const seen = await waitUntil(
        () => {
          try {
            const st = JSON.parse(Deno.readTextFileSync(state));
            if (st.applying && typeof st.pid === "number") lbPid = st.pid;
          } catch { /* not yet */ }
          return lbPid !== undefined;
        },
        30_000,
        5,
      );
      assert.ok(seen, `no state with an lb: ${apply.stderr}`);
      apply.signal("SIGKILL");
      await apply.done;
    } finally {
      topo.forget(apply);
    }

    await t.step("status: the interrupted apply, and what it left", async () => {
      const st = await h.nfqlb(["status", "-f", h.file]);
      assert.equal(st.code, 1, st.stdout);
      assert.match(
        st.stdout,
        new RegExp(
          `^ {2}! an apply of ${
            esc(h.file)
          } \\(pid ${apply.pid}, [0-9T:.Z-]+\\) was interrupted: nfqlb apply -f ${
            esc(h.file)
          } finishes it, nfqlb teardown -f ${esc(h.file)} removes what it left$`,
          "m",
        ),
      );
      assert.match(
        st.stdout,
        new RegExp(`^ {4}left by it: web-k, .*lb pid ${lbPid} \\(and its kernel rules\\)$`, "m"),
      );
    });

    await t.step("teardown removes it all: the host is as before", async () => {
      const r = await h.nfqlb(["teardown", "-f", h.file]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(!pidRunning(lbPid!), `lb ${lbPid} is gone`);
      assert.deepEqual(await hostStateNoTrace(h), before);
    });
  },
});

Deno.test({
  name:
    "e2e host apart: an lb an earlier apply started with upstream's names is restarted with its own, its old files removed",
  ignore,
  async fn() {
    await using h = await HostUnderTest.create({ name: "u" });
    const { topo } = h;
    const before = await hostStateNoTrace(h);
    h.write(small("u"));
    // what an earlier version left: the table, an lb with upstream's ftshm and trace address, a state
    // without claims
    assert.equal((await h.nfqlb(["init", "--shm=web-u", "--M=997", "--N=32"])).code, 0);
    const args = ["--queue=7", "--tshm=web-u"];
    const old = topo.spawn(topo.ns.lb, "old lb", [NFQLB, "lb", ...args], h.env);
    try {
      assert.ok(await waitUntil(() => h.shmFiles().includes(own("ftshm-counters")), 30_000), old.stderr);
      Deno.writeTextFileSync(
        h.shmFile(own("host-u.json")),
        JSON.stringify({
          version: 1,
          name: "u",
          file: h.file,
          program: "lb",
          args,
          pid: old.pid,
          log: h.shmFile(own("host-u.log")),
          services: ["web-u"],
          ftShm: "ftshm",
        }),
      );
      const out = await h.applyOk();
      assert.ok(
        out.includes(`- stop lb --queue=7 --tshm=web-u   (pid ${old.pid}; its options changed)`),
        out.join("\n"),
      );
      assert.ok(out.some((l) => l.startsWith("+ start lb --queue=7 --tshm=web-u --ft_shm=ftshm.u ")));
      assert.ok(out.includes("- delete --shm=ftshm   (the files of the lb it stopped)"), out.join("\n"));
      assert.ok(
        out.includes("- delete .nfqlb-deno/ftshm-counters   (the files of the lb it stopped)"),
        out.join("\n"),
      );
      await old.done;
      const st = await h.nfqlb(["status", "-f", h.file]);
      assert.equal(st.code, 0, st.stdout);
      const r = await h.nfqlb(["teardown", "-f", h.file]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await hostStateNoTrace(h), before);
    } finally {
      if (old.status === undefined) old.signal("SIGKILL");
      await old.done;
      topo.forget(old);
    }
  },
});
