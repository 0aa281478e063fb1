# Shared topology for the benchmark scripts (sourced, not run):
#
#   workload netns $W (10.200.250.1) --veth-- upstream netns $U ($UP = 10.200.250.2)
#   egret's netns $WE (10.200.251.1) --veth-- upstream netns $U ($UPE = 10.200.251.2)
#
# egret runs as it does in a pod (`egret run`, its own ruleset) in $WE, so
# its rules never touch the other targets' traffic in $W; the upstream
# servers listen on every address of $U and serve both.
#
# After `bench_setup`: $TMP holds a test PKI (ca.pem; leaf.pem/leaf.key for
# ok.example, CA:FALSE with a SAN); inside $W the names ok.example and
# bad.example resolve to $UP, and inside $WE to $UPE (through
# /etc/netns/NS/hosts, which
# `ip netns exec` mounts over /etc/hosts). Processes started with
# `bench_bg` are killed, and the namespaces removed, on exit or signal.
# Needs root, iproute2, nftables, openssl.

TAG="egret-bench-$$"
W="$TAG-w"
WE="$TAG-e"
U="$TAG-u"
UP=10.200.250.2
UPE=10.200.251.2
TMP=$(mktemp -d)
PIDS=()

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in "$W" "$WE" "$U"; do ip netns del "$ns" 2>/dev/null || true; done
  # The filters' own logs outlive the run, for a look at what went wrong.
  if [ -d target/bench ]; then
    for f in "$TMP"/*.log; do [ -s "$f" ] && cp "$f" target/bench/; done
  fi
  rm -rf "/etc/netns/$W" "/etc/netns/$WE" "$TMP"
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
  for ns in "$W" "$WE" "$U"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  ip -n "$W" link add veth-w type veth peer name veth-u netns "$U"
  ip -n "$WE" link add veth-e type veth peer name veth-ue netns "$U"
  ip -n "$W" addr add 10.200.250.1/24 dev veth-w
  ip -n "$WE" addr add 10.200.251.1/24 dev veth-e
  ip -n "$U" addr add "$UP/24" dev veth-u
  ip -n "$U" addr add "$UPE/24" dev veth-ue
  ip -n "$W" link set veth-w up
  ip -n "$WE" link set veth-e up
  ip -n "$U" link set veth-u up
  ip -n "$U" link set veth-ue up
  mkdir -p "/etc/netns/$W" "/etc/netns/$WE"
  printf '127.0.0.1 localhost\n%s ok.example bad.example\n' "$UP" > "/etc/netns/$W/hosts"
  printf '127.0.0.1 localhost\n%s ok.example bad.example\n' "$UPE" > "/etc/netns/$WE/hosts"
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

bench_egret() { # [env assignments...]: `egret run` (HTTPS mode, policy ok.example) in $WE on the filter CPU
  printf 'allowlist:\n  domains: ["ok.example"]\n' > "$TMP/policy.yaml"
  # The names are pinned in $WE's /etc/hosts; DNS_UPSTREAMS points at the
  # upstream namespace (nothing answers there), never off the machine.
  bench_bg ip netns exec "$WE" taskset -c "${FILTER_CPU:-0}" env POLICY_PATH="$TMP/policy.yaml" \
    DNS_UPSTREAMS="$UPE:53" HEALTH_SOCKET="$TMP/egret.sock" LOG_LEVEL=warn "$@" "$BIN" run \
    > "$TMP/events.jsonl" 2> "$TMP/egret.log"
  EGRET=$BG
}
