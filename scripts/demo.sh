#!/usr/bin/env bash
# The demo: installs what is missing and builds the C library (scripts/bootstrap.sh),
# then runs scripts/demo.ts: a namespace topology set up by `nfqlb apply -f` from a config file,
# real TCP/UDP traffic with a per-target table, `nfqlb status`, a target drained by editing the file
# and applying again, and `nfqlb teardown -f` with full cleanup (also on Ctrl-C).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root: it creates network namespaces, veth pairs and iptables rules. Run: sudo $0" >&2
  exit 1
fi
bash "$NFQLB_ROOT/scripts/bootstrap.sh"
DENO="$(nfqlb_deno)"
exec "$DENO" run --quiet --no-prompt --allow-all --config "$NFQLB_ROOT/deno.json" "$NFQLB_ROOT/scripts/demo.ts" "$@"
