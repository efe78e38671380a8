/**
 * The paths every test, bench and script names: the repository root, the CLI
 * under test and the recorded test data. The only definitions of them; import
 * them from here.
 */

/** The repository root (no trailing slash). */
export const ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
/** The CLI under test: the wrapper that runs `dist/nfqlb` when it exists, else the sources. */
export const NFQLB = `${ROOT}/scripts/nfqlb`;
/** Recordings of upstream nfqlb 1.2.0 (conformance vectors, pcaps): see tests/testdata/README.md. */
export const TESTDATA = `${ROOT}/tests/testdata`;
