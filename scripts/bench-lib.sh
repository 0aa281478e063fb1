# Shared topology for the benchmark scripts (sourced, not run):
#
#   workload netns $W (10.200.250.1) --veth-- upstream netns $U ($UP = 10.200.250.2)
#
# After `bench_setup`: $TMP holds a test PKI (ca.pem; leaf.pem/leaf.key for
# ok.example, CA:FALSE with a SAN); inside $W the names ok.example and
# bad.example resolve to $UP (through /etc/netns/$W/hosts, which
# `ip netns exec` mounts over /etc/hosts). Processes started with
# `bench_bg` are killed, and the namespaces removed, on exit or signal.
# Needs root, iproute2, nftables, openssl.

TAG="egret-bench-$$"
W="$TAG-w"
U="$TAG-u"
UP=10.200.250.2
TMP=$(mktemp -d)
PIDS=()

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$W" 2>/dev/null || true
  ip netns del "$U" 2>/dev/null || true
  # The filters' own logs outlive the run, for a look at what went wrong.
  if [ -d target/bench ]; then
    for f in "$TMP"/*.log; do [ -s "$f" ] && cp "$f" target/bench/; done
  fi
  rm -rf "/etc/netns/$W" "$TMP"
}

bench_bg() { # command... : start in the background, remember its pid in $BG
  "$@" &
  BG=$!
  PIDS+=("$BG")
}

bench_setup() {
  [ "$(id -u)" -eq 0 ] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }
  trap bench_cleanup EXIT
  # A signal (e.g. from `timeout`) exits through the EXIT trap too.
  trap "exit 1" INT TERM HUP
  ip netns add "$W"
  ip netns add "$U"
  ip -n "$W" link add veth-w type veth peer name veth-u netns "$U"
  ip -n "$W" addr add 10.200.250.1/24 dev veth-w
  ip -n "$U" addr add "$UP/24" dev veth-u
  for ns in "$W" "$U"; do ip -n "$ns" link set lo up; done
  ip -n "$W" link set veth-w up
  ip -n "$U" link set veth-u up
  mkdir -p "/etc/netns/$W"
  printf '127.0.0.1 localhost\n%s ok.example bad.example\n' "$UP" > "/etc/netns/$W/hosts"
  (
    cd "$TMP"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 1 \
      -subj "/CN=egret bench CA" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj /CN=ok.example 2>/dev/null
    printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:ok.example\n' > leaf.ext
    openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem -days 1 -extfile leaf.ext 2>/dev/null
  )
}

wait_port() { # netns port: until something listens there (bounded)
  for _ in $(seq 100); do
    ip netns exec "$1" ss -Htln "sport = :$2" | grep -q . && return 0
    sleep 0.1
  done
  echo "$0: nothing listens on port $2 in $1" >&2
  exit 1
}
