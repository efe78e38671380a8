/**
 * nfqlb-deno: a drop-in replacement for upstream nfqlb 1.2.0 (the Maglev
 * NFQUEUE load-balancer that Meridio uses), in TypeScript on Deno with a
 * small C library reached through FFI.
 *
 * This module is the library API: the same target tables (shared memory),
 * Maglev tables, 40-byte hash keys and djb2 hashes as the `nfqlb` command,
 * without spawning a process per change. The C library must be built first
 * (`deno task build`, or `make -C c`); it is found at c/build/libnfqlb.so or
 * at `NFQLB_LIB`. Shared memory lives in /dev/shm, or in `NFQLB_SHM_DIR`.
 * Run with `--allow-all` (FFI, files, environment).
 *
 * @example Create a table, activate targets, look a flow up
 * ```ts
 * import { buildKey, hashKey, parseAddrPort, primeBelow, PROTOCOLS, TargetShm } from "./mod.ts";
 *
 * // like `nfqlb init --shm=demo --M=10000 --N=100` then `nfqlb activate 101 102 103`
 * TargetShm.create("demo", { M: primeBelow(10000), N: 100, ownFwmark: 0 });
 * TargetShm.update("demo", (active) => {
 *   [101, 102, 103].forEach((fw, i) => active[i] = fw);
 *   return true; // changed: populate the spare buffer and publish it
 * });
 *
 * // like `nfqlb fwmark --shm=demo --proto=tcp --src=10.0.0.1:40000 --dst=10.0.0.0:80`
 * const src = parseAddrPort("10.0.0.1:40000"), dst = parseAddrPort("10.0.0.0:80");
 * const key = buildKey(src.addr, dst.addr, PROTOCOLS.tcp, src.port, dst.port);
 * const table = TargetShm.open("demo");
 * console.log(table.lookup(hashKey(key, 1))); // 101, 102 or 103
 * table.close();
 * ```
 *
 * @example Run a CLI invocation in-process
 * ```ts
 * import { main } from "./mod.ts";
 * const status = await main(["activate", "--shm=demo", "104"]);
 * ```
 *
 * @example Make this host match a config file (as `nfqlb apply -f host.yaml`)
 * ```ts
 * import { applyHost, hostStatus, loadHostConfig } from "./mod.ts";
 * const cfg = await loadHostConfig("host.yaml"); // ConfigError: one line, file:line: path: expected ...
 * const changes = await applyHost(cfg, { file: "host.yaml", say: console.log });
 * const { drift } = await hostStatus(cfg, "host.yaml"); // 0: the host matches the file
 * ```
 *
 * @module
 */

export { type CreateOptions, TargetShm, type TargetSnapshot } from "./core/target_shm.ts";
export { MAX_M, primeBelow } from "./core/prime.ts";
export { buildKey, hashAddresses, hashKey, KEY_LEN } from "./core/key.ts";
export {
  IP_PROTOCOLS,
  type IpProtocolName,
  PORT_PROTOCOLS,
  type PortProtocol,
  type PortProtocolNumber,
  portProtocolNumber,
  protocolName,
  type ProtocolNumbers,
  PROTOCOLS,
} from "./core/ip_protocols.ts";
export { type AddrPort, mapIPv4, parseAddrPort, parseIPv4, parseIPv6 } from "./core/inet.ts";
export { NfqlbError } from "./core/errors.ts";
export {
  decodeFragStats,
  formatFragStats,
  FRAG_STATS_BYTES,
  type FragStats,
  readFragStats,
} from "./core/frag_stats.ts";
export { shmDir, shmPath } from "./core/shm_dir.ts";
export { main } from "./cli/main.ts";
export { VERSION } from "./core/version.ts";
export { ConfigError, type HostConfig, loadHostConfig, parseHostConfig } from "./host/config/load.ts";
export type {
  ConntrackConfig,
  DataplaneConfig,
  DataplaneOptions,
  Family,
  FlowConfig,
  PortSelector,
  Scheduler,
  ServiceConfig,
  TargetConfig,
  Vip,
} from "./host/config/types.ts";
export { applyHost, type ApplyOptions } from "./host/apply.ts";
export { teardownHost } from "./host/teardown.ts";
export { type HostStatus, hostStatus } from "./host/status.ts";
export type {
  Cidr,
  FlowDefinition,
  FlowRequest,
  MatchStatement,
  PortRange,
  Protocol,
} from "./core/flow/types.ts";
