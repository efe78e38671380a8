/**
 * The JSON outputs of our own commands share one key style, snake_case (docs/cli.md "JSON output"); outputs
 * upstream also prints (`flow-list`, `stats` without `--all`) keep upstream's keys.
 */

/** `queueDropped` → `queue_dropped`, `objGC` → `obj_gc`; a snake_case key stays as it is. */
export function snakeCase(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, "$1_$2").replace(/([A-Z]+)([A-Z][a-z])/g, "$1_$2").toLowerCase();
}

/** A copy of `v` with the keys of its plain objects in snake_case, arrays and nested objects included. */
export function snakeKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(snakeKeys);
  if (v !== null && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [snakeCase(k), snakeKeys(x)]));
  }
  return v;
}

/** `v` as indented JSON and a newline, the form every `--json` output of ours takes. */
export function jsonText(v: unknown): string {
  return JSON.stringify(v, null, 2) + "\n";
}
