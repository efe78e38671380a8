/**
 * What a config holds on its host (host/claims.ts): the claims of a config,
 * of a state written before claims were recorded, and the one line of a
 * clash between two configs.
 */
import assert from "node:assert/strict";
import { parseHostConfig } from "../../host/config/load.ts";
import {
  type Claims,
  claimsOf,
  claimsOfOldState,
  findClash,
  sameEndpoint,
  sharedClaims,
  unionClaims,
} from "../../host/claims.ts";
import { derivedAdminAddress } from "../../host/names.ts";
import { formatBytes } from "../../host/preflight.ts";

const A = `version: 1
name: a
services:
  - name: web
    conntrack: { capacity: 100 }
    vips: [10.0.0.1]
    targets:
      - { fwmark: 101, address: 192.168.1.1 }
      - { fwmark: 102, address: 192.168.1.2, table: 1000 }
      - { fwmark: 103, address: 192.168.1.3, mode: nat }
dataplane: { queue: "2:3", options: { metrics: "0.0.0.0:9100" } }
`;

Deno.test("claims: queues, fwmarks, DSR tables, files at the top and in .nfqlb-deno, addresses", () => {
  const c = claimsOf(parseHostConfig(A, "a.yaml"));
  assert.deepEqual(c, {
    queues: { first: 2, last: 3 },
    fwmarks: [101, 102, 103],
    tables: [101, 1000],
    shm: ["web", "ftshm.a"],
    own: ["web-ct", "ftshm.a-counters"],
    addresses: [
      { what: "trace", address: "unix:nfqlb-trace.a" },
      { what: "metrics", address: "0.0.0.0:9100" },
      { what: "admin", address: derivedAdminAddress("a") },
    ],
  });
  // a dataplane apply does not start is not the config's: nor are its files and addresses
  const manual = claimsOf(parseHostConfig(A.replace('queue: "2:3"', 'queue: "2:3", start: false'), "a.yaml"));
  assert.deepEqual(manual.shm, ["web"]);
  assert.deepEqual(manual.own, ["web-ct"]);
  assert.deepEqual(manual.addresses, [{ what: "admin", address: derivedAdminAddress("a") }]);
  // run's --admin
  assert.deepEqual(claimsOf(parseHostConfig(A, "a.yaml"), "127.0.0.1:9999").addresses.at(-1), {
    what: "admin",
    address: "127.0.0.1:9999",
  });
});

Deno.test("claims of a state written before they were recorded: from its services and command line", () => {
  assert.deepEqual(
    claimsOfOldState({
      services: ["web"],
      ftShm: "ftshm",
      program: "lb",
      args: ["--queue=4:5", "--tshm=web"],
    }),
    {
      queues: { first: 4, last: 5 },
      fwmarks: [],
      tables: [],
      shm: ["web", "ftshm"],
      own: ["web-ct", "ftshm-counters"],
      addresses: [{ what: "trace", address: "unix:nfqlb-trace" }],
    },
  );
});

Deno.test("clash: one line naming both configs and at most three shared things", () => {
  const a = claimsOf(parseHostConfig(A, "a.yaml"));
  const b: Claims = {
    queues: { first: 3, last: 3 },
    fwmarks: [101, 102],
    tables: [1000],
    shm: ["web"],
    own: [],
    addresses: [{ what: "admin", address: "127.0.0.1:9100" }],
  };
  assert.deepEqual(sharedClaims(b, a), [
    "queue 3",
    "fwmark 101",
    "fwmark 102",
    "routing table 1000",
    "shm web",
    "admin address 127.0.0.1:9100 (theirs: metrics address 0.0.0.0:9100)",
  ]);
  assert.equal(
    findClash({ name: "b", file: "b.yaml", claims: b }, [{
      name: "a",
      file: "/etc/nfqlb/a.yaml",
      claims: a,
    }]),
    "config b clashes with config a (/etc/nfqlb/a.yaml) on this host: both use queue 3, fwmark 101, fwmark 102 (and 3 more)",
  );
  // itself is no clash; nothing shared is none
  assert.equal(
    findClash({ name: "a", file: "", claims: a }, [{ name: "a", file: "", claims: a }]),
    undefined,
  );
  const apart: Claims = {
    ...b,
    queues: { first: 7, last: 7 },
    fwmarks: [],
    tables: [],
    shm: [],
    addresses: [],
  };
  assert.equal(
    findClash({ name: "b", file: "", claims: apart }, [{ name: "a", file: "", claims: a }]),
    undefined,
  );
});

Deno.test("clash: listen addresses meet on the same name, or the same port of the same or a wildcard address", () => {
  const t = (address: string) => ({ what: "trace" as const, address });
  const m = (address: string) => ({ what: "metrics" as const, address });
  assert.ok(sameEndpoint(t("unix:x"), t("unix:x")));
  assert.ok(!sameEndpoint(t("unix:x"), t("unix:y")));
  assert.ok(sameEndpoint(t("tcp:127.0.0.1:7000"), m("127.0.0.1:7000")));
  assert.ok(sameEndpoint(t("tcp:0.0.0.0:7000"), m("10.0.0.1:7000")));
  assert.ok(sameEndpoint(m("[::]:7000"), m("10.0.0.1:7000")));
  assert.ok(!sameEndpoint(m("127.0.0.1:7000"), m("127.0.0.2:7000")));
  assert.ok(!sameEndpoint(m("127.0.0.1:7000"), m("127.0.0.1:7001")));
  assert.ok(!sameEndpoint(t("unix:x"), m("127.0.0.1:7000")));
});

Deno.test("claims union: what an apply in progress holds (old and new config)", () => {
  const a = claimsOf(parseHostConfig(A, "a.yaml"));
  const b = claimsOf(parseHostConfig(A.replace("name: web", "name: web2").replace('"2:3"', '"5"'), "a.yaml"));
  const u = unionClaims(a, b);
  assert.deepEqual(u.queues, { first: 2, last: 5 });
  assert.deepEqual(u.shm, ["web", "ftshm.a", "web2"]);
  assert.deepEqual(u.own, ["web-ct", "ftshm.a-counters", "web2-ct"]);
  assert.equal(u.addresses.length, 3);
});

Deno.test("shm figures: bytes as people read them", () => {
  assert.equal(formatBytes(8808), "8.8 kB");
  assert.equal(formatBytes(7_976_040), "8.0 MB");
  assert.equal(formatBytes(2_097_152), "2.1 MB");
  assert.equal(formatBytes(25_276_182_528), "25.3 GB");
});
