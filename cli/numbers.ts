/**
 * Strict number parsing for CLI values. Upstream uses atoi(), which turns
 * "abc" into 0 and so e.g. activates fwmark 0; we reject instead
 * (docs/compatibility.md).
 */
import { NfqlbError } from "../core/errors.ts";

const INT = /^[+-]?[0-9]+$/;

/**
 * Parses a decimal integer within [min, max].
 * @param cmd command name for the message
 * @param what e.g. `--M value` or `fwmark`
 * @throws NfqlbError `<cmd>: invalid <what> '<v>' (expected an integer in min..max)`
 */
export function parseInteger(cmd: string, what: string, value: string, min: number, max: number): number {
  const n = INT.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `${min}..${max}`;
    throw new NfqlbError(`${cmd}: invalid ${what} '${value}' (expected an integer ${range})`);
  }
  return n;
}

/** The int32 range, used for fwmarks as upstream (negative = none). */
export const INT32_MIN = -2147483648;
/** The int32 range, used for fwmarks as upstream (negative = none). */
export const INT32_MAX = 2147483647;
/** The u32 maximum. */
export const UINT32_MAX = 4294967295;

/**
 * Parses like C strtol(s, NULL, 0) but strictly: `0x` hex, leading `0`
 * octal, else decimal, optional sign; the whole string must be a number.
 * Returns undefined when it is not.
 */
export function parseStrtol0(value: string): number | undefined {
  const m = /^([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(value);
  if (!m) return undefined;
  const body = m[2];
  let n: number;
  if (/^0[xX]/.test(body)) n = parseInt(body.slice(2), 16);
  else if (body.length > 1 && body[0] === "0") n = parseInt(body.slice(1), 8);
  else n = parseInt(body, 10);
  return m[1] === "-" ? -n : n;
}
