#!/usr/bin/env bash
# Installs only what is missing, idempotently: Debian packages (apt) and Deno (npm registry, project-local).
# Then builds the C library. Safe to run on every test/demo start.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

log() { echo "bootstrap: $*" >&2; }

# Debian packages: runtime libraries, build tools and the kernel plumbing the tests and demo use.
PKGS=(gcc make libc6-dev libnetfilter-queue1 libmnl0 libnetfilter-queue-dev libmnl-dev iptables iproute2 procps iperf prometheus bird2)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Deno, pinned, from the npm registry into .tools/ when none is on PATH.
if ! nfqlb_deno >/dev/null; then
  command -v npm >/dev/null || { log "need npm (or deno on PATH) to install Deno"; exit 1; }
  log "installing Deno $NFQLB_DENO_VERSION from the npm registry into .tools/deno"
  mkdir -p "$NFQLB_TOOLS/deno"
  (cd "$NFQLB_TOOLS/deno" && npm install --silent --no-audit --no-fund --no-save \
    --prefix "$NFQLB_TOOLS/deno" "deno@$NFQLB_DENO_VERSION" >/dev/null)
fi
DENO="$(nfqlb_deno)"
have="$("$DENO" --version | head -1 | awk '{print $2}')"
if [ "$have" != "$NFQLB_DENO_VERSION" ]; then
  log "note: using deno $have from PATH (pinned version is $NFQLB_DENO_VERSION)"
fi

# The npm dependencies (pinned in deno.json and deno.lock) into the project's DENO_DIR, once: every module a
# command can load, so nothing is fetched at run time; readable by any user (the CLI does not need to write it).
if [ ! -f "$DENO_DIR/.nfqlb-cached" ] || [ "$NFQLB_ROOT/deno.lock" -nt "$DENO_DIR/.nfqlb-cached" ]; then
  log "caching the npm dependencies into ${DENO_DIR#"$NFQLB_ROOT"/}"
  (cd "$NFQLB_ROOT" && "$DENO" cache --quiet cli/main.ts dataplane/queue_worker.ts mod.ts)
  touch "$DENO_DIR/.nfqlb-cached"
  chmod -R a+rX "$DENO_DIR" 2>/dev/null || true
fi

# The C library (rebuilt only when a source is newer than the .so).
make -s -C "$NFQLB_ROOT/c"
