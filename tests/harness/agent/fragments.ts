/**
 * The agent's fragmented UDP: `sizes` (datagrams of given sizes on a
 * connected socket; the kernel fragments the big ones) and `frags`
 * (datagrams fragmented here and sent on header-included raw sockets, in a
 * chosen order and per fragment over a chosen route). The servers answer a
 * request whose first line starts with LEN_TAG with the length they received.
 */
import { dec, enc, sleepSync } from "./common.ts";
import { IPPROTO_RAW, SOCK_DGRAM, SOCK_RAW, Socket } from "../libc.ts";
import { familyOf, udpFragments } from "../packets.ts";
import {
  type FragsCommand,
  type FragsResult,
  LEN_TAG,
  type SizedReply,
  type SizesCommand,
  type SizesResult,
} from "./types.ts";

/** Waits (bounded) on a connected UDP socket for "<name> <LEN_TAG><nonce> <len>". */
function awaitSized(s: Socket, nonce: string, waitMs: number, errors: number[]): SizedReply {
  const want = `${LEN_TAG}${nonce} `;
  const deadline = Date.now() + waitMs;
  for (let i = 0; i < 16 && Date.now() < deadline; i++) {
    const r = s.recv();
    if (r === null) {
      errors.push(s.lastErrno);
      break;
    }
    const text = dec.decode(r);
    const sp = text.indexOf(" ");
    if (sp > 0 && text.startsWith(want, sp + 1)) {
      return { target: text.slice(0, sp), len: Number(text.slice(sp + 1 + want.length)) };
    }
  }
  return { target: "", len: 0 };
}

/** A request of exactly `size` bytes whose first line is "<LEN_TAG><nonce>". */
function sizedRequest(nonce: string, size: number): Uint8Array<ArrayBuffer> {
  const head = enc.encode(`${LEN_TAG}${nonce}\n`);
  if (size < head.length) throw new Error(`datagram size ${size} < ${head.length}`);
  const b = new Uint8Array(size);
  for (let i = head.length; i < size; i++) b[i] = 0x20 + (i % 90);
  b.set(head, 0);
  return b;
}

export function sizes(c: SizesCommand): SizesResult {
  const waitMs = c.waitMs ?? 2000;
  const errors: number[] = [];
  const replies = c.flows.map((f, i) => {
    const s = Socket.open(c.dst, SOCK_DGRAM);
    try {
      s.reuseAddr().timeouts(waitMs).bind(f.src, f.sport);
      if (!s.connect(c.dst, c.port)) {
        throw new Error(`connect from ${f.src}:${f.sport}: errno ${s.lastErrno}`);
      }
      return c.sizes.map((size, k) => {
        const nonce = `z${i}.${k}`;
        if (!s.send(sizedRequest(nonce, size))) {
          errors.push(s.lastErrno);
          return { target: "", len: 0 };
        }
        return awaitSized(s, nonce, waitMs, errors);
      });
    } finally {
      s.close();
    }
  });
  return { replies, errors: errors.slice(0, 10) };
}

export function sendFrags(c: FragsCommand): FragsResult {
  const waitMs = c.waitMs ?? 2000;
  const errors: number[] = [];
  const raws = new Map<string, Socket>();
  const raw = (like: string, mark: number): Socket => {
    const key = `${familyOf(like)}/${mark}`;
    let s = raws.get(key);
    if (!s) {
      s = Socket.open(like, SOCK_RAW, IPPROTO_RAW).timeouts(1000);
      if (mark) s.mark(mark);
      raws.set(key, s);
    }
    return s;
  };
  try {
    const datagrams = c.datagrams.map((d, i) => {
      const nonce = `f${i}.${d.id}`;
      const frags = udpFragments({ ...d, payload: sizedRequest(nonce, d.size) }, c.mtu ?? 1500);
      const n = frags.length;
      const order = d.order === undefined || d.order === "forward"
        ? frags.map((_, k) => k)
        : d.order === "reverse"
        ? frags.map((_, k) => n - 1 - k)
        : d.order;
      if ([...order].sort((a, b) => a - b).join() !== frags.map((_, k) => k).join()) {
        throw new Error(`order ${JSON.stringify(order)} is not a permutation of ${n} fragments`);
      }
      // the answer comes back to src:sport: listen there before sending
      const s = Socket.open(d.dst, SOCK_DGRAM);
      try {
        s.reuseAddr().timeouts(waitMs).bind(d.src, d.sport);
        if (!s.connect(d.dst, d.dport)) {
          throw new Error(`connect from ${d.src}:${d.sport}: errno ${s.lastErrno}`);
        }
        let sent = 0;
        for (const k of order) {
          const sock = raw(d.dst, k === 0 ? d.marks?.first ?? 0 : d.marks?.rest ?? 0);
          if (sock.sendTo(frags[k] as Uint8Array<ArrayBuffer>, d.dst)) sent++;
          else errors.push(sock.lastErrno);
          sleepSync(c.gapMs ?? 0);
        }
        return { ...awaitSized(s, nonce, waitMs, errors), fragments: n, sent };
      } finally {
        s.close();
      }
    });
    return { datagrams, errors: errors.slice(0, 10) };
  } finally {
    for (const s of raws.values()) s.close();
  }
}
