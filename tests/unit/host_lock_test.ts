/**
 * host/host_lock.ts: one apply or teardown at a time, across processes, never left locked by a dead holder,
 * and a bounded wait that names the holder.
 */
import assert from "node:assert/strict";
import { withHostLock } from "../../host/host_lock.ts";
import { NfqlbError } from "../../core/errors.ts";

const LOCK_MODULE = new URL("../../host/host_lock.ts", import.meta.url).href;

/** A process holding the lock for `holdMs` as `what` (it prints "held" once it has it). */
function holder(dir: string, what: string, holdMs: number, log?: string): Deno.ChildProcess {
  const code = `
    const { withHostLock } = await import(${JSON.stringify(LOCK_MODULE)});
    await withHostLock(${JSON.stringify(what)}, async () => {
      ${
    log
      ? `Deno.writeTextFileSync(${JSON.stringify(log)}, "enter " + Date.now() + "\\n", { append: true });`
      : ""
  }
      console.log("held");
      await new Promise((r) => setTimeout(r, ${holdMs}));
      ${
    log
      ? `Deno.writeTextFileSync(${JSON.stringify(log)}, "leave " + Date.now() + "\\n", { append: true });`
      : ""
  }
    });
  `;
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", code],
    env: { NFQLB_SHM_DIR: dir },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Resolves when the child printed "held" (bounded: 20 s). */
async function held(p: Deno.ChildProcess): Promise<void> {
  const reader = p.stdout.getReader();
  const dec = new TextDecoder();
  let text = "";
  const deadline = Date.now() + 20_000;
  try {
    while (!text.includes("held") && Date.now() < deadline) {
      const r = await Promise.race([
        reader.read(),
        new Promise<{ done: true; value: undefined }>((res) =>
          setTimeout(() => res({ done: true, value: undefined }), Math.max(1, deadline - Date.now()))
        ),
      ]);
      if (r.done) break;
      text += dec.decode(r.value);
    }
  } finally {
    reader.releaseLock();
  }
  assert.ok(text.includes("held"), `the holder never got the lock: ${JSON.stringify(text)}`);
}

async function sandbox<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = Deno.makeTempDirSync({ prefix: "nfqlb-lock-" });
  const prev = Deno.env.get("NFQLB_SHM_DIR");
  Deno.env.set("NFQLB_SHM_DIR", dir);
  try {
    return await fn(dir);
  } finally {
    if (prev === undefined) Deno.env.delete("NFQLB_SHM_DIR");
    else Deno.env.set("NFQLB_SHM_DIR", prev);
    Deno.removeSync(dir, { recursive: true });
  }
}

async function finish(p: Deno.ChildProcess): Promise<void> {
  try {
    p.kill("SIGKILL");
  } catch { /* exited */ }
  await p.status;
  await p.stdout.cancel().catch(() => {});
  await p.stderr.cancel().catch(() => {});
}

Deno.test("host lock: two processes never hold it at once (applies and teardowns run one after the other)", async () => {
  await sandbox(async (dir) => {
    const log = `${dir}/log`;
    const a = holder(dir, "apply a", 400, log), b = holder(dir, "apply b", 400, log);
    try {
      const [sa, sb] = await Promise.all([a.status, b.status]);
      assert.ok(sa.success && sb.success);
      const ev = Deno.readTextFileSync(log).trim().split("\n").map((l) => l.split(" "));
      assert.deepEqual(ev.map((e) => e[0]), ["enter", "leave", "enter", "leave"], Deno.readTextFileSync(log));
      assert.ok(Number(ev[2][1]) >= Number(ev[1][1]), "the second entered before the first left");
    } finally {
      await finish(a);
      await finish(b);
    }
  });
});

Deno.test("host lock: a bounded wait, one line naming the holder; free again once it has finished", async () => {
  await sandbox(async (dir) => {
    const p = holder(dir, "apply web", 2500);
    try {
      await held(p);
      const err = await withHostLock("teardown web", () => Promise.resolve(1), 300).then(
        () => undefined,
        (e) => e,
      );
      assert.ok(err instanceof NfqlbError, String(err));
      assert.match(
        err.message,
        new RegExp(
          `^teardown web: another apply or teardown \\(pid ${p.pid}: \\S*deno eval .*\\) has held ${dir} for 0\\.3 s; try again when it has finished$`,
        ),
      );
      assert.equal(await withHostLock("apply web", () => Promise.resolve(7), 20_000), 7);
    } finally {
      await finish(p);
    }
  });
});

Deno.test("host lock: a holder killed with SIGKILL leaves the host unlocked", async () => {
  await sandbox(async (dir) => {
    const p = holder(dir, "apply web", 60_000);
    try {
      await held(p);
      p.kill("SIGKILL");
      await p.status;
      assert.equal(await withHostLock("apply other", () => Promise.resolve("ok"), 10_000), "ok");
    } finally {
      await finish(p);
    }
  });
});
