#!/usr/bin/env bash
# The benchmark suite (not a test: it reports, it asserts nothing):
# egret against the direct path (no filter, the physical limit), HAProxy
# (transparent SNI/Host allowlist, original-destination server 0.0.0.0;
# once with splice-auto, once with splice-request and splice-response), a socat fork relay and, for DNS, dnsmasq, in the same run.
#
#   workload netns (wrk, curl, python clients)  --veth--  upstream netns (nginx)
#     ok.example:8081/4443 → direct to nginx
#   egret's netns (its clients; `egret run` with its own ruleset) --veth-- upstream netns
#     ok.example:80/443    → egret's redirect → egret :8080/:8443 → original destination
#   in the workload netns:
#     ok.example:1080/1443 → nft redirect → HAProxy  :9080/:9443 → original destination
#     ok.example:2080/2443 → nft redirect → socat    :9180/:9543 → nginx 8081/4443
#
# The filters run on CPU 0, clients and servers on CPU 1 (taskset). Each
# round runs every workload against every target back to back (target
# order rotating per round); the table gives medians over rounds of the
# absolute figures and of the per-round ratio to direct, the filter's CPU
# (utime+stime from /proc, children included for socat) per unit of work,
# and its memory. Results go to stdout as a markdown table and to
# $OUT (default target/bench/results.tsv as raw rows).
#
# Usage: scripts/bench.sh [--bin PATH]   (default target/release/egret, built)
# Env (defaults sized for ~8 minutes on 2 cores):
#   ROUNDS=3  SECS=3 (per wrk run)  BULK=256 MiB (bytes; the issue's 1 GiB: BULK=$((1<<30)))
#   HELD="1000 5000" (concurrent TLS connections held, one run per count;
#   0 skips)  DNS_SECS=3 (0 skips)  TARGETS="direct egret haproxy haproxy_splice socat"
#   WORKLOADS="tls_c1 tls_c16 http_c16 keepalive_c16 bad bulk1 bulk8" (a subset, e.g.
#   to profile one of them)  COOL=1.0 COOL_MAX=180 (each round waits up to COOL_MAX s for
#   the 1-minute load to fall under COOL)  NO_BUILD=1 (use target/release/{egret,examples/dns_bench_server} as built)
#   COUNTS="raw_syscalls:sys_enter,context-switches" (perf events counted on the filter CPU
#   during each TCP run, reported per unit of work; add uprobes such as probe_libc:malloc
#   made with `perf probe` to count allocations; empty: off)
# Needs root and: nftables iproute2 openssl curl python3 nginx-light haproxy
# socat wrk dnsperf dnsmasq-base (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/egret
if [ "${1:-}" = "--bin" ]; then BIN=$2; fi
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
BULK=${BULK:-$((256 << 20))}
HELD=${HELD:-"1000 5000"}
DNS_SECS=${DNS_SECS:-3}
TARGETS=${TARGETS:-"direct egret haproxy haproxy_splice socat"}
WORKLOADS=${WORKLOADS:-"tls_c1 tls_c16 http_c16 keepalive_c16 bad bulk1 bulk8"}
OUT=${OUT:-target/bench/results.tsv}
FILTER_CPU=0
LOAD_CPU=1

for p in nftables iproute2 openssl curl python3 nginx-light haproxy socat wrk dnsperf dnsmasq-base; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    echo "==> installing $p" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
  }
done
# The packages' own services are not wanted (and would hold port 80).
for s in nginx haproxy; do systemctl stop "$s" 2>/dev/null || true; done
has() { case " $TARGETS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
wl() { case " $WORKLOADS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if [ -z "${NO_BUILD:-}" ]; then # NO_BUILD=1: use the binaries as they are
  if [ "$BIN" = target/release/egret ] && has egret; then cargo build --release --bin egret >&2; fi
  cargo build --release --example dns_bench_server >&2
fi
ulimit -n "$(ulimit -Hn)" # 20000 on this machine (no CAP_SYS_RESOURCE to raise it)

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_setup
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
NOBODY=$(id -u nobody)

# Redirects in the workload netns (egret has its own netns and ruleset).
# HAProxy runs as nobody and its upstream connections are let through by
# uid; socat connects to ports that are not redirected.
ip netns exec "$W" nft -f - <<EOF
table inet egret_bench {
  chain out {
    type nat hook output priority -100; policy accept;
    meta skuid $NOBODY accept
    tcp dport 1080 redirect to :9080
    tcp dport 1443 redirect to :9443
    tcp dport 2080 redirect to :9180
    tcp dport 2443 redirect to :9543
    tcp dport 3080 redirect to :9280
    tcp dport 3443 redirect to :9643
  }
}
EOF

# Upstream: nginx on the load CPU, a small body on / and bulk bodies.
mkdir -p "$TMP/www" "$TMP/nginx"
printf 'ok\n' > "$TMP/www/index.html"
truncate -s "$BULK" "$TMP/www/bulk"
truncate -s $((BULK / 8)) "$TMP/www/bulk8"
listen=""
for p in 8081 80 1080 2080 3080; do listen+="    listen $p reuseport backlog=4096;"$'\n'; done
for p in 4443 443 1443 2443 3443; do listen+="    listen $p ssl reuseport backlog=4096;"$'\n'; done
cat > "$TMP/nginx.conf" <<EOF
user root;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log error;
daemon off;
events { worker_connections 32768; }
http {
  log_format bench '\$server_port \$ssl_server_name \$host \$status';
  access_log $TMP/nginx/access.log bench;
  client_body_temp_path $TMP/nginx; proxy_temp_path $TMP/nginx; fastcgi_temp_path $TMP/nginx;
  uwsgi_temp_path $TMP/nginx; scgi_temp_path $TMP/nginx;
  sendfile on; tcp_nopush on;
  keepalive_requests 1000000; keepalive_timeout 600s; client_header_timeout 600s;
  ssl_certificate $TMP/leaf.pem; ssl_certificate_key $TMP/leaf.key;
  ssl_session_tickets off; ssl_session_cache off;
  server {
$listen    root $TMP/www;
  }
}
EOF
# The access log is only read for "bad" host names: the log line format
# keeps it cheap, and nginx buffers nothing so the counts are final.
bench_bg ip netns exec "$U" taskset -c "$LOAD_CPU" nginx -c "$TMP/nginx.conf" -e "$TMP/nginx/error.log"
for p in 8081 4443; do wait_port "$U" "$p"; done

# egret, as in a pod: `egret run` in its own netns, its own ruleset.
has egret && bench_egret MAX_CONNECTIONS=20000

# HAProxy: TCP mode with an SNI allowlist for TLS; HTTP mode (the only way
# to see every Host on a kept-alive connection) for plain HTTP. Twice: with
# splice-auto (HAProxy decides per buffer) and with splice-request and
# splice-response (always splice), so the anchor is at its best.
haproxy_cfg() { # http_port tls_port option...
  local http=$1 tls=$2
  shift 2
  cat <<EOF
global
  maxconn 7900
  nbthread 1
  user nobody
  group nogroup
defaults
  timeout connect 5s
  timeout client 600s
  timeout server 600s
$(for o in "$@"; do echo "  option $o"; done)
frontend tls
  mode tcp
  bind 127.0.0.1:$tls
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_sni -i ok.example }
  tcp-request content reject
  default_backend orig_tls
backend orig_tls
  mode tcp
  server orig 0.0.0.0
frontend http
  mode http
  bind 127.0.0.1:$http
  http-request deny unless { req.hdr(host),field(1,:) -i ok.example }
  default_backend orig_http
backend orig_http
  mode http
  server orig 0.0.0.0
EOF
}
haproxy_cfg 9080 9443 splice-auto > "$TMP/haproxy.cfg"
haproxy_cfg 9280 9643 splice-request splice-response > "$TMP/haproxy_splice.cfg"
has haproxy && bench_bg ip netns exec "$W" taskset -c "$FILTER_CPU" haproxy -db -f "$TMP/haproxy.cfg"
has haproxy_splice && bench_bg ip netns exec "$W" taskset -c "$FILTER_CPU" haproxy -db -f "$TMP/haproxy_splice.cfg"

# socat: one forked process per connection, no filtering (the engine of
# the docker-whitelist seed).
has socat && bench_bg ip netns exec "$W" taskset -c "$FILTER_CPU" socat TCP-LISTEN:9180,bind=127.0.0.1,fork,reuseaddr,backlog=4096 TCP:$UP:8081
has socat && bench_bg ip netns exec "$W" taskset -c "$FILTER_CPU" socat TCP-LISTEN:9543,bind=127.0.0.1,fork,reuseaddr,backlog=4096 TCP:$UP:4443
has egret && for p in 8080 8443; do wait_port "$WE" "$p"; done
has haproxy && for p in 9080 9443; do wait_port "$W" "$p"; done
has haproxy_splice && for p in 9280 9643; do wait_port "$W" "$p"; done
has socat && for p in 9180 9543; do wait_port "$W" "$p"; done

# Filter pids (the real process inside `ip netns exec … taskset … env …`).
pid_of() { # netns, listening port → pid
  ip netns exec "$1" ss -Htlnp "sport = :$2" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1
}
declare -A PID HTTP_PORT TLS_PORT
has egret && PID[egret]=$(pid_of "$WE" 8443)
has haproxy && PID[haproxy]=$(pid_of "$W" 9443)
has haproxy_splice && PID[haproxy_splice]=$(pid_of "$W" 9643)
has socat && { PID[socat_http]=$(pid_of "$W" 9180); PID[socat]=$(pid_of "$W" 9543); }
HTTP_PORT=([direct]=8081 [egret]=80 [haproxy]=1080 [haproxy_splice]=3080 [socat]=2080)
TLS_PORT=([direct]=4443 [egret]=443 [haproxy]=1443 [haproxy_splice]=3443 [socat]=2443)

# CPU ticks of a target's processes, reaped children included (socat).
ticks() {
  case $1 in
    direct) echo 0 ;;
    socat) awk '{ s += $14 + $15 + $16 + $17 } END { print s }' "/proc/${PID[socat]}/stat" "/proc/${PID[socat_http]}/stat" ;;
    *) awk '{ print $14 + $15 }' "/proc/${PID[$1]}/stat" ;;
  esac
}
# Memory of a target in KiB: VmRSS, or for socat the PSS summed over the
# listeners and every forked child (RSS would count shared pages N times).
mem_kib() {
  case $1 in
    direct) echo 0 ;;
    socat)
      local pids
      pids="${PID[socat]} ${PID[socat_http]} $(pgrep -P "${PID[socat]}" | tr '\n' ' ') $(pgrep -P "${PID[socat_http]}" | tr '\n' ' ')"
      for p in $pids; do cat "/proc/$p/smaps_rollup" 2>/dev/null; done | awk '/^Pss:/ { s += $2 } END { print s + 0 }' ;;
    *) awk '/^VmRSS:/ { print $2 }' "/proc/${PID[$1]}/status" ;;
  esac
}
threads() {
  case $1 in
    direct) echo 0 ;;
    socat) echo $(($(pgrep -c -P "${PID[socat]}") + 2)) ;;
    *) awk '/^Threads:/ { print $2 }' "/proc/${PID[$1]}/status" ;;
  esac
}
emit() { printf '%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$1" "$2" "$3" "$4" >> "$OUT"; } # target workload metric value
hz=$(getconf CLK_TCK)
COUNTS=${COUNTS:-}
# Counts COUNTS' events on the filter CPU (only the filter runs there)
# until stopped: counts_start; ...; counts_emit target workload.
counts_start() {
  [ -n "$COUNTS" ] || return 0
  perf stat -C "$FILTER_CPU" -x, -e "$COUNTS" -o "$TMP/counts" -- sleep 600 &
  COUNTS_PID=$!
  sleep 0.1
}
counts_emit() { # target workload
  [ -n "$COUNTS" ] || return 0
  # perf stat ends (and writes its counts) when its placeholder does.
  pkill -INT -P "$COUNTS_PID" sleep 2> /dev/null || true
  wait "$COUNTS_PID" 2> /dev/null || true
  awk -F, 'NF > 2 && $1 ~ /^[0-9]+$/ { print $3, $1 }' "$TMP/counts" | while read -r ev n; do emit "$1" "$2" "n:$ev" "$n"; done
}

ROUND=0
emit all meta secs "$SECS"; emit all meta bulk "$BULK"
for t in $TARGETS; do [ "$t" = direct ] || { emit "$t" idle rss_kib "$(mem_kib "$t")"; }; done

# The clients of a target: in egret's netns for egret, else the workload's.
in_w() { # target command...
  local ns=$W
  [ "$1" = egret ] && ns=$WE
  shift
  ip netns exec "$ns" taskset -c "$LOAD_CPU" "$@"
}
# wrk → "rate p50_ms p99_ms errors non2xx" (rate = completed requests/s)
wrk_run() { # target conns url [extra wrk args]
  local t=$1 c=$2 url=$3
  shift 3
  in_w "$t" wrk -t1 -c"$c" -d"${SECS}s" --latency --timeout 5s "$@" "$url" 2>&1 | python3 -c '
import re, sys
t = sys.stdin.read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    if not m:
        sys.stderr.write(f"wrk: unexpected latency {v!r} in:\n{t}\n")
        return 0
    n, u = m.groups()
    return float(n) * {"us": 1e-3, "ms": 1, "s": 1e3}[u]
rate = re.search(r"Requests/sec:\s+([\d.]+)", t)
p50 = re.search(r"^\s+50%\s+(\S+)", t, re.M)
p99 = re.search(r"^\s+99%\s+(\S+)", t, re.M)
err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
non = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
dur = re.search(r"requests in ([\d.]+)(\w+)", t)
secs = float(dur.group(1)) * {"s": 1, "ms": 1e-3, "m": 60}.get(dur.group(2), 1) if dur else 1
print(float(rate.group(1)) if rate else 0,
      ms(p50.group(1)) if p50 else 0, ms(p99.group(1)) if p99 else 0,
      sum(map(int, err.groups())) / secs if err else 0,
      int(non.group(1)) if non else 0)'
}
served_bad() { grep -c ' bad.example ' "$TMP/nginx/access.log" || true; }

bench_wrk() { # target workload conns scheme host [wrk args]: one wrk run with CPU accounting
  local t=$1 wl=$2 c=$3 scheme=$4 host=$5 port t0 t1
  shift 5
  if [ "$scheme" = https ]; then port=${TLS_PORT[$t]}; else port=${HTTP_PORT[$t]}; fi
  echo "  $t $wl" >&2
  counts_start
  t0=$(ticks "$t")
  read -r rate p50 p99 errs non2xx < <(wrk_run "$t" "$c" "$scheme://$host:$port/" "$@")
  sleep 0.2
  t1=$(ticks "$t")
  counts_emit "$t" "$wl"
  emit "$t" "$wl" rate "$rate"; emit "$t" "$wl" p50_ms "$p50"; emit "$t" "$wl" p99_ms "$p99"
  emit "$t" "$wl" errors_per_s "$errs"; emit "$t" "$wl" non2xx "$non2xx"
  emit "$t" "$wl" cpu_s "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { print (b - a) / hz }')"
}

bench_bulk() { # target conns
  local t=$1 n=$2 port=${HTTP_PORT[$1]} path t0 t1 s e
  if [ "$n" = 1 ]; then path=bulk; else path=bulk8; fi
  echo "  $t bulk$n" >&2
  counts_start
  t0=$(ticks "$t"); s=$(date +%s.%N)
  local -a curls=()
  for _ in $(seq "$n"); do
    in_w "$t" curl -sS -o /dev/null -m 300 "http://ok.example:$port/$path" &
    curls+=($!)
  done
  for c in "${curls[@]}"; do wait "$c" || true; done
  e=$(date +%s.%N); sleep 0.2; t1=$(ticks "$t")
  counts_emit "$t" "bulk$n"
  emit "$t" "bulk$n" rate "$(awk -v s="$s" -v e="$e" -v b="$BULK" 'BEGIN { print b / (e - s) / 1e6 }')"
  emit "$t" "bulk$n" cpu_s "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { print (b - a) / hz }')"
}

# Held connections: N TLS connections opened and held, then one request on
# each (all active). Prints "open_s active_s ok".
cat > "$TMP/held.py" <<'EOF'
import socket, ssl, sys, time, select
port, n, fifo_ready, fifo_go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=sys.argv[5])
conns = []
t = time.perf_counter()
try:
    for _ in range(n):
        raw = socket.create_connection(("ok.example", port), timeout=10)
        conns.append(ctx.wrap_socket(raw, server_hostname="ok.example"))
except Exception as e:
    print(f"held.py: connection {len(conns) + 1} of {n} failed: {e}", file=sys.stderr)
finally:
    # Always, so the script waiting on the fifo goes on.
    open(fifo_ready, "w").close()
opened = time.perf_counter() - t
open(fifo_go).read()
t = time.perf_counter()
for s in conns:
    s.sendall(b"GET / HTTP/1.1\r\nHost: ok.example\r\nConnection: close\r\n\r\n")
ok = 0
for s in conns:
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    ok += data.startswith(b"HTTP/1.1 200")
    s.close()
print(f"{opened:.2f} {time.perf_counter() - t:.2f} {ok}")
EOF
bench_held() { # target count
  local t=$1 n=$2
  echo "  $t held$n" >&2
  rm -f "$TMP/ready" "$TMP/go"; mkfifo "$TMP/ready" "$TMP/go"
  in_w "$t" python3 "$TMP/held.py" "${TLS_PORT[$t]}" "$n" "$TMP/ready" "$TMP/go" "$TMP/ca.pem" > "$TMP/held.out" &
  local py=$!
  cat "$TMP/ready" > /dev/null
  sleep 0.5
  emit "$t" "held$n" rss_kib "$(mem_kib "$t")"
  emit "$t" "held$n" threads "$(threads "$t")"
  echo > "$TMP/go"
  wait "$py" || true
  read -r open_s active_s ok < "$TMP/held.out"
  emit "$t" "held$n" open_s "$open_s"; emit "$t" "held$n" active_s "$active_s"; emit "$t" "held$n" ok "$ok"
}

rotate() { # round: the targets, rotated by the round number
  local -a a=($TARGETS)
  local i n=${#a[@]}
  for ((i = 0; i < n; i++)); do printf '%s ' "${a[$(((i + $1) % n))]}"; done
}

echo "bench: $(nproc) cores, rounds $ROUNDS x ${SECS}s, bulk $((BULK >> 20)) MiB, held $HELD, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# The run itself loads both cores: before each round, wait (at most
# COOL_MAX seconds) for the 1-minute load to fall under COOL, so every
# round starts on a quiet machine and says so.
cool_down() {
  local i
  for ((i = 0; i < ${COOL_MAX:-180}; i += 5)); do
    awk -v c="${COOL:-1.0}" '{ exit !($1 < c) }' /proc/loadavg && return 0
    sleep 5
  done
  echo "bench: load still $(cut -d' ' -f1 /proc/loadavg) after ${COOL_MAX:-180} s" >&2
}
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  cool_down
  echo "round $ROUND: load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  emit all load load1 "$(cut -d' ' -f1 /proc/loadavg)"
  wl tls_c1 && for t in $(rotate "$ROUND"); do bench_wrk "$t" tls_c1 1 https ok.example -H "Connection: close"; done
  wl tls_c16 && for t in $(rotate "$ROUND"); do bench_wrk "$t" tls_c16 16 https ok.example -H "Connection: close"; done
  wl http_c16 && for t in $(rotate "$ROUND"); do bench_wrk "$t" http_c16 16 http ok.example -H "Connection: close"; done
  wl keepalive_c16 && for t in $(rotate "$ROUND"); do bench_wrk "$t" keepalive_c16 16 http ok.example; done
  wl bad && for t in $(rotate "$ROUND"); do
    case $t in egret | haproxy | haproxy_splice)
      b0=$(served_bad)
      bench_wrk "$t" bad_sni_c16 16 https bad.example -H "Connection: close"
      emit "$t" bad_sni_c16 served $(($(served_bad) - b0))
      b0=$(served_bad)
      bench_wrk "$t" bad_host_c16 16 http bad.example -H "Connection: close"
      emit "$t" bad_host_c16 served $(($(served_bad) - b0)) ;;
    esac
  done
  wl bulk1 && for t in $(rotate "$ROUND"); do bench_bulk "$t" 1; done
  wl bulk8 && for t in $(rotate "$ROUND"); do bench_bulk "$t" 8; done
  true
done
ROUND=0
for n in $HELD; do
  [ "$n" -gt 0 ] || continue
  for t in $TARGETS; do [ "$t" = direct ] || bench_held "$t" "$n"; done
done
for t in $TARGETS; do [ "$t" = direct ] || emit "$t" after rss_kib "$(mem_kib "$t")"; done

if [ "$DNS_SECS" -gt 0 ]; then
# DNS (loopback, no namespaces): the test authoritative server and egret's
# DNS server in one process on the filter CPU (so direct queries also pay
# for sharing it), dnsmasq there too, dnsperf on the load CPU. egret asks
# the upstream over UDP, as dnsmasq does (EGRET_DNS_UPSTREAM_UDP=0: over
# TCP, as egret asks a loopback resolver in a pod; the test server's
# TCP side then sets the pace, not egret).
# (It serves until its stdin closes; a read-write open of the fifo does
# not block, and the kill at exit ends it anyway.)
mkfifo "$TMP/dns.in"
exec 3<> "$TMP/dns.in"
EGRET_DNS_UPSTREAM_UDP=${EGRET_DNS_UPSTREAM_UDP:-1} taskset -c "$FILTER_CPU" target/release/examples/dns_bench_server < "$TMP/dns.in" > "$TMP/dns.addrs" 3>&- &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$TMP/dns.addrs" ] && break; sleep 0.1; done
echo "  dns servers: $(cat "$TMP/dns.addrs")" >&2
read -r up eg < "$TMP/dns.addrs"
up=${up#upstream=}; eg=${eg#egret=}
dm_port=$((20000 + RANDOM % 20000))
for cache in 0 1000; do
  bench_bg taskset -c "$FILTER_CPU" dnsmasq --keep-in-foreground --no-daemon --port=$((dm_port + cache)) \
    --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts --cache-size=$cache \
    --server="/allowed.test/${up%:*}#${up##*:}" --address=/#/ --log-facility=/dev/null --user=root --dns-forward-max=1000 \
    --pid-file="$TMP/dnsmasq$cache.pid"
done
sleep 0.5
echo "allowed.test A" > "$TMP/allowed"
echo "blocked.test A" > "$TMP/blocked"
dns_addr() {
  case $1 in
    direct) echo "$up" ;; egret) echo "$eg" ;;
    dnsmasq) echo "127.0.0.1:$dm_port" ;; dnsmasq_cache) echo "127.0.0.1:$((dm_port + 1000))" ;;
  esac
}
qps() { # addr file
  taskset -c "$LOAD_CPU" dnsperf -s "${1%:*}" -p "${1##*:}" -d "$2" -l "$DNS_SECS" -c 4 -q 200 2> /dev/null |
    awk '/Queries per second/ { print int($4) }'
}
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
  for t in direct $(has egret && echo egret) dnsmasq dnsmasq_cache; do
    echo "  $t dns" >&2
    emit "$t" dns_allowed rate "$(qps "$(dns_addr "$t")" "$TMP/allowed")"
    # direct: the upstream answering NXDOMAIN for a name it does not have.
    emit "$t" dns_blocked rate "$(qps "$(dns_addr "$t")" "$TMP/blocked")"
  done
done
exec 3>&-

fi
ROUND=0
emit all load load1_end "$(cut -d' ' -f1 /proc/loadavg)"
python3 scripts/bench-report.py "$OUT"
