/**
 * Whether BIRD 2 can run here (the BGP e2e tests need it on the router and on the hosts). Not root: false
 * (those tests are skipped for that already).
 */
export function birdMissing(notRoot: boolean, test: string): boolean {
  if (notRoot) return false;
  try {
    if (
      new Deno.Command("bird", { args: ["--version"], stdout: "null", stderr: "null" }).outputSync().success
    ) {
      return false;
    }
  } catch { /* not installed */ }
  console.log(`${test}: skipped, bird is not installed (scripts/bootstrap.sh installs bird2)`);
  return true;
}
