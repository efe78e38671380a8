/**
 * The CLI runs as a non-root user inside a network namespace with no network: everything it loads (the npm
 * packages zod and yaml included) comes from the project's Deno cache, filled by scripts/bootstrap.sh, and
 * nothing is fetched at run time. Before, every command that loads yaml failed there with
 * `Failed caching npm package 'yaml@2.9.1'`.
 */
import assert from "node:assert/strict";
import { isRoot } from "../harness/netns.ts";
import { ROOT } from "../harness/paths.ts";
import { run } from "../harness/process.ts";

const cached = (() => {
  try {
    return Deno.statSync(`${ROOT}/.tools/deno-dir/.nfqlb-cached`).isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "offline, as nobody: apply --dry-run reads and plans an example config from the project's cache",
  ignore: !isRoot() || !cached,
  async fn() {
    const home = Deno.makeTempDirSync({ prefix: "nfqlb-nobody-" });
    Deno.chmodSync(home, 0o777);
    try {
      const cmd =
        `cd ${ROOT} && env -u DENO_DIR HOME=${home} ./scripts/nfqlb apply -f docs/examples/dsr.yaml --dry-run`;
      const r = await run(["unshare", "-n", "su", "-s", "/bin/sh", "nobody", "-c", cmd], {
        allowFail: true,
        timeoutMs: 60_000,
      });
      assert.doesNotMatch(r.stderr, /Failed caching|error sending request/, r.stderr);
      // the file was read and planned (yaml and zod loaded); reading the kernel's rules then needs root
      assert.match(r.stdout, /^\+ init --shm=web --M=997 --N=32$/m);
      assert.equal(r.code, 1, `exit ${r.code}: ${r.stderr}`);
      assert.match(r.stderr, /^plumbing: iptables-save failed .*Permission denied \(you must be root\)\n$/);
      // and something that does not reach the network: a version line
      const v = await run([
        "unshare",
        "-n",
        "su",
        "-s",
        "/bin/sh",
        "nobody",
        "-c",
        `${ROOT}/scripts/nfqlb version`,
      ]);
      assert.equal(v.stdout, "1.2.0\n");
    } finally {
      Deno.removeSync(home, { recursive: true });
    }
  },
});
