/**
 * The connection-table commands (ours): ct-list, ct-set, ct-delete, ct-stats,
 * and init's --conntrack options. Only their option tables live here;
 * their code (with zod and the table's FFI) is loaded when one of them runs
 * (cli/commands/conntrack_impl.ts), so every other command starts as fast as
 * before.
 */
import type { Command, Invocation } from "../command.ts";
import type { OptionSpec } from "../getopt.ts";
import { CTX_MAX, MAX_ENTRY_LIFETIME_MS } from "../../core/conntrack_limits.ts";

const impl = () => import("./conntrack_impl.ts");

/** Our `init` options that create `<shm>-ct` (docs/conntrack.md). */
export const INIT_CT_OPTIONS: OptionSpec[] = [
  { name: "conntrack", help: "Connection table entries; 0 deletes <shm>-ct", arg: "MAX", ours: true },
  { name: "ct_ttl", help: "Connection lifetimes tcp,udp,other in ms", arg: "TCP,UDP,OTHER", ours: true },
  { name: "ct_flood", help: "Max new connections per second, 0 = no limit", arg: "N", ours: true },
  { name: "ct_contexts", help: "Connection context records", arg: "K", ours: true },
  {
    name: "scheduler",
    help: "New connections: maglev|rr|wrr|lc|wlc (default maglev)",
    arg: "S",
    choices: ["maglev", "rr", "wrr", "lc", "wlc"],
    ours: true,
  },
];

const FLOW_OPTIONS: OptionSpec[] = [
  { name: "shm", help: "Target shared memory; the table is <shm>-ct", required: true },
  { name: "src", help: 'Source addr:port, e.g "[1000::80]:80"', arg: "ADDR:PORT", required: true },
  { name: "dst", help: "Destination addr:port", arg: "ADDR:PORT", required: true },
  { name: "proto", help: "Protocol, tcp|udp|sctp", choices: ["tcp", "udp", "sctp"], required: true },
];

export const ctList: Command = {
  name: "ct-list",
  header: "ct-list [--shm=] [--target=fwmark] [--address=ip] [--port=n] [--json]\n" +
    "  List connections of the connection table <shm>-ct as JSON",
  options: [
    { name: "shm", help: "Target shared memory; the table is <shm>-ct" },
    { name: "target", help: "Only connections to this fwmark", arg: "FW" },
    { name: "address", help: "Only connections with this source or destination address", arg: "IP" },
    { name: "port", help: "Only connections with this source or destination port", arg: "N" },
    { name: "json", help: "Indented JSON (default: one connection per line)", flag: true },
  ],
  run: async (inv: Invocation) => (await impl()).ctListRun(inv),
};

export const ctSet: Command = {
  name: "ct-set",
  header: "ct-set --shm= --src=addr:port --dst=addr:port --proto=tcp|udp|sctp [options]\n" +
    "  Set (or create) a connection of the connection table <shm>-ct",
  options: [
    ...FLOW_OPTIONS,
    { name: "fwmark", help: "Send the connection to this fwmark; creates it if missing", arg: "FW" },
    {
      name: "lifetime",
      help: `Lifetime after the last packet, ms (0..${MAX_ENTRY_LIFETIME_MS}; 0 = by protocol)`,
      arg: "MS",
    },
    { name: "context", help: `Context text, at most ${CTX_MAX} bytes; empty clears it`, arg: "TEXT" },
    { name: "offload", help: "Mark the connection offloaded", flag: true },
    { name: "no-offload", help: "Clear the offloaded mark", flag: true },
    { name: "pin", help: "Pin: never expires, never recycled", flag: true },
    { name: "unpin", help: "Unpin", flag: true },
  ],
  run: async (inv: Invocation) => (await impl()).ctSetRun(inv),
};

export const ctDelete: Command = {
  name: "ct-delete",
  header: "ct-delete --shm= --src=addr:port --dst=addr:port --proto=tcp|udp|sctp\n" +
    "  Delete a connection of the connection table <shm>-ct",
  options: FLOW_OPTIONS,
  run: async (inv: Invocation) => (await impl()).ctDeleteRun(inv),
};

export const ctStats: Command = {
  name: "ct-stats",
  header: "ct-stats [--shm=] [--json]\n  Show connection table counters as JSON",
  options: [
    { name: "shm", help: "Target shared memory; the table is <shm>-ct" },
    { name: "json", help: "JSON (the default; accepted as every command that prints JSON does)", flag: true },
  ],
  run: async (inv: Invocation) => (await impl()).ctStatsRun(inv),
};
