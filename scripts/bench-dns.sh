#!/usr/bin/env bash
# DNS mode throughput (not a test): queries/s for an allowed and a blocked
# name against (1) the upstream directly, (2) egret forwarding to it,
# (3) dnsmasq configured as an allowlist forwarder to the same upstream
# (cache off, like egret), all in the same run; prints ratios to the
# direct upstream. Needs dnsperf and dnsmasq-base.
#
#   scripts/bench-dns.sh [seconds per run, default 5] [concurrent clients, default 4]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
CLIENTS=${2:-4}

for p in dnsperf dnsmasq-base; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    echo "==> installing $p" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
  }
done

cargo build --release --example dns_bench_server >&2
work=$(mktemp -d)
cleanup() {
  [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null || true
  [ -n "${dnsmasq_pid:-}" ] && kill "$dnsmasq_pid" 2>/dev/null || true
  exec 3>&- 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The server runs until its stdin (a fifo we hold open) closes.
mkfifo "$work/in"
target/release/examples/dns_bench_server <"$work/in" >"$work/addrs" &
server_pid=$!
exec 3>"$work/in"
for _ in $(seq 50); do [ -s "$work/addrs" ] && break; sleep 0.1; done
read -r up eg <"$work/addrs"
up=${up#upstream=}; eg=${eg#egret=}

# dnsmasq: forward allowed.test (and below) to the upstream, NXDOMAIN for
# every other name, no cache, no /etc/hosts or resolv.conf.
dm_port=$((20000 + RANDOM % 20000))
dnsmasq --keep-in-foreground --no-daemon --port="$dm_port" --listen-address=127.0.0.1 \
  --bind-interfaces --no-resolv --no-hosts --cache-size=0 \
  --server="/allowed.test/${up%:*}#${up##*:}" --address=/#/ --log-facility=/dev/null \
  --user=root --pid-file="$work/dnsmasq.pid" &
dnsmasq_pid=$!
sleep 0.5

echo "allowed.test A" >"$work/allowed"
echo "blocked.test A" >"$work/blocked"

qps() { # server port file
  dnsperf -s "$1" -p "$2" -d "$3" -l "$SECS" -c "$CLIENTS" -q 200 2>/dev/null |
    awk '/Queries per second/ {print int($4)}'
}
rcode() { dig @"$1" -p "$2" +time=2 +tries=1 "$3" A | sed -n 's/.*status: \([A-Z]*\),.*/\1/p'; }

echo "sanity: direct allowed=$(rcode "${up%:*}" "${up##*:}" allowed.test) egret allowed=$(rcode "${eg%:*}" "${eg##*:}" allowed.test) egret blocked=$(rcode "${eg%:*}" "${eg##*:}" blocked.test) dnsmasq allowed=$(rcode 127.0.0.1 "$dm_port" allowed.test) dnsmasq blocked=$(rcode 127.0.0.1 "$dm_port" blocked.test)"
printf "%-10s %12s %12s %8s %8s\n" target allowed_qps blocked_qps allowed% blocked%
d_a=$(qps "${up%:*}" "${up##*:}" "$work/allowed"); d_b=$(qps "${up%:*}" "${up##*:}" "$work/blocked")
e_a=$(qps "${eg%:*}" "${eg##*:}" "$work/allowed"); e_b=$(qps "${eg%:*}" "${eg##*:}" "$work/blocked")
m_a=$(qps 127.0.0.1 "$dm_port" "$work/allowed"); m_b=$(qps 127.0.0.1 "$dm_port" "$work/blocked")
row() { printf "%-10s %12s %12s %7s%% %7s%%\n" "$1" "$2" "$3" "$((100 * $2 / d_a))" "$((100 * $3 / d_b))"; }
row direct "$d_a" "$d_b"
row egret "$e_a" "$e_b"
row dnsmasq "$m_a" "$m_b"
echo "egret/dnsmasq: allowed $((100 * e_a / m_a))%, blocked $((100 * e_b / m_b))%"
