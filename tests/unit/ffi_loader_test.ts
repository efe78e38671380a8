/** ffi/lib.ts: opening the C library from a path and from its bytes (the `deno compile` path). */
import assert from "node:assert/strict";
import { cstring, lib, libraryPath, openFromBytes, openFromPath } from "../../ffi/lib.ts";
import { SYMBOLS } from "../../ffi/symbols.ts";

Deno.test("libraryPath() points at the built c/build/libnfqlb.so (or NFQLB_LIB)", () => {
  const p = libraryPath();
  const env = Deno.env.get("NFQLB_LIB");
  if (env) assert.equal(p, env);
  else assert.match(p, /\/c\/build\/libnfqlb\.so$/);
  assert.ok(Deno.statSync(p).isFile);
});

Deno.test("openFromPath() opens the library and its functions work", () => {
  const l = openFromPath(libraryPath());
  try {
    assert.equal(l.symbols.nfqlb_prime_below(1000), 997);
    for (const name of Object.keys(SYMBOLS)) {
      assert.equal(typeof (l.symbols as Record<string, unknown>)[name], "function");
    }
  } finally {
    l.close();
  }
});

Deno.test("openFromBytes() loads the library from its bytes and leaves no file behind", () => {
  const bytes = Deno.readFileSync(libraryPath());
  const tmpDir = Deno.makeTempDirSync({ prefix: "nfqlb-libdir-" });
  const saved = Deno.env.get("NFQLB_LIB_DIR");
  Deno.env.set("NFQLB_LIB_DIR", tmpDir);
  try {
    const l = openFromBytes(bytes);
    try {
      assert.equal(l.symbols.nfqlb_prime_below(1000), 997);
      assert.equal(l.symbols.nfqlb_prime_below(10000), 9973);
      const key = cstring("");
      assert.equal(l.symbols.nfqlb_hash_djb2(key, 0), 5381);
    } finally {
      l.close();
    }
    assert.deepEqual([...Deno.readDirSync(tmpDir)], [], "the extracted copy is removed");
  } finally {
    if (saved === undefined) Deno.env.delete("NFQLB_LIB_DIR");
    else Deno.env.set("NFQLB_LIB_DIR", saved);
    Deno.removeSync(tmpDir, { recursive: true });
  }
});

Deno.test("openFromPath() of a missing file throws", () => {
  assert.throws(() => openFromPath("/nonexistent/dir/libnfqlb.so"));
});

Deno.test("openFromBytes() of bytes that are not a library throws a clear error", () => {
  assert.throws(
    () => openFromBytes(new TextEncoder().encode("not an ELF file")),
    /cannot load libnfqlb\.so from memory/,
  );
});

Deno.test("lib() opens once and returns the same symbols", () => {
  assert.equal(lib(), lib());
  assert.equal(lib().nfqlb_prime_below(20), 19);
});

Deno.test("cstring() is NUL-terminated UTF-8", () => {
  assert.deepEqual(Array.from(cstring("ab")), [0x61, 0x62, 0]);
  assert.deepEqual(Array.from(cstring("é")), [0xc3, 0xa9, 0]);
  assert.deepEqual(Array.from(cstring("")), [0]);
});
