#!/usr/bin/env bash
# The image's HEALTHCHECK: GET /healthz of nfqlb run's admin server (docs/run.md), with bash alone (the image
# has no curl). Exit 0 on "200"; else one line saying why and exit 1, within about 3 s.
#   healthcheck.sh [HOST PORT [PATH]]     default: 127.0.0.1 9110 /healthz
# With --network host the admin server's default, 127.0.0.1:9110, is in the same network namespace as the
# check; an admin address of 0.0.0.0:9110 answers there too.
host="${1:-127.0.0.1}" port="${2:-9110}" path="${3:-/healthz}"
if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
  echo "healthcheck: $host:$port: no admin server (connection failed)"
  exit 1
fi
printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
if ! IFS=' ' read -r -t 3 _ status _ <&3; then
  echo "healthcheck: $host:$port$path: no answer within 3 s"
  exit 1
fi
[ "$status" = "200" ] && exit 0
echo "healthcheck: $host:$port$path: HTTP $status"
exit 1
