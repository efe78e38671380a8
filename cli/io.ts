/** Synchronous, unbuffered writes: upstream sets stdout and stderr line-buffered. */
const enc = new TextEncoder();

function writeAll(f: { writeSync(p: Uint8Array): number }, text: string): void {
  let data = enc.encode(text);
  while (data.length > 0) data = data.subarray(f.writeSync(data));
}

/** Writes text to stdout. */
export function out(text: string): void {
  writeAll(Deno.stdout, text);
}

/** Writes text to stderr. */
export function err(text: string): void {
  writeAll(Deno.stderr, text);
}
