#!/usr/bin/env bash
# Builds the libFuzzer targets in tests/fuzz with clang and runs each one.
#   scripts/fuzz.sh --runs 20000            bounded (what ./test.sh does through ctest)
#   scripts/fuzz.sh --seconds 600 wire_fuzz a longer campaign for developers
# Seeds come from tests/fuzz/corpus/<target minus _fuzz>/; new inputs go to a scratch corpus, so
# the committed seeds only change by hand. Exit 77 (ctest: skipped) when clang/libFuzzer is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build/fuzz"
limit=(-runs=20000)
targets=()
while (($#)); do
  case $1 in
    --runs) limit=(-runs="$2" -seed=1); shift 2 ;;  # bounded runs are reproducible
    --seconds) limit=(-max_total_time="$2"); shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if ! command -v clang++ >/dev/null || [[ ! -e $(clang++ -print-file-name=libclang_rt.fuzzer-x86_64.a) ]]; then
  echo "fuzz: skipped: clang++ with libFuzzer not installed (apt-get install clang libclang-rt-14-dev)"
  exit 77
fi
cmake -S "$root/tests/fuzz" -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null
((${#targets[@]})) || mapfile -t targets < <(cd "$build" && ls ./*_fuzz | xargs -n1 basename)
status=0
for t in "${targets[@]}"; do
  seeds="$root/tests/fuzz/corpus/${t%_fuzz}"
  work=$(mktemp -d)
  log="$build/$t.log"
  if "$build/$t" "${limit[@]}" -print_final_stats=1 "$work" "$seeds" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $t: ${execs:-?} executions, 0 crashes"
  else
    echo "fuzz: $t: FAILED (crash or leak); log $log:"
    tail -n 40 "$log"
    status=1
  fi
  rm -rf "$work"
done
exit $status
