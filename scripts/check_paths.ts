/**
 * Checks that no tracked file names a path that exists only on one machine: an absolute path under a user
 * or workspace root (home directories, workspace mounts; see MACHINE_ROOTS) or a reference folder beside the
 * repository, which a contributor's clone does not have. System paths the program really uses (`/dev/shm`,
 * `/proc/…`, `/usr/…`) are fine.
 *
 * It also checks that every path of ours that a file names (`core/key.ts`, `c/nfqlb.h`: one of our top-level
 * folders, then a file with an extension) exists, so docs and comments follow moves.
 *
 * Prints `file:line: text` for each hit and exits 1; exits 0 when clean. Run by `deno task check` and by the
 * test command.
 *
 * @module
 */
import { join, relative } from "node:path";

/** Roots of paths that belong to one machine or user, never to the program. */
const MACHINE_ROOTS = ["work", "home", "root", "Users", "mnt", "opt", "srv", "media", "nix"];

/** The patterns, built from parts so this file does not match itself. */
export const FORBIDDEN: readonly { re: RegExp; why: string }[] = [
  {
    re: new RegExp(`(^|[^\\w.$}-])/(${MACHINE_ROOTS.join("|")})/`),
    why: "an absolute path of one machine",
  },
  { re: new RegExp(["\\.\\.", "shared\\b"].join("/")), why: "the reference folder beside the repository" },
];

/** One forbidden path in a file. */
export interface PathHit {
  /** Root-relative file. */
  file: string;
  /** 1-based line. */
  line: number;
  /** The line's text (trimmed). */
  text: string;
  /** Which rule. */
  why: string;
}

/** Files that are not text or are recorded data, skipped by extension or folder. */
const SKIP = /\.(pcap|so|o|a|png|jpg|gz|lock)$|(^|\/)tests\/testdata\//;

/** Checks one file's text. */
export function checkText(file: string, text: string): PathHit[] {
  const hits: PathHit[] = [];
  text.split("\n").forEach((l, i) => {
    for (const f of FORBIDDEN) {
      if (f.re.test(l)) hits.push({ file, line: i + 1, text: l.trim(), why: f.why });
    }
  });
  return hits;
}

/** The files git tracks under `root` plus new files not ignored (so a check before `git add` sees them). */
export function trackedFiles(root: string): string[] {
  const r = new Deno.Command("git", {
    args: ["-C", root, "ls-files", "--cached", "--others", "--exclude-standard"],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!r.success) throw new Error(`git ls-files failed: ${new TextDecoder().decode(r.stderr).trim()}`);
  return new TextDecoder().decode(r.stdout).split("\n").filter((f) => f !== "" && !SKIP.test(f));
}

/** The repository's top-level folders: a path that starts with one of them names a file of ours. */
const TOP = [
  "cli",
  "host",
  "dataplane",
  "core",
  "ffi",
  "c",
  "tests",
  "scripts",
  "docs",
  "packaging",
  "deploy",
];
const REPO_PATH_RE = new RegExp(
  `(?<![\\w./$-])((?:${TOP.join("|")})/[\\w./-]*\\.(?:ts|c|h|sh|md|json|yaml))\\b`,
  "g",
);

/** Paths of ours (`core/key.ts`, `c/nfqlb.h`) named in a text that exist neither from the root nor from the file's folder. */
export function missingPaths(file: string, text: string, exists: (path: string) => boolean): PathHit[] {
  const hits: PathHit[] = [];
  const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/")) : "";
  text.split("\n").forEach((l, i) => {
    for (const m of l.matchAll(REPO_PATH_RE)) {
      const p = m[1];
      if (exists(p) || (dir !== "" && exists(`${dir}/${p}`))) continue;
      hits.push({ file, line: i + 1, text: p, why: "names a file that does not exist (moved?)" });
    }
  });
  return hits;
}

/** Checks every tracked text file under `root`. */
export function checkPaths(root: string): PathHit[] {
  const hits: PathHit[] = [];
  for (const file of trackedFiles(root)) {
    let text: string;
    try {
      text = Deno.readTextFileSync(join(root, file));
    } catch {
      continue; // deleted in the work tree, or a directory entry
    }
    hits.push(...checkText(file, text));
    hits.push(...missingPaths(file, text, (p) => isFile(join(root, p))));
  }
  return hits;
}

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  const root = relative(Deno.cwd(), new URL("..", import.meta.url).pathname) || ".";
  const hits = checkPaths(root);
  for (const h of hits) console.error(`${h.file}:${h.line}: ${h.text} (${h.why})`);
  if (hits.length > 0) {
    console.error(`check_paths: ${hits.length} path(s) that only exist on one machine or no longer exist`);
    Deno.exit(1);
  }
  console.log("check_paths: ok");
}
