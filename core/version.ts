/**
 * The upstream release this is a drop-in for: `nfqlb version` prints it, and scripts that parse it (Meridio's)
 * see the version whose behaviour we keep.
 *
 * @example
 * ```ts
 * import { VERSION } from "./version.ts";
 * console.log(VERSION); // "1.2.0"
 * ```
 */
export const VERSION = "1.2.0";

/**
 * This project's own version (deno.json `version`; a unit test keeps the two equal): what `nfqlb_build_info`
 * carries, so a scrape tells which build answers.
 */
export const PROJECT_VERSION = "0.1.0";
