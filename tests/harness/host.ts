/**
 * A host configured from a file, for the tests of the kernel plumbing and of
 * `nfqlb apply / teardown / status` and for the demo:
 * {@link stripTopologyPlumbing} removes a topology's own steering and fwmark
 * routing so that the plumbing installs them, and {@link HostUnderTest} is a
 * topology driven through a config file whose dataplane process (started
 * detached by apply, so not a process of the topology) is always stopped.
 */
import assert from "node:assert/strict";
import { netnsInode, snapshot } from "./netns.ts";
import { parseShowActive, type ShownTarget } from "./nfqlb.ts";
import { NFQLB } from "./paths.ts";
import { pidRunning, type RunResult } from "./process.ts";
import { Topology, type TopologyOptions } from "./topology.ts";
import { own, shmFiles } from "../helpers/shm.ts";
import { derivedFlowAddress } from "../../host/names.ts";

/** Removes the topology's own steering rule and fwmark routing from the lb netns (the plumbing installs them). */
export async function stripTopologyPlumbing(topo: Topology): Promise<void> {
  await topo.setSteering(topo.steering, "-D");
  for (const fw of topo.fwmarks) {
    for (const f of [[], ["-6"]]) {
      await topo.sh(["ip", "-n", topo.ns.lb, ...f, "rule", "del", "fwmark", String(fw), "table", String(fw)]);
      await topo.sh(["ip", "-n", topo.ns.lb, ...f, "route", "flush", "table", String(fw)]);
    }
  }
  const rules = (await topo.sh(["ip", "-n", topo.ns.lb, "rule", "show"])).stdout;
  assert.doesNotMatch(rules, /fwmark/, "the topology's fwmark rules are gone");
}

/** apply's and status's first line (status: indented): what the config's shm files take, and the room. */
export const SHM_LINE = /^ *shm: \d+\.\d [kMG]B needed in \S+ \(\d+\.\d [kMG]B free\)$/;

/** Options of {@link HostUnderTest.create}. */
export interface HostOptions {
  /** The config's `name` (its state file, its kernel tag). */
  name: string;
  /**
   * More environment for every nfqlb command (NFQLB_SHM_DIR is the topology's; NFQLB_FLOW_ADDRESS the one
   * the config's flowlb gets when the file sets none, derived from its name).
   */
  env?: Record<string, string>;
  /** Topology options besides steering (always `none`). */
  topology?: Omit<TopologyOptions, "steering">;
}

/**
 * A topology (steering none, its fwmark routing removed) whose lb netns is
 * configured with `nfqlb apply -f FILE`. Disposing runs `nfqlb teardown`,
 * then kills by pid every dataplane process apply was seen to start that
 * still runs in this topology's lb netns, then tears the topology down.
 */
export class HostUnderTest {
  /** The topology. */
  readonly topo: Topology;
  /** The config file (in the topology's scratch directory). */
  readonly file: string;
  /** The config's name. */
  readonly name: string;
  /** Environment of every nfqlb command. */
  readonly env: Record<string, string>;
  #pids = new Set<number>();
  /** Every config file written here (disposing tears each down). */
  #files = new Set<string>();
  /** The names of the other configs ({@link writeOther}). */
  #others = new Set<string>();

  private constructor(topo: Topology, o: HostOptions) {
    this.topo = topo;
    this.name = o.name;
    this.file = `${topo.workDir}/${o.name}.yaml`;
    this.#files.add(this.file);
    // the topology's shm dir; the flow-* commands talk to the flowlb apply starts, at its derived address
    this.env = { ...topo.nfqlb.env, NFQLB_FLOW_ADDRESS: derivedFlowAddress(o.name), ...o.env };
  }

  /** Builds the topology and strips its own plumbing; tears it down again if that fails. */
  static async create(o: HostOptions): Promise<HostUnderTest> {
    const topo = await Topology.create({ ...o.topology, steering: { mode: "none" } });
    try {
      await stripTopologyPlumbing(topo);
    } catch (e) {
      await topo.teardown();
      throw e;
    }
    return new HostUnderTest(topo, o);
  }

  /** Writes the config file. */
  write(text: string): void {
    Deno.writeTextFileSync(this.file, text);
  }

  /**
   * Writes another config file, `<name>.yaml` beside {@link file}, for a second config on the same host;
   * returns its path. Disposing tears it down too, and kills its dataplane if teardown could not.
   */
  writeOther(name: string, text: string): string {
    const file = `${this.topo.workDir}/${name}.yaml`;
    Deno.writeTextFileSync(file, text);
    this.#files.add(file);
    this.#others.add(name);
    return file;
  }

  /** Runs `nfqlb args...` in the lb netns with {@link env} (and `env`); never throws on a non-zero exit. */
  async nfqlb(args: string[], timeoutMs = 60_000, env: Record<string, string> = {}): Promise<RunResult> {
    const r = await this.topo.exec(this.topo.ns.lb, [NFQLB, ...args], {
      env: { ...this.env, ...env },
      allowFail: true,
      timeoutMs,
    });
    this.#remember();
    return r;
  }

  /** `nfqlb apply -f FILE [extra...]`. */
  async apply(...extra: string[]): Promise<RunResult> {
    return await this.nfqlb(["apply", "-f", this.file, ...extra]);
  }

  /**
   * `nfqlb apply -f FILE`, which must exit 0 (a `--dry-run` with changes: 2); returns its stdout lines after
   * the first, the `shm: N needed in DIR (M free)` line, which it checks (the changes, then the summary line).
   */
  async applyOk(...extra: string[]): Promise<string[]> {
    const r = await this.apply(...extra);
    const want = extra.includes("--dry-run") && !/^nothing to change: /m.test(r.stdout) ? 2 : 0;
    assert.equal(r.code, want, `apply failed (${r.code}): ${r.stderr}${r.stdout}`);
    const lines = r.stdout.trimEnd().split("\n");
    assert.match(lines[0], SHM_LINE, r.stdout);
    return lines.slice(1);
  }

  /** The path of a file in the topology's shm directory (`.nfqlb-deno/<name>` for one of our own files). */
  shmFile(name: string): string {
    return `${this.topo.shmDir}/${name}`;
  }

  /** The files in the shm directory, sorted: the top level and our own files as `.nfqlb-deno/<name>`. */
  shmFiles(): string[] {
    return shmFiles(this.topo.shmDir);
  }

  /** The pid apply recorded in the state file of config `name` (undefined: no state file or no process). */
  pid(name = this.name): number | undefined {
    try {
      const st = JSON.parse(Deno.readTextFileSync(this.shmFile(own(`host-${name}.json`))));
      return typeof st.pid === "number" ? st.pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** The kernel objects of the lb netns (see {@link snapshot}). */
  async snapshot(): Promise<Record<string, string>> {
    return await snapshot(this.topo.ns.lb);
  }

  /** The active rows of target table `shm` (`nfqlb show`). */
  async rows(shm: string): Promise<Map<number, ShownTarget>> {
    const r = await this.nfqlb(["show", `--shm=${shm}`]);
    assert.equal(r.code, 0, `show --shm=${shm}: ${r.stderr}`);
    return parseShowActive(r.stdout);
  }

  /** Whether `pid` is a process in this topology's lb netns (a reused pid elsewhere is not ours). */
  inLbNetns(pid: number): boolean {
    const ours = netnsInode(`/run/netns/${this.topo.ns.lb}`);
    return ours !== undefined && netnsInode(`/proc/${pid}/ns/net`) === ours && pidRunning(pid);
  }

  #remember(): void {
    for (const name of [this.name, ...this.#others]) {
      const pid = this.pid(name);
      if (pid !== undefined) this.#pids.add(pid);
    }
  }

  /**
   * SIGKILLs every dataplane process apply was seen to start that still runs
   * in this topology's lb netns (the fallback when teardown could not stop it).
   */
  killStarted(): void {
    for (const pid of this.#pids) {
      if (!this.inLbNetns(pid)) continue;
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone meanwhile */ }
    }
  }

  /** teardown (bounded), then the kill-by-pid fallback, then the topology. Never throws. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const file of this.#files) {
      try {
        await this.nfqlb(["teardown", "-f", file], 30_000);
      } catch (e) {
        console.error(`teardown of ${file}: ${e}`);
      }
    }
    this.killStarted();
    await this.topo.teardown();
  }
}
