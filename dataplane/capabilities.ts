/** Whether this process has CAP_NET_ADMIN (bit 12 of CapEff), to explain EPERM. */
export function hasNetAdmin(): boolean {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
    return m ? (BigInt("0x" + m[1]) & (1n << 12n)) !== 0n : false;
  } catch {
    return false;
  }
}
