/**
 * The start bench's floor (tests/bench/lb_start.ts): the least a Deno
 * program must do before its first verdict. It opens the C library and
 * the target table, creates a classifier, binds the queue and serves it,
 * nothing else (no CLI, no option checks, no Worker). It serves for at most
 * 3 s; SIGTERM ends it (the kernel unbinds the queue when the socket closes).
 *
 * Usage: deno run -A tests/bench/bind_floor.ts <target shm> <queue>
 */
import { lib } from "../../ffi/lib.ts";
import { TargetShm } from "../../core/target_shm.ts";

const c = lib();
const table = TargetShm.open(Deno.args[0]);
const lb = c.nfqlb_lb_create(table.pointer, null, 1, 0, -1);
const err = new Int32Array(1), rcvbuf = new Uint32Array(2);
const q = c.nfqlb_queue_open(Number(Deno.args[1]), 1500, 512, 1024, 0, 64, err, rcvbuf);
const rc = q === null || lb === null ? err[0] : c.nfqlb_queue_bind(q, lb);
if (q === null || rc !== 0) throw new Error(`bind failed: errno ${-rc}`);
const end = Date.now() + 3000;
while (Date.now() < end) c.nfqlb_queue_serve(q, lb, 100);
c.nfqlb_queue_close(q);
