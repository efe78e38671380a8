/**
 * Versions. `VERSION` is the upstream release this is a drop-in for: `nfqlb version` prints it, and scripts
 * that parse it (Meridio's) see the version whose behaviour we keep. Our own version is deno.json's
 * `version` (the one place it is written), the C library's is c/nfqlb.h's (through ffi/consts.ts).
 *
 * @example
 * ```ts
 * import { VERSION } from "./version.ts";
 * console.log(VERSION); // "1.2.0"
 * ```
 */
import denoJson from "../deno.json" with { type: "json" };
import { NFQLB_LIB_VERSION_MAJOR, NFQLB_LIB_VERSION_MINOR, NFQLB_LIB_VERSION_PATCH } from "../ffi/consts.ts";

/** The upstream nfqlb release whose commands, outputs and exit codes we keep. */
export const VERSION = "1.2.0";

/** nfqlb-deno's own version (deno.json `version`). */
export const NFQLB_DENO_VERSION: string = denoJson.version;

/** The C library's version (c/nfqlb.h `NFQLB_LIB_VERSION_*`). */
export const C_LIBRARY_VERSION =
  `${NFQLB_LIB_VERSION_MAJOR}.${NFQLB_LIB_VERSION_MINOR}.${NFQLB_LIB_VERSION_PATCH}`;

/** What a build is made of (`nfqlb version --build`; also fit for a `build_info` metric's labels). */
export interface BuildInfo {
  /** nfqlb-deno's version. */
  version: string;
  /** The upstream release it is compatible with. */
  upstream: string;
  /** The Deno runtime running it. */
  deno: string;
  /** The C library's version. */
  c_library: string;
}

/** The build running now. */
export function buildInfo(): BuildInfo {
  return {
    version: NFQLB_DENO_VERSION,
    upstream: VERSION,
    deno: Deno.version.deno,
    c_library: C_LIBRARY_VERSION,
  };
}

/** `nfqlb-deno X.Y.Z (compatible with nfqlb 1.2.0), deno A.B.C, C library D.E.F`: one line, no newline. */
export function buildLine(b: BuildInfo = buildInfo()): string {
  return `nfqlb-deno ${b.version} (compatible with nfqlb ${b.upstream}), deno ${b.deno}, C library ${b.c_library}`;
}
