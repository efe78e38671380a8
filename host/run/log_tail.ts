/**
 * The dataplane's output in the agent's log. The lb/flowlb writes to its log
 * file in the shm directory (as apply starts it: the file outlives the
 * agent, which `--keep` needs, where a pipe would break). The agent follows
 * that file and logs each new line as an event of its own, so the journal
 * or the container log has the dataplane's lines too.
 */

/** Most bytes read per poll; the rest waits for the next one (a flood cannot stall the agent). */
const MAX_READ = 64 * 1024;

/**
 * Follows a growing file from its current end; `onLine` gets each complete
 * new line. A file that shrinks (removed and made again) is read from its start.
 */
export class LogTail {
  readonly #path: string;
  readonly #onLine: (line: string) => void;
  #offset = 0;
  #partial = "";
  #dec = new TextDecoder();
  #timer: ReturnType<typeof setInterval> | undefined;
  #busy = false;

  /** A tail of `path` from its current end (not started). */
  constructor(path: string, onLine: (line: string) => void) {
    this.#path = path;
    this.#onLine = onLine;
    try {
      this.#offset = Deno.statSync(path).size;
    } catch { /* not there yet: from its start once it is */ }
  }

  /** Polls every `ms`. */
  start(ms = 500): void {
    this.#timer ??= setInterval(() => this.poll(), ms);
  }

  /** Stops polling (after one last read of what is there). */
  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.poll();
  }

  /** Reads what was added since the last call. */
  poll(): void {
    if (this.#busy) return;
    this.#busy = true;
    let f: Deno.FsFile | undefined;
    try {
      const size = Deno.statSync(this.#path).size;
      if (size < this.#offset) {
        this.#offset = 0;
        this.#partial = "";
        this.#dec = new TextDecoder();
      }
      if (size === this.#offset) return;
      f = Deno.openSync(this.#path, { read: true });
      f.seekSync(this.#offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(Math.min(MAX_READ, size - this.#offset));
      const n = f.readSync(buf) ?? 0;
      this.#offset += n;
      const text = this.#partial + this.#dec.decode(buf.subarray(0, n), { stream: true });
      const lines = text.split("\n");
      this.#partial = lines.pop() ?? "";
      if (this.#partial.length > MAX_READ) { // a line without end: log it as it is
        lines.push(this.#partial);
        this.#partial = "";
      }
      for (const l of lines) if (l.trim() !== "") this.#onLine(l);
    } catch {
      /* gone (teardown): nothing to read */
    } finally {
      f?.close();
      this.#busy = false;
    }
  }
}
