#!/usr/bin/env bash
# `deno task compile`: builds the C library, then one self-contained binary
# dist/nfqlb with the library embedded (--include). At run time ffi/lib.ts
# opens the embedded .so, or writes its bytes to a private temp file when the
# embedded path cannot be dlopened.
#
# deno compile needs the runtime-only binary `denort` of the same Deno
# version. It downloads it unless DENORT_BIN=/path/to/denort names a local
# copy (honoured by Deno 2.x; checked with 2.9.6). Where the download host is
# unreachable this script says so in one line and exits 1.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$NFQLB_ROOT"
DENO="$(nfqlb_deno)" || { echo "compile: deno not found; run scripts/bootstrap.sh" >&2; exit 1; }
make -s -C c || { echo "compile: building the C library failed" >&2; exit 1; }
mkdir -p dist
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
NO_COLOR=1 "$DENO" compile -A --include c/build/libnfqlb.so --include dataplane/queue_worker.ts -o dist/nfqlb cli/main.ts >"$log" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then
  echo "compile: wrote dist/nfqlb ($(du -h dist/nfqlb | cut -f1))"
  exit 0
fi
if grep -q "Could not find denort at" "$log"; then
  echo "compile: DENORT_BIN=${DENORT_BIN:-} does not name a denort binary; point it at the denort of Deno $("$DENO" --version | awk 'NR==1{print $2}')" >&2
elif grep -qE "Setting up base binary|denort-.*\.zip|error sending request" "$log"; then
  echo "compile: deno compile could not download its runtime (denort) because its download server is unreachable from here; set DENORT_BIN=/path/to/denort (the denort of Deno $("$DENO" --version | awk 'NR==1{print $2}')) to use a local copy" >&2
else
  cat "$log" >&2
fi
exit 1
