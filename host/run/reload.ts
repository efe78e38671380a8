/**
 * Noticing that the config file of `nfqlb run` changed, however it was
 * changed: written in place, renamed over (editors, `mv`), or swapped by a
 * symlink the way a Kubernetes ConfigMap volume does it
 * (`host.yaml -> ..data/host.yaml`, `..data -> ..2025_05_01_10_00_00.123`,
 * and an update renames a new `..data` link over the old one).
 *
 * A file's own inotify watch misses the last two (the watched inode is no
 * longer the file), so the watcher watches the directories: the one of the
 * path as given, and the one the path resolves to now (again after every
 * change, since a swap moves it). Events only say "look again"; whether the
 * file changed is decided by a digest of its content, so a touch, an
 * unrelated file in the directory, or the same content written again is no
 * reload. Events come in bursts (truncate, then write; rename, then delete),
 * so the watcher waits for a quiet moment before it says so. A slow poll
 * backs up the watch: a directory that disappears and comes back, or a
 * filesystem without inotify, still gets its changes seen.
 */
import { dirname, resolve } from "node:path";
import { errorText } from "../../core/errors.ts";

/** A config file's bytes as text and their digest. */
export interface FileContent {
  /** The text. */
  text: string;
  /** `sha256:<64 hex digits>` of the bytes. */
  digest: string;
}

/** The sha256 of some bytes, `sha256:<hex>`. */
export async function digestOf(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return "sha256:" + Array.from(h, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads a config file (following symlinks) and digests it; throws as Deno.readFile does. */
export async function readConfig(path: string): Promise<FileContent> {
  const bytes = await Deno.readFile(path);
  return { text: new TextDecoder().decode(bytes), digest: await digestOf(bytes) };
}

/** Options of {@link ConfigWatcher}. */
export interface WatchOptions {
  /** Quiet time after the last event before {@link ConfigWatcher} calls back, ms (default 100). */
  settleMs?: number;
  /** The backstop poll, ms (default 2000). */
  pollMs?: number;
  /** Told when a watch cannot be set up (it then relies on the poll). */
  warn?: (msg: string) => void;
}

/**
 * Calls `onChange` (at most once per burst of events, and once per poll)
 * when the config file may have changed; the caller compares digests.
 *
 * @example
 * ```ts
 * const w = new ConfigWatcher("/etc/nfqlb/host.yaml", () => reloadIfChanged());
 * w.start();
 * // ...
 * w.close();
 * ```
 */
export class ConfigWatcher {
  readonly #path: string;
  readonly #onChange: () => void;
  readonly #settleMs: number;
  readonly #pollMs: number;
  readonly #warn: (msg: string) => void;
  #watcher: Deno.FsWatcher | undefined;
  #dirs = "";
  #settle: ReturnType<typeof setTimeout> | undefined;
  #poll: ReturnType<typeof setInterval> | undefined;
  #closed = false;
  #warned = false;

  /** A watcher of `path` (not started). */
  constructor(path: string, onChange: () => void, o: WatchOptions = {}) {
    this.#path = resolve(path);
    this.#onChange = onChange;
    this.#settleMs = o.settleMs ?? 100;
    this.#pollMs = o.pollMs ?? 2000;
    this.#warn = o.warn ?? (() => {});
  }

  /**
   * The directories to watch now: of the path as given, of each symlink it
   * leads through (a link to a ConfigMap's link), and of what it resolves to.
   */
  dirs(): string[] {
    const out = new Set([dirname(this.#path)]);
    let p = this.#path;
    for (let i = 0; i < 16; i++) { // bounded: a loop of links ends here too
      try {
        p = resolve(dirname(p), Deno.readLinkSync(p));
      } catch {
        break; // not a link (or gone)
      }
      out.add(dirname(p));
    }
    try {
      out.add(dirname(Deno.realPathSync(this.#path)));
    } catch { /* missing for a moment (a swap, a rename): the given path's directory still sees it come */ }
    return [...out].sort();
  }

  /** Starts watching (and polling). */
  start(): void {
    this.#rewatch();
    this.#poll = setInterval(() => {
      this.#rewatch(); // a directory that was gone may be back
      this.#onChange();
    }, this.#pollMs);
  }

  /** Stops watching; no call back after this. */
  close(): void {
    this.#closed = true;
    if (this.#settle !== undefined) clearTimeout(this.#settle);
    if (this.#poll !== undefined) clearInterval(this.#poll);
    this.#stopWatch();
  }

  #stopWatch(): void {
    try {
      this.#watcher?.close();
    } catch { /* already closed */ }
    this.#watcher = undefined;
    this.#dirs = "";
  }

  /** (Re)opens the inotify watch when the directories to watch changed (or it is not open). */
  #rewatch(): void {
    if (this.#closed) return;
    const dirs = this.dirs();
    const key = dirs.join("\n");
    if (this.#watcher && key === this.#dirs) return;
    this.#stopWatch();
    let w: Deno.FsWatcher;
    try {
      w = Deno.watchFs(dirs, { recursive: false });
    } catch (e) {
      if (!this.#warned) {
        this.#warn(`cannot watch ${dirs.join(", ")}: ${errorText(e)}; polling every ${this.#pollMs} ms`);
      }
      this.#warned = true;
      return;
    }
    this.#warned = false;
    this.#watcher = w;
    this.#dirs = key;
    (async () => {
      try {
        for await (const _ of w) this.#kick();
      } catch { /* closed, or the directory went away: the poll reopens it */ }
      if (this.#watcher === w) this.#stopWatch();
    })();
  }

  /** An event: call back once things are quiet for settleMs. */
  #kick(): void {
    if (this.#closed) return;
    if (this.#settle !== undefined) clearTimeout(this.#settle);
    this.#settle = setTimeout(() => {
      this.#settle = undefined;
      if (this.#closed) return;
      this.#rewatch(); // a symlink swap moved the file to another directory
      this.#onChange();
    }, this.#settleMs);
  }
}
