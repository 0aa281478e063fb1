#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for SECONDS each, seeded
# from tests/data/fuzz/<target>/, and prints executions and findings.
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# FUZZ_RUNS=N also stops a target after N executions (whichever comes
# first), so a fast target does not spend the whole time budget.
# Needs the nightly toolchain and cargo-fuzz (installed here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
status=0
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus"
  dirs=("$corpus")
  [ -d "tests/data/fuzz/$t" ] && dirs+=("tests/data/fuzz/$t")
  log="fuzz/$t.log"
  echo "==> $t for ${secs}s"
  runs=()
  [ -n "${FUZZ_RUNS:-}" ] && runs=(-runs="$FUZZ_RUNS")
  if cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$secs" "${runs[@]}" -print_final_stats=1 >"$log" 2>&1; then
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    took=$(grep -m1 'stat::.*time\|Done [0-9]* runs in' "$log" | tail -1)
    echo "$t: ${execs:-?} executions, no crash ${took}"
  else
    echo "$t: CRASH or build failure, see $log (artifacts in fuzz/artifacts/$t)"
    tail -20 "$log"
    status=1
  fi
done
exit $status
