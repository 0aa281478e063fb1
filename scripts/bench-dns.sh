#!/usr/bin/env bash
# DNS mode throughput (not a test): queries/s for an allowed and a blocked
# name against (1) the upstream directly, (2) egret forwarding to it,
# (3) dnsmasq configured as an allowlist forwarder to the same upstream
# (cache off, like egret), in interleaved rounds of the same run; prints
# the median of each, ratios to the direct upstream, and the CPU time per
# query of egret's own threads (`dns`, `dns-fwd-*`) and of the upstream's.
# Needs dnsperf and dnsmasq-base.
#
#   scripts/bench-dns.sh [seconds per run, default 5] [concurrent clients, default 4]
#
# Environment:
#   ROUNDS=3         interleaved rounds (medians are reported)
#   PIN=0,1          CPU for the servers,CPU for dnsperf (as scripts/bench.sh
#                    does); PIN= (empty) leaves scheduling to the kernel
#   COMPARE=PATH     another dns_bench_server binary (e.g. an older commit's)
#                    measured side by side as "egret_cmp"
#   NO_BUILD=1       use target/release/examples/dns_bench_server as built
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-5}
CLIENTS=${2:-4}
ROUNDS=${ROUNDS:-3}
PIN=${PIN-0,1}
COMPARE=${COMPARE:-}

for p in dnsperf dnsmasq-base; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    echo "==> installing $p" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
  }
done

[ -n "${NO_BUILD:-}" ] || cargo build --release --example dns_bench_server >&2
srv_cpu=() load_cpu=()
if [ -n "$PIN" ]; then
  srv_cpu=(taskset -c "${PIN%,*}") load_cpu=(taskset -c "${PIN#*,}")
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A server runs until its stdin (a fifo held open read-write) closes; it
# prints "upstream=IP:PORT egret=IP:PORT".
start_server() { # binary name
  mkfifo "$work/$2.in"
  exec {fd}<>"$work/$2.in"
  "${srv_cpu[@]}" "$1" <"$work/$2.in" >"$work/$2.addrs" &
  pids+=($!)
  eval "${2}_pid=$!"
  for _ in $(seq 50); do [ -s "$work/$2.addrs" ] && break; sleep 0.1; done
}
start_server target/release/examples/dns_bench_server main
read -r up eg <"$work/main.addrs"
up=${up#upstream=}; eg=${eg#egret=}
targets="direct egret dnsmasq"
if [ -n "$COMPARE" ]; then
  start_server "$COMPARE" cmp
  read -r _ egc <"$work/cmp.addrs"
  egc=${egc#egret=}
  targets="direct egret egret_cmp dnsmasq"
fi

# dnsmasq: forward allowed.test (and below) to the upstream, NXDOMAIN for
# every other name, no cache, no /etc/hosts or resolv.conf.
dm_port=$((20000 + RANDOM % 20000))
"${srv_cpu[@]}" dnsmasq --keep-in-foreground --no-daemon --port="$dm_port" --listen-address=127.0.0.1 \
  --bind-interfaces --no-resolv --no-hosts --cache-size=0 --dns-forward-max=1000 \
  --server="/allowed.test/${up%:*}#${up##*:}" --address=/#/ --log-facility=/dev/null \
  --user=root --pid-file="$work/dnsmasq.pid" &
pids+=($!)
sleep 0.5

echo "allowed.test A" >"$work/allowed"
echo "blocked.test A" >"$work/blocked"

addr() {
  case $1 in
    direct) echo "$up" ;; egret) echo "$eg" ;; egret_cmp) echo "$egc" ;;
    dnsmasq) echo "127.0.0.1:$dm_port" ;;
  esac
}
# CPU ticks of a process's threads whose name matches (egret's are `dns`,
# `dns-fwd-N`; the test upstream's keep the binary's name).
ticks() { # pid regex
  local t sum=0
  for t in /proc/"$1"/task/*; do
    [ -r "$t/stat" ] || continue
    local s; s=$(<"$t/stat")
    local comm=${s#*(}; comm=${comm%%)*}
    [[ $comm =~ $2 ]] || continue
    local rest=${s##*) }; local f=($rest)
    sum=$((sum + f[11] + f[12]))
  done
  echo "$sum"
}
hz=$(getconf CLK_TCK)
measure() { # target file -> "qps egret_us_per_query upstream_us_per_query"
  local pid=${main_pid}
  [ "$1" = egret_cmp ] && pid=$cmp_pid
  local e0 u0 e1 u1 a out q n
  e0=$(ticks "$pid" '^dns(-fwd-[0-9]+)?$'); u0=$(ticks "$main_pid" '^dns_bench_serve')
  a=$(addr "$1")
  out=$("${load_cpu[@]}" dnsperf -s "${a%:*}" -p "${a##*:}" -d "$2" -l "$SECS" -c "$CLIENTS" -q 200 2>/dev/null)
  e1=$(ticks "$pid" '^dns(-fwd-[0-9]+)?$'); u1=$(ticks "$main_pid" '^dns_bench_serve')
  q=$(awk '/Queries per second/ {print int($4)}' <<<"$out")
  n=$(awk '/Queries completed/ {print $3}' <<<"$out")
  [ "${n:-0}" -gt 0 ] || n=1
  echo "$q $(((e1 - e0) * 1000000 / hz / n)) $(((u1 - u0) * 1000000 / hz / n))"
}
rcode() { local a; a=$(addr "$1"); dig @"${a%:*}" -p "${a##*:}" +time=2 +tries=1 "$2" A | sed -n 's/.*status: \([A-Z]*\),.*/\1/p'; }

echo -n "sanity:"
for t in $targets; do echo -n " $t allowed=$(rcode "$t" allowed.test) blocked=$(rcode "$t" blocked.test)"; done
echo
for ((r = 1; r <= ROUNDS; r++)); do
  for t in $targets; do
    for kind in allowed blocked; do
      read -r q e u < <(measure "$t" "$work/$kind")
      echo "$t $kind $q $e $u" >>"$work/rows"
      echo "  round $r $t $kind: $q q/s (egret threads ${e} us/q, upstream ${u} us/q)" >&2
    done
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR ? a[int((NR + 1) / 2)] : 0)}'; }
col() { awk -v t="$1" -v k="$2" -v c="$3" '$1 == t && $2 == k {print $c}' "$work/rows" | median; }
d_a=$(col direct allowed 3); d_b=$(col direct blocked 3)
echo "medians of $ROUNDS rounds, ${SECS}s each, $CLIENTS clients, pin=${PIN:-none}:"
printf "%-10s %11s %11s %8s %8s %13s %13s\n" target allowed_qps blocked_qps allowed blocked egret_us/q_a egret_us/q_b
for t in $targets; do
  a=$(col "$t" allowed 3); b=$(col "$t" blocked 3)
  ea=$(col "$t" allowed 4); eb=$(col "$t" blocked 4)
  [ "$t" = direct ] && { ea="($(col direct allowed 5) upstream)"; eb="($(col direct blocked 5))"; }
  [ "$t" = dnsmasq ] && { ea=-; eb=-; }
  printf "%-10s %11s %11s %7s× %7s× %13s %13s\n" "$t" "$a" "$b" \
    "$(awk -v x="$a" -v y="$d_a" 'BEGIN {printf "%.2f", x / y}')" \
    "$(awk -v x="$b" -v y="$d_b" 'BEGIN {printf "%.2f", x / y}')" "$ea" "$eb"
done
