/**
 * core/flow/wire.ts and the server's dispatch: request encoding in
 * upstream's order, the incremental line reader (first/last wins, unknown
 * keys, `eoc:`, lines without `:`, EOF, long lines, arbitrary chunking) and
 * upstream's exact replies to raw requests (step 12 of the flow session
 * recorded from upstream).
 */
import assert from "node:assert/strict";
import {
  decodeReply,
  DEFAULT_FLOW_ADDRESS,
  encodeReply,
  encodeRequest,
  flowAddress,
  MAX_LINE,
  parseRequest,
  RequestReader,
} from "../../core/flow/wire.ts";
import { handleFlowCommand } from "../../dataplane/flow_server.ts";
import { FlowTable } from "../../core/flow/table.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

Deno.test("encodeRequest: upstream's order, only the fields given, then eoc:", () => {
  const bytes = encodeRequest({
    udpencap: "9899",
    match: "tcp[2:2]=1",
    sports: "1",
    dports: "2",
    srcs: "::/0",
    dsts: "10.0.0.0/8",
    protocols: "sctp",
    priority: "5",
    target: "nfqlb",
    name: "n",
    action: "set",
  });
  assert.equal(
    dec(bytes),
    "action:set\nname:n\ntarget:nfqlb\npriority:5\nprotocols:sctp\ndsts:10.0.0.0/8\nsrcs:::/0\n" +
      "dports:2\nsports:1\nmatch:tcp[2:2]=1\nudpencap:9899\neoc:\n",
  );
  assert.equal(dec(encodeRequest({ action: "list-names" })), "action:list-names\neoc:\n");
  assert.equal(dec(encodeRequest({ action: "list", name: undefined })), "action:list\neoc:\n");
  assert.throws(() => encodeRequest({ action: "delete", name: "a\nb" }), /newline/);
});

Deno.test("replies: C strings carry their NUL; decoding stops at it", () => {
  assert.deepEqual([...encodeReply("OK")], [0x4f, 0x4b, 0]);
  assert.equal(decodeReply(enc("OK\0garbage")), "OK");
  assert.equal(decodeReply(enc("no nul")), "no nul");
  assert.equal(decodeReply(new Uint8Array()), "");
});

Deno.test("flowAddress: NFQLB_FLOW_ADDRESS, else unix:nfqlb", () => {
  const old = Deno.env.get("NFQLB_FLOW_ADDRESS");
  try {
    Deno.env.delete("NFQLB_FLOW_ADDRESS");
    assert.equal(flowAddress(), DEFAULT_FLOW_ADDRESS);
    assert.equal(DEFAULT_FLOW_ADDRESS, "unix:nfqlb");
    Deno.env.set("NFQLB_FLOW_ADDRESS", "tcp:127.0.0.1:7000");
    assert.equal(flowAddress(), "tcp:127.0.0.1:7000");
  } finally {
    if (old === undefined) Deno.env.delete("NFQLB_FLOW_ADDRESS");
    else Deno.env.set("NFQLB_FLOW_ADDRESS", old);
  }
});

Deno.test("reader: string keys first wins, priority/udpencap last wins, unknown keys ignored", () => {
  const o = parseRequest(
    enc(
      "action:set\naction:delete\nname:a\nname:b\npriority:1\npriority:2\nudpencap:1\nudpencap:3\n" +
        "bogus:x\ntarget:t:with:colons\nmatch:\neoc:\nname:after\n",
    ),
  );
  assert.equal(o.kind, "done");
  if (o.kind !== "done") return;
  assert.equal(o.command.action, "set");
  assert.equal(o.command.name, "a");
  assert.equal(o.command.priority, "2");
  assert.equal(o.command.udpencap, "3");
  assert.equal(o.command.target, "t:with:colons");
  assert.equal(o.command.match, "");
  assert.deepEqual(o.command.unknown, ["bogus"]);
});

Deno.test("reader: eoc: ends at the start of a line, whatever follows it", () => {
  const o = parseRequest(enc("name:x\neoc:trailing\n"));
  assert.equal(o.kind, "done");
  const only = parseRequest(enc("eoc:\n"));
  assert.ok(only.kind === "done" && only.command.action === undefined);
});

Deno.test("reader: a line without ':' closes with no reply; so does EOF before eoc:", () => {
  const o = parseRequest(enc("name, x\n"));
  assert.equal(o.kind, "error");
  assert.ok(o.kind === "error" && o.reply === undefined && /invalid param \[name, x\]/.test(o.warning));
  const eof = parseRequest(enc("action:list\n"));
  assert.ok(eof.kind === "error" && eof.reply === undefined && /unexpected eof/.test(eof.warning));
  const partial = parseRequest(enc("action:list\neoc:"));
  assert.equal(partial.kind, "error");
});

Deno.test("reader: lines up to MAX_LINE bytes pass; longer ones get FAIL: line too long", () => {
  const ok = parseRequest(enc(`name:${"a".repeat(MAX_LINE - 5)}\neoc:\n`));
  assert.ok(ok.kind === "done" && ok.command.name!.length === MAX_LINE - 5);
  const long = parseRequest(enc(`name:${"a".repeat(MAX_LINE - 4)}\neoc:\n`));
  assert.ok(long.kind === "error" && long.reply === "FAIL: line too long");
  // detected before the newline arrives: a client streaming forever is cut off
  const r = new RequestReader();
  assert.equal(r.push(enc("x".repeat(1000))).kind, "more");
  assert.equal(r.push(enc("x".repeat(1000))).kind, "error");
  // multi-byte characters count in bytes
  const wide = parseRequest(enc(`name:${"é".repeat(600)}\neoc:\n`));
  assert.ok(wide.kind === "error" && wide.reply === "FAIL: line too long");
});

Deno.test("reader: any chunking gives the same result", () => {
  const text = "action:set\nname:flow-é\ntarget:nfqlb\nprotocols:tcp\neoc:\n";
  const whole = parseRequest(enc(text));
  const bytes = enc(text);
  for (const size of [1, 2, 3, 7, 13]) {
    const r = new RequestReader();
    let o = r.push(new Uint8Array());
    for (let i = 0; i < bytes.length && o.kind === "more"; i += size) o = r.push(bytes.subarray(i, i + size));
    assert.deepEqual(o, whole, `chunk ${size}`);
  }
  // after the end, input is ignored
  const r = new RequestReader();
  const done = r.push(enc("eoc:\n"));
  assert.deepEqual(r.push(enc("no colon\n")), done);
  assert.deepEqual(r.end(), done);
});

Deno.test("reader: arbitrary bytes never throw", () => {
  let seed = 1;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  for (let i = 0; i < 300; i++) {
    const b = new Uint8Array(Math.floor(rnd() * 3000));
    for (let j = 0; j < b.length; j++) {
      b[j] = rnd() < 0.1 ? 0x0a : rnd() < 0.1 ? 0x3a : Math.floor(rnd() * 256);
    }
    const o = parseRequest(b);
    assert.ok(o.kind === "done" || o.kind === "error");
    if (o.kind === "done") {
      // and the tables take whatever came
      const reply = handleFlowCommand(o.command, new FlowTable("flow"), new FlowTable("trace"));
      assert.equal(typeof reply.text, "string");
    }
  }
});

/** Runs one raw request through the reader and the dispatch; the bytes a server would send. */
function serve(text: string, table = new FlowTable("flow"), trace = new FlowTable("trace")): string {
  const o = parseRequest(enc(text));
  if (o.kind === "error") return o.reply === undefined ? "" : dec(encodeReply(o.reply));
  const r = handleFlowCommand(o.command, table, trace);
  return r.kind === "text" ? r.text + "\0" : r.text;
}

Deno.test("upstream flow session, step 12: raw requests and their exact replies", () => {
  assert.equal(serve("action:bogus\neoc:\n"), "FAIL: action unknown\0");
  assert.equal(serve("eoc:\n"), "FAIL: no action\0");
  assert.equal(serve("action:delete\neoc:\n"), "FAIL: no name\0");
  assert.equal(serve("name, x\n"), "");
  assert.equal(serve("action:trace-bogus\neoc:\n"), "FAIL: action unknown\0");
  assert.equal(serve("action:trace-delete\neoc:\n"), "FAIL: no name\0");
  assert.equal(serve("action:set\nname:a\neoc:\n"), "FAIL: Couldn't create load-balancer\0");
  assert.equal(serve("action:set\ntarget:nfqlb\neoc:\n"), "No name\0");
  assert.equal(serve("action:list\neoc:\n"), "[]\n");
  assert.equal(serve("action:list\nname:nosuch\neoc:\n"), "");
  assert.equal(serve("action:list-names\neoc:\n"), "[]\n");
  assert.equal(serve("action:trace-list\neoc:\n"), "[]\n");
  assert.equal(serve("action:trace-list-names\neoc:\n"), "[]\n");
});

Deno.test("dispatch: set/list on the flow table, trace-* on the trace table", () => {
  const table = new FlowTable("flow"), trace = new FlowTable("trace");
  assert.equal(serve("action:set\nname:a\ntarget:nfqlb\neoc:\n", table, trace), "OK\0");
  // ours: trace-set answers OK (upstream: no reply)
  assert.equal(serve("action:trace-set\nname:t\nsrcs:20.0.0.0/24\neoc:\n", table, trace), "OK\0");
  assert.equal(serve("action:trace-set\neoc:\n", table, trace), "No name\0");
  assert.equal(serve("action:list-names\neoc:\n", table, trace), '[\n  "a"\n]\n');
  assert.equal(serve("action:trace-list-names\neoc:\n", table, trace), '[\n  "t"\n]\n');
  assert.match(serve("action:trace-list\nname:t\neoc:\n", table, trace), /^\{\n {2}"name": "t",[^]*\n\}$/);
  assert.doesNotMatch(serve("action:trace-list\neoc:\n", table, trace), /user_ref/);
  assert.equal(serve("action:trace-delete\nname:t\neoc:\n", table, trace), "OK\0");
  assert.equal(serve("action:delete\nname:a\neoc:\n", table, trace), "OK\0");
  assert.equal(table.size + trace.size, 0);
});
