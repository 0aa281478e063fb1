#!/usr/bin/env bash
# Benchmark of egret's HTTP/HTTPS proxies against the direct path, in the
# same topology and the same run (not a test: it reports, it asserts
# nothing). Needs root, iproute2, nftables, openssl, curl, python3.
#
#   egret's netns    --veth-- upstream netns: ports 80/443 → `egret run`'s
#                               own redirect to its proxies → upstream 80/443
#   workload netns   --veth-- upstream netns: ports 8081/4443, the direct
#                               path to the same servers (no filter)
#
# Reports bulk throughput (one HTTP download of BULK bytes) and new TLS
# connections per second (CONNS sequential handshakes + one small request
# each, with p50/p99 latency), the best of RUNS alternating rounds each,
# and the egret/direct ratios.
#
# Usage: scripts/bench-proxy.sh [--bin PATH]   (default: target/release/egret,
# built if missing). Env: BULK (bytes, default 2 GiB), RUNS (3), CONNS (2000).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/egret
if [ "${1:-}" = "--bin" ]; then BIN=$2; fi
BULK=${BULK:-$((2 << 30))}
RUNS=${RUNS:-3}
CONNS=${CONNS:-2000}
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

[ -x "$BIN" ] || cargo build --release
bench_setup

# Upstream: a sendfile HTTP server for bulk (80 and 8081), openssl
# s_server for TLS (443 and 4443).
truncate -s "$BULK" "$TMP/bulk.bin"
cat > "$TMP/bulk.py" <<'EOF'
import os, socket, sys, threading
path = sys.argv[1]
size = os.path.getsize(path)
def handle(c):
    with c:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(4096)
            if not d:
                return
            buf += d
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        with open(path, "rb") as f:
            c.sendfile(f)
def serve(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
for p in sys.argv[2:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait()
EOF
ip netns exec "$U" python3 "$TMP/bulk.py" "$TMP/bulk.bin" 80 8081 &
PIDS+=($!)
for port in 443 4443; do
  ip netns exec "$U" openssl s_server -quiet -accept "$port" -cert "$TMP/leaf.pem" -key "$TMP/leaf.key" -www \
    >/dev/null 2>&1 &
  PIDS+=($!)
done

# egret, as in a pod: `egret run` with its own ruleset, in its own netns.
bench_egret

for p in 80 8081 443 4443; do wait_port "$U" "$p"; done
wait_port "$WE" 8443

ns_of() { if [ "$1" -lt 1000 ]; then echo "$WE $UPE"; else echo "$W $UP"; fi; } # port → netns, upstream address

bulk_once() { # port → bytes/s
  local v ns up
  read -r ns up < <(ns_of "$1")
  v=$(ip netns exec "$ns" curl -sS -o /dev/null -m 300 -w '%{speed_download}' \
    --resolve "ok.example:$1:$up" "http://ok.example:$1/")
  echo "${v%.*}"
}

cat > "$TMP/tls.py" <<'EOF'
import socket, ssl, sys, time
host, port, n, ca = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
lat = []
start = time.perf_counter()
for _ in range(n):
    t = time.perf_counter()
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_hostname="ok.example") as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while s.recv(65536):
                pass
    lat.append(time.perf_counter() - t)
total = time.perf_counter() - start
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
print(f"{n / total:.0f} {p(0.50):.2f} {p(0.99):.2f}")
EOF
tls() { # port
  local ns up
  read -r ns up < <(ns_of "$1")
  ip netns exec "$ns" python3 "$TMP/tls.py" "$up" "$1" "$CONNS" "$TMP/ca.pem"
}

echo "bench-proxy: $(nproc) cores, bulk $((BULK >> 20)) MiB x $RUNS runs, $CONNS TLS connections"
# Direct and egret alternate, so a load change on the machine hits both;
# the best run of each counts.
# egret's own CPU time (user + system ticks) is counted around its rounds:
# unlike throughput it does not depend on what else the machine runs.
ticks() { awk '{ print $14 + $15 }' "/proc/$EGRET/stat"; }
d_bulk=0 e_bulk=0 d_cps=0 e_cps=0 bulk_ticks=0 tls_ticks=0
for _ in $(seq "$RUNS"); do
  v=$(bulk_once 8081); [ "$v" -gt "$d_bulk" ] && d_bulk=$v
  t0=$(ticks)
  v=$(bulk_once 80); [ "$v" -gt "$e_bulk" ] && e_bulk=$v
  bulk_ticks=$((bulk_ticks + $(ticks) - t0))
  read -r c p50 p99 < <(tls 4443)
  [ "$c" -gt "$d_cps" ] && { d_cps=$c; d_p50=$p50; d_p99=$p99; }
  t0=$(ticks)
  read -r c p50 p99 < <(tls 443)
  tls_ticks=$((tls_ticks + $(ticks) - t0))
  [ "$c" -gt "$e_cps" ] && { e_cps=$c; e_p50=$p50; e_p99=$p99; }
done

allowed=$(grep -c '"ALLOWED"' "$TMP/events.jsonl" || true)
blocked=$(grep -c '"BLOCKED"' "$TMP/events.jsonl" || true)
awk -v db="$d_bulk" -v eb="$e_bulk" -v dc="$d_cps" -v ec="$e_cps" \
  -v d50="$d_p50" -v e50="$e_p50" -v d99="$d_p99" -v e99="$e_p99" 'BEGIN {
  printf "%-28s %14s %14s %8s\n", "", "direct", "egret", "ratio"
  printf "%-28s %14.0f %14.0f %8.2f\n", "bulk HTTP (MB/s)", db/1e6, eb/1e6, eb/db
  printf "%-28s %14.0f %14.0f %8.2f\n", "new TLS connections/s", dc, ec, ec/dc
  printf "%-28s %14.2f %14.2f %8.2f\n", "TLS connection p50 (ms)", d50, e50, e50/d50
  printf "%-28s %14.2f %14.2f %8.2f\n", "TLS connection p99 (ms)", d99, e99, e99/d99
}'
hz=$(getconf CLK_TCK)
awk -v bt="$bulk_ticks" -v tt="$tls_ticks" -v hz="$hz" -v runs="$RUNS" -v bulk="$BULK" -v conns="$CONNS" 'BEGIN {
  printf "egret CPU: %.2f s per GiB relayed, %.3f ms per TLS connection\n", bt/hz/(runs*bulk/2^30), tt/hz*1000/(runs*conns)
}'
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "egret events: $allowed allowed, $blocked blocked"
if [ "$blocked" -ne 0 ]; then
  echo "warning: egret blocked something; see its events:" >&2
  grep BLOCKED "$TMP/events.jsonl" | head -3 >&2
fi
