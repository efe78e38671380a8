/** An error meant for the user: one line, printed as is, then exit with `exitCode`. */
export class NfqlbError extends Error {
  /** Process exit status to use. */
  readonly exitCode: number;
  /**
   * Makes a user-facing error.
   * @param message the single line to print on stderr
   * @param exitCode defaults to 1, as upstream's die()
   */
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = "NfqlbError";
    this.exitCode = exitCode;
  }
}

const ERRNO: Record<number, string> = {
  1: "Operation not permitted",
  2: "No such file or directory",
  12: "Cannot allocate memory",
  13: "Permission denied",
  17: "File exists",
  20: "Not a directory",
  21: "Is a directory",
  22: "Invalid argument",
  24: "Too many open files",
  28: "No space left on device",
  30: "Read-only file system",
  36: "File name too long",
};

/** strerror() for the errno values our file calls can produce. */
export function strerror(errno: number): string {
  return ERRNO[errno] ?? `errno ${errno}`;
}

/**
 * The message of an unknown thrown value, for one-line reports: the system's reason alone
 * (`Permission denied`), also for an {@link NfqlbError} that wraps one as its `cause`; an NfqlbError
 * without a cause is its whole line.
 */
export function errorText(e: unknown): string {
  if (e instanceof NfqlbError && e.cause !== undefined) return errorText(e.cause);
  // a line of ours is already what to print: cutting it at its first colon, as a system error's detail
  // is cut below, lost its subject (`FAILED mapSharedData: web: truncated file` became `FAILED mapSharedData`)
  if (e instanceof NfqlbError) return e.message;
  if (e instanceof Deno.errors.NotFound) return strerror(2);
  if (e instanceof Deno.errors.PermissionDenied) return strerror(13);
  // Deno has no error class for EROFS: it is a plain Error with code "EROFS"
  if (e instanceof Error && (e as { code?: string }).code === "EROFS") return strerror(30);
  if (e instanceof Deno.errors.AlreadyExists) return strerror(17);
  if (e instanceof Error) return e.message.replace(/\s*\(os error \d+\).*$/s, "").replace(/:.*$/s, "");
  return String(e);
}
