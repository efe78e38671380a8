/**
 * Runs the plumbing's commands (iptables, ip, nft) without a shell, bounded
 * in time, optionally inside a network namespace, and turns failures into
 * one-line errors that name the command and its stderr.
 */
import { NfqlbError } from "../../core/errors.ts";
import { shellLine } from "./names.ts";

/** Options of {@link runCommand}. */
export interface RunCommandOptions {
  /** Run inside this network namespace (`ip netns exec NS ...`). */
  netns?: string;
  /** Standard input. */
  stdin?: string;
  /** Kill the command after this long (default 30 s). */
  timeoutMs?: number;
}

/** A finished command. */
export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs argv to completion; a missing program is exit code 127, a timeout 124 (never throws). */
export async function runCommand(argv: readonly string[], o: RunCommandOptions = {}): Promise<CommandResult> {
  const full = o.netns ? ["ip", "netns", "exec", o.netns, ...argv] : [...argv];
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(full[0], {
      args: full.slice(1),
      stdin: o.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (e) {
    return { code: 127, stdout: "", stderr: `${full[0]}: ${e instanceof Error ? e.message : String(e)}` };
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, o.timeoutMs ?? 30_000);
  try {
    if (o.stdin !== undefined && child.stdin) {
      const w = child.stdin.getWriter();
      try {
        await w.write(new TextEncoder().encode(o.stdin));
        await w.close();
      } catch { /* the command exited without reading; its status tells */ }
    }
    const out = await child.output();
    const dec = new TextDecoder();
    const r = { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    if (timedOut) return { ...r, code: 124, stderr: `${r.stderr}\ntimed out` };
    return r;
  } finally {
    clearTimeout(timer);
  }
}

/** The first non-empty line of a text (for one-line messages). */
export function firstLine(text: string): string {
  return text.split("\n").map((l) => l.trim()).find((l) => l !== "") ?? "";
}

/** Runs argv and returns its stdout; throws a one-line {@link NfqlbError} naming the command on failure. */
export async function mustRun(argv: readonly string[], o: RunCommandOptions = {}): Promise<string> {
  const r = await runCommand(argv, o);
  if (r.code !== 0) {
    const where = o.netns ? ` (netns ${o.netns})` : "";
    throw new NfqlbError(
      `plumbing: ${shellLine(argv)}${where} failed (exit ${r.code}): ${firstLine(r.stderr) || "no message"}`,
    );
  }
  return r.stdout;
}
