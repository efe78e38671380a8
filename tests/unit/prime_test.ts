/** nfqlb_prime_below / primeBelow: the largest prime <= n, capped at 994009 (upstream's; docs/maglev.md, "primeBelow"). */
import assert from "node:assert/strict";
import { lib } from "../../ffi/lib.ts";
import { MAX_M, primeBelow } from "../../core/prime.ts";
import { nfqlb } from "../harness/nfqlb.ts";
import { shmSandbox } from "../helpers/shm.ts";

const EXAMPLES: [number, number][] = [
  [0, 0],
  [1, 0],
  [2, 2],
  [3, 3],
  [4, 3],
  [20, 19],
  [100, 97],
  [997, 997],
  [1000, 997],
  [10000, 9973],
  [65537, 65537],
  [65536, 65521],
  [131071, 131071],
  [994009, 993997],
  [993997, 993997],
  [993996, 993983],
  [1_000_000, 993997],
  [4294967295, 993997],
];

Deno.test("primeBelow() gives the spec's examples", () => {
  for (const [n, p] of EXAMPLES) {
    assert.equal(primeBelow(n), p, `primeBelow(${n})`);
    assert.equal(lib().nfqlb_prime_below(n >>> 0), p, `nfqlb_prime_below(${n})`);
  }
  assert.equal(MAX_M, 993997);
  // numbers beyond u32 are capped before they reach C
  assert.equal(primeBelow(2 ** 40), 993997);
  assert.equal(primeBelow(Number.MAX_SAFE_INTEGER), 993997);
});

Deno.test("nfqlb_prime_below() equals a sieve for every n up to 100000", () => {
  const LIMIT = 100_000;
  const composite = new Uint8Array(LIMIT + 1);
  composite[0] = composite[1] = 1;
  for (let i = 2; i * i <= LIMIT; i++) {
    if (!composite[i]) { for (let j = i * i; j <= LIMIT; j += i) composite[j] = 1; }
  }
  let largest = 0;
  const bad: string[] = [];
  for (let n = 0; n <= LIMIT; n++) {
    if (!composite[n]) largest = n;
    const got = lib().nfqlb_prime_below(n);
    if (got !== largest && bad.length < 10) bad.push(`n=${n}: got ${got}, want ${largest}`);
  }
  assert.deepEqual(bad, []);
});

Deno.test("nfqlb_prime_below() returns a prime near the cap (trial division to 997 suffices below 997^2)", () => {
  const isPrime = (n: number) => {
    if (n < 2) return false;
    for (let d = 2; d * d <= n; d++) if (n % d === 0) return false;
    return true;
  };
  for (let n = 994009; n > 994009 - 2000; n -= 7) {
    const p = lib().nfqlb_prime_below(n);
    assert.ok(isPrime(p), `${p} (from ${n}) is prime`);
    assert.ok(p <= n);
    for (let q = p + 1; q <= Math.min(n, 994008); q++) {
      assert.ok(!isPrime(q), `no prime between ${p} and ${n}`);
    }
  }
});

Deno.test("nfqlb primebelow prints the prime, and 'There is no prime below 0' for 0", async () => {
  using sb = shmSandbox();
  const r = await nfqlb(["primebelow", "10000"], sb.env);
  assert.deepEqual([r.code, r.stdout, r.stderr], [0, "9973\n", ""]);
  const huge = await nfqlb(["primebelow", "99999999999999999999"], sb.env);
  assert.deepEqual([huge.code, huge.stdout, huge.stderr], [0, "993997\n", ""]);
  const zero = await nfqlb(["primebelow", "0"], sb.env);
  assert.deepEqual([zero.code, zero.stdout, zero.stderr], [1, "", "There is no prime below 0\n"]);
});
