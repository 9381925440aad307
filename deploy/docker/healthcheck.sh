#!/bin/bash
# Container health probe without curl: GET /healthz over bash's /dev/tcp.
# The port comes from ROOMCAST_LISTEN (default 0.0.0.0:8080); set
# ROOMCAST_HEALTHCHECK_PATH=/readyz to probe readiness instead of liveness.
set -u
listen="${ROOMCAST_LISTEN:-0.0.0.0:8080}"
port="${listen##*:}"
path="${ROOMCAST_HEALTHCHECK_PATH:-/healthz}"
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$path" >&3
IFS= read -r -t 3 status <&3 || exit 1
exec 3<&-
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) echo "unhealthy: ${status}" >&2; exit 1 ;;
esac
