/** File-system checks shared by tests, their child-process agents and benches. */

/** Whether `path` exists now (a marker file another process writes when ready or told to stop). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}
