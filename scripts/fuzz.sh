#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for SECONDS each, seeded
# from tests/data/fuzz/<target>/, and prints executions and findings.
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# FUZZ_RUNS=N also stops a target after N executions (whichever comes
# first), so a fast target does not spend the whole time budget.
# FUZZ_SANITIZER (default none) is passed to cargo fuzz -s: the fuzzed code
# is safe Rust (egret's only unsafe is in src/sys.rs, which no target
# reaches), so AddressSanitizer finds nothing there and roughly halves the
# executions per second; FUZZ_SANITIZER=address brings it back. Overflow
# checks and debug assertions stay on (cargo fuzz's default).
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
  sanitizer=${FUZZ_SANITIZER:-none}
  start=$SECONDS
  runs=()
  [ -n "${FUZZ_RUNS:-}" ] && runs=(-runs="$FUZZ_RUNS")
  if cargo +nightly fuzz run -s "$sanitizer" "$t" "${dirs[@]}" -- -max_total_time="$secs" "${runs[@]}" -print_final_stats=1 >"$log" 2>&1; then
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "$t: ${execs:-?} executions in $((SECONDS - start))s (build included), no crash"
  else
    echo "$t: CRASH or build failure, see $log (artifacts in fuzz/artifacts/$t)"
    tail -20 "$log"
    status=1
  fi
done
exit $status
