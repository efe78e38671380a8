#!/usr/bin/env bash
# Runs every test. Installs what is missing first (scripts/bootstrap.sh), builds
# the C library, runs `deno task check` (fmt, lint, types, layers, paths; it
# counts as one test), then `deno test`, and ends with one line:
#   tests: N passed, M failed
# End-to-end tests need root (network namespaces, iptables); without root they
# are skipped and say so.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$NFQLB_ROOT"
bash scripts/bootstrap.sh || { echo "tests: 0 passed, 1 failed"; exit 1; }
DENO="$(nfqlb_deno)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
echo "== deno task check"
if NO_COLOR=1 "$DENO" task check; then check_failed=0; else check_failed=1; echo "deno task check FAILED"; fi
NO_COLOR=1 "$DENO" test -A --no-prompt "$@" tests/ 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary="$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$log" | tail -1)"
passed="$(sed -nE 's/.*\| ([0-9]+) passed.*/\1/p' <<<"$summary")"
failed="$(sed -nE 's/.*\| ([0-9]+) failed.*/\1/p' <<<"$summary")"
if [ -z "$passed" ]; then
  echo "tests: 0 passed, 1 failed"
  exit 1
fi
[ "$rc" -ne 0 ] && [ "${failed:-0}" -eq 0 ] && failed=1
failed=$(( ${failed:-0} + check_failed ))
passed=$(( passed + 1 - check_failed ))
echo "tests: ${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] || exit 1
exit "$rc"
