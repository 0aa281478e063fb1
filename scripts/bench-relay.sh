#!/usr/bin/env bash
# Relay mode against socat (docker-whitelist's engine) in the same run:
#
#   client netns ($C, 10.204.0.1) --veth-- relay netns ($R, 10.204.0.2 | 10.205.0.1)
#                                  --veth-- upstream netns ($U, 10.205.0.2)
#
# In $R: `egret relay` (TARGET=10.205.0.2, PORT=9000) and socat as
# docker-whitelist runs it (TCP-LISTEN,fork,max-children -> TCP:target),
# on ports 9000 and 9100 (socat forwards to 9000 too). In $U: an echo
# server on 9000 and a discard sink on 9001 (bulk). Reported, for each:
#   held:  RSS of the relay (all its processes) holding $HELD idle connections
#   conns: new connections per second (connect, 1 byte echoed, close)
#   bulk:  MB/s of one stream of $BULK_MB MiB to the sink
# and egret/socat ratios. Needs root, iproute2, python3, socat (installed
# with apt when missing). Usage: scripts/bench-relay.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }
command -v socat >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null; }
HELD=${HELD:-1000}
BULK_MB=${BULK_MB:-1024}
SECS=${SECS:-5}
if [ "${1:-}" = --quick ]; then HELD=200; BULK_MB=128; SECS=2; fi
TAG="egret-brelay-$$"
C="$TAG-c"; R="$TAG-r"; U="$TAG-u"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in "$C" "$R" "$U"; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for ns in "$C" "$R" "$U"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$C" link add eth0 type veth peer name int0 netns "$R"
ip -n "$R" link add ext0 type veth peer name eth0 netns "$U"
ip -n "$C" addr add 10.204.0.1/24 dev eth0; ip -n "$C" link set eth0 up
ip -n "$R" addr add 10.204.0.2/24 dev int0; ip -n "$R" link set int0 up
ip -n "$R" addr add 10.205.0.1/24 dev ext0; ip -n "$R" link set ext0 up
ip -n "$U" addr add 10.205.0.2/24 dev eth0; ip -n "$U" link set eth0 up

cargo build --release --quiet
EGRET=target/release/egret
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

ip netns exec "$U" python3 - <<'PY' &
import socket, threading
def echo(c):
    try:
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
    except OSError: pass
    c.close()
def sink(c):
    try:
        while c.recv(1 << 20): pass
    except OSError: pass
    c.close()
def serve(port, f):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.205.0.2", port)); s.listen(4096)
    while True:
        c, _ = s.accept()
        threading.Thread(target=f, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(9001, sink), daemon=True).start()
serve(9000, echo)
PY
PIDS+=($!)
ip netns exec "$R" env TARGET=10.205.0.2 PORT="9000 9001" MAX_CONNECTIONS=100000 HEALTH_SOCKET=/tmp/$TAG.sock \
  LOG_LEVEL=warn "$EGRET" relay >/dev/null &
PIDS+=($!); EGRET_PID=$!
# docker-whitelist's engine: one socat per port, a child per connection.
ip netns exec "$R" socat TCP-LISTEN:9100,fork,reuseaddr,backlog=4096,max-children=100000 TCP:10.205.0.2:9000 &
PIDS+=($!); SOCAT_PID=$!
ip netns exec "$R" socat TCP-LISTEN:9101,fork,reuseaddr,max-children=100000 TCP:10.205.0.2:9001 &
PIDS+=($!); SOCAT_BULK=$!
sleep 1

# RSS (KiB) of a process and all its descendant processes (-T: not its
# threads, whose status repeats the whole process's RSS).
rss_tree() {
  local total=0 p
  for p in $(pstree -p -T "$1" 2>/dev/null | grep -o '([0-9]\+)' | tr -d '()' || echo "$1"); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0)))
  done
  echo "$total"
}
command -v pstree >/dev/null || { apt-get install -y -qq psmisc >/dev/null 2>&1 || true; }

# The client's script is passed with -c, so its stdin stays the caller's
# (the held mode waits on it).
read -r -d '' CLIENT_PY <<'PY' || true
import socket, sys, time, threading, os
port, mode = int(sys.argv[1]), sys.argv[2]
addr = ("10.204.0.2", port)
if mode == "held":
    n, pid = int(sys.argv[3]), sys.argv[4]
    socks = []
    for _ in range(n):
        s = socket.create_connection(addr); s.sendall(b"x"); s.recv(1); socks.append(s)
    time.sleep(1.0)
    print("ready", flush=True)
    sys.stdin.readline()
elif mode == "conns":
    secs = float(sys.argv[3]); count = [0]; end = time.time() + secs
    def run():
        while time.time() < end:
            s = socket.create_connection(addr); s.sendall(b"x"); s.recv(1); s.close(); count[0] += 1
    ts = [threading.Thread(target=run) for _ in range(4)]
    [t.start() for t in ts]; [t.join() for t in ts]
    print(f"{count[0] / secs:.0f}")
elif mode == "bulk":
    mb = int(sys.argv[3]); buf = b"\0" * (1 << 20)
    s = socket.create_connection(addr); t = time.time()
    for _ in range(mb): s.sendall(buf)
    s.shutdown(socket.SHUT_WR); s.recv(1); s.close()
    print(f"{mb / (time.time() - t):.0f}")
PY
client() { # port mode -> number
  ip netns exec "$C" python3 -c "$CLIENT_PY" "$@"
}

held() { # port relay-pid -> KiB per held connection
  local before after
  before=$(rss_tree "$2")
  coproc HOLD { client "$1" held "$HELD" "$2"; }
  read -r line <&"${HOLD[0]}"
  after=$(rss_tree "$2")
  echo >&"${HOLD[1]}"; wait "$HOLD_PID" 2>/dev/null || true
  echo $(( (after - before) / HELD ))
}

e_held=$(held 9000 "$EGRET_PID"); sleep 1
s_held=$(held 9100 "$SOCAT_PID"); sleep 1
e_conns=$(client 9000 conns "$SECS"); sleep 1
s_conns=$(client 9100 conns "$SECS"); sleep 1
e_bulk=$(client 9001 bulk "$BULK_MB"); sleep 1
s_bulk=$(client 9101 bulk "$BULK_MB")
ratio() { python3 -c "print(f'{$1 / max($2, 1e-9):.2f}')"; }
echo "relay benchmark (same run, egret relay vs socat fork, $(nproc) cores)"
printf '%-34s %10s %10s %8s\n' "" egret socat ratio
printf '%-34s %10s %10s %8s\n' "held: KiB per idle connection ($HELD)" "$e_held" "$s_held" "$(ratio "$e_held" "$s_held")"
printf '%-34s %10s %10s %8s\n' "new connections/s (4 clients)" "$e_conns" "$s_conns" "$(ratio "$e_conns" "$s_conns")"
printf '%-34s %10s %10s %8s\n' "bulk MB/s (one stream, ${BULK_MB} MiB)" "$e_bulk" "$s_bulk" "$(ratio "$e_bulk" "$s_bulk")"
