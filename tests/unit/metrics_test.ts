/**
 * The Prometheus metrics by the conventions (issue 20, docs/observability.md "Prometheus"): one registry
 * (dataplane/metric_families.ts) that the exporters write from, names with units, counters `_total`, label
 * `table` never `shm`, the scrape of real shm files (counters, fragment stats, a weighted target table, a
 * connection table) valid for a strict parser and for `promtool check metrics` when it is installed (Debian
 * package prometheus), `nfqlb run`'s text with one process family set, and the Grafana dashboard
 * (deploy/grafana/nfqlb.json) and docs/observability.md naming exported series only.
 */
import assert from "node:assert/strict";
import { METRIC_FAMILIES, RENAMED_METRICS } from "../../dataplane/metric_families.ts";
import { METRICS_CONTENT_TYPE, renderMetrics, renderProcessMetrics } from "../../dataplane/metrics.ts";
import { renderAgentMetrics, withoutFamilies } from "../../host/run/metrics.ts";
import { createCountersShm } from "../../core/counters_shm.ts";
import { createFragStatsShm } from "../../core/frag_stats.ts";
import { TargetShm } from "../../core/target_shm.ts";
import { conntrackName, ConntrackShm } from "../../core/conntrack_shm.ts";
import { NFQLB_DENO_VERSION } from "../../core/version.ts";
import { parseExposition, promtool } from "../helpers/prom_text.ts";
import { libSandbox } from "../helpers/shm.ts";
import { ROOT } from "../harness/paths.ts";

const NAMES = new Set(METRIC_FAMILIES.map((f) => f.name));

/** The registered family a series name belongs to (a histogram's `_bucket`, `_sum`, `_count` included). */
function familyOfSeries(name: string): string | undefined {
  if (NAMES.has(name)) return name;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  return m && METRIC_FAMILIES.some((f) => f.name === m[1] && f.type === "histogram") ? m[1] : undefined;
}

/** The metric names a PromQL query uses (ours all start with nfqlb_ or process_). */
function seriesOf(expr: string): string[] {
  return [...expr.matchAll(/\b(?:nfqlb|process)_[a-z0-9_]+/g)].map((m) => m[0]);
}

Deno.test("metric registry: Prometheus naming conventions", () => {
  assert.equal(NAMES.size, METRIC_FAMILIES.length, "a family registered twice");
  for (const f of METRIC_FAMILIES) {
    assert.match(f.name, /^[a-z][a-z0-9_]*$/, f.name);
    if (f.type === "counter") assert.match(f.name, /_total$/, `counter ${f.name}`);
    else assert.doesNotMatch(f.name, /_total$/, `${f.type} ${f.name}`);
    for (const l of f.labels) {
      assert.match(l, /^[a-z][a-z0-9_]*$/, `${f.name} label ${l}`);
      assert.notEqual(l, "shm", `${f.name}: label table, never shm`);
    }
    assert.ok(f.help.length > 10 && !f.help.includes("\n"), `${f.name} help`);
  }
  // the replacements of every renamed metric are registered
  for (const [old, now] of Object.entries(RENAMED_METRICS)) {
    assert.ok(NAMES.has(now.replace(/\{.*$/, "")), `${old} -> ${now}`);
  }
  assert.equal(METRICS_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
});

Deno.test("metrics: NFQLB_DENO_VERSION (nfqlb_build_info) is deno.json's version", () => {
  const cfg = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`)) as { version: string };
  assert.equal(NFQLB_DENO_VERSION, cfg.version);
  assert.match(renderProcessMetrics(), new RegExp(`^nfqlb_build_info\\{version="${cfg.version}",`, "m"));
});

Deno.test("metrics: a scrape of real shm files is valid, registered, promtool clean", async () => {
  using _sb = libSandbox();
  const counters = createCountersShm("m-counters", [2, 3], "lb");
  counters.publish();
  // --offload=auto: the kernel's share, written by the lb (dataplane/offload_counters.ts)
  counters.setOffloaded([{ fwmark: 101, packets: 7n, bytes: 700n }]);
  const ft = createFragStatsShm("m-ft");
  try {
    TargetShm.create("svc", { M: 997, N: 32, ownFwmark: 0 });
    TargetShm.update("svc", (active, _t, weights) => {
      active.set([101, 102, 103]);
      weights.set([2, 1, 0]);
      return true;
    });
    ConntrackShm.create(conntrackName("svc"), { capacity: 64 });
    const text = await renderMetrics({
      counters: "m-counters",
      ftShm: "m-ft",
      tables: () => ["svc", "absent"],
    });
    const e = parseExposition(text);
    const order = [...e.types.keys()];
    // registered, in the registry's order, with its type
    const idx = order.map((n) => METRIC_FAMILIES.findIndex((f) => f.name === n));
    assert.ok(idx.every((i) => i >= 0), `unregistered: ${order.filter((_, k) => idx[k] < 0)}`);
    assert.deepEqual(idx, [...idx].sort((a, b) => a - b), "families out of registry order");
    for (const [n, type] of e.types) {
      assert.equal(
        type,
        METRIC_FAMILIES[METRIC_FAMILIES.findIndex((f) => f.name === n)].type,
      );
    }
    // every dataplane and process family is there
    for (const f of METRIC_FAMILIES.filter((x) => x.source === "dataplane" || x.source === "process")) {
      if (f.name === "nfqlb_flow_matched_packets_total") continue; // flowlb only
      assert.ok(e.types.has(f.name), `${f.name} missing`);
    }
    // labels as registered
    for (const s of e.samples) {
      const f = METRIC_FAMILIES.find((x) => x.name === s.name)!;
      assert.deepEqual(Object.keys(s.labels).sort(), [...f.labels].sort(), `${s.name} labels`);
    }
    const v = (name: string, labels: Record<string, string> = {}) =>
      e.samples.find((s) => s.name === name && Object.entries(labels).every(([k, x]) => s.labels[k] === x))
        ?.value;
    assert.equal(v("nfqlb_targets_active", { table: "svc" }), 3);
    assert.equal(v("nfqlb_targets_active", { table: "absent" }), 0);
    assert.equal(v("nfqlb_target_weight", { table: "svc", target: "101" }), 2);
    assert.equal(v("nfqlb_target_weight", { table: "svc", target: "103" }), 0);
    assert.equal(v("nfqlb_target_offloaded_packets_total", { target: "101" }), 7);
    assert.equal(v("nfqlb_target_offloaded_bytes_total", { target: "101" }), 700);
    assert.equal(v("nfqlb_conntrack_capacity", { table: "svc" }), 64);
    assert.equal(v("nfqlb_conntrack_entries", { table: "svc" }), 0);
    assert.equal(v("nfqlb_conntrack_inserts_total", { table: "svc" }), 0);
    assert.equal(v("nfqlb_conntrack_recycled_total", { table: "svc" }), 0);
    assert.equal(
      e.samples.filter((s) => s.name === "nfqlb_conntrack_entries").length,
      1,
      "no table, no series",
    );
    assert.equal(e.samples.filter((s) => s.name === "nfqlb_queue_received_packets_total").length, 2);
    assert.equal(e.samples.filter((s) => s.name === "nfqlb_queue_verdict_packets_total").length, 4);
    const start = v("process_start_time_seconds")!;
    assert.ok(Math.abs(start - Date.now() / 1000) < 3600, `process_start_time_seconds ${start}`);
    const checked = await promtool(text);
    if (checked) assert.equal(checked.code, 0, `promtool check metrics:\n${checked.output}\n${text}`);
    else console.log("promtool not installed (Debian package prometheus): check skipped");

    // nfqlb run: its own process families once, the dataplane's left out, one valid exposition
    const fetched = withoutFamilies(text, new Set(["nfqlb_build_info", "process_start_time_seconds"]));
    const run = renderAgentMetrics({ reloads: { ok: 1, error: 0 }, restarts: 0, dataplaneUp: true }) +
      fetched;
    const r = parseExposition(run);
    assert.equal(r.samples.filter((s) => s.name === "nfqlb_build_info").length, 1);
    assert.ok(r.types.has("nfqlb_target_weight") && r.types.has("nfqlb_agent_reloads_total"));
    const checkedRun = await promtool(run);
    if (checkedRun) assert.equal(checkedRun.code, 0, `promtool check metrics (run):\n${checkedRun.output}`);
    const own = await renderMetrics({ counters: "m-counters", ftShm: "m-ft", tables: () => [] }, {
      process: false,
    });
    assert.ok(!/^(?:# \w+ )?(?:nfqlb_build_info|process_start_time_seconds)/m.test(own), own);
  } finally {
    ft.close();
    counters.close();
  }
});

Deno.test("Grafana dashboard: every query names exported series only, and parses (promtool)", async () => {
  const dash = JSON.parse(Deno.readTextFileSync(`${ROOT}/deploy/grafana/nfqlb.json`)) as {
    panels: { title: string; targets?: { expr: string }[] }[];
    templating: { list: { name: string; query?: string | { query: string } }[] };
  };
  const queries: { where: string; expr: string }[] = [];
  for (const p of dash.panels) {
    for (const t of p.targets ?? []) queries.push({ where: p.title, expr: t.expr });
  }
  for (const v of dash.templating.list) {
    const q = typeof v.query === "string" ? v.query : v.query?.query;
    if (q && v.name !== "datasource") queries.push({ where: `variable ${v.name}`, expr: q });
  }
  assert.ok(queries.length >= 20, `${queries.length} queries`);
  const used = new Set<string>();
  for (const q of queries) {
    const names = seriesOf(q.expr);
    assert.ok(names.length > 0, `${q.where}: no series in ${q.expr}`);
    for (const n of names) {
      const f = familyOfSeries(n);
      assert.ok(f, `${q.where}: ${n} is not an exported series (${q.expr})`);
      used.add(f);
    }
  }
  // the dashboard shows every family
  assert.deepEqual([...NAMES].filter((n) => !used.has(n)), [], "families the dashboard does not show");
  // the panel queries are PromQL: promtool parses them as recording rules (Grafana's variables filled in)
  const rules = ["groups:", "  - name: dashboard", "    rules:"];
  queries.filter((q) => !q.expr.startsWith("label_values")).forEach((q, i) => {
    const expr = q.expr.replaceAll("$__rate_interval", "5m").replaceAll("$instance", ".*").replaceAll(
      "$table",
      ".*",
    );
    rules.push(`      - record: dashboard_query_${i}`, `        expr: ${JSON.stringify(expr)}`);
  });
  const file = await Deno.makeTempFile({ suffix: ".yml" });
  try {
    Deno.writeTextFileSync(file, rules.join("\n") + "\n");
    let out: Deno.CommandOutput | undefined;
    try {
      out = await new Deno.Command("promtool", {
        args: ["check", "rules", file],
        stdout: "piped",
        stderr: "piped",
      })
        .output();
    } catch {
      console.log("promtool not installed (Debian package prometheus): PromQL check skipped");
    }
    if (out) {
      const dec = new TextDecoder();
      assert.equal(out.code, 0, `promtool check rules:\n${dec.decode(out.stdout)}${dec.decode(out.stderr)}`);
    }
  } finally {
    Deno.removeSync(file);
  }
});

Deno.test("docs/observability.md: every series listed with an example query naming exported series", () => {
  const doc = Deno.readTextFileSync(`${ROOT}/docs/observability.md`);
  const rows = doc.split("\n").filter((l) => /^\| `(?:nfqlb|process)_/.test(l));
  for (const f of METRIC_FAMILIES) {
    const row = rows.find((r) => r.startsWith(`| \`${f.name}\``));
    assert.ok(row, `docs/observability.md has no row for ${f.name}`);
    const cells = row.split(/(?<!\\)\|/).map((c) => c.trim());
    const query = cells[cells.length - 2];
    assert.match(query, /^`.+`$/, `${f.name}: no example query`);
    for (const n of seriesOf(query)) assert.ok(familyOfSeries(n), `${f.name}: query names ${n}`);
    assert.ok(
      seriesOf(query).some((n) => familyOfSeries(n) === f.name),
      `${f.name}: its query does not use it`,
    );
  }
  // every renamed metric is documented
  for (const old of Object.keys(RENAMED_METRICS)) {
    assert.ok(doc.includes(old.replace(/\{.*$/, "")), `docs/observability.md does not name ${old}`);
  }
});
