#!/usr/bin/env bash
# Apply-time benchmark of the kernel path: `egret init` with a policy of N
# disjoint IPv4 /30s (default 10,000) into a fresh network namespace, and
# replacing it, against the baseline `nft -f` of the very same ruleset
# (what `egret run --print-rules` prints), measured in the same run.
# Needs root. Usage: scripts/bench-nft.sh [N] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
rounds=${2:-5}
cargo build --release -q
egret=target/release/egret
dir=$(mktemp -d)
ns="egret-bench-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
python3 - "$n" > "$dir/policy.yaml" <<'PY'
import ipaddress, sys
print("allowlist:\n  ips:")
for i in range(int(sys.argv[1])):
    print('    - "%s/30"' % ipaddress.IPv4Address(0x0B000000 + i * 8))
PY
export POLICY_PATH="$dir/policy.yaml" BYPASS_MARK=0x2a LOG_LEVEL=error
ip netns add "$ns"
"$egret" run --print-rules > "$dir/rules.nft"
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
declare -a fresh replace baseline
for _ in $(seq "$rounds"); do
  ip netns exec "$ns" "$egret" cleanup 2>/dev/null
  t0=$(now); ip netns exec "$ns" "$egret" init 2>/dev/null; t1=$(now)
  ip netns exec "$ns" "$egret" init 2>/dev/null; t2=$(now)
  ip netns exec "$ns" "$egret" cleanup 2>/dev/null
  t3=$(now); ip netns exec "$ns" nft -f "$dir/rules.nft"; t4=$(now)
  fresh+=("$(ms "$t0" "$t1")"); replace+=("$(ms "$t1" "$t2")"); baseline+=("$(ms "$t3" "$t4")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
f=$(median "${fresh[@]}"); r=$(median "${replace[@]}"); b=$(median "${baseline[@]}")
echo "policy: $n IPv4 CIDRs, $rounds rounds, medians (process start to exit)"
echo "  egret init, empty namespace:   ${f} ms"
echo "  egret init, replacing a table: ${r} ms"
echo "  nft -f of the same ruleset:    ${b} ms (baseline)"
awk -v f="$f" -v b="$b" 'BEGIN { if (f > 0) printf "  ratio baseline / egret:        %.1fx\n", b / f }'
