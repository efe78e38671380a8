/**
 * Opens the C library (c/build/libnfqlb.so) with Deno.dlopen.
 *
 * Two paths: from a file (a checkout, or NFQLB_LIB), and from bytes. A
 * `deno compile`d binary embeds the .so with `--include`; Deno can dlopen the
 * embedded file itself, but only by extracting it where it chooses (which
 * fails on a read-only root). So when the direct open fails we read the
 * embedded bytes and write them to a private file in NFQLB_LIB_DIR,
 * $XDG_RUNTIME_DIR, /dev/shm or /tmp, whichever is writable, and open that.
 */
import { type NfqlbSymbols, SYMBOLS } from "./symbols.ts";

export type { NfqlbSymbols } from "./symbols.ts";

/** Where the library is expected: NFQLB_LIB, else c/build/libnfqlb.so next to this checkout. */
export function libraryPath(): string {
  const env = Deno.env.get("NFQLB_LIB");
  if (env) return env;
  return new URL("../c/build/libnfqlb.so", import.meta.url).pathname;
}

/** Opens the library from a file path. */
export function openFromPath(path: string): Deno.DynamicLibrary<typeof SYMBOLS> {
  return Deno.dlopen(path, SYMBOLS);
}

function writableDirs(): string[] {
  const dirs: string[] = [];
  for (const v of ["NFQLB_LIB_DIR", "XDG_RUNTIME_DIR", "TMPDIR"]) {
    const d = Deno.env.get(v);
    if (d) dirs.push(d);
  }
  dirs.push("/dev/shm", "/tmp");
  return dirs;
}

/**
 * Opens the library from its bytes: writes them to a fresh private file
 * (mode 0700), dlopens it and removes the file again (the mapping stays).
 */
export function openFromBytes(bytes: Uint8Array): Deno.DynamicLibrary<typeof SYMBOLS> {
  const errors: string[] = [];
  for (const dir of writableDirs()) {
    let tmp: string | undefined;
    try {
      tmp = Deno.makeTempDirSync({ dir, prefix: "nfqlb-lib-" });
      const file = `${tmp}/libnfqlb.so`;
      Deno.writeFileSync(file, bytes, { mode: 0o700 });
      const lib = Deno.dlopen(file, SYMBOLS);
      return lib;
    } catch (e) {
      errors.push(`${dir}: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      if (tmp) {
        try {
          Deno.removeSync(tmp, { recursive: true });
        } catch { /* best effort */ }
      }
    }
  }
  throw new Error(
    `cannot load libnfqlb.so from memory (${errors.join("; ")}); set NFQLB_LIB_DIR to a writable dir`,
  );
}

type SymbolName = keyof typeof SYMBOLS;

let symbols: NfqlbSymbols | undefined;
const handles: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>[] = [];

/**
 * Binds one symbol. Deno compiles a call trampoline for every symbol it is
 * given when the library is opened (0.1–0.3 ms each), so each symbol is
 * bound on its first use, alone: `nfqlb activate` binds the few table
 * functions it calls, and `lb` binds the dozen it needs before its first
 * verdict instead of a hundred (opening the already loaded library again is
 * cheap: the dynamic loader counts references).
 */
function bindSymbol(target: Record<string, unknown>, name: SymbolName): void {
  const path = libraryPath();
  let handle: Deno.DynamicLibrary<Deno.ForeignLibraryInterface>;
  try {
    handle = Deno.dlopen(path, { [name]: SYMBOLS[name] } as Deno.ForeignLibraryInterface);
  } catch (first) {
    // a compiled binary that cannot dlopen its embedded file: load every symbol at once from the bytes
    let bytes: Uint8Array;
    try {
      bytes = Deno.readFileSync(path);
    } catch {
      const msg = first instanceof Error ? first.message : String(first);
      throw new Error(`cannot load the C library ${path}: ${msg} (run: deno task build)`);
    }
    const all = openFromBytes(bytes);
    handles.push(all as unknown as Deno.DynamicLibrary<Deno.ForeignLibraryInterface>);
    for (const n of Object.keys(SYMBOLS)) {
      if (!Object.getOwnPropertyDescriptor(target, n)?.configurable) continue; // bound already
      Object.defineProperty(target, n, {
        value: (all.symbols as Record<string, unknown>)[n],
        enumerable: true,
      });
    }
    return;
  }
  handles.push(handle);
  Object.defineProperty(target, name, { value: handle.symbols[name], enumerable: true });
}

/**
 * The library's symbols, opened once per process (or worker). Each symbol is
 * bound on first use; after that it is a plain property (no getter on the
 * hot path).
 */
export function lib(): NfqlbSymbols {
  if (symbols) return symbols;
  const target: Record<string, unknown> = {};
  for (const n of Object.keys(SYMBOLS) as SymbolName[]) {
    Object.defineProperty(target, n, {
      configurable: true,
      enumerable: true,
      get() {
        bindSymbol(target, n);
        return target[n];
      },
    });
  }
  symbols = target as unknown as NfqlbSymbols;
  return symbols;
}

/** A NUL-terminated UTF-8 copy of s, for `const char*` parameters. */
export function cstring(s: string): Uint8Array<ArrayBuffer> {
  const enc = new TextEncoder().encode(s);
  const out = new Uint8Array(enc.length + 1);
  out.set(enc);
  return out;
}
