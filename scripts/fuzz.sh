#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for SECONDS each, seeded
# from tests/data/fuzz/<target>/, and prints executions and findings.
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  seeds="tests/data/fuzz/$t"
  log="fuzz/$t.log"
  echo "==> $t for ${secs}s"
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" ${seeds:+$( [ -d "$seeds" ] && echo "$seeds")} -- \
    -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || { echo "$t: FAILED, see $log"; tail -30 "$log"; exit 1; }
  execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
  echo "$t: ${execs:-?} executions, 0 crashes"
done
