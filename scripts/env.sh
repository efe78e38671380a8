# Sourced by the other scripts: locates the project root and the pinned Deno.
# Why a separate file: every entry point (test, demo, nfqlb wrapper, CI) must find the same Deno.
# (no dirname: scripts/nfqlb sources this on every start, and lb's start time is a restart's gap)
case "${BASH_SOURCE[0]}" in */*) NFQLB_ROOT="${BASH_SOURCE[0]%/*}/.." ;; *) NFQLB_ROOT=.. ;; esac
NFQLB_ROOT="$(cd "$NFQLB_ROOT" && pwd)"
NFQLB_DENO_VERSION="2.9.6"
NFQLB_TOOLS="$NFQLB_ROOT/.tools"
# Deno's cache (the npm packages zod and yaml, and the type-check cache) lives in the project unless the
# caller chose one: filled by bootstrap.sh, readable by every user, so scripts/nfqlb runs for a non-root user
# and inside a network namespace with no network, fetching nothing at run time.
export DENO_DIR="${DENO_DIR:-$NFQLB_TOOLS/deno-dir}"

# nfqlb_deno prints the path of a usable deno (PATH first, then the project-local copy).
nfqlb_deno() {
  if command -v deno >/dev/null 2>&1; then
    command -v deno
  elif [ -x "$NFQLB_TOOLS/deno/node_modules/@deno/linux-x64-glibc/deno" ]; then
    echo "$NFQLB_TOOLS/deno/node_modules/@deno/linux-x64-glibc/deno"
  else
    return 1
  fi
}
