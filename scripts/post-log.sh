#!/usr/bin/env bash
# POSTs one event to an egret (or g0efilter) dashboard with plain curl, for
# scripts that ship their own logs next to egret's.
#
#   DASHBOARD_HOST=http://127.0.0.1:8081 DASHBOARD_API_KEY=secret \
#     scripts/post-log.sh BLOCKED https example.com 10.0.0.5:40000 93.184.215.14:443 "not in allowlist"
#
# Arguments (all optional): action (ALLOWED|BLOCKED, default BLOCKED),
# component (https|http|dns|nflog, default https), host name,
# source ip:port, destination ip:port, reason.
# DASHBOARD_HOST may omit the scheme (http:// is assumed), as in egret.
set -euo pipefail

host="${DASHBOARD_HOST:?set DASHBOARD_HOST, e.g. http://127.0.0.1:8081}"
key="${DASHBOARD_API_KEY:?set DASHBOARD_API_KEY (the API_KEY of the dashboard)}"
case "$host" in
  http://* | https://*) ;;
  *) host="http://$host" ;;
esac
host="${host%/}"

action="${1:-BLOCKED}"
component="${2:-https}"
name="${3:-example.com}"
src="${4:-10.0.0.5:40000}"
dst="${5:-93.184.215.14:443}"
reason="${6:-posted by post-log.sh}"

lower_action="$(printf '%s' "$action" | tr '[:upper:]' '[:lower:]')"
# RFC 3339 with nanoseconds, UTC, like egret's own events.
now="$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"

# ip:port → ip (IPv6 written as [addr]:port loses its brackets).
ip_of() {
  local ip="${1%:*}"
  ip="${ip#\[}"
  printf '%s' "${ip%\]}"
}

# JSON-escape a string (backslash and double quote; control characters are
# not expected in these arguments).
esc() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

sip="$(esc "$(ip_of "$src")")"
dip="$(esc "$(ip_of "$dst")")"
body="{\"time\":\"$now\",\"msg\":\"$(esc "$component.$lower_action")\",\"action\":\"$(esc "$action")\""
body+=",\"component\":\"$(esc "$component")\",\"hostname\":\"$(esc "$(hostname)")\""
body+=",\"source_ip\":\"$sip\",\"source_port\":${src##*:},\"destination_ip\":\"$dip\",\"destination_port\":${dst##*:}"
body+=",\"host\":\"$(esc "$name")\",\"src\":\"$(esc "$src")\",\"dst\":\"$(esc "$dst")\",\"reason\":\"$(esc "$reason")\"}"

# --fail-with-body: a 4xx/5xx answer is an error exit, with the dashboard's
# reason printed.
curl -sS --fail-with-body --max-time 10 \
  -H "X-Api-Key: $key" \
  -H "Authorization: Bearer $key" \
  -H "Content-Type: application/json" \
  --data-binary "$body" \
  "$host/api/v1/logs"
echo
